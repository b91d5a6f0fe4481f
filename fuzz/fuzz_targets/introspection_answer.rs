//! An OAuth2 introspection endpoint's answer (RFC 7662): untrusted bytes from the network.
//! Whatever they are, reading them never panics, and an answer lb acts on as active is
//! within its `exp` and is reused no longer than it.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lb_l7::policy::introspect::answer::{parse, positive_ttl, Answer};

fuzz_target!(|data: &[u8]| {
    let now = Duration::from_secs(1_700_000_000);
    if let Ok(Answer::Active(g)) = parse(data, now, ["x-tenant"].into_iter()) {
        let ttl = positive_ttl(&g, Duration::from_secs(86_400), now);
        if let Some(exp) = g.exp {
            assert!(now.as_secs() < exp);
            assert!(now + ttl <= Duration::from_secs(exp));
        }
    }
});
