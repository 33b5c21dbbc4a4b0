//! One request through the proxy, the executor of the decisions `routing` and `http1`
//! make: where the request goes, its body, the exchange with a replica (sent once more,
//! elsewhere, when it cannot have been answered), and the response back to the client.

use super::body::{self, Reader, RelayError, RequestBody};
use super::http1::{self, BodyOut, Fields, Framing, Request};
use super::stream::Stream;
use super::upstream::{self, Pool, Upstream};
use super::{mix, pick, routing, service_def, unserved, Conn};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

/// The interim response to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What becomes of the client's connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close it.
    Close,
}

/// Buffers of one client connection, reused from request to request.
#[derive(Default)]
pub(super) struct Scratch {
    /// The request head, copied out of the read buffer so that its body can be read.
    pub head: Vec<u8>,
    /// The request's fields, over `head`.
    pub fields: Fields,
    /// The response's fields, over the replica connection's read buffer.
    response: Fields,
}

/// Why an attempt got no response.
enum Failure {
    /// The client's body broke off, or broke its framing.
    Client(body::Error),
    /// The replica did not answer; `again` when sending the request elsewhere is safe.
    Backend { error: upstream::Error, again: bool },
}

/// Forwards the request whose head is in `scratch` and answers the client.
pub(super) async fn one<Io>(
    ctx: &Conn,
    client: &mut Stream<Io>,
    req: &Request,
    scratch: &mut Scratch,
) -> Next
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let (shared, port) = (&*ctx.shared, ctx.port);
    let started = Instant::now();
    let now = crate::util::time::unix_now() as u64;
    let (ns, name) = (ctx.key.0.as_str(), ctx.key.1.as_str());
    let Scratch {
        head,
        fields,
        response,
    } = scratch;
    let head: &[u8] = head;
    let (route, own_def) = ctx.current();
    // Without a split, the Service serves its own endpoints: no roll, no allocation.
    let (backend, mirror, set_cookie) = match &route {
        None => (name, None, None),
        Some(route) => {
            let rolls = mix(shared.seq.fetch_add(1, Ordering::Relaxed) ^ shared.seed);
            let header = |h: &str| {
                let v = fields.get(head, h)?;
                std::str::from_utf8(v).ok().map(str::to_string)
            };
            let d = routing::choose(
                route,
                &header,
                (rolls % 100) as u32,
                ((rolls >> 32) % 100) as u32,
            );
            (d.backend, d.mirror, d.set_cookie)
        }
    };
    let mut reader = Reader::new(req.framing);
    let mut body = RequestBody::Buffered(Vec::new());
    if req.framing != Framing::Empty {
        body = if mirror.is_some() || req.idempotent {
            if req.expect_continue && client.data().is_empty() {
                client.queue(CONTINUE);
            }
            if client.flush().await.is_err() {
                return Next::Close;
            }
            match RequestBody::buffer(&mut reader, client).await {
                Ok(b) => b,
                Err(_) => {
                    let text = "cannot read request body\n";
                    return answer(client, 400, text, true).await;
                }
            }
        } else {
            RequestBody::Streaming { head: Vec::new() }
        };
    }
    // With the body unread, the connection cannot go on to the next request.
    let close = |reader: &Reader| !req.keep_alive || !reader.is_done();
    let def = match backend == name {
        true => own_def,
        false => service_def(shared, ns, backend),
    };
    let target = (backend, def.as_deref());
    let (mut host_port, mut recorder) = match pick(shared, ns, target, port) {
        Ok(p) => p,
        Err(msg) => {
            // Counted against the workload, or a canary with no ready pod would look
            // healthy to its own success rate.
            unserved(shared, ns, target).record(503, started.elapsed(), now);
            return answer(client, 503, &format!("{msg}\n"), close(&reader)).await;
        }
    };
    // A body too long to buffer is not mirrored (see `body`).
    if let (Some(m), RequestBody::Buffered(b)) = (mirror, &body) {
        let mdef = service_def(shared, ns, m);
        if let Ok((mport, _)) = pick(shared, ns, (m, mdef.as_deref()), port) {
            let mut wire = Vec::with_capacity(head.len() + b.len() + 64);
            http1::write_request(&mut wire, head, req, fields, mport, body_out(req, &body));
            wire.extend_from_slice(b);
            tokio::spawn(mirror_to(ctx.pool.clone(), mport, wire, req.head));
        }
    }
    let mut retried = false;
    let (mut up, resp) = loop {
        let sent = Attempt {
            pool: &ctx.pool,
            head,
            req,
            fields,
        }
        .run(client, &mut body, &mut reader, host_port, response)
        .await;
        let (error, again) = match sent {
            Ok(answered) => break answered,
            // Nothing has gone to the client yet: a framing error gets its answer.
            Err(Failure::Client(body::Error::Chunked(e))) => {
                return answer(client, 400, &format!("malformed request body: {e}\n"), true).await
            }
            Err(Failure::Client(_)) => return Next::Close,
            Err(Failure::Backend { error, again }) => (error, again),
        };
        // A replica that just went away: once more, on whichever ready endpoint is next.
        let next = (again && !retried)
            .then(|| pick(shared, ns, target, port).ok())
            .flatten();
        let Some(next) = next else {
            recorder.record(502, started.elapsed(), now);
            let text = format!(
                "backend {ns}/{backend} ({}) failed: {error}\n",
                recorder.deployment()
            );
            return answer(client, 502, &text, close(&reader)).await;
        };
        retried = true;
        (host_port, recorder) = next;
    };
    recorder.record(resp.status, started.elapsed(), now);
    let out = http1::response_out(req, resp.framing);
    http1::write_response(
        &mut client.wbuf,
        up.io.data(),
        &resp,
        response,
        out,
        set_cookie.as_deref(),
    );
    up.io.consume(resp.len);
    let mut from_replica = Reader::new(resp.framing);
    match body::relay(&mut from_replica, &mut up.io, client, out.chunked).await {
        Ok(()) if resp.keep_alive && up.io.data().is_empty() => ctx.pool.put(up),
        Ok(()) => {}
        // The head has gone out: all that is left is to end the connection.
        Err(_) => return Next::Close,
    }
    match out.close || close(&reader) {
        true => Next::Close,
        false => Next::KeepAlive,
    }
}

