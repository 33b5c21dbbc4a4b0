//! One request through the proxy, the executor of the decisions `routing` and `http1`
//! make: where the request goes, its body, the exchange with a replica (sent once more,
//! elsewhere, when it cannot have been answered), and the response back to the client.

use super::body::{self, Reader, RequestBody};
use super::http1::{self, BodyOut, Fields, Framing, Request};
use super::stream::Stream;
use super::upstream::{self, Pool, Upstream};
use super::{mirror, mix, pick, routing, service_def, unserved, Conn};
use std::sync::atomic::Ordering;
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
    /// Close it, with the request body unread: it is read and dropped a little while
    /// first, or the client's stack could answer its next bytes with a reset that
    /// discards the response before the client reads it.
    CloseUnread,
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
    let (backend, mirror, set_cookie) = decide(ctx, route.as_deref(), head, fields);
    let mut reader = Reader::new(req.framing);
    let mut body = match request_body(client, req, mirror.is_some(), &mut reader).await {
        Ok(body) => body,
        Err(next) => return next,
    };
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
            let how = after(req, &reader);
            return answer(client, 503, &format!("{msg}\n"), how, req.head).await;
        }
    };
    if let (Some(m), RequestBody::Buffered(b)) = (mirror, &body) {
        let mdef = service_def(shared, ns, m);
        if let Ok((mport, _)) = pick(shared, ns, (m, mdef.as_deref()), port) {
            let mut wire = Vec::with_capacity(head.len() + b.len() + 64);
            http1::write_request(&mut wire, head, req, fields, mport, body_out(req, &body));
            wire.extend_from_slice(b);
            mirror::spawn(ctx.pool.clone(), mport, wire, req.head);
        }
    }
    let attempt = Attempt {
        pool: &ctx.pool,
        head,
        req,
        fields,
    };
    let mut retried = false;
    let (mut up, resp, whole) = loop {
        let sent = attempt
            .run(client, &mut body, &mut reader, host_port, response)
            .await;
        let (error, again) = match sent {
            Ok(answered) => break answered,
            // Nothing has gone to the client yet: a framing error gets its answer.
            Err(Failure::Client(body::Error::Chunked(e))) => {
                return malformed_body(client, &e, req.head).await;
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
            return answer(client, 502, &text, after(req, &reader), req.head).await;
        };
        retried = true;
        (host_port, recorder) = next;
    };
    recorder.record(resp.status, started.elapsed(), now);
    let out = http1::response_out(req, resp.framing, reader.is_done());
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
        // A replica that answered before it had the whole body may still expect the
        // rest: its connection is not used again.
        Ok(()) if whole && resp.keep_alive && up.io.data().is_empty() => ctx.pool.put(up),
        Ok(()) => {}
        // The head has gone out: all that is left is to end the connection.
        Err(_) => return Next::Close,
    }
    match (out.close, after(req, &reader)) {
        (true, Next::KeepAlive) => Next::Close,
        (_, how) => how,
    }
}

/// Where the request goes: its backend Service, a mirror, and a `Set-Cookie` to add.
/// Without a split, the Service serves its own endpoints: no roll, no allocation.
fn decide<'a>(
    ctx: &'a Conn,
    route: Option<&'a routing::Route>,
    head: &[u8],
    fields: &Fields,
) -> (&'a str, Option<&'a str>, Option<String>) {
    let Some(route) = route else {
        return (ctx.key.1.as_str(), None, None);
    };
    let shared = &ctx.shared;
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

/// The request body: read into memory when it may be sent twice (mirrored, or retried
/// when idempotent), else left to stream. `Err` holds what becomes of the connection
/// when it could not be read.
async fn request_body<Io>(
    client: &mut Stream<Io>,
    req: &Request,
    mirrored: bool,
    reader: &mut Reader,
) -> Result<RequestBody, Next>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    if req.framing == Framing::Empty {
        return Ok(RequestBody::Buffered(Vec::new()));
    }
    if !mirrored && !req.idempotent {
        return Ok(RequestBody::Streaming { head: Vec::new() });
    }
    if req.expect_continue && client.data().is_empty() {
        client.queue(CONTINUE);
    }
    if client.flush().await.is_err() {
        return Err(Next::Close);
    }
    match RequestBody::buffer(reader, client).await {
        Ok(b) => Ok(b),
        Err(body::Error::Chunked(e)) => Err(malformed_body(client, &e, req.head).await),
        Err(_) => Err(Next::Close),
    }
}

/// What becomes of the connection after `req`, as far as the request goes: with its
/// body unread, it cannot go on to the next request.
fn after(req: &Request, reader: &Reader) -> Next {
    match (reader.is_done(), req.keep_alive) {
        (false, _) => Next::CloseUnread,
        (true, false) => Next::Close,
        (true, true) => Next::KeepAlive,
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

/// Answers with the proxy's own text (its length only, to HEAD); then `how`.
async fn answer<Io>(client: &mut Stream<Io>, status: u16, text: &str, how: Next, head: bool) -> Next
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    http1::write_text(&mut client.wbuf, status, text, how != Next::KeepAlive, head);
    match client.flush().await {
        Ok(()) => how,
        Err(_) => Next::Close,
    }
}

/// The 400 for a chunked body that does not decode; the rest of it is not read.
async fn malformed_body<Io>(
    client: &mut Stream<Io>,
    e: &super::http1::chunked::Error,
    head: bool,
) -> Next
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let text = format!("malformed request body: {e}\n");
    answer(client, 400, &text, Next::CloseUnread, head).await
}

