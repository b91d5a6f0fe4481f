//! The HTTP health check reads a status line from a backend: untrusted bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lb_core::health::check::parse_status(data);
});
