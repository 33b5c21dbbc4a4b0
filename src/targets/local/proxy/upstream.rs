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
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Time allowed to connect to a replica on loopback.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per host port.
const MAX_IDLE_PER_PORT: usize = 64;
/// A pooled connection idle this long may be closed by its replica just as a request
/// goes out on it (servers' keep-alive timeouts), so a request that may be retried is
/// copied first, as it is on a new connection. A connection that answered more recently
/// skips the copy, which would cost more than the rest of the proxying.
const STALE_AFTER: Duration = Duration::from_millis(200);

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

/// A request that got no response, and the request to send again if it can be.
pub struct Failed {
    /// What went wrong.
    pub error: Error,
    /// The request itself when it never left (no connection, or hyper gave it back),
    /// else the copy taken before it went out on a connection that had idled.
    pub again: Option<Request<ProxyBody>>,
}

impl std::fmt::Debug for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failed")
            .field("error", &self.error)
            .field("again", &self.again.is_some())
            .finish()
    }
}

/// One keep-alive connection to a replica.
struct Upstream {
    tx: http1::SendRequest<ProxyBody>,
    conn: http1::Connection<TokioIo<TcpStream>, ProxyBody>,
    /// The connection future finished: the connection is closed.
    done: bool,
    port: u16,
    idle_since: Instant,
    /// The waker the connection is polled with, over `relay`.
    waker: Waker,
    relay: Arc<Relay>,
}

/// Passes a backend connection's wakeups on to the task that drives it, only while that
/// task waits for it. hyper wakes the connection's last poller also when the task itself
/// queues a request or takes a body chunk, in the middle of its own poll, and such a
/// wakeup would poll the whole client connection once more for nothing (or another
/// connection's task, for a pooled connection). The task always drives the connection
/// before it waits, so a wakeup dropped while it runs loses nothing: readiness stays
/// recorded on the socket.
#[derive(Default)]
struct Relay {
    task: Mutex<Option<Waker>>,
}

impl Relay {
    fn task(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.task.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::task::Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(w) = self.task().as_ref() {
            w.wake_by_ref();
        }
    }
}

impl Upstream {
    fn new(
        tx: http1::SendRequest<ProxyBody>,
        conn: http1::Connection<TokioIo<TcpStream>, ProxyBody>,
        port: u16,
    ) -> Upstream {
        let relay = Arc::new(Relay::default());
        Upstream {
            tx,
            conn,
            done: false,
            port,
            idle_since: Instant::now(),
            waker: Waker::from(relay.clone()),
            relay,
        }
    }

    /// Lets the connection read and write, to wake `cx` when it can go on; false once it
    /// has closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if self.done {
            return false;
        }
        {
            let mut task = self.relay.task();
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut relayed = Context::from_waker(&self.waker);
        if Pin::new(&mut self.conn).poll(&mut relayed).is_ready() {
            self.done = true;
        }
        !self.done
    }

    /// Wakeups from now until the next [`Upstream::drive`] go nowhere.
    fn hush(&self) {
        *self.relay.task() = None;
    }
}

/// Connections by host port. Boxed: a connection moves between the pool and a response
/// body on every request, and a pointer is cheaper to move than hyper's connection state.
#[allow(clippy::vec_box)]
type ByPort = HashMap<u16, Vec<Box<Upstream>>, PortHash>;

/// Hashes a host port by itself: the keys are ports of the local replicas, not chosen by
/// clients, and SipHash cost more than the rest of a checkout.
#[derive(Default, Clone, Copy)]
struct PortHash;

impl std::hash::BuildHasher for PortHash {
    type Hasher = PortHasher;

    fn build_hasher(&self) -> PortHasher {
        PortHasher(0)
    }
}

/// See [`PortHash`].
#[derive(Default)]
struct PortHasher(u64);

