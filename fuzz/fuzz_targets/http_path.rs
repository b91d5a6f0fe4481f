//! Request paths come from any client of an HTTP listener; routing sees them normalised.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(once) = lb_l7::path::normalize(raw) {
        // A normal form is stable and has no segment a route could be bypassed with.
        assert_eq!(lb_l7::path::normalize(&once).as_ref(), Ok(&once));
        assert!(once.starts_with('/') && !once.contains("//"));
        assert!(!once.split('/').any(|s| s == "." || s == ".."));
    }
});