/// The framing the request goes on with.
fn body_out(req: &Request, body: &RequestBody) -> BodyOut {
    match (body, req.framing) {
        (RequestBody::Buffered(b), _) if b.is_empty() => BodyOut::Empty,
        (RequestBody::Buffered(b), _) => BodyOut::Length(b.len() as u64),
        (RequestBody::Streaming { .. }, Framing::Length(n)) => BodyOut::Length(n),
        (RequestBody::Streaming { .. }, _) => BodyOut::Chunked,
    }
}

/// Answers with the proxy's own text.
async fn answer<Io>(client: &mut Stream<Io>, status: u16, text: &str, close: bool) -> Next
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    http1::write_text(&mut client.wbuf, status, text, close);
    match client.flush().await {
        Ok(()) if !close => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// What one attempt sends.
struct Attempt<'a> {
    pool: &'a Pool,
    head: &'a [u8],
    req: &'a Request,
    fields: &'a Fields,
}

impl Attempt<'_> {
    /// Sends the request to the replica on `host_port` and reads its response head.
    async fn run<Io>(
        &self,
        client: &mut Stream<Io>,
        body: &mut RequestBody,
        reader: &mut Reader,
        host_port: u16,
        response: &mut Fields,
    ) -> Result<(Upstream, http1::Response), Failure>
    where
        Io: AsyncRead + AsyncWrite + Unpin,
    {
        let req = self.req;
        // Not connected, nothing left: any method may go elsewhere.
        let mut up = upstream::get(self.pool, host_port)
            .await
            .map_err(|error| Failure::Backend { error, again: true })?;
        let out = body_out(req, body);
        http1::write_request(&mut up.io.wbuf, self.head, req, self.fields, host_port, out);
        let replayable = matches!(body, RequestBody::Buffered(_));
        match body {
            RequestBody::Buffered(b) => {
                if let Err(error) = up.send(b).await {
                    let again = req.idempotent;
                    return Err(Failure::Backend { error, again });
                }
            }
            RequestBody::Streaming { head } => {
                let chunked = out == BodyOut::Chunked;
                if chunked {
                    http1::chunked::encode(&mut up.io.wbuf, head);
                } else {
                    up.io.queue(head);
                }
                // The body leaves the client now: it cannot be sent twice.
                *head = Vec::new();
                if req.expect_continue && client.data().is_empty() {
                    client.queue(CONTINUE);
                    let flushed = client.flush().await;
                    flushed.map_err(|e| Failure::Client(e.into()))?;
                }
                match body::relay(reader, client, &mut up.io, chunked).await {
                    Ok(()) => {}
                    Err(RelayError::From(e)) => return Err(Failure::Client(e)),
                    Err(RelayError::To(source)) => {
                        let port = host_port;
                        let error = upstream::Error::Io { port, source };
                        return Err(Failure::Backend {
                            error,
                            again: false,
                        });
                    }
                }
            }
        }
        match up.response(response, req.head).await {
            Ok(resp) => Ok((up, resp)),
            Err(error) => {
                let again = replayable && req.idempotent && error.unanswered();
                Err(Failure::Backend { error, again })
            }
        }
    }
}

/// Sends a copy of a request to a mirror and drops its response.
async fn mirror_to(pool: Arc<Pool>, port: u16, wire: Vec<u8>, head: bool) {
    let Ok(mut up) = upstream::get(&pool, port).await else {
        return;
    };
    if up.send(&wire).await.is_err() {
        return;
    }
    let mut fields = Fields::default();
    let Ok(resp) = up.response(&mut fields, head).await else {
        return;
    };
    up.io.consume(resp.len);
    let mut reader = Reader::new(resp.framing);
    if body::drain(&mut reader, &mut up.io).await.is_ok()
        && resp.keep_alive
        && up.io.data().is_empty()
    {
        pool.put(up);
    }
}
