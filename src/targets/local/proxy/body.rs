//! Message bodies as the proxy passes them: read a piece at a time by their framing and
//! streamed on, never held whole. Only a request body that may have to be sent twice (to
//! a mirror, or again on a retry) is buffered, and only up to [`REPLAY_LIMIT`]; a longer
//! one streams on and is neither mirrored nor retried, as Envoy does past its buffer
//! limit. A chunked body is decoded and chunked again by the proxy (see
//! [`super::http1::chunked`]).

use super::http1::{chunked, Framing};
use super::stream::Stream;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest request body kept for a mirror or a retry: Envoy's default per-connection
/// buffer limit (1 MiB).
pub const REPLAY_LIMIT: usize = 1 << 20;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the socket failed.
    #[error("reading the body: {0}")]
    Read(#[from] io::Error),
    /// The connection ended before the body did.
    #[error("the connection closed in the middle of the body")]
    Truncated,
    /// The chunked coding is broken.
    #[error("{0}")]
    Chunked(#[from] chunked::Error),
}

/// Reads one body by its framing.
#[derive(Debug, Clone)]
pub struct Reader {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Length(u64),
    Chunked(chunked::Decoder),
    UntilClose,
    Done,
}

impl Reader {
    /// A reader of a body framed by `framing`.
    pub fn new(framing: Framing) -> Reader {
        Reader {
            kind: match framing {
                Framing::Empty => Kind::Done,
                Framing::Length(n) => Kind::Length(n),
                Framing::Chunked => Kind::Chunked(chunked::Decoder::default()),
                Framing::UntilClose => Kind::UntilClose,
            },
        }
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        matches!(self.kind, Kind::Done)
    }

    /// The next piece of the body, read from `from` as needed; `None` at its end. An
    /// empty piece says the framing after a chunk was taken and the next read may wait:
    /// a relay writes out what it holds first, or a chunk would wait for the next one.
    pub async fn next<'a, Io: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        from: &'a mut Stream<Io>,
    ) -> Result<Option<&'a [u8]>, Error> {
        loop {
            if from.data().is_empty() && !self.is_done() && from.fill().await? == 0 {
                if matches!(self.kind, Kind::UntilClose) {
                    self.kind = Kind::Done;
                    return Ok(None);
                }
                return Err(Error::Truncated);
            }
            let n = match &mut self.kind {
                Kind::Done => return Ok(None),
                Kind::UntilClose => from.data().len(),
                Kind::Length(left) => {
                    let n = (from.data().len() as u64).min(*left);
                    *left -= n;
                    if *left == 0 {
                        self.kind = Kind::Done;
                    }
                    n as usize
                }
                Kind::Chunked(d) => {
                    let step = d.step(from.data())?;
                    let done = d.is_done();
                    from.consume(step.consumed);
                    if done {
                        self.kind = Kind::Done;
                    }
                    if step.data.is_empty() {
                        if from.data().is_empty() && !done {
                            return Ok(Some(&[]));
                        }
                        continue;
                    }
                    // The data ends where the consumed bytes do.
                    return Ok(Some(from.taken(step.consumed - step.data.start)));
                }
            };
            from.consume(n);
            return Ok(Some(from.taken(n)));
        }
    }
}

/// Which side of a relay failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading the body from its sender.
    #[error("{0}")]
    From(Error),
    /// Writing it on.
    #[error("writing the body: {0}")]
    To(io::Error),
}

/// Passes the rest of a body from `from` to `to`, chunked again when `chunked`, after
/// whatever `to` has queued (a head).
pub async fn relay<A, B>(
    reader: &mut Reader,
    from: &mut Stream<A>,
    to: &mut Stream<B>,
    chunked: bool,
) -> Result<(), RelayError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let piece = match reader.next(from).await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => return Err(RelayError::From(e)),
        };
        if chunked {
            chunked::encode(&mut to.wbuf, piece);
        } else if to.wbuf.is_empty() && !piece.is_empty() {
            to.send(piece).await.map_err(RelayError::To)?;
            continue;
        } else {
            to.queue(piece);
        }
        // Written before the next read could wait; what is already read (say, the last
        // chunk) goes out with it.
        if from.data().is_empty() {
            to.flush().await.map_err(RelayError::To)?;
        }
    }
    if chunked {
        to.queue(chunked::END);
    }
    to.flush().await.map_err(RelayError::To)
}

/// Reads and drops the rest of a body.
pub async fn drain<Io: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut Reader,
    from: &mut Stream<Io>,
) -> Result<(), Error> {
    while reader.next(from).await?.is_some() {}
    Ok(())
}

/// A request body on its way to a backend.
#[derive(Debug)]
pub enum RequestBody {
    /// Wholly in memory (maybe empty): can be sent again.
    Buffered(Vec<u8>),
    /// Streams from the client as it arrives, after `head`, read while trying to buffer.
    Streaming {
        /// Bytes already read.
        head: Vec<u8>,
    },
}

impl RequestBody {
    /// Reads the body `reader` frames from `from`, into memory up to [`REPLAY_LIMIT`];
    /// past that, what was read is kept and the rest streams.
    pub async fn buffer<Io: AsyncRead + AsyncWrite + Unpin>(
        reader: &mut Reader,
        from: &mut Stream<Io>,
    ) -> Result<RequestBody, Error> {
        let mut buf = Vec::new();
        while let Some(piece) = reader.next(from).await? {
            buf.extend_from_slice(piece);
            if buf.len() > REPLAY_LIMIT {
                return Ok(RequestBody::Streaming { head: buf });
            }
        }
        Ok(RequestBody::Buffered(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn read_all(framing: Framing, wire: &'static [u8], piece: usize) -> (Vec<u8>, Vec<u8>) {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            for p in wire.chunks(piece) {
                b.write_all(p).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut s = Stream::new(a, 16);
        let mut r = Reader::new(framing);
        let mut body = Vec::new();
        while let Some(p) = r.next(&mut s).await.unwrap() {
            body.extend_from_slice(p);
        }
        (body, s.data().to_vec())
    }

    #[tokio::test]
    async fn bodies_end_where_their_framing_says_and_the_next_message_stays() {
        for piece in [1, 3, 1000] {
            let (body, rest) = read_all(Framing::Length(5), b"hello GET /", piece).await;
            assert_eq!(body, b"hello");
            assert!(b" GET /".starts_with(&rest), "{rest:?}");
            let (body, _) =
                read_all(Framing::Chunked, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", piece).await;
            assert_eq!(body, b"abcde");
        }
    }
}
