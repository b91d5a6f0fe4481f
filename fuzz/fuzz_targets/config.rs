//! The config loader must never panic, whatever the file holds, and every error it reports
//! must render.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = lb_core::config::load_str("fuzz.toml", text) {
            let _ = e.to_string();
        }
    }
});
