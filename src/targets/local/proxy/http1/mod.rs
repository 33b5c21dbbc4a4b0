//! HTTP/1.1 as the proxy reads and writes it (RFC 9112), pure: request and response
//! heads parsed with `httparse` into offsets of the buffer they came in, the framing of
//! each body decided, and the heads written again for the next hop. Nothing here reads a
//! socket.
//!
//! The proxy does not hand heads through a general-purpose HTTP library: building a
//! header map of owned names and values for each request and each response, twice, and
//! passing them across channels cost more than all the rest of the proxying (see the
//! closing note of the proxy-cost issue). A head is parsed once, in place, and written
//! out by copying the fields that go on.
//!
//! What is refused, and why (the choices nginx makes, or stricter):
//! - `Transfer-Encoding` and `Content-Length` together, two `Content-Length` fields, or
//!   one that is not plain digits: 400, as peers could disagree on where the body ends.
//! - A transfer coding other than a single `chunked`: 501 (or 400 when `chunked` is not
//!   last, RFC 9112 section 6.3).
//! - HTTP/1.1 without `Host`, or two `Host` fields: 400 (RFC 9112 section 3.2).
//! - `CONNECT`: 405; the proxy does not tunnel.
//! - Heads over [`MAX_HEAD`] bytes or [`MAX_FIELDS`] fields: 431.

pub mod chunked;

use std::mem::MaybeUninit;

/// Largest request or response head, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a head (the drop set is a `u128`).
pub const MAX_FIELDS: usize = 100;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes (never 0).
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Where something is in the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Where `part`, a slice of `buf`, is. httparse hands back a constant `""` for an
    /// empty or non-ASCII reason phrase, which is not in `buf`: that is an empty span.
    fn of(buf: &[u8], part: &[u8]) -> Span {
        let (base, at) = (buf.as_ptr() as usize, part.as_ptr() as usize);
        if part.is_empty() || at < base || at + part.len() > base + buf.len() {
            return Span::default();
        }
        let start = at - base;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// The bytes in `buf`.
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

/// One header field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Field {
    /// Its name, as sent.
    pub name: Span,
    /// Its value, without surrounding whitespace.
    pub value: Span,
}

/// Fields of a head, reused from message to message so a head costs no allocation.
#[derive(Debug, Default)]
pub struct Fields {
    list: Vec<Field>,
    /// Fields not passed on: hop-by-hop, framing and `Expect`.
    dropped: u128,
}

