//! How many values decoding a backend's protobuf answer would build, counted on the wire
//! bytes before anything is built. Pure.
//!
//! A 4 MiB answer is within gRPC's message bound, yet built as a `DynamicMessage` it may take
//! 35 times that (2 bytes per empty nested message, 1 per packed zero, 50–100 bytes each once
//! built; measured: 140 MB and seconds of CPU for one answer). The count bounds that cost with
//! [`super::message::MAX_JSON_VALUES`], the bound a request body has.

use prost_reflect::{Kind, MessageDescriptor};

/// Deeper than prost decodes (it refuses past 100): counted as one value there.
const MAX_DEPTH: u32 = 100;

/// An upper bound of the values (fields, list and map elements, messages) decoding `bytes` as
/// `desc` makes. Malformed bytes end the count early: decoding refuses them anyway.
pub fn values(desc: &MessageDescriptor, bytes: &[u8]) -> usize {
    count(desc, bytes, 0)
}

fn count(desc: &MessageDescriptor, mut b: &[u8], depth: u32) -> usize {
    let mut n = 1;
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else { return n };
        let (number, wire) = (key >> 3, key & 7);
        let skip = match wire {
            0 => varint(&mut b).map(|_| 0),
            1 => Some(8),
            5 => Some(4),
            2 => varint(&mut b).and_then(|l| usize::try_from(l).ok()),
            // Group markers: a value each at most.
            3 | 4 => Some(0),
            _ => None,
        };
        let Some(len) = skip.filter(|l| *l <= b.len()) else {
            return n;
        };
        let (value, rest) = b.split_at(len);
        b = rest;
        if wire != 2 {
            n += 1;
            continue;
        }
        let field = u32::try_from(number).ok().and_then(|k| desc.get_field(k));
        n += match field.as_ref().map(|f| (f.kind(), f.is_list())) {
            Some((Kind::Message(m), _)) if depth < MAX_DEPTH => count(&m, value, depth + 1),
            Some((k, true)) => packed(&k, value),
            _ => 1,
        };
    }
    n
}

/// The elements of a packed repeated field's bytes (1 for a string or bytes element).
fn packed(kind: &Kind, b: &[u8]) -> usize {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => b.len() / 8,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => b.len() / 4,
        Kind::String | Kind::Bytes | Kind::Message(_) => 1,
        // Varints: one ends at each byte without its high bit.
        _ => b.iter().filter(|x| *x & 0x80 == 0).count(),
    }
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            *b = &b[i + 1..];
            return Some(v);
        }
    }
    None
}