/// What one attempt sends.
struct Attempt<'a> {
    pool: &'a Pool,
    head: &'a [u8],
    req: &'a Request,
    fields: &'a Fields,
}

impl Attempt<'_> {
    /// Sends the request to the replica on `host_port` and reads its response head;
    /// also whether the replica got the whole body before it answered.
    async fn run<Io>(
        &self,
        client: &mut Stream<Io>,
        body: &mut RequestBody,
        reader: &mut Reader,
        host_port: u16,
        response: &mut Fields,
    ) -> Result<(Upstream, http1::Response, bool), Failure>
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
        let io_error = |source| upstream::Error::Io {
            port: host_port,
            source,
        };
        let whole = match body {
            RequestBody::Buffered(b) if b.is_empty() => {
                // The common case, a request with no body: one write.
                up.flush().await.map_err(|error| Failure::Backend {
                    error,
                    again: req.idempotent,
                })?;
                true
            }
            RequestBody::Buffered(b) => {
                up.io.queue(b);
                flush_watching(&mut up, &mut Watch::default())
                    .await
                    .map_err(|e| Failure::Backend {
                        error: io_error(e),
                        again: req.idempotent,
                    })?
            }
            RequestBody::Streaming { head } => {
                // Nothing read yet: the client was not asked for the body either.
                let unasked = head.is_empty();
                let chunked = out == BodyOut::Chunked;
                if chunked {
                    http1::chunked::encode(&mut up.io.wbuf, head);
                } else {
                    up.io.queue(head);
                }
                // The body leaves the client now: it cannot be sent twice.
                *head = Vec::new();
                if req.expect_continue && unasked && client.data().is_empty() {
                    client.queue(CONTINUE);
                    let flushed = client.flush().await;
                    flushed.map_err(|e| Failure::Client(e.into()))?;
                }
                stream_body(reader, client, &mut up, chunked).await?
            }
        };
        let replayable = matches!(body, RequestBody::Buffered(_));
        match up.response(response, req.head).await {
            Ok(resp) => Ok((up, resp, whole)),
            Err(error) => {
                let again = replayable && whole && req.idempotent && error.unanswered();
                Err(Failure::Backend { error, again })
            }
        }
    }
}

/// Streams the rest of the request body to the replica, chunked again when `chunked`,
/// watching it the while: a replica may refuse the body before reading it all (a 413,
/// a 401), and then the refusal goes to the client and the rest stays unsent (false).
/// A replica that answers early without refusing (a streaming reply) gets the rest.
async fn stream_body<Io>(
    reader: &mut Reader,
    client: &mut Stream<Io>,
    up: &mut Upstream,
    chunked: bool,
) -> Result<bool, Failure>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let port = up.port;
    let backend = |source| Failure::Backend {
        error: upstream::Error::Io { port, source },
        again: false,
    };
    let mut watch = Watch::default();
    loop {
        let piece = tokio::select! {
            biased;
            answered = up.io.answered(), if watch.on => {
                answered.map_err(backend)?;
                match watch.look(up) {
                    Early::Refusal => return Ok(false),
                    _ => continue,
                }
            }
            piece = reader.next(client) => piece.map_err(Failure::Client)?,
        };
        let end = piece.is_none();
        match piece {
            Some(p) if chunked => http1::chunked::encode(&mut up.io.wbuf, p),
            Some(p) => up.io.queue(p),
            None if chunked => up.io.queue(http1::chunked::END),
            None => {}
        }
        // Written before the next read from the client could wait.
        let flush = end || client.data().is_empty() || up.io.wbuf.len() >= 1 << 16;
        if flush && !flush_watching(up, &mut watch).await.map_err(backend)? {
            return Ok(false);
        }
        if end {
            return Ok(true);
        }
    }
}

/// Writes what is queued to the replica; false when it refused the body first, with
/// the rest dropped.
async fn flush_watching(up: &mut Upstream, watch: &mut Watch) -> std::io::Result<bool> {
    while watch.on {
        if up.io.flush_unless_answered().await? {
            return Ok(true);
        }
        if watch.look(up) == Early::Refusal {
            up.io.wbuf.clear();
            return Ok(false);
        }
    }
    up.io.flush().await.map(|()| true)
}

/// What a replica has sent while the request body was still going out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Early {
    /// Interim responses only, now dropped (a replica may send 100 Continue unasked),
    /// or a head not yet whole.
    Nothing,
    /// A final answer that does not refuse the body.
    Answer,
    /// A final answer that refuses it: an error status, or the replica closes.
    Refusal,
}

/// Watches a replica for an early answer, until it has given one.
struct Watch {
    on: bool,
    interim: usize,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            on: true,
            interim: 0,
        }
    }
}

impl Watch {
    /// Reads what the replica has sent so far; after a final answer, stops watching.
    fn look(&mut self, up: &mut Upstream) -> Early {
        let early = early(up, &mut self.interim);
        if early != Early::Nothing {
            self.on = false;
        }
        early
    }
}

/// Classifies what the replica has sent so far, dropping interim responses (too many
/// of them are a refusal).
fn early(up: &mut Upstream, interim: &mut usize) -> Early {
    match up.final_head(&mut Fields::default(), false, interim) {
        Ok(Some(r)) if r.status >= 400 || !r.keep_alive => Early::Refusal,
        Ok(Some(_)) => Early::Answer,
        Ok(None) => Early::Nothing,
        // Nothing sensible follows: the response read says what is wrong.
        Err(_) => Early::Refusal,
    }
}
