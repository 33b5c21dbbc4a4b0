//! The load generator of `bench proxy`: a bare HTTP/1.1 keep-alive client, so the
//! client costs the same whatever it talks to and stays small next to the proxies on a
//! 2-core machine. Throughput runs are closed loops on one thread (epoll, as wrk does);
//! latency runs are open loops with one thread per connection, each request timed from
//! the moment the schedule says it should have been sent, so a slow response delays and
//! counts against the requests queued behind it (no coordinated omission).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request every run sends: small, like the health and version calls that dominate
/// service-to-service traffic.
const REQUEST: &[u8] =
    b"GET /version HTTP/1.1\r\nHost: bench\r\nUser-Agent: gitcanary-bench\r\n\r\n";

/// What a run counted.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// 2xx responses.
    pub ok: u64,
    /// Other responses, transport errors and reconnects.
    pub failed: u64,
    /// From the first request to the last response.
    pub elapsed: Duration,
    /// Latency of every answered request from its intended send time (open loop only).
    pub latencies: Vec<Duration>,
}

impl Outcome {
    /// Counts one exchange (`None`: a transport error); whether the connection stays.
    fn count(&mut self, r: Option<&Response>) -> bool {
        match r {
            Some(r) if (200..300).contains(&r.status) => self.ok += 1,
            _ => self.failed += 1,
        }
        r.is_some_and(|r| !r.close)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The end of a chunked body starting at `pos`, once all of it is in `buf`.
fn chunked_end(buf: &[u8], mut pos: usize) -> Result<Option<usize>, &'static str> {
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + eol]).map_err(|_| "bad chunk size")?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| "bad chunk size")?;
        pos += eol + 2;
        if size == 0 {
            // No trailers: the last chunk ends with one empty line.
            return Ok((buf.len() >= pos + 2).then_some(pos + 2));
        }
        pos += size + 2;
        if pos > buf.len() {
            return Ok(None);
        }
    }
}

/// A complete response at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Its length, head and body.
    pub len: usize,
    /// The server closes the connection after it (`Connection: close`, as nginx says
    /// after `keepalive_requests`): not a failure, the client reconnects.
    pub close: bool,
}

/// The first response in `buf`, once it is complete.
pub fn complete(buf: &[u8]) -> Result<Option<Response>, &'static str> {
    let Some(head_end) = find(buf, b"\r\n\r\n").map(|p| p + 4) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| "bad length")?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        }
    }
    let end = if chunked {
        chunked_end(buf, head_end)?
    } else {
        let end = head_end + length.unwrap_or(0);
        (buf.len() >= end).then_some(end)
    };
    Ok(end.map(|len| Response { status, len, close }))
}

fn io_error(msg: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Takes from `buf` the response `complete` finds.
fn take(buf: &mut Vec<u8>) -> std::io::Result<Option<Response>> {
    let r = complete(buf).map_err(io_error)?;
    if let Some(r) = r {
        buf.drain(..r.len);
    }
    Ok(r)
}

async fn roundtrip_async(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Response> {
    s.write_all(REQUEST).await?;
    loop {
        if let Some(r) = take(buf)? {
            return Ok(r);
        }
        if s.read_buf(buf).await? == 0 {
            return Err(io_error("connection closed"));
        }
    }
}

fn roundtrip(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Response> {
    s.write_all(REQUEST)?;
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(r) = take(buf)? {
            return Ok(r);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io_error("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connect_async(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// `requests` requests as fast as `conns` keep-alive connections answer them, the
/// connections spread over `addrs` in turn.
pub async fn closed(addrs: &[SocketAddr], conns: usize, requests: u64) -> Outcome {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for k in 0..conns {
        let (addr, issued) = (addrs[k % addrs.len()], issued.clone());
        set.spawn(async move {
            let mut out = Outcome::default();
            let mut buf = Vec::with_capacity(4096);
            let mut conn = None;
            while issued.fetch_add(1, Ordering::Relaxed) < requests {
                let s = match conn.as_mut() {
                    Some(s) => s,
                    None => match connect_async(addr).await {
                        Ok(s) => conn.insert(s),
                        Err(_) => {
                            out.failed += 1;
                            continue;
                        }
                    },
                };
                let r = roundtrip_async(s, &mut buf).await;
                if !out.count(r.as_ref().ok()) {
                    conn = None;
                    buf.clear();
                }
            }
            out
        });
    }
    let mut total = Outcome::default();
    while let Some(r) = set.join_next().await {
        let o = r.unwrap_or_default();
        total.ok += o.ok;
        total.failed += o.failed;
    }
    total.elapsed = started.elapsed();
    total
}

fn connect(addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// One connection's share of an open-loop run: requests `k`, `k + conns`, … of the
/// schedule that sends request `i` at `start + i / rate`.
fn open_connection(
    addr: SocketAddr,
    k: usize,
    conns: usize,
    plan: (u64, f64),
    start: Instant,
) -> Outcome {
    let (requests, rate) = plan;
    // Wake from sleep within microseconds, not the default 50 µs slack: the lateness
    // of this thread would otherwise count as latency.
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let mut out = Outcome::default();
    let mut buf = Vec::with_capacity(4096);
    let mut conn = connect(addr).ok();
    for i in (k as u64..requests).step_by(conns) {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = intended.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match connect(addr) {
                Ok(s) => conn.insert(s),
                Err(_) => {
                    out.failed += 1;
                    continue;
                }
            },
        };
        let r = roundtrip(s, &mut buf);
        if matches!(
            r,
            Ok(Response {
                status: 200..=299,
                ..
            })
        ) {
            out.latencies.push(intended.elapsed());
        }
        if !out.count(r.as_ref().ok()) {
            conn = None;
            buf.clear();
        }
    }
    out
}

/// `requests` requests at `rate` per second over `conns` connections (spread over
/// `addrs`), each timed from its intended send time.
pub fn open(addrs: &[SocketAddr], conns: usize, requests: u64, rate: f64) -> Outcome {
    // Every thread connects before the schedule starts.
    let start = Instant::now() + Duration::from_millis(50);
    let handles: Vec<_> = (0..conns)
        .map(|k| {
            let addr = addrs[k % addrs.len()];
            std::thread::spawn(move || open_connection(addr, k, conns, (requests, rate), start))
        })
        .collect();
    let mut total = Outcome::default();
    for h in handles {
        let o = h.join().unwrap_or_default();
        total.ok += o.ok;
        total.failed += o.failed;
        total.latencies.extend(o.latencies);
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    total
}

/// The `q` quantile (0..=1) of sorted latencies, in µs.
pub fn quantile_us(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx].as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_end_where_their_length_or_last_chunk_says() {
        let fixed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1";
        let ok = Response {
            status: 200,
            len: 43,
            close: false,
        };
        assert_eq!(complete(fixed), Ok(Some(ok)));
        assert_eq!(complete(&fixed[..40]), Ok(None));
        let chunked =
            b"HTTP/1.1 502 Bad Gateway\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let bad = Response {
            status: 502,
            len: chunked.len(),
            close: false,
        };
        assert_eq!(complete(chunked), Ok(Some(bad)));
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(complete(closing).unwrap().unwrap().close);
        assert_eq!(complete(&chunked[..chunked.len() - 1]), Ok(None));
        assert!(complete(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[test]
    fn quantiles_pick_the_rank_that_covers_the_share() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile_us(&lat, 0.5), 50.0);
        assert_eq!(quantile_us(&lat, 0.99), 99.0);
        assert!(quantile_us(&[], 0.5).is_nan());
    }
}
