//! A GraphQL request as a client sends it (GET query string or POST JSON body): untrusted
//! bytes. Reading, parsing and measuring never panic, and an operation that passes is
//! within the limits it was held to.
#![no_main]

use lb_core::config::GraphqlLimits;
use lb_l7::graphql::request::Carrier;
use lb_l7::graphql::{inspect, Refusal};
use libfuzzer_sys::fuzz_target;

const LIMITS: GraphqlLimits = GraphqlLimits {
    max_depth: 5,
    max_aliases: 3,
    max_complexity: 40,
    introspection: false,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the carrier; the rest is the query string or the body.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let c = if pick & 1 == 0 {
        match std::str::from_utf8(rest) {
            Ok(q) => Carrier::Get { query: Some(q) },
            Err(_) => return,
        }
    } else {
        Carrier::Post {
            query: None,
            content_type: Some(b"application/json"),
            content_encoding: None,
            body: rest,
        }
    };
    match inspect(c, &LIMITS) {
        Ok(p) => assert!(!p.key().is_empty()),
        Err(r) => assert!(matches!(r.status(), 400 | 405 | 413 | 415), "{r:?}"),
    }
    let _ = Refusal::TooLarge.code();
});
