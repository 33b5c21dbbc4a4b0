//! Connections from the proxy to backend replicas: HTTP/1.1 with keep-alive, pooled by
//! host port, and driven by the task of the request that uses them rather than by a task
//! of their own. hyper-util's pooled client spawns a task per connection and passes
//! every request, response and body chunk across channels between the two, which costs
//! wakeups and copies on each request; here the request's own task polls the connection
//! while it waits for the response head and while its body streams out.

use super::body::ProxyBody;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Time allowed to connect to a replica on loopback.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per host port.
const MAX_IDLE_PER_PORT: usize = 64;

/// Why a backend request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The replica refused or did not answer the connection.
    #[error("connect to 127.0.0.1:{port}: {source}")]
    Connect {
        /// Host port.
        port: u16,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connection closed before the response head came.
    #[error("connection to 127.0.0.1:{port} closed before the response")]
    Closed {
        /// Host port.
        port: u16,
    },
    /// HTTP on an open connection failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// One keep-alive connection to a replica.
struct Upstream {
    tx: http1::SendRequest<ProxyBody>,
    conn: http1::Connection<TokioIo<TcpStream>, ProxyBody>,
    /// The connection future finished: the connection is closed.
    done: bool,
    port: u16,
    idle_since: Instant,
}

impl Upstream {
    /// Lets the connection read and write; false once it has closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.done && Pin::new(&mut self.conn).poll(cx).is_ready() {
            self.done = true;
        }
        !self.done
    }

    /// Whether it can take a request now: a backend may have closed a pooled connection.
    fn poll_usable(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if !self.drive(cx) {
            return Poll::Ready(false);
        }
        self.tx.poll_ready(cx).map(|r| r.is_ok())
    }
}

/// Connections by host port. Boxed: a connection moves between the pool and a response
/// body on every request, and a pointer is cheaper to move than hyper's connection state.
#[allow(clippy::vec_box)]
type ByPort = HashMap<u16, Vec<Box<Upstream>>>;

#[derive(Default)]
struct Idle {
    by_port: ByPort,
    last_sweep: Option<Instant>,
}

/// Idle connections to replicas, by host port.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Idle>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checkout(&self, port: u16) -> Option<Box<Upstream>> {
        // The most recently used first: the warmest, and the least likely closed.
        self.lock().by_port.get_mut(&port)?.pop()
    }

    fn put(&self, mut up: Box<Upstream>) {
        if up.done || up.tx.is_closed() {
            return;
        }
        let now = Instant::now();
        up.idle_since = now;
        let mut idle = self.lock();
        if idle
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            idle.last_sweep = Some(now);
            sweep(&mut idle.by_port, now);
        }
        let conns = idle.by_port.entry(up.port).or_default();
        if conns.len() < MAX_IDLE_PER_PORT {
            conns.push(up);
        }
    }

    /// Closes connections idle too long, e.g. to replicas that have gone away.
    pub fn sweep(&self) {
        sweep(&mut self.lock().by_port, Instant::now());
    }

    /// A connection to `port` ready for a request: a pooled one that is still open, or a
    /// new one.
    async fn ready(&self, port: u16) -> Result<Box<Upstream>, Error> {
        while let Some(mut up) = self.checkout(port) {
            if poll_fn(|cx| up.poll_usable(cx)).await {
                return Ok(up);
            }
        }
        connect(port).await
    }

    /// Sends `req` (origin-form URI, `Host` set) to the replica on host port `port`; the
    /// response body keeps the connection going and gives it back when it has ended.
    pub async fn send(
        self: &Arc<Self>,
        port: u16,
        req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, Error> {
        let mut up = self.ready(port).await?;
        let mut head = std::pin::pin!(up.tx.send_request(req));
        let head = poll_fn(|cx| {
            if let Poll::Ready(r) = head.as_mut().poll(cx) {
                return Poll::Ready(r.map_err(Error::Http));
            }
            if up.drive(cx) {
                return Poll::Pending;
            }
            // Closed: the pending request has been answered with an error by now.
            match head.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.map_err(Error::Http)),
                Poll::Pending => Poll::Ready(Err(Error::Closed { port })),
            }
        })
        .await?;
        let (parts, body) = head.into_parts();
        Ok(Response::from_parts(
            parts,
            UpstreamBody {
                body,
                up: Some(up),
                pool: self.clone(),
                ended: false,
            },
        ))
    }
}

fn sweep(by_port: &mut ByPort, now: Instant) {
    by_port.retain(|_, conns| {
        conns.retain(|c| now.duration_since(c.idle_since) < IDLE_TIMEOUT);
        !conns.is_empty()
    });
}

async fn connect(port: u16) -> Result<Box<Upstream>, Error> {
    let error = |source| Error::Connect { port, source };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| error(std::io::ErrorKind::TimedOut.into()))?
        .map_err(error)?;
    stream.set_nodelay(true).map_err(error)?;
    let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
    Ok(Box::new(Upstream {
        tx,
        conn,
        done: false,
        port,
        idle_since: Instant::now(),
    }))
}

/// A response body from a replica. Polling it also drives its connection, which goes
/// back to the pool once the body has been read to its end (dropped earlier, the
/// connection is closed: the rest of the body is still on it).
pub struct UpstreamBody {
    body: Incoming,
    up: Option<Box<Upstream>>,
    pool: Arc<Pool>,
    ended: bool,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(up) = this.up.as_mut() {
            up.drive(cx);
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(up) = self.up.take() {
            if self.is_end_stream() {
                self.pool.put(up);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A backend on loopback answering "ok"; counts the connections it accepted. With
    /// `close`, it ends every connection after one response (`Connection: close`).
    async fn backend(close: bool) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close)
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (port, accepted)
    }

    async fn get(pool: &Arc<Pool>, port: u16) -> Result<String, Error> {
        let req = Request::builder()
            .uri("/")
            .header("host", "test")
            .body(ProxyBody::Buffered(http_body_util::Full::new(Bytes::new())))
            .unwrap();
        let resp = pool.send(port, req).await?;
        let body = http_body_util::BodyExt::collect(resp.into_body()).await?;
        Ok(String::from_utf8_lossy(&body.to_bytes()).to_string())
    }

    #[tokio::test]
    async fn sequential_requests_share_one_keep_alive_connection() {
        let (port, accepted) = backend(false).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..5 {
            assert_eq!(get(&pool, port).await.unwrap(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_not_reused() {
        let (port, accepted) = backend(true).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            assert_eq!(get(&pool, port).await.unwrap(), "ok");
            // Let the backend's close arrive before the next checkout.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_port() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = get(&Arc::new(Pool::default()), port).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("connect to 127.0.0.1:{port}: ")),
            "{err}"
        );
    }
}