impl Fields {
    /// The value of the first field named `name` (lowercase).
    pub fn get<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.list
            .iter()
            .find(|f| f.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.get(buf))
    }

    fn drop_field(&mut self, i: usize) {
        self.dropped |= 1 << i;
    }

    /// Writes the fields that go on to the next hop, but those in `also_dropped`.
    fn write_kept(&self, buf: &[u8], out: &mut Vec<u8>, also_dropped: u128) {
        let dropped = self.dropped | also_dropped;
        for (i, f) in self.list.iter().enumerate() {
            if dropped & (1 << i) == 0 {
                out.extend_from_slice(f.name.get(buf));
                out.extend_from_slice(b": ");
                out.extend_from_slice(f.value.get(buf));
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// Why a request head is refused: the status to answer, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct Refusal {
    /// Status code of the answer.
    pub status: u16,
    /// The text of the answer.
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// The request-target to send on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// As sent (origin-form, or `*` for `OPTIONS`).
    Origin(Span),
    /// The path of an absolute-form target, whose authority becomes the `Host`.
    Absolute {
        /// Path and query (maybe empty, or a query alone).
        path: Span,
        /// A "/" goes before `path`: it does not begin with one.
        slash: bool,
        /// Authority, sent as `Host`.
        authority: Span,
    },
}

/// A parsed request head.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// Bytes of the head, through its empty line.
    pub len: usize,
    /// The method.
    pub method: Span,
    /// Where the request goes.
    pub target: Target,
    /// HTTP/1.0 (else 1.1).
    pub http10: bool,
    /// How the body is delimited.
    pub framing: Framing,
    /// The client sent `Content-Length` (maybe 0): sent on as one.
    pub had_length: bool,
    /// The client keeps the connection open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// GET, HEAD or OPTIONS: safe to send twice.
    pub idempotent: bool,
    /// HEAD: the response has no body.
    pub head: bool,
    /// A `Host` field was sent.
    pub has_host: bool,
}

/// Header names that describe one hop only (RFC 9110 section 7.6.1), and
/// `Proxy-Authenticate`/`-Authorization`, meant for a proxy.
const HOP_BY_HOP: [&[u8]; 9] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Comma-separated tokens of a field value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: digits only, at most 18 of them.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// What the fields of a head say about the connection and the body.
#[derive(Default)]
struct Connection {
    close: bool,
    keep_alive: bool,
    /// Some listed field names other than close/keep-alive: those fields are dropped.
    named: bool,
}

/// What the framing fields of one head say.
#[derive(Default)]
struct FramingFields {
    length: Option<u64>,
    lengths: u32,
    bad_length: bool,
    /// Transfer codings seen, and whether the last was chunked.
    codings: u32,
    chunked_last: bool,
}

/// Classifies every field of `fields`: marks those that do not go on, and reads the
/// connection options and framing.
fn classify(buf: &[u8], fields: &mut Fields) -> (Connection, FramingFields) {
    let (mut conn, mut framing) = (Connection::default(), FramingFields::default());
    for i in 0..fields.list.len() {
        let f = fields.list[i];
        let name = f.name.get(buf);
        if name.eq_ignore_ascii_case(b"content-length") {
            fields.drop_field(i);
            framing.lengths += 1;
            match content_length(f.value.get(buf)) {
                Some(n) => framing.length = Some(n),
                None => framing.bad_length = true,
            }
            continue;
        }
        if !is_hop_by_hop(name) {
            continue;
        }
        fields.drop_field(i);
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for t in tokens(f.value.get(buf)) {
                framing.codings += 1;
                framing.chunked_last = t.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(f.value.get(buf)) {
                if t.eq_ignore_ascii_case(b"close") {
                    conn.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    conn.keep_alive = true;
                } else {
                    conn.named = true;
                }
            }
        }
    }
    if conn.named {
        drop_connection_named(buf, fields);
    }
    (conn, framing)
}

/// Drops the fields whose names `Connection` lists (RFC 9110 section 7.6.1).
fn drop_connection_named(buf: &[u8], fields: &mut Fields) {
    let listed: Vec<&[u8]> = fields
        .list
        .iter()
        .filter(|f| f.name.get(buf).eq_ignore_ascii_case(b"connection"))
        .flat_map(|f| tokens(f.value.get(buf)))
        .collect();
    for i in 0..fields.list.len() {
        let name = fields.list[i].name.get(buf);
        // `Connection: host` would leave the request with no Host at all.
        if name.eq_ignore_ascii_case(b"host") {
            continue;
        }
        if listed.iter().any(|l| l.eq_ignore_ascii_case(name)) {
            fields.drop_field(i);
        }
    }
}

/// Keeps the parsed headers as spans.
fn collect(buf: &[u8], headers: &[httparse::Header<'_>], fields: &mut Fields) {
    fields.list.clear();
    fields.dropped = 0;
    fields.list.extend(headers.iter().map(|h| Field {
        name: Span::of(buf, h.name.as_bytes()),
        value: Span::of(buf, h.value),
    }));
}

/// Whether `buf` holds the empty line that ends a head, looking only from `from` on (less
/// the three bytes it may have begun in): bytes already looked at are not scanned
/// again, so a head that arrives a byte at a time costs linear time, not quadratic.
pub fn head_ends(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3).min(buf.len());
    let mut at = start;
    while let Some(i) = buf[at..].iter().position(|b| *b == b'\n') {
        let nl = at + i;
        match buf.get(nl + 1) {
            Some(b'\n') => return true,
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return true,
            _ => at = nl + 1,
        }
    }
    false
}

/// Parses a request head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_request(buf: &[u8], fields: &mut Fields) -> Result<Option<Request>, Refusal> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(refuse(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(refuse(431, "too many header fields")),
        Err(httparse::Error::Version) => return Err(refuse(505, "HTTP version not supported")),
        Err(_) => return Err(refuse(400, "malformed request head")),
    };
    if len > MAX_HEAD {
        return Err(refuse(431, "request head too large"));
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(refuse(400, "malformed request head"));
    };
    collect(buf, req.headers, fields);
    let (conn, framing_fields) = classify(buf, fields);
    let http10 = version == 0;
    let mut hosts = 0;
    let mut expect_continue = false;
    for i in 0..fields.list.len() {
        let f = fields.list[i];
        let name = f.name.get(buf);
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !f.value.get(buf).eq_ignore_ascii_case(b"100-continue") {
                return Err(refuse(417, "only 100-continue is expected"));
            }
            expect_continue = true;
            fields.drop_field(i);
        }
    }
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(refuse(400, "exactly one Host field is required"));
    }
    let framing = request_framing(&framing_fields, http10)?;
    let method_bytes = method.as_bytes();
    if method_bytes == b"CONNECT" {
        return Err(refuse(405, "CONNECT is not supported"));
    }
    let target = request_target(buf, method_bytes, path.as_bytes())?;
    Ok(Some(Request {
        len,
        method: Span::of(buf, method_bytes),
        target,
        http10,
        framing,
        had_length: framing_fields.lengths > 0,
        keep_alive: !conn.close && (!http10 || conn.keep_alive),
        // An HTTP/1.0 client knows no 1xx (RFC 9110 section 10.1.1): the expectation
        // is ignored.
        expect_continue: expect_continue && framing != Framing::Empty && !http10,
        idempotent: matches!(method_bytes, b"GET" | b"HEAD" | b"OPTIONS"),
        head: method_bytes == b"HEAD",
        has_host: hosts == 1,
    }))
}

