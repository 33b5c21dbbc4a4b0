//! Connections from the proxy to backend replicas: HTTP/1.1 keep-alive, pooled by host
//! port on each worker and used by the task of the request that holds one, with no task
//! or channel of their own. A pooled connection is checked before use without a system
//! call: the reactor has marked a socket its replica closed as readable, so a
//! non-blocking read sees the end at once.

use super::http1::{self, Fields, Response};
use super::stream::{Stream, UPSTREAM_IDLE};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Time allowed to connect to a replica on loopback.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per host port.
const MAX_IDLE_PER_PORT: usize = 64;
/// Read buffer of a backend connection.
const BUFFER: usize = 16 * 1024;
/// Interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 8;

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
    /// Writing the request or reading the response failed.
    #[error("127.0.0.1:{port}: {source}")]
    Io {
        /// Host port.
        port: u16,
        /// The socket error.
        source: std::io::Error,
    },
    /// The replica's response head is unusable.
    #[error("127.0.0.1:{port}: {source}")]
    Response {
        /// Host port.
        port: u16,
        /// What is wrong with it.
        source: http1::BadResponse,
    },
}

impl Error {
    /// The request did not reach the replica, or the replica answered nothing: sending
    /// it again elsewhere may succeed.
    pub fn unanswered(&self) -> bool {
        !matches!(self, Error::Response { .. })
    }
}

/// One keep-alive connection to a replica.
pub struct Upstream {
    /// The socket and its buffers.
    pub io: Stream<TcpStream>,
    /// Host port of the replica.
    pub port: u16,
    idle_since: Instant,
}

impl Upstream {
    /// Writes what is queued (a request).
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.io.flush().await.map_err(|source| Error::Io {
            port: self.port,
            source,
        })
    }

    /// The final response head at the start of what was read, interim (1xx) responses
    /// consumed and counted in `interim` (across calls); `None` until a head is whole.
    pub fn final_head(
        &mut self,
        fields: &mut Fields,
        head: bool,
        interim: &mut usize,
    ) -> Result<Option<Response>, http1::BadResponse> {
        while !self.io.data().is_empty() {
            match http1::parse_response(self.io.data(), fields, head)? {
                Some(r) if (100..200).contains(&r.status) && r.status != 101 => {
                    *interim += 1;
                    if *interim > MAX_INTERIM {
                        return Err(http1::BadResponse::Malformed("too many 1xx responses"));
                    }
                    self.io.consume(r.len);
                }
                r => return Ok(r),
            }
        }
        Ok(None)
    }

    /// Reads the final response head, skipping interim ones; its fields are in `fields`
    /// over [`Stream::data`] until the head is consumed.
    pub async fn response(&mut self, fields: &mut Fields, head: bool) -> Result<Response, Error> {
        let port = self.port;
        let mut interim = 0;
        loop {
            match self.final_head(fields, head, &mut interim) {
                Ok(Some(r)) if r.status == 101 => {
                    let source = http1::BadResponse::Malformed("101 to a request without Upgrade");
                    return Err(Error::Response { port, source });
                }
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(source) => return Err(Error::Response { port, source }),
            }
            match self.io.fill().await {
                Ok(0) if self.io.data().is_empty() => return Err(Error::Closed { port }),
                Ok(0) => {
                    let source = http1::BadResponse::Malformed("connection closed in the head");
                    return Err(Error::Response { port, source });
                }
                Ok(_) => {}
                Err(source) => return Err(Error::Io { port, source }),
            }
        }
    }
}

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

type ByPort = HashMap<u16, Vec<Upstream>, PortHash>;

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

    /// An idle connection to `port` that is still open: the most recently used first,
    /// the warmest and the least likely closed.
    fn checkout(&self, port: u16) -> Option<Upstream> {
        let mut idle = self.lock();
        let conns = idle.by_port.get_mut(&port)?;
        while let Some(up) = conns.pop() {
            // Without readiness recorded this reads nothing and makes no system call;
            // a closed or chattering connection is dropped.
            match up.io.io.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(up),
                _ => continue,
            }
        }
        None
    }

    /// Keeps `up` for the next request to its port.
    pub fn put(&self, mut up: Upstream) {
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
}

fn sweep(by_port: &mut ByPort, now: Instant) {
    by_port.retain(|_, conns| {
        conns.retain(|c| now.duration_since(c.idle_since) < IDLE_TIMEOUT);
        !conns.is_empty()
    });
}

/// A new connection to the replica on `port`.
async fn connect(port: u16) -> Result<Upstream, Error> {
    let error = |source| Error::Connect { port, source };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| error(std::io::ErrorKind::TimedOut.into()))?
        .map_err(error)?;
    stream.set_nodelay(true).map_err(error)?;
    Ok(Upstream {
        io: Stream::new(stream, BUFFER).with_deadline(UPSTREAM_IDLE),
        port,
        idle_since: Instant::now(),
    })
}

/// A pooled connection to `port`, else a new one.
pub async fn get(pool: &Pool, port: u16) -> Result<Upstream, Error> {
    match pool.checkout(port) {
        Some(up) => Ok(up),
        // Boxed: connecting is rare, and its state would swell every request's future.
        None => Box::pin(connect(port)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_names_the_port() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = connect(port).await.err().unwrap();
        assert!(
            err.to_string()
                .starts_with(&format!("connect to 127.0.0.1:{port}: ")),
            "{err}"
        );
        assert!(err.unanswered());
    }

    #[tokio::test]
    async fn a_pooled_connection_its_replica_closed_is_not_checked_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let pool = Pool::default();
        let up = connect(port).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        pool.put(up);
        let up = pool.checkout(port).expect("open and idle");
        pool.put(up);
        drop(server);
        // Let the reactor see the close.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match pool.checkout(port) {
                None => return,
                Some(up) => pool.put(up),
            }
        }
        panic!("a closed connection was checked out");
    }
}
