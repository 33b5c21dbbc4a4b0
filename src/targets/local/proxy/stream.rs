//! One side of a proxied exchange: a socket with a read buffer that heads are parsed in
//! place from, and a write buffer that a head and the first body bytes leave together
//! in one write. Each side has a deadline, so that nobody holds a connection slot
//! forever:
//! - a client's next request head must be whole within [`CLIENT_IDLE`] of the previous
//!   exchange (nginx's `keepalive_timeout` and `client_header_timeout`; a head sent a
//!   byte a minute does not reset it), and each read of its body or write of its
//!   response must make progress within as long (`client_body_timeout`,
//!   `send_timeout`);
//! - a replica must take each write and send each read within [`UPSTREAM_IDLE`]
//!   (`proxy_send_timeout`, `proxy_read_timeout`).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How long a client's read or write may wait without progress, and its next head
/// in all.
pub const CLIENT_IDLE: Duration = Duration::from_secs(60);
/// How long a replica's read or write may wait without progress.
pub const UPSTREAM_IDLE: Duration = Duration::from_secs(60);
/// Room made in the read buffer before each read.
const MIN_READ: usize = 4096;
/// A body piece at least this long goes out directly rather than through the write
/// buffer, when nothing is queued before it.
const DIRECT_WRITE: usize = 8192;
/// A buffer that grew past this (a large head, a buffered body) is given back once
/// empty: an idle kept-alive connection holds no more than its first buffers.
const SHRINK_ABOVE: usize = 64 * 1024;

/// A buffered socket.
pub struct Stream<Io> {
    /// The socket.
    pub io: Io,
    rbuf: Vec<u8>,
    /// Start of the bytes not yet taken from `rbuf`.
    start: usize,
    /// `rbuf`'s first capacity.
    capacity: usize,
    /// Bytes queued to write.
    pub wbuf: Vec<u8>,
    deadline: Option<Deadline>,
}

/// A limit on waiting, checked lazily: the timer is set once and, when it fires early
/// because the wait it was set for ended, set again; a wait costs a clock read, not a
/// timer registration.
struct Deadline {
    limit: Duration,
    /// When the current wait began (none between waits).
    since: Option<Instant>,
    /// Progress does not restart the clock: the limit is on the whole of a task.
    whole: bool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    /// Whether the current wait has gone on past the limit; registers `cx` to be woken
    /// when it would.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let due = *self.since.get_or_insert_with(Instant::now) + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= due {
                return true;
            }
            timer.as_mut().reset(due);
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Stream<Io> {
    /// `io` with a read buffer of `capacity` bytes to begin with.
    pub fn new(io: Io, capacity: usize) -> Self {
        Stream {
            io,
            rbuf: Vec::with_capacity(capacity),
            start: 0,
            capacity,
            wbuf: Vec::new(),
            deadline: None,
        }
    }

    /// Ends the connection when a read or write waits longer than `limit`.
    pub fn with_deadline(mut self, limit: Duration) -> Self {
        self.deadline = Some(Deadline {
            limit,
            since: None,
            whole: false,
            timer: None,
        });
        self
    }

    /// From now until [`Stream::each_wait`], the deadline bounds all waits together,
    /// counted from the first (a request head).
    pub fn whole_wait(&mut self) {
        self.bound_whole(true);
    }

    /// The deadline bounds each wait again.
    pub fn each_wait(&mut self) {
        self.bound_whole(false);
    }

    /// Whether the deadline bounds all waits together; the clock starts again.
    fn bound_whole(&mut self, whole: bool) {
        if let Some(d) = &mut self.deadline {
            d.whole = whole;
            d.since = None;
        }
    }

    /// The bytes read and not yet taken.
    pub fn data(&self) -> &[u8] {
        &self.rbuf[self.start..]
    }

    /// Takes `n` bytes from the front of [`Stream::data`]. They stay readable at their
    /// place (see [`Stream::taken`]) until the next [`Stream::fill`].
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.rbuf.len());
    }

    /// The `n` bytes taken last, ending where [`Stream::data`] begins.
    pub fn taken(&self, n: usize) -> &[u8] {
        &self.rbuf[self.start - n..self.start]
    }

    /// Reads more; 0 at the end of the stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        // A wait of its own: one given up before (its future dropped in a race) does
        // not count against it.
        progress(&mut self.deadline);
        self.make_room();
        poll_fn(|cx| {
            let Stream {
                io, rbuf, deadline, ..
            } = self;
            let len = rbuf.len();
            let mut buf = ReadBuf::uninit(rbuf.spare_capacity_mut());
            let r = match Pin::new(io).poll_read(cx, &mut buf) {
                Poll::Ready(r) => r.map(|()| buf.filled().len()),
                Poll::Pending => return timed_out(deadline, cx),
            };
            if let Ok(n) = r {
                // SAFETY: `poll_read` initialized the first `n` bytes of the spare
                // capacity.
                unsafe { rbuf.set_len(len + n) };
            }
            progress(deadline);
            Poll::Ready(r)
        })
        .await
    }

    /// Makes room for a read: drops what was taken, and grows the buffer only while
    /// what is kept fills it (a head being parsed; callers cap that).
    fn make_room(&mut self) {
        if self.start == self.rbuf.len() {
            self.rbuf.clear();
            self.start = 0;
            if self.rbuf.capacity() > SHRINK_ABOVE {
                self.rbuf = Vec::with_capacity(self.capacity);
            }
        } else if self.rbuf.capacity() - self.rbuf.len() < MIN_READ && self.start > 0 {
            self.rbuf.drain(..self.start);
            self.start = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < MIN_READ {
            self.rbuf.reserve(MIN_READ.max(self.rbuf.len()));
        }
    }

    /// Queues `bytes` to write.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let Stream {
            io, wbuf, deadline, ..
        } = self;
        let r = write_all(io, wbuf, deadline).await;
        release(wbuf);
        r
    }

    /// Queues `piece` and writes it out with what was queued before it; a long piece
    /// with nothing before it is written from where it is, with no copy.
    pub async fn send(&mut self, piece: &[u8]) -> io::Result<()> {
        if self.wbuf.is_empty() && piece.len() >= DIRECT_WRITE {
            let Stream { io, deadline, .. } = self;
            return write_all(io, piece, deadline).await;
        }
        self.queue(piece);
        self.flush().await
    }

    /// Closes the write side, after what is queued.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await
    }
}