impl std::hash::Hasher for PortHasher {
    fn finish(&self) -> u64 {
        // Spread over the high bits too, which hashbrown's control bytes read.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n);
    }
}

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
        up.hush();
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

    /// Sends `req` (origin-form URI, `Host` set) to the replica on host port `port`; the
    /// response body keeps the connection going and gives it back when it has ended.
    /// `copy` is asked for a copy of the request only when the connection it goes out on
    /// is new or has idled (see [`STALE_AFTER`]); on a failure after sending,
    /// [`Failed::again`] carries that copy.
    pub async fn send(
        self: &Arc<Self>,
        port: u16,
        mut req: Request<ProxyBody>,
        copy: impl Fn(&Request<ProxyBody>) -> Option<Request<ProxyBody>>,
    ) -> Result<Response<UpstreamBody>, Box<Failed>> {
        // Pooled connections first. One the replica has closed is not probed before
        // use (a probe drives the connection once more on every request): the request
        // comes back unsent from it and goes on the next.
        loop {
            let (up, pooled) = match self.checkout(port) {
                Some(up) => (up, true),
                // Boxed: connecting is rare, and its state would otherwise swell every
                // request's future, which hyper moves on each request.
                None => match Box::pin(connect(port)).await {
                    Ok(up) => (up, false),
                    Err(error) => {
                        return Err(Box::new(Failed {
                            error,
                            again: Some(req),
                        }))
                    }
                },
            };
            let failed = match self.exchange(up, pooled, req, &copy).await {
                Ok(resp) => return Ok(resp),
                Err(failed) => *failed,
            };
            match failed {
                Unanswered {
                    unsent: Some(unsent),
                    ..
                } if pooled => req = unsent,
                Unanswered {
                    error,
                    unsent,
                    copied,
                } => {
                    return Err(Box::new(Failed {
                        error,
                        again: unsent.or(copied),
                    }))
                }
            }
        }
    }

    /// One request on one connection.
    async fn exchange(
        self: &Arc<Self>,
        mut up: Box<Upstream>,
        pooled: bool,
        req: Request<ProxyBody>,
        copy: impl Fn(&Request<ProxyBody>) -> Option<Request<ProxyBody>>,
    ) -> Result<Response<UpstreamBody>, Box<Unanswered>> {
        let copied = if !pooled || up.idle_since.elapsed() >= STALE_AFTER {
            copy(&req)
        } else {
            None
        };
        let port = up.port;
        up.hush();
        // The request is queued at once; its response head can only arrive while this
        // task drives the connection, so the head's future is polled after each drive
        // with a no-op waker: a real one would be woken by that very drive and poll the
        // whole client connection once more for nothing.
        let mut head = std::pin::pin!(up.tx.try_send_request(req));
        // Failures are rare: boxed, they keep the result small to move.
        let finish = |r: Result<_, hyper::client::conn::TrySendError<_>>| {
            r.map_err(|mut e| Box::new((e.take_message(), Error::Http(e.into_error()))))
        };
        let outcome = poll_fn(|cx| {
            let open = up.drive(cx);
            let mut quiet = Context::from_waker(Waker::noop());
            match head.as_mut().poll(&mut quiet) {
                Poll::Ready(r) => Poll::Ready(finish(r)),
                // Out of tokio's budget, the head's channel says pending and asks the
                // no-op waker for a wakeup: asked again here, of the real one.
                Poll::Pending if !tokio::task::coop::has_budget_remaining() => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending if open => Poll::Pending,
                Poll::Pending => Poll::Ready(Err(Box::new((None, Error::Closed { port })))),
            }
        })
        .await;
        let head = match outcome {
            Ok(head) => head,
            Err(failed) => {
                let (unsent, error) = *failed;
                // Closed with the request still queued (its future is still pending):
                // hyper hands it back once the connection is gone.
                drop(up);
                let unsent = match error {
                    Error::Closed { .. } => {
                        let mut quiet = Context::from_waker(Waker::noop());
                        match head.as_mut().poll(&mut quiet) {
                            Poll::Ready(Err(mut e)) => e.take_message(),
                            _ => None,
                        }
                    }
                    _ => unsent,
                };
                return Err(Box::new(Unanswered {
                    error,
                    unsent,
                    copied,
                }));
            }
        };
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

/// Why one exchange got no response, with what is left of its request.
struct Unanswered {
    error: Error,
    /// The request, which never left.
    unsent: Option<Request<ProxyBody>>,
    /// A copy taken before it went out.
    copied: Option<Request<ProxyBody>>,
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
    Ok(Box::new(Upstream::new(tx, conn, port)))
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
        // Body bytes arrive only while this task drives the connection, and most bodies
        // came whole with the drive that brought the head: the body is polled first,
        // with a no-op waker, and the connection driven only when it has nothing yet.
        if let Some(up) = this.up.as_ref() {
            up.hush();
        }
        let mut quiet = Context::from_waker(Waker::noop());
        let mut frame = Pin::new(&mut this.body).poll_frame(&mut quiet);
        if frame.is_pending() {
            if let Some(up) = this.up.as_mut() {
                up.drive(cx);
            }
            frame = Pin::new(&mut this.body).poll_frame(&mut quiet);
        }
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
        let resp = pool.send(port, req, |_| None).await.map_err(|f| f.error)?;
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

    fn request(path: &str) -> Request<ProxyBody> {
        Request::builder()
            .uri(path)
            .header("host", "test")
            .body(ProxyBody::Buffered(http_body_util::Full::new(Bytes::new())))
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_that_never_left_comes_back_and_a_busy_connection_copies_nothing() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = Arc::new(Pool::default());
        let Err(failed) = pool
            .send(dead, request("/unsent"), |_| panic!("nothing went out"))
            .await
        else {
            panic!("nothing listens on {dead}");
        };
        assert_eq!(failed.again.expect("the request itself").uri(), "/unsent");

        let (port, _) = backend(false).await;
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let copy = |_: &Request<ProxyBody>| {
            asked.fetch_add(1, Ordering::SeqCst);
            None
        };
        for _ in 0..3 {
            let resp = pool.send(port, request("/"), copy).await.unwrap();
            http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap();
        }
        // The first went on a new connection, the next two on a busy one.
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        tokio::time::sleep(STALE_AFTER + Duration::from_millis(50)).await;
        let resp = pool.send(port, request("/"), copy).await.unwrap();
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 2);
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
