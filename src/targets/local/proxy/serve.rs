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
                let text = format!("{}\n", refusal.reason);
                http1::write_text(&mut client.wbuf, refusal.status, &text, true);
                let _ = client.shutdown().await;
                return;
            }
            Err(None) => return,
        };
        // The head moves out of the read buffer, which the body is read into next; its
        // fields' offsets hold in the copy.
        scratch.head.clear();
        scratch.head.extend_from_slice(&client.data()[..req.len]);
        client.consume(req.len);
        if exchange::one(&ctx, &mut client, &req, &mut scratch).await == Next::Close {
            let _ = client.shutdown().await;
            return;
        }
    }
}

/// The next request head: `Ok(None)` when the client closed between requests,
/// `Err(None)` when the connection failed or timed out, else the refusal to answer.
async fn read_request<Io>(
    client: &mut Stream<Io>,
    fields: &mut Fields,
) -> Result<Option<Request>, Option<Refusal>>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if !client.data().is_empty() {
            if let Some(req) = http1::parse_request(client.data(), fields).map_err(Some)? {
                return Ok(Some(req));
            }
        }
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
