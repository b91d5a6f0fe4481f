//! The ClientHello peeker reads untrusted bytes from any client of an SNI-routing listener.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lb_core::tls::client_hello::{peek, Peek};

fuzz_target!(|data: &[u8]| {
    // Every prefix is a state the peeker can be called in while a hello trickles in.
    let mut done = false;
    for n in [data.len() / 3, data.len() / 2, data.len()] {
        match peek(&data[..n]) {
            Ok(Peek::Done(h)) => {
                done = true;
                if let Some(name) = h.sni {
                    assert!(!name.is_empty() && name.len() <= 253);
                    assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
                }
            }
            // A longer input never turns a found hello back into "need more".
            Ok(Peek::NeedMore) => assert!(!done),
            Err(_) => {}
        }
    }
});
