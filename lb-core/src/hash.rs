//! Deterministic hashing for balancing. Every lb process, on every machine and version of
//! Rust, must send a key to the same backend, so nothing here uses a random or
//! process-specific seed (std's `RandomState` would). Pure; no I/O.
//!
//! The hash is 64-bit FNV-1a over the bytes, seeded by folding the seed in first, then the
//! MurmurHash3 `fmix64` finalizer so that close keys (adjacent IPs) land far apart.

use std::net::{IpAddr, SocketAddr};

/// Seed for client keys (`source-ip`, `source-addr`). Part of lb's contract: changing it
/// moves every sticky client.
pub const KEY_SEED: u64 = 0x6c62_2d6b_6579_2d31; // "lb-key-1"
/// Seed for a backend's Maglev offset.
pub const OFFSET_SEED: u64 = 0x6c62_2d6f_6666_2d31; // "lb-off-1"
/// Seed for a backend's Maglev skip.
pub const SKIP_SEED: u64 = 0x6c62_2d73_6b70_2d31; // "lb-skp-1"
/// Seed for the priority level a hashed key goes to ([`level_draw`]); a seed of its own so
/// the level does not follow the backend the key maps to within a level.
pub const LEVEL_SEED: u64 = 0x6c62_2d6c_766c_2d31; // "lb-lvl-1"

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `bytes` with `seed`.
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in seed.to_le_bytes().iter().chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Where a client key falls in `0..scale` when a hashed pool picks its priority level
/// ([`crate::balance::priority::choose`]): fixed by the key, so a sticky client stays on its
/// level while the levels' health is unchanged.
pub fn level_draw(key: u64, scale: u32) -> u32 {
    (hash64(LEVEL_SEED, &key.to_le_bytes()) % u64::from(scale)) as u32
}

/// Key for `hash_key = "source-ip"`. IPv4-mapped IPv6 addresses hash as their IPv4 form,
/// so a dual-stack listener keeps a client on one backend.
pub fn ip_key(ip: IpAddr) -> u64 {
    match canonical(ip) {
        IpAddr::V4(v4) => hash64(KEY_SEED, &v4.octets()),
        IpAddr::V6(v6) => hash64(KEY_SEED, &v6.octets()),
    }
}

/// Key for `hash_key = "sni"`: the server name, lowercased already by the parser.
pub fn name_key(name: &str) -> u64 {
    hash64(KEY_SEED, name.as_bytes())
}

/// Key for `hash_key = "source-addr"`: IP and port.
pub fn addr_key(addr: SocketAddr) -> u64 {
    let mut buf = [0u8; 18];
    let n = match canonical(addr.ip()) {
        IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            buf[..16].copy_from_slice(&v6.octets());
            16
        }
    };
    buf[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
    hash64(KEY_SEED, &buf[..n + 2])
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_LB: u64 = 535_958_458_462_568_119;
    const PINNED_IP: u64 = 9_347_713_664_696_496_783;

    /// Pinned values: if these change, every sticky client in the field moves.
    #[test]
    fn hash_is_stable_across_builds() {
        assert_eq!(hash64(KEY_SEED, b"lb"), PINNED_LB);
        assert_eq!(ip_key("192.0.2.1".parse().expect("ip")), PINNED_IP);
        let a = ip_key("10.0.0.1".parse().expect("ip"));
        let b = ip_key("::ffff:10.0.0.1".parse().expect("ip"));
        assert_eq!(a, b, "mapped v6 hashes as v4");
        assert_ne!(a, ip_key("10.0.0.2".parse().expect("ip")));
        assert_ne!(
            addr_key("10.0.0.1:1".parse().expect("addr")),
            addr_key("10.0.0.1:2".parse().expect("addr"))
        );
    }
}