async fn write_all<Io: AsyncWrite + Unpin>(
    io: &mut Io,
    mut bytes: &[u8],
    deadline: &mut Option<Deadline>,
) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| match Pin::new(&mut *io).poll_write(cx, bytes) {
            Poll::Ready(r) => {
                progress(deadline);
                Poll::Ready(r)
            }
            Poll::Pending => timed_out(deadline, cx),
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Empties a write buffer, giving it back if one large message grew it.
fn release(wbuf: &mut Vec<u8>) {
    wbuf.clear();
    if wbuf.capacity() > SHRINK_ABOVE {
        *wbuf = Vec::new();
    }
}

/// Reads what the socket has without waiting: whether it had anything (false when
/// the readiness was left over from an earlier read); the end of the stream is an
/// error, as the peer was expected to answer.
fn try_fill(io: &tokio::net::TcpStream, rbuf: &mut Vec<u8>) -> io::Result<bool> {
    match io.try_read_buf(rbuf) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// A wait made progress: the next one starts its own clock (unless the limit is on the
/// whole).
fn progress(deadline: &mut Option<Deadline>) {
    if let Some(d) = deadline.as_mut().filter(|d| !d.whole) {
        d.since = None;
    }
}

/// Pending, or a time-out error once the wait has lasted past the deadline.
fn timed_out<T>(deadline: &mut Option<Deadline>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
    match deadline.as_mut().is_some_and(|d| d.expired(cx)) {
        true => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
        false => Poll::Pending,
    }
}

impl Stream<tokio::net::TcpStream> {
    /// Waits until the peer sends something, and reads it: the peer answered.
    pub async fn answered(&mut self) -> io::Result<()> {
        loop {
            self.io.readable().await?;
            self.make_room();
            if try_fill(&self.io, &mut self.rbuf)? {
                return Ok(());
            }
        }
    }

    /// Writes what is queued, unless the peer answers first (a replica that refuses a
    /// body before reading it all): false then, with the answer's first bytes in the
    /// read buffer and what was not written still queued.
    pub async fn flush_unless_answered(&mut self) -> io::Result<bool> {
        let limit = self.deadline.as_ref().map_or(UPSTREAM_IDLE, |d| d.limit);
        let mut at = 0;
        self.make_room();
        while at < self.wbuf.len() {
            let Stream { io, rbuf, wbuf, .. } = self;
            let io = &*io;
            tokio::select! {
                biased;
                ready = io.readable() => {
                    ready?;
                    if try_fill(io, rbuf)? {
                        wbuf.drain(..at);
                        return Ok(false);
                    }
                }
                ready = io.writable() => {
                    ready?;
                    match io.try_write(&wbuf[at..]) {
                        Ok(n) => at += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                () = tokio::time::sleep(limit) => return Err(io::ErrorKind::TimedOut.into()),
            }
        }
        release(&mut self.wbuf);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stream with a 60 s deadline over an in-memory pipe, and the pipe's other end.
    fn timed_pair() -> (Stream<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(64);
        (Stream::new(a, 64).with_deadline(Duration::from_secs(60)), b)
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_sends_nothing_times_out_and_one_that_trickles_does_not_until_it_stops() {
        let (mut s, mut b) = timed_pair();
        let trickle = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                b.write_all(b"x").await.unwrap();
            }
            // Then silence, with the stream still open.
            tokio::time::sleep(Duration::from_secs(1000)).await;
            drop(b);
        });
        for _ in 0..5 {
            assert_eq!(s.fill().await.unwrap(), 1);
        }
        let err = s.fill().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(s.data(), b"xxxxx");
        trickle.abort();
    }

    #[tokio::test]
    async fn buffers_grown_by_one_large_message_are_given_back_once_empty() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut s = Stream::new(a, 1024);
        s.queue(&vec![b'x'; 1 << 20]);
        let (flushed, read) = tokio::join!(s.flush(), async {
            let mut got = vec![0u8; 1 << 20];
            b.read_exact(&mut got).await.map(|_| b)
        });
        flushed.unwrap();
        let mut b = read.unwrap();
        assert!(s.wbuf.capacity() <= SHRINK_ABOVE);
        b.write_all(&vec![b'y'; 200_000]).await.unwrap();
        while s.data().len() < 200_000 {
            s.fill().await.unwrap();
        }
        assert!(s.rbuf.capacity() > SHRINK_ABOVE);
        s.consume(200_000);
        b.write_all(b"z").await.unwrap();
        s.fill().await.unwrap();
        assert!(s.rbuf.capacity() <= SHRINK_ABOVE, "{}", s.rbuf.capacity());
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sent_a_byte_at_a_time_gets_one_limit_in_all() {
        let (mut s, mut b) = timed_pair();
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(25)).await;
                if b.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
        s.whole_wait();
        let mut got = 0;
        let err = loop {
            match s.fill().await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(got, 2, "bytes at 25 s and 50 s, and the limit at 60 s");
    }
}
