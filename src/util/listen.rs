//! The one accept loop of every listener (Service proxy, HTTP server, demo app): at most
//! `max_connections` open connections per listener (a semaphore; the next client waits
//! in the kernel's backlog), and exponential backoff on accept errors, 1 ms doubling to
//! 1 s, so running out of file descriptors (`EMFILE`) does not spin a core (as mini-redis
//! does). It knows nothing of HTTP: it hands out connections, to hyper or to axum.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open connections per listener unless configured: well under the usual 1,024 file
/// descriptors, since a proxied connection holds two.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

const FIRST_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where connections come from: a `TcpListener`, or a fake in tests.
pub trait Source: Send + 'static {
    /// The connection type.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Accepts one connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Source for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send {
        tokio::net::TcpListener::accept(self)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

/// Exponential backoff between failed accepts; reset by a successful one.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// The pause before the next attempt; doubles up to 1 s.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(MAX_BACKOFF);
        d
    }

    /// Back to 1 ms after a success.
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

/// Errors of one connection that went away before it was accepted: the listener is
/// fine, so the next accept needs no pause.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A listener with a connection cap and accept backoff.
pub struct Acceptor<S = tokio::net::TcpListener> {
    source: S,
    permits: Arc<Semaphore>,
    backoff: Backoff,
    name: String,
}

impl<S: Source> Acceptor<S> {
    /// Wraps `source` (named `name` in logs), allowing `max_connections` at once (at least one).
    pub fn new(source: S, max_connections: usize, name: impl Into<String>) -> Self {
        Acceptor {
            source,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            backoff: Backoff::default(),
            name: name.into(),
        }
    }

    /// The next connection, once one of the `max_connections` places is free. Accept
    /// errors are logged and retried after a pause, never returned.
    pub async fn accept(&mut self) -> (Conn<S::Io>, SocketAddr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.source.accept().await {
                Ok((io, addr)) => {
                    self.backoff.reset();
                    return (
                        Conn {
                            io,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    if delay == FIRST_BACKOFF || delay == MAX_BACKOFF {
                        tracing::warn!(listener = %self.name, "accept failed: {e}; retrying in {delay:?}");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

impl<S: Source> axum::serve::Listener for Acceptor<S> {
    type Io = Conn<S::Io>;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send {
        Acceptor::accept(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source.local_addr()
    }
}

/// A connection's peer address, for handlers that admit by it (axum's `ConnectInfo`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl<S: Source> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Acceptor<S>>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Acceptor<S>>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// An accepted connection; its place under the cap is given back when it is dropped.
pub struct Conn<Io> {
    io: Io,
    _permit: OwnedSemaphorePermit,
}

impl<Io> Conn<Io> {
    /// The underlying connection (e.g. to set `TCP_NODELAY`).
    pub fn get_ref(&self) -> &Io {
        &self.io
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Conn<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Conn<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails with `EMFILE` `failures` times, then hands out in-memory connections;
    /// counts its calls.
    struct Flaky {
        failures: usize,
        calls: Arc<AtomicUsize>,
    }

    impl Source for Flaky {
        type Io = tokio::io::DuplexStream;
        async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            Ok((tokio::io::duplex(64).0, ([127, 0, 0, 1], 1).into()))
        }
        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok(([127, 0, 0, 1], 1).into())
        }
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..12).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn emfile_backs_off_instead_of_spinning() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut a = Acceptor::new(
            Flaky {
                failures: usize::MAX,
                calls: calls.clone(),
            },
            4,
            "test",
        );
        // A spinning loop would make millions of attempts; with backoff 1+2+...+512 ms
        // leaves room for ten in the first second, then one a second.
        let _ = tokio::time::timeout(Duration::from_secs(5), a.accept()).await;
        let n = calls.load(Ordering::SeqCst);
        assert!((10..=16).contains(&n), "{n} accept attempts in 5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn accepts_after_the_errors_pass_and_resets() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut a = Acceptor::new(
            Flaky {
                failures: 3,
                calls: calls.clone(),
            },
            4,
            "test",
        );
        let started = tokio::time::Instant::now();
        let _conn = a.accept().await;
        assert_eq!(started.elapsed(), Duration::from_millis(1 + 2 + 4));
        assert_eq!(a.backoff.next_delay(), FIRST_BACKOFF);
    }

    #[tokio::test]
    async fn the_connection_past_the_cap_waits_for_a_free_place() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut a = Acceptor::new(listener, 2, "test");
        let _clients: Vec<_> = connect_n(addr, 3).await;
        let first = a.accept().await;
        let _second = a.accept().await;
        // A correct cap never lets this through; a missing one does at once.
        let third = tokio::time::timeout(Duration::from_millis(300), a.accept()).await;
        assert!(
            third.is_err(),
            "a third connection was accepted under a cap of 2"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), a.accept())
            .await
            .expect("the third connection is accepted once a place is free");
    }

    async fn connect_n(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        out
    }
}
