//! The chunked transfer coding (RFC 9112 section 7.1), decoded a piece at a time as
//! bytes arrive, and encoded again. The decoder is strict: a size of hex digits that fits
//! in 64 bits, CRLF line ends and no control bytes in extensions. The proxy forwards only
//! what it decoded, re-encoded by [`encode`], so a peer never sees the client's framing:
//! a smuggling attempt that leans on one parser reading a chunk line differently from
//! another has nothing to lean on.

use std::ops::Range;

/// Longest chunk line (size and extensions) accepted.
const MAX_LINE: usize = 4096;
/// Largest trailer section accepted (trailers are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A chunk size that is not hex, or too large.
    #[error("invalid chunk size")]
    Size,
    /// A line that does not end in CRLF, or a control byte in an extension.
    #[error("invalid chunk line ending")]
    LineEnd,
    /// A chunk line or the trailers are too long.
    #[error("chunk line or trailers too long")]
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a size; `digits` so far.
    Size { digits: u8 },
    /// After the size: whitespace, then `;` and extensions, or CR.
    SizeWs,
    /// Extensions until CR.
    Ext,
    /// CR seen at the end of a size line.
    SizeLf,
    /// Inside a chunk's data.
    Data,
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// CR at the end of a trailer line.
    TrailerLf,
    /// CR of the final empty line.
    FinalLf,
    /// The body has ended.
    Done,
}

/// One step of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input used, framing and data.
    pub consumed: usize,
    /// Where in the input the data this step found is (empty when none).
    pub data: Range<usize>,
}

/// An incremental decoder of one chunked body.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// Data bytes left in the current chunk.
    remaining: u64,
    /// Bytes of the current chunk line, or of all trailers.
    line: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size { digits: 0 },
            remaining: 0,
            line: 0,
        }
    }
}

impl Decoder {
    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads framing from `input` up to and including the next run of data. A step
    /// with no data that consumed all the input needs more bytes.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, Error> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => match hex(b) {
                    Some(v) => {
                        if digits >= 16 {
                            return Err(Error::Size);
                        }
                        self.remaining = (self.remaining << 4) | u64::from(v);
                        self.state = State::Size { digits: digits + 1 };
                    }
                    None if digits == 0 => return Err(Error::Size),
                    None => {
                        self.state = State::SizeWs;
                        continue;
                    }
                },
                State::SizeWs => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Ext,
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(Error::Size),
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(Error::LineEnd),
                    b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                    _ => return Err(Error::LineEnd),
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Error::LineEnd);
                    }
                    self.line = 0;
                    self.state = match self.remaining {
                        0 => State::TrailerStart,
                        _ => State::Data,
                    };
                    i += 1;
                    continue;
                }
                State::Data => {
                    let n = (input.len() - i)
                        .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Step {
                        consumed: i + n,
                        data: i..i + n,
                    });
                }
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    _ => return Err(Error::LineEnd),
                },
                State::DataLf => match b {
                    b'\n' => {
                        self.state = State::Size { digits: 0 };
                        self.line = 0;
                        i += 1;
                        continue;
                    }
                    _ => return Err(Error::LineEnd),
                },
                State::TrailerStart => match b {
                    b'\r' => self.state = State::FinalLf,
                    b'\n' => return Err(Error::LineEnd),
                    _ => self.state = State::Trailer,
                },
                State::Trailer => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(Error::LineEnd),
                    _ => {}
                },
                State::TrailerLf => match b {
                    b'\n' => self.state = State::TrailerStart,
                    _ => return Err(Error::LineEnd),
                },
                State::FinalLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(Step {
                            consumed: i + 1,
                            data: 0..0,
                        });
                    }
                    _ => return Err(Error::LineEnd),
                },
                State::Done => break,
            }
            i += 1;
            self.line += 1;
            let limit = match self.state {
                State::TrailerStart | State::Trailer | State::TrailerLf | State::FinalLf => {
                    MAX_TRAILERS
                }
                _ => MAX_LINE,
            };
            if self.line > limit {
                return Err(Error::TooLong);
            }
        }
        Ok(Step {
            consumed: i,
            data: 0..0,
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `data` as one chunk (nothing for empty data: an empty chunk ends the body).
pub fn encode(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let mut n = data.len();
    let mut at = digits.len();
    while n > 0 || at == digits.len() {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with no trailers.
pub const END: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; the data, or the error.
    fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), Error> {
        let mut d = Decoder::default();
        let (mut out, mut at) = (Vec::new(), 0);
        let mut pending: Vec<u8> = Vec::new();
        for p in input.chunks(piece) {
            pending.extend_from_slice(p);
            loop {
                let s = d.step(&pending)?;
                out.extend_from_slice(&pending[s.data.clone()]);
                pending.drain(..s.consumed);
                at += s.consumed;
                if d.is_done() || (s.data.is_empty() && pending.is_empty()) {
                    break;
                }
            }
            if d.is_done() {
                break;
            }
        }
        assert!(d.is_done(), "not done after {at} bytes");
        Ok((out, at))
    }

    #[test]
    fn decodes_whatever_the_pieces_and_stops_at_the_end() {
        let body = b"4\r\nWiki\r\n5;name=\"v\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nGET /next";
        for piece in [1, 2, 3, 7, 1000] {
            let (data, used) = decode(body, piece).unwrap();
            assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.", "piece {piece}");
            assert_eq!(&body[used..], b"GET /next", "piece {piece}");
        }
    }

    #[test]
    fn encodes_what_it_decodes() {
        let mut out = Vec::new();
        encode(&mut out, &[b'x'; 300]);
        encode(&mut out, b"");
        encode(&mut out, b"yz");
        out.extend_from_slice(END);
        assert!(out.starts_with(b"12c\r\n"));
        let (data, used) = decode(&out, 5).unwrap();
        assert_eq!(data.len(), 302);
        assert_eq!(used, out.len());
    }

    #[test]
    fn rejects_what_parsers_read_differently() {
        for bad in [
            &b"4\nWiki\r\n0\r\n\r\n"[..],    // bare LF after the size
            b"4\r\nWiki\n0\r\n\r\n",         // bare LF after the data
            b"4\r\nWikiX\r\n0\r\n\r\n",      // data longer than its size
            b"-4\r\nWiki\r\n0\r\n\r\n",      // sign
            b"\r\n",                         // no size
            b"0x4\r\nWiki\r\n0\r\n\r\n",     // prefix
            b"4;a\x00\r\nWiki\r\n0\r\n\r\n", // control byte in an extension
            b"10000000000000000\r\n",        // more than 64 bits
            b"0\r\nX: y\n\r\n",              // bare LF in the trailers
        ] {
            assert!(
                decode(bad, 1000).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "x".repeat(MAX_LINE));
        assert_eq!(decode(long.as_bytes(), 100).unwrap_err(), Error::TooLong);
    }
}
