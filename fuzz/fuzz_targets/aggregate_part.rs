//! An aggregate part's untrusted inputs: a backend's answer body, and a token claim put into
//! a path template. Whatever they are: nothing panics; an accepted body embeds as JSON that
//! parses; a filled template is a valid request target whose path segments and query
//! parameters are the template's own (the value never leaves its place).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lb_core::config::Template;
use lb_l7::aggregate::assemble::{body, decode};
use lb_l7::aggregate::template::{render, Source};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = decode(200, data) {
        let whole = body([("part", &Ok(v))]);
        let parsed: serde_json::Value = serde_json::from_slice(&whole).expect("embeds as JSON");
        assert!(parsed.get("part").is_some());
    }
    let claim = String::from_utf8_lossy(data);
    let t = Template::parse("/a/${jwt.sub}/b?u=${jwt.sub}&z=1").expect("template");
    let claims = serde_json::json!({ "sub": claim });
    let headers = http::HeaderMap::new();
    let src = Source { claims: Some(&claims), query: None, headers: &headers };
    if let Ok(p) = render(&t, &src) {
        let (path, query) = p.split_once('?').expect("the template's query stays");
        assert_eq!(path.split('/').count(), 4, "{p}");
        assert!(path.starts_with("/a/") && path.ends_with("/b"), "{p}");
        assert_eq!(query.split('&').count(), 2, "{p}");
        assert!(p.parse::<http::uri::PathAndQuery>().is_ok(), "{p}");
    }
});
