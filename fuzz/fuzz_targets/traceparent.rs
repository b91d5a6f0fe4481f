//! A client's `traceparent` and `tracestate` are untrusted bytes: whatever they are, lb's
//! forwarded `traceparent` is valid, continues a valid client's trace, and a value that
//! parses formats back to one that parses the same.
#![no_main]

use lb_l7::trace::{self, Claimed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (parent, state) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let parsed = trace::parse(parent);
    if let Some(p) = parsed {
        assert_eq!(trace::parse(&p.format()), Some(p));
    }
    let _ = trace::state_ok(state);
    let hop = trace::decide(Claimed::One(parent), Claimed::One(state), || 0x5eed);
    let fwd = trace::parse(&hop.traceparent()).expect("lb's traceparent is valid");
    if let Some(p) = trace::parse(parent.trim_ascii()) {
        assert_eq!(fwd.trace_id, p.trace_id);
        assert_eq!(hop.parent, Some(p.parent_id));
    } else {
        assert!(hop.parent.is_none() && !hop.keep_state);
    }
});
