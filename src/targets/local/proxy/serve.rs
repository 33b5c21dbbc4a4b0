//! A client connection to a Service: request heads read and checked one after another
//! (pipelined ones in order), each forwarded by [`exchange::one`], until the client
//! closes, asks to close, or stops making progress.

use super::exchange::{self, Next, Scratch};
use super::http1::{self, Fields, Refusal, Request};
use super::stream::{Stream, CLIENT_IDLE};
use super::upstream::Pool;
use super::{Conn, Key, Looked, Shared};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};

/// Read buffer of a client connection to begin with.
const CLIENT_BUFFER: usize = 8 * 1024;

/// Serves one client connection, on the worker it was handed to.
pub(super) async fn serve_connection<Io>(
    io: Io,
    shared: Arc<Shared>,
    key: Arc<Key>,
    port: u16,
    pool: Arc<Pool>,
) where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let ctx = Conn {
        shared,
        key,
        port,
        pool,
        looked: Mutex::new(Looked {
            // No generation yet: the first request looks up.
            generation: u64::MAX,
            route: None,
            def: None,
        }),
    };
    let mut client = Stream::new(io, CLIENT_BUFFER).with_deadline(CLIENT_IDLE);
    let mut scratch = Scratch::default();
    loop {
        let req = match read_request(&mut client, &mut scratch.fields).await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(Some(refusal)) => {
                client.each_wait();
                let text = format!("{}\n", refusal.reason);
                http1::write_text(&mut client.wbuf, refusal.status, &text, true, false);
                return close(client, true).await;
            }
            Err(None) => return,
        };
        // The head moves out of the read buffer, which the body is read into next; its
        // fields' offsets hold in the copy.
        scratch.head.clear();
        scratch.head.extend_from_slice(&client.data()[..req.len]);
        client.consume(req.len);
        match exchange::one(&ctx, &mut client, &req, &mut scratch).await {
            Next::KeepAlive => {}
            // Pipelined requests not served are unread bytes too.
            Next::Close => {
                let unread = !client.data().is_empty();
                return close(client, unread).await;
            }
            Next::CloseUnread => return close(client, true).await,
        }
    }
}

/// Ends the connection after what is queued. With what the client sent still unread,
/// its write side is closed first and its bytes read and dropped for a while
/// ([`LINGER`], at most [`LINGER_BYTES`]): closing a socket with unread bytes sends a
/// reset, which can discard the response before the client has read it (nginx's
/// `lingering_close`).
async fn close<Io>(mut client: Stream<Io>, unread: bool)
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    if client.shutdown().await.is_err() || !unread {
        return;
    }
    let drain = async {
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match client.fill().await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
            let all = client.data().len();
            client.consume(all);
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How long unread request bytes are read and dropped before a close.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// How many at most.
const LINGER_BYTES: usize = 1 << 20;

/// The next request head: `Ok(None)` when the client closed between requests,
/// `Err(None)` when the connection failed or timed out, else the refusal to answer.
async fn read_request<Io>(
    client: &mut Stream<Io>,
    fields: &mut Fields,
) -> Result<Option<Request>, Option<Refusal>>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    // The whole head, and the wait for it, within the deadline.
    client.whole_wait();
    let mut scanned: usize = 0;
    loop {
        // Empty lines before a request line are ignored (RFC 9112 section 2.2), here
        // rather than by the parser: parsing them again on every read would cost
        // quadratic time for a client that trickles line breaks.
        let blank = client
            .data()
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        client.consume(blank);
        scanned = scanned.saturating_sub(blank);
        let data = client.data();
        if http1::head_ends(data, scanned) || data.len() >= http1::MAX_HEAD {
            let parsed = http1::parse_request(data, fields).map_err(Some)?;
            if let Some(req) = parsed {
                client.each_wait();
                return Ok(Some(req));
            }
        }
        scanned = client.data().len();
        match client.fill().await {
            Ok(0) if client.data().is_empty() => return Ok(None),
            Ok(0) => {
                return Err(Some(Refusal {
                    status: 400,
                    reason: "incomplete request head",
                }))
            }
            Ok(_) => {}
            Err(_) => return Err(None),
        }
    }
}
