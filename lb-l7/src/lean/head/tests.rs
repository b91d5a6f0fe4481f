use super::*;
use crate::request::{inspect, Limits};
use proptest::prelude::*;

/// What the lean path makes of a raw head: `Err` when it hands it to the full path.
fn carry<T>(raw: &[u8], f: impl FnOnce(&Request<'_>, &Facts<'_>) -> T) -> Result<T, Unusual> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    assert!(req.parse(raw).expect("parses").is_complete());
    let r = request(&req)?;
    let facts = inspect(r.head("192.0.2.1:8080"), &Limits::default()).map_err(|_| "refused")?;
    carried(&facts)?;
    Ok(f(&r, &facts))
}

fn forwarded(raw: &[u8], trust: Trust, via: Option<&str>) -> String {
    carry(raw, |r, facts| {
        let authority = facts.authority.expect("authority");
        let fwd = r.forwarding(authority, "192.0.2.7".parse().expect("ip"), false, trust);
        let lines = forwarding_lines(&fwd, via);
        let out = Out {
            method: r.method.as_str(),
            path: "/norm",
            query: r.uri.query(),
            authority,
            te_trailers: facts.te_trailers,
            length: facts.body.len().filter(|_| facts.body != Body::None),
            lines: &lines,
            request_id: None,
            trace: None,
        };
        let mut buf = Vec::new();
        out.write(&mut buf, r.fields, facts);
        String::from_utf8(buf).expect("utf-8")
    })
    .expect("carried")
}

#[test]
fn a_plain_request_is_carried() {
    let got = carry(
        b"POST /a/b?x=1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 12\r\nConnection: close\r\n\r\n",
        |r, f| {
            (
                r.method.to_string(),
                r.uri.path().to_string(),
                r.uri.query().map(str::to_string),
                f.authority.map(str::to_string),
                f.body,
                f.close,
            )
        },
    );
    assert_eq!(
        got,
        Ok((
            "POST".into(),
            "/a/b".into(),
            Some("x=1".into()),
            Some("api.example.com".into()),
            Body::Length(12),
            true
        ))
    );
}

#[test]
fn anything_unusual_goes_to_the_full_path() {
    for raw in [
        &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n",
        b"GET /a`b HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(
            carry(raw, |_, _| ()).is_err(),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    assert!(carry(long.as_bytes(), |_, _| ()).is_err());
}

#[test]
fn the_backend_gets_end_to_end_fields_and_lbs_own() {
    let head = forwarded(
        b"GET /x?q=1#frag HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive, x-secret, content-length, host\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.9.9.9\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n",
        Trust::Replace,
        Some("lb"),
    );
    assert_eq!(
        head,
        "GET /norm?q=1 HTTP/1.1\r\nhost: api.example.com\r\nAccept: */*\r\nte: trailers\r\n\
         x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\nx-forwarded-host: api.example.com\r\n\
         forwarded: for=192.0.2.7;proto=http;host=\"api.example.com\"\r\nvia: 1.1 lb\r\ncontent-length: 0\r\n\r\n"
    );
    let chain = forwarded(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.1\r\nx-forwarded-for: 198.51.100.2\r\nForwarded: for=203.0.113.1\r\n\r\n",
        Trust::Append,
        None,
    );
    assert!(chain.contains("x-forwarded-for: 203.0.113.1, 198.51.100.2, 192.0.2.7\r\n"));
    assert!(chain.contains("forwarded: for=203.0.113.1, for=192.0.2.7;proto=http;host=\"a\"\r\n"));
}

proptest! {
    /// Whatever a request head holds, inspecting and rewriting it never panics, and a
    /// carried request goes on with exactly one Host and its own length.
    #[test]
    fn any_parsed_request_is_safe(
        names in proptest::collection::vec("[a-zA-Z-]{1,12}", 0..8),
        values in proptest::collection::vec("[ -~]{0,20}", 8),
        len in proptest::option::of(0u64..1_000_000),
    ) {
        let mut raw = String::from("GET /p HTTP/1.1\r\nHost: h\r\n");
        for (n, v) in names.iter().zip(&values) {
            raw.push_str(&format!("{n}: {}\r\n", v.trim()));
        }
        if let Some(l) = len {
            raw.push_str(&format!("Content-Length: {l}\r\n"));
        }
        raw.push_str("\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = req.parse(raw.as_bytes()) {
            let Ok(r) = request(&req) else { return Ok(()) };
            let Ok(facts) = inspect(r.head("192.0.2.1:8080"), &Limits::default()) else { return Ok(()) };
            let fwd = r.forwarding("h", "::1".parse().expect("ip"), true, Trust::Append);
            let lines = forwarding_lines(&fwd, None);
            let out = Out {
                method: "GET",
                path: "/p",
                query: None,
                authority: "h",
                te_trailers: facts.te_trailers,
                length: facts.body.len().filter(|_| facts.body != Body::None),
                lines: &lines,
                request_id: None,
            trace: None,
            };
            let mut buf = Vec::new();
            out.write(&mut buf, r.fields, &facts);
            prop_assert!(buf.ends_with(b"\r\n\r\n"));
            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            prop_assert_eq!(text.matches("\r\nhost:").count(), 1);
            prop_assert!(text.matches("\r\ncontent-length:").count() <= 1);
            if names.iter().all(|n| !n.eq_ignore_ascii_case("content-length")) {
                let want = len.map_or(String::new(), |l| format!("\r\ncontent-length: {l}\r\n"));
                prop_assert!(text.contains(&want));
            }
        }
    }
}
