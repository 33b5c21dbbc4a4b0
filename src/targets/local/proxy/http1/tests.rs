use super::*;

fn request(wire: &str) -> Result<(Request, Fields), Refusal> {
    let mut fields = Fields::default();
    let req = parse_request(wire.as_bytes(), &mut fields)?.expect("a whole head");
    Ok((req, fields))
}

fn forwarded(wire: &str, port: u16, body: BodyOut) -> String {
    let (req, fields) = request(wire).unwrap();
    let mut out = Vec::new();
    write_request(&mut out, wire.as_bytes(), &req, &fields, port, body);
    String::from_utf8(out).unwrap()
}

#[test]
fn hop_by_hop_fields_and_those_connection_names_stay_behind() {
    let wire = "GET /a/b?c=d HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Secret: s\r\nUpgrade: websocket\r\nProxy-Authorization: Basic eA==\r\nX-Canary: insider\r\nCookie: a=b\r\n\r\n";
    assert_eq!(
        forwarded(wire, 8080, BodyOut::Empty),
        "GET /a/b?c=d HTTP/1.1\r\nHost: app.example\r\nX-Canary: insider\r\nCookie: a=b\r\n\r\n"
    );
}

#[test]
fn a_request_without_host_gets_the_replicas_address_and_absolute_form_its_authority() {
    let out = forwarded("GET / HTTP/1.0\r\n\r\n", 8080, BodyOut::Empty);
    assert_eq!(out, "GET / HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n");
    let out = forwarded(
        "GET http://other.example:81/x?y HTTP/1.1\r\nHost: ignored\r\n\r\n",
        1,
        BodyOut::Empty,
    );
    assert_eq!(out, "GET /x?y HTTP/1.1\r\nhost: other.example:81\r\n\r\n");
    let out = forwarded(
        "GET http://h:1?q HTTP/1.1\r\nHost: h\r\n\r\n",
        1,
        BodyOut::Empty,
    );
    assert!(out.starts_with("GET /?q HTTP/1.1\r\n"), "{out}");
    let out = forwarded(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n",
        1,
        BodyOut::Empty,
    );
    assert_eq!(out, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let out = forwarded("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 1, BodyOut::Empty);
    assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
}

#[test]
fn framing_is_read_strictly_and_written_by_the_proxy() {
    let (req, _) = request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n").unwrap();
    assert_eq!(req.framing, Framing::Length(12));
    assert!(!req.idempotent);
    let (req, _) =
        request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    assert_eq!(req.framing, Framing::Chunked);
    let out = forwarded(
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        1,
        BodyOut::Length(3),
    );
    assert_eq!(
        out,
        "POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 3\r\n\r\n"
    );
    let out = forwarded(
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        1,
        BodyOut::Empty,
    );
    assert_eq!(
        out,
        "POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 0\r\n\r\n"
    );

    let refused = |wire: &str| request(wire).err().map(|r| r.status);
    for (wire, status) in [
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
        ("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET http://u@h/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET http://h\"x/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n",
            417,
        ),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
    ] {
        assert_eq!(refused(wire), Some(status), "{wire:?}");
    }
    let many: String = (0..=MAX_FIELDS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert_eq!(
        refused(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
        Some(431)
    );
    let huge = format!("GET / HTTP/1.1\r\nHost: a\r\nx: {}", "v".repeat(MAX_HEAD));
    let mut fields = Fields::default();
    assert_eq!(
        parse_request(huge.as_bytes(), &mut fields)
            .unwrap_err()
            .status,
        431
    );
    assert!(parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut fields)
        .unwrap()
        .is_none());
}

#[test]
fn keep_alive_follows_the_version_and_connection() {
    let ka = |wire: &str| request(wire).unwrap().0.keep_alive;
    assert!(ka("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    ));
    assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
    assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
}

fn response(wire: &str, head: bool) -> Result<(Response, Fields), BadResponse> {
    let mut fields = Fields::default();
    let r = parse_response(wire.as_bytes(), &mut fields, head)?.expect("a whole head");
    Ok((r, fields))
}

#[test]
fn response_framing_follows_rfc_9112_section_6_3() {
    let framing = |wire: &str, head: bool| response(wire, head).map(|r| r.0.framing);
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
        Ok(Framing::Length(5))
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
        Ok(Framing::Empty)
    );
    assert_eq!(
        framing("HTTP/1.1 204 No Content\r\n\r\n", false),
        Ok(Framing::Empty)
    );
    assert_eq!(
        framing(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false
        ),
        Ok(Framing::Empty)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\n\r\n", false),
        Ok(Framing::UntilClose)
    );
    assert_eq!(
        framing(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            false
        ),
        Ok(Framing::Chunked)
    );
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
        Ok(Framing::UntilClose)
    );
    assert!(framing(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        false
    )
    .is_err());
    assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
    assert!(framing("SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
    assert!(framing(
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false
    )
    .is_err());
    let (r, _) = response(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(!r.keep_alive);
    let (r, _) = response("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap();
    assert!(!r.keep_alive);
}

#[test]
fn the_clients_response_keeps_the_replicas_fields_and_gets_the_proxys_framing() {
    let wire = "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nConnection: close, X-Internal\r\nX-Internal: 1\r\nX-App: a\r\n\r\n";
    let req11 = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().0;
    assert_eq!(
        client_head(&req11, wire, Some("c=v; Path=/")),
        "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nX-App: a\r\nset-cookie: c=v; Path=/\r\n\r\n"
    );

    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (resp, fields) = response(chunked, false).unwrap();
    let mut out = Vec::new();
    write_response(
        &mut out,
        chunked.as_bytes(),
        &resp,
        &fields,
        response_out(&req11, resp.framing, true),
        None,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    );

    // An HTTP/1.0 client gets the body as it comes, and the end of the connection.
    let req10 = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap()
        .0;
    let how = response_out(&req10, resp.framing, true);
    assert_eq!((how.chunked, how.close), (false, true));
    let how = response_out(&req10, Framing::Length(3), true);
    assert_eq!(
        (how.chunked, how.close, how.keep_alive_10),
        (false, false, true)
    );
}

#[test]
fn a_response_without_a_reason_gets_the_standard_one_and_a_bad_cookie_is_left_out() {
    let req = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().0;
    for wire in [
        "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 404 Caf\u{e9}\r\nContent-Length: 0\r\n\r\n",
    ] {
        assert_eq!(
            client_head(&req, wire, Some("a=b\r\nX-Evil: 1")),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        );
    }
}

#[test]
fn an_http10_client_gets_no_100_continue_and_head_ends_is_found_in_pieces() {
    let (req, _) =
        request("PUT / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n").unwrap();
    assert!(!req.expect_continue);
    for head in [
        &b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET / HTTP/1.0\nA: b\n\n",
    ] {
        // Split at every byte: scanning from where the last look ended finds the end
        // exactly once it has arrived.
        for split in 1..head.len() {
            assert!(!head_ends(&head[..split], 0), "{split}");
            assert!(head_ends(head, split), "{split}");
        }
    }
    assert!(head_ends(b"GET / HTTP/1.0\n\n", 15));
}

/// The head a client of `req` gets for the replica's response `wire`.
fn client_head(req: &Request, wire: &str, set_cookie: Option<&str>) -> String {
    let (resp, fields) = response(wire, false).unwrap();
    let mut out = Vec::new();
    let how = response_out(req, resp.framing, true);
    write_response(&mut out, wire.as_bytes(), &resp, &fields, how, set_cookie);
    String::from_utf8(out).unwrap()
}