fn request_framing(f: &FramingFields, http10: bool) -> Result<Framing, Refusal> {
    if f.codings > 0 {
        if f.lengths > 0 {
            return Err(refuse(400, "both Transfer-Encoding and Content-Length"));
        }
        if http10 {
            return Err(refuse(400, "Transfer-Encoding in HTTP/1.0"));
        }
        if !f.chunked_last {
            return Err(refuse(400, "chunked is not the last transfer coding"));
        }
        if f.codings > 1 {
            return Err(refuse(501, "transfer coding not supported"));
        }
        return Ok(Framing::Chunked);
    }
    if f.lengths > 1 || f.bad_length {
        return Err(refuse(400, "invalid Content-Length"));
    }
    Ok(match f.length {
        None | Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

fn request_target(buf: &[u8], method: &[u8], path: &[u8]) -> Result<Target, Refusal> {
    if path.first() == Some(&b'/') || (path == b"*" && method == b"OPTIONS") {
        return Ok(Target::Origin(Span::of(buf, path)));
    }
    let rest = [&b"http://"[..], b"https://"]
        .iter()
        .find(|s| path.len() > s.len() && path[..s.len()].eq_ignore_ascii_case(s))
        .map(|s| &path[s.len()..])
        .ok_or(refuse(400, "invalid request target"))?;
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?'))
        .unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    // host[:port]: a reg-name, an IPv4 address or an IP literal; no userinfo.
    let host_byte = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%:[]".contains(b);
    if authority.is_empty() || !authority.iter().all(host_byte) {
        return Err(refuse(400, "invalid request target"));
    }
    Ok(Target::Absolute {
        path: Span::of(buf, after),
        slash: after.first() != Some(&b'/'),
        authority: Span::of(buf, authority),
    })
}

/// How the request's body goes to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOut {
    /// No body (with `Content-Length: 0` when the client sent one).
    Empty,
    /// A body of this length.
    Length(u64),
    /// Chunked, as it streams.
    Chunked,
}

/// Writes the request to send to the replica on `host_port`: the client's fields but
/// the hop-by-hop ones, its `Host` (the replica's address when it sent none) and the
/// framing of `body`.
pub fn write_request(
    out: &mut Vec<u8>,
    buf: &[u8],
    req: &Request,
    fields: &Fields,
    host_port: u16,
    body: BodyOut,
) {
    out.extend_from_slice(req.method.get(buf));
    out.push(b' ');
    match req.target {
        Target::Origin(s) => out.extend_from_slice(s.get(buf)),
        Target::Absolute { path, slash, .. } => {
            if slash {
                out.push(b'/');
            }
            out.extend_from_slice(path.get(buf));
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    match req.target {
        Target::Absolute { authority, .. } => {
            // RFC 9112 section 3.2.2: the target's authority replaces any Host.
            let hosts = fields
                .list
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name.get(buf).eq_ignore_ascii_case(b"host"))
                .fold(0u128, |m, (i, _)| m | 1 << i);
            fields.write_kept(buf, out, hosts);
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(authority.get(buf));
            out.extend_from_slice(b"\r\n");
        }
        Target::Origin(_) => {
            fields.write_kept(buf, out, 0);
            if !req.has_host {
                out.extend_from_slice(b"host: 127.0.0.1:");
                push_decimal(out, u64::from(host_port));
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    match body {
        BodyOut::Empty if req.had_length => out.extend_from_slice(b"content-length: 0\r\n"),
        BodyOut::Empty => {}
        BodyOut::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyOut::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A parsed response head.
#[derive(Debug, Clone, Copy)]
pub struct Response {
    /// Bytes of the head, through its empty line.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: Span,
    /// How the body is delimited (none for HEAD, 1xx, 204 and 304).
    pub framing: Framing,
    /// The replica keeps the connection open after this response.
    pub keep_alive: bool,
}

/// Why a response head is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    /// Larger than [`MAX_HEAD`] or with more than [`MAX_FIELDS`] fields.
    #[error("response head too large")]
    TooLarge,
    /// Not an HTTP/1.x response head, or with conflicting framing.
    #[error("malformed response head: {0}")]
    Malformed(&'static str),
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is incomplete. For
/// `head_request` the response has no body, whatever its fields say.
pub fn parse_response(
    buf: &[u8],
    fields: &mut Fields,
    head_request: bool,
) -> Result<Option<Response>, BadResponse> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err(BadResponse::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(BadResponse::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
        Err(_) => return Err(BadResponse::Malformed("not an HTTP/1.x response")),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(BadResponse::Malformed("not an HTTP/1.x response"));
    };
    let reason = Span::of(buf, resp.reason.unwrap_or("").as_bytes());
    collect(buf, resp.headers, fields);
    let (conn, f) = classify(buf, fields);
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    if f.codings > 0 && version == 0 {
        // RFC 9112 section 6.1: framing an HTTP/1.0 peer cannot have meant.
        return Err(BadResponse::Malformed("Transfer-Encoding in HTTP/1.0"));
    }
    let framing = if f.codings > 0 {
        // RFC 9112 section 6.3: Transfer-Encoding overrides Content-Length; without
        // chunked last, the body runs until the connection closes.
        if f.chunked_last && f.codings == 1 {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if f.lengths > 1 || f.bad_length {
        return Err(BadResponse::Malformed("invalid Content-Length"));
    } else {
        match f.length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    // A valid length goes on as it was (for HEAD and 304 it describes the
    // representation); the proxy writes its own framing only for the other cases.
    if f.codings == 0 {
        if let Some(i) = fields
            .list
            .iter()
            .position(|x| x.name.get(buf).eq_ignore_ascii_case(b"content-length"))
        {
            fields.dropped &= !(1 << i);
        }
    }
    let framing = if no_body { Framing::Empty } else { framing };
    Ok(Some(Response {
        len,
        status,
        reason,
        framing,
        keep_alive: !conn.close
            && (version == 1 || conn.keep_alive)
            && framing != Framing::UntilClose,
    }))
}

/// How a response goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseOut {
    /// Re-encode the body as chunked (its length is not known up front).
    pub chunked: bool,
    /// Close the client's connection after it.
    pub close: bool,
    /// The client spoke HTTP/1.0 and asked to keep the connection.
    pub keep_alive_10: bool,
}

/// Decides how a response with `framing` goes to a client of `req`, whose body has been
/// read whole or not (a replica may answer before it has all of it).
pub fn response_out(req: &Request, framing: Framing, body_read: bool) -> ResponseOut {
    let unsized_body = matches!(framing, Framing::Chunked | Framing::UntilClose);
    // An HTTP/1.0 client knows no chunked coding: such a body ends with the connection.
    // With its body unread, the connection cannot carry another request.
    let close = !req.keep_alive || (req.http10 && unsized_body) || !body_read;
    ResponseOut {
        chunked: unsized_body && !req.http10,
        close,
        keep_alive_10: req.http10 && !close,
    }
}

/// Writes the response head for the client: the replica's status and fields but the
/// hop-by-hop ones, the framing of `out` and `set_cookie`.
pub fn write_response(
    w: &mut Vec<u8>,
    buf: &[u8],
    resp: &Response,
    fields: &Fields,
    out: ResponseOut,
    set_cookie: Option<&str>,
) {
    w.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(w, u64::from(resp.status));
    w.push(b' ');
    match resp.reason.get(buf) {
        b"" => w.extend_from_slice(reason(resp.status).as_bytes()),
        r => w.extend_from_slice(r),
    }
    w.extend_from_slice(b"\r\n");
    fields.write_kept(buf, w, 0);
    if out.chunked {
        w.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    // A cookie with a line break or control byte would split the head: left out.
    if let Some(c) = set_cookie.filter(|c| !c.bytes().any(|b| b.is_ascii_control())) {
        w.extend_from_slice(b"set-cookie: ");
        w.extend_from_slice(c.as_bytes());
        w.extend_from_slice(b"\r\n");
    }
    if out.close {
        w.extend_from_slice(b"connection: close\r\n");
    } else if out.keep_alive_10 {
        w.extend_from_slice(b"connection: keep-alive\r\n");
    }
    w.extend_from_slice(b"\r\n");
}

/// A response the proxy writes itself (errors), with a text body (left out for a
/// response to HEAD, whose length it still gives).
pub fn write_text(w: &mut Vec<u8>, status: u16, text: &str, close: bool, head: bool) {
    w.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(w, u64::from(status));
    w.push(b' ');
    w.extend_from_slice(reason(status).as_bytes());
    w.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    push_decimal(w, text.len() as u64);
    w.extend_from_slice(b"\r\n");
    if close {
        w.extend_from_slice(b"connection: close\r\n");
    }
    w.extend_from_slice(b"\r\n");
    if !head {
        w.extend_from_slice(text.as_bytes());
    }
}

/// The reason phrase of `status` (RFC 9110 section 15), for heads without one.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        504 => "Gateway Timeout",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests;
