//! The lean path reads request heads from clients and response heads and chunked bodies from
//! backends: whatever the bytes, inspecting and rewriting a head never panics, and the end of
//! a chunked body is found at the same place however the bytes are cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lb_l7::chunked::{Chunked, Scan};
use lb_l7::lean::head;
use lb_l7::request::{inspect, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let mut fields = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    if let Ok(httparse::Status::Complete(_)) = req.parse(bytes) {
        if let Ok(r) = head::request(&req) {
            if let Ok(facts) = inspect(r.head("192.0.2.1:8080"), &Limits::default()) {
                let authority = facts.authority.unwrap_or("h");
                let fwd = r.forwarding(authority, "192.0.2.1".parse().expect("ip"), false, lb_l7::forward::Trust::Append);
                let lines = head::forwarding_lines(&fwd, Some("lb"));
                let out = head::Out {
                    method: r.method.as_str(),
                    path: "/",
                    query: r.uri.query(),
                    authority,
                    te_trailers: facts.te_trailers,
                    length: facts.body.len(),
                    lines: &lines,
                    request_id: Some("0123456789abcdef0123456789abcdef"),
                    trace: Some(lb_l7::trace::decide(facts.traceparent, facts.tracestate, || 1)),
                };
                let mut buf = Vec::new();
                out.write(&mut buf, r.fields, &facts);
                // What lb writes parses as one complete head.
                let mut fields = [httparse::EMPTY_HEADER; 256];
                let mut again = httparse::Request::new(&mut fields);
                assert_eq!(again.parse(&buf).ok(), Some(httparse::Status::Complete(buf.len())));
            }
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    if let Ok(httparse::Status::Complete(_)) = resp.parse(bytes) {
        if let Ok(r) = lb_l7::lean::response::response(&resp, cut & 1 == 1) {
            let mut out = Vec::new();
            let added = lb_l7::lean::response::Added {
                via: Some("lb"),
                cookie: None,
                request_id: Some("req-1"),
                close: cut & 2 == 2,
            };
            r.write(&mut out, added);
        }
    }
    let whole = Chunked::default().scan(bytes);
    let at = usize::from(cut).min(bytes.len());
    let mut split = Chunked::default();
    let split_result = match split.scan(&bytes[..at]) {
        Ok(Scan::Done(n)) => Ok(Scan::Done(n)),
        Ok(Scan::More) => split.scan(&bytes[at..]).map(|s| match s {
            Scan::Done(n) => Scan::Done(at + n),
            Scan::More => Scan::More,
        }),
        Err(e) => Err(e),
    };
    assert_eq!(whole, split_result);
});
