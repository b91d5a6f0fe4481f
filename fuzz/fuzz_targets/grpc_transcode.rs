//! A transcoded request and its gRPC answer: untrusted path, query and JSON body from a
//! client, and untrusted answer bytes from a backend. Whatever they are, mapping them never
//! panics; a request that maps names a method of the service, and a bound variable never
//! holds a `..` segment. The first line is also parsed as a path template.
//!
//! Input: `METHOD\nPATH\nQUERY\nBODY` (the body also read as a framed gRPC answer).
#![no_main]

use std::sync::OnceLock;

use lb_l7::transcode::{message, status, template::Template, Transcoder};
use libfuzzer_sys::fuzz_target;

/// conf/grpc-transcode.pb: the bookstore fixture's descriptor set.
static SET: &[u8] = include_bytes!("../../conf/grpc-transcode.pb");

fn transcoder() -> &'static Transcoder {
    static T: OnceLock<Transcoder> = OnceLock::new();
    T.get_or_init(|| {
        lb_l7::transcode::from_bytes(SET, &["bookstore.v1.Bookstore".to_string()])
            .expect("the shipped descriptor set loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (method, path, query, body) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if let Ok(t) = Template::parse(method) {
        let _ = t.matches(path);
    }
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let t = transcoder();
    if let Ok((rule, vars)) = t.select(&method, path) {
        assert!(rule.grpc_path.starts_with("/bookstore.v1.Bookstore/"));
        for (_, v) in &vars {
            assert!(!v.split('/').any(|s| s == ".."), "{v}");
        }
        let _ = message::request(rule, &vars, Some(query), body.as_bytes());
        if let Ok(Some(m)) = status::unframe(body.as_bytes()) {
            let _ = message::response(rule, m);
        }
        let _ = message::response(rule, body.as_bytes());
        // The count that bounds an answer before it is decoded: raw bytes, not text.
        let _ = lb_l7::transcode::wire::values(&rule.output, data);
    }
});
