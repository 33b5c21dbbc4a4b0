//! The proxy's own threads (one unless `GITCANARY_PROXY_WORKERS` says more): each runs
//! a single-threaded tokio runtime and owns the connections handed to it, from the
//! client's socket to the backend's, with its own pool of backend connections, as an
//! nginx worker does. A request then never wakes another thread: on a work-stealing
//! runtime a wakeup may land on the other worker or wake an idle one to steal, and those
//! futex calls and context switches cost more than the proxying itself. Listeners accept
//! on one worker and hand each new connection to the next worker in turn.

use super::upstream::Pool;
use crate::util::listen::Source;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The environment variable that sets the number of workers.
pub const WORKERS_ENV: &str = "GITCANARY_PROXY_WORKERS";

/// Workers for a `GITCANARY_PROXY_WORKERS` value: one unless set, at most the cores.
/// One thread waits for all connections at once and wakes less often than two each
/// waiting for half of them (measured: 0.84 against 1.31 context switches per request
/// at 4 connections), and a local target's clients and replicas share the cores anyway;
/// more workers only pay once one core no longer keeps up.
fn workers_wanted(env: Option<&str>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    env.and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, cores)
}

/// The worker threads; they stop when this is dropped.
pub struct Workers {
    /// Shared with the tasks, which must not keep the threads alive.
    pub spawner: Arc<Spawner>,
    /// Dropping these ends each worker's runtime, and with it its tasks.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// Puts tasks on the workers.
pub struct Spawner {
    handles: Vec<Handle>,
    pools: Vec<Arc<Pool>>,
    next: AtomicUsize,
}

impl Workers {
    /// `GITCANARY_PROXY_WORKERS` workers (default one).
    pub fn start() -> io::Result<Workers> {
        let n = workers_wanted(std::env::var(WORKERS_ENV).ok().as_deref());
        let mut handles = Vec::with_capacity(n);
        let mut stop = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("gitcanary-proxy-{i}"))
                .spawn(move || {
                    let _ = rt.block_on(rx);
                })?;
        }
        Ok(Workers {
            spawner: Arc::new(Spawner {
                pools: (0..n).map(|_| Arc::default()).collect(),
                handles,
                next: AtomicUsize::new(0),
            }),
            _stop: stop,
        })
    }
}

impl Spawner {
    /// The next worker in turn.
    pub fn next(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()
    }

    /// Runs `f(pool)` as a task on worker `i`, with that worker's backend pool.
    pub fn spawn<F, Fut>(&self, i: usize, f: F) -> JoinHandle<()>
    where
        F: FnOnce(Arc<Pool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handles[i].spawn(f(self.pools[i].clone()))
    }

    /// Closes idle backend connections past their time, on every worker.
    pub fn sweep(&self) {
        for p in &self.pools {
            p.sweep();
        }
    }
}

/// A listener whose connections can move to another worker: each is taken off this
/// runtime's reactor as it is accepted.
pub struct MovableListener(pub tokio::net::TcpListener);

impl Source for MovableListener {
    type Io = Moved;

    async fn accept(&mut self) -> io::Result<(Moved, SocketAddr)> {
        let (s, addr) = self.0.accept().await?;
        let _ = s.set_nodelay(true);
        // A failure concerns this connection only: the listener goes on at once.
        let s = s
            .into_std()
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e))?;
        Ok((Moved::Detached(Some(s)), addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// An accepted connection: detached until first used, then registered with the
/// runtime of the worker that uses it.
pub enum Moved {
    /// Not registered with any runtime yet.
    Detached(Option<std::net::TcpStream>),
    /// Registered with the worker's runtime.
    Attached(tokio::net::TcpStream),
}

impl Moved {
    fn attached(&mut self) -> io::Result<&mut tokio::net::TcpStream> {
        if let Moved::Detached(s) = self {
            let std = s
                .take()
                .ok_or_else(|| io::Error::other("connection lost"))?;
            *self = Moved::Attached(tokio::net::TcpStream::from_std(std)?);
        }
        let Moved::Attached(s) = self else {
            return Err(io::Error::other("connection lost"));
        };
        Ok(s)
    }
}

macro_rules! attached {
    ($self:ident) => {
        match $self.get_mut().attached() {
            Ok(s) => Pin::new(s),
            Err(e) => return Poll::Ready(Err(e)),
        }
    };
}

impl AsyncRead for Moved {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        attached!(self).poll_read(cx, buf)
    }
}

impl AsyncWrite for Moved {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        attached!(self).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        attached!(self).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        attached!(self).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        attached!(self).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_unless_told_and_never_more_than_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(workers_wanted(None), 1);
        assert_eq!(workers_wanted(Some("zero?")), 1);
        assert_eq!(workers_wanted(Some("0")), 1);
        assert_eq!(workers_wanted(Some("1000")), cores);
    }
}
