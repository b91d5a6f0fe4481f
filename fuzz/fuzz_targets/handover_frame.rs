//! The hand-over frames a new lb reads from the old one in a binary upgrade: another lb
//! process, but a different version or a corrupt stream must be an error, never a panic.
#![no_main]

use lb_core::handover::wire::{decode, decode_stream, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whatever decodes encodes back to the same bytes.
    if let Ok(frame) = decode(data) {
        assert_eq!(&encode(&frame)[4..], data);
    }
    let _ = decode_stream(data);
});
