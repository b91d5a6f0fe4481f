//! The PROXY header parser reads untrusted bytes from any client of an
//! `accept_proxy_protocol` listener.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lb_core::proxy_protocol::{encode, parse, Parsed, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Done(h, n)) = parse(data) {
        assert!(n <= data.len() && n <= MAX_HEADER);
        // What was parsed writes back to a header that parses to the same addresses.
        if let (Some(s), Some(d)) = (h.source, h.destination) {
            let again = encode(h.version, s, d);
            match parse(&again) {
                Ok(Parsed::Done(h2, m)) => {
                    assert_eq!(m, again.len());
                    assert_eq!((h2.source, h2.destination), (Some(s), Some(d)));
                }
                other => panic!("re-encoded header did not parse: {other:?}"),
            }
        }
    }
});
