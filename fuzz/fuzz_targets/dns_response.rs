//! A DNS health check judges a backend's answer: untrusted bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 2 {
        let id = u16::from_be_bytes([data[0], data[1]]);
        let _ = lb_core::health::dns::check_response(id, &data[2..]);
    }
});
