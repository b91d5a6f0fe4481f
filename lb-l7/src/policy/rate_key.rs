//! What a rate limit keeps of a key: not the key (a client chooses a `header:NAME` key's
//! bytes, up to the 32 KiB a request head may hold), but 128 bits of SHA-256 over it, so each
//! tracked key costs the same few bytes whatever the client sent. Pure, no I/O.
//!
//! Keys kept in this process are hashed under a secret drawn when the limit is built, so a
//! client cannot pick two keys that share a bucket (to spend another's allowance) even if
//! 128-bit SHA-256 collisions were within reach. Keys kept in Redis must name the same bucket
//! in every lb, so they are hashed without a secret (finding a collision of 128-bit SHA-256
//! still takes ~2^64 work).

use sha2::{Digest, Sha256};

/// A key as a local bucket holds it.
pub type KeyDigest = u128;

/// A secret that differs in every process and every limit: std's `RandomState` is seeded
/// from the operating system's randomness, and its SipHash outputs are unpredictable without
/// that seed. (No other source of randomness is needed for this.)
pub fn random_secret() -> [u8; 32] {
    use std::hash::BuildHasher;
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let word = std::collections::hash_map::RandomState::new().hash_one(i);
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// The local bucket of `key` under `secret`.
pub fn local(secret: &[u8; 32], key: &[u8]) -> KeyDigest {
    let d = Sha256::new()
        .chain_update(secret)
        .chain_update(key)
        .finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&d[..16]);
    u128::from_le_bytes(first)
}

/// The Redis key suffix of `key`: 32 hex digits, the same in every lb.
pub fn shared(key: &[u8]) -> String {
    let d = Sha256::digest(key);
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes one bucket costs in a table: the key digest, the bucket's time, and the table's
/// control byte.
pub const BUCKET_BYTES: usize = std::mem::size_of::<(KeyDigest, u64)>() + 1;

/// Slots of a std (hashbrown) table whose usable capacity is `capacity`: a table of 8 slots
/// or more is at most 7/8 full, a smaller one holds one less than its slots (4 at least).
fn slots(capacity: usize) -> usize {
    match capacity {
        0 => 0,
        1..=7 => (capacity + 1).next_power_of_two().max(4),
        _ => (capacity.saturating_mul(8) / 7).next_power_of_two(),
    }
}

/// The usable capacity std gives a table that has to hold `n` entries: the most a table grows
/// to while it never holds more than `n`.
pub fn capacity_for(n: usize) -> usize {
    match n {
        0 => 0,
        1..=3 => 3,
        4..=7 => 7,
        _ => n.saturating_mul(8).div_ceil(7).next_power_of_two() / 8 * 7,
    }
}

/// The heap bytes of a table holding `capacity` entries (slots of [`BUCKET_BYTES`], plus one
/// group of trailing control bytes).
pub fn table_bytes(capacity: usize) -> usize {
    match slots(capacity) {
        0 => 0,
        n => n * BUCKET_BYTES + 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_fixed_size_keyed_and_deterministic() {
        let (a, b) = (random_secret(), random_secret());
        assert_ne!(a, b, "each limit draws its own secret");
        let huge = vec![b'x'; 32 * 1024];
        assert_eq!(local(&a, &huge), local(&a, &huge));
        assert_ne!(local(&a, &huge), local(&b, &huge), "keyed");
        assert_ne!(local(&a, b"k1"), local(&a, b"k2"));
        assert_eq!(shared(&huge).len(), 32);
        assert_eq!(shared(b"red"), shared(b"red"), "every lb names one bucket");
        assert_ne!(shared(b"red"), shared(b"blue"));
    }

    #[test]
    fn a_table_is_charged_at_least_what_std_allocates() {
        for cap in [1, 3, 7, 8, 100, 6250, 100_000] {
            let mut m: std::collections::HashMap<KeyDigest, u64> = std::collections::HashMap::new();
            for i in 0..cap {
                m.insert(i as u128, 0);
            }
            // std rounds a table up to its slots; the charge follows its actual capacity.
            assert!(slots(m.capacity()) >= m.len(), "{cap}");
            assert!(table_bytes(m.capacity()) >= m.len() * BUCKET_BYTES, "{cap}");
            assert!(m.capacity() <= capacity_for(cap), "{cap}");
            assert!(
                table_bytes(m.capacity()) <= 4 * cap * BUCKET_BYTES + 64,
                "{cap}"
            );
        }
    }
}
