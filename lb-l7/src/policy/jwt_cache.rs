//! The tokens a `jwt` policy has verified, so a client presenting the same token again (as
//! every request of a session does) costs one SHA-256 of it instead of a signature check and
//! three JSON parses; Envoy's `jwt_authn` keeps the same kind of cache. What a hit replays
//! is what cannot change while the policy lives: the signature, algorithm, key, issuer,
//! audience and `crit` checks passed, and these are the claims. The time checks (`exp` and
//! `nbf`, with the leeway) are made again on every hit, with jsonwebtoken's own rule, and a
//! token that fails them is verified in full (and refused with the reason). Only tokens
//! that passed are kept, so a bad token always costs the full check.
//!
//! Entries are found by the token's digest and keep its claims, never the token itself: no
//! bearer credential outlives its request, and a timing difference in the lookup tells a
//! client only about digests. The table is direct-mapped and fixed in size, a new token
//! taking its slot's place, and keeps tokens of at most [`MAX_TOKEN`] bytes, so its memory
//! is bounded whatever clients send; only tokens the issuer signed get in at all (at worst
//! clients evict each other, costing a re-check). A reload builds a new policy, hence a new,
//! empty table with the new keys.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Slots per policy (under 100 bytes each, plus the claims held).
pub const SLOTS: usize = 512;

/// Longer tokens are always verified in full (typical ones are well under 1 KiB), so the
/// claims held stay a few KiB per slot.
pub const MAX_TOKEN: usize = 4096;

/// A token's key in the table.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    digest: TokenDigest,
    claims: Arc<Value>,
    exp: u64,
    nbf: Option<u64>,
}

pub struct Verified {
    slots: Box<[Mutex<Option<Entry>>]>,
    leeway: u64,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verified({} slots)", self.slots.len())
    }
}

/// jsonwebtoken's time rule (`validation::validate`), on the claims it parsed as numbers:
/// expired when `exp < now - leeway`, not yet valid when `nbf > now + leeway`.
fn in_time(exp: u64, nbf: Option<u64>, leeway: u64, now: u64) -> bool {
    let expired = exp < now.saturating_sub(leeway);
    let early = nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway));
    !expired && !early
}

impl Verified {
    pub fn new(leeway: u64) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
            leeway,
        }
    }

    fn slot(&self, digest: &TokenDigest) -> &Mutex<Option<Entry>> {
        let mut low = [0u8; 8];
        low.copy_from_slice(&digest[..8]);
        &self.slots[(u64::from_le_bytes(low) % self.slots.len() as u64) as usize]
    }

    /// The claims of the token with `digest`, if it was verified and is in time at `now`
    /// (seconds since the epoch). A token out of time leaves the table.
    pub fn get(&self, digest: &TokenDigest, now: u64) -> Option<Arc<Value>> {
        let mut slot = self.slot(digest).lock().unwrap_or_else(|e| e.into_inner());
        let entry = slot.as_ref().filter(|e| e.digest == *digest)?;
        if in_time(entry.exp, entry.nbf, self.leeway, now) {
            return Some(entry.claims.clone());
        }
        *slot = None;
        None
    }

    /// Keeps the claims of a token that was just verified in full. Claims whose `exp` (or
    /// `nbf`, if present) is not a number jsonwebtoken would have read are not kept: the time
    /// rule could not be replayed exactly for them.
    pub fn put(&self, digest: TokenDigest, claims: Arc<Value>) {
        let number = |name: &str| claims.get(name).map(Value::as_u64);
        let (Some(Some(exp)), nbf @ (None | Some(Some(_)))) = (number("exp"), number("nbf")) else {
            return;
        };
        let entry = Entry {
            digest,
            exp,
            nbf: nbf.flatten(),
            claims,
        };
        *self.slot(&digest).lock().unwrap_or_else(|e| e.into_inner()) = Some(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Arc<Value> {
        Arc::new(v)
    }

    #[test]
    fn a_kept_token_is_found_by_its_digest_only() {
        let cache = Verified::new(0);
        let d = digest("a.b.c");
        cache.put(d, claims(json!({"sub": "x", "exp": 1_000})));
        assert_eq!(cache.get(&d, 500).expect("kept")["sub"], "x");
        // One character changed (a forged signature) is another digest: no hit.
        assert!(cache.get(&digest("a.b.d"), 500).is_none());
    }

    #[test]
    fn a_hit_is_refused_once_the_token_expires_and_the_entry_leaves() {
        let cache = Verified::new(30);
        let d = digest("t");
        cache.put(d, claims(json!({"exp": 1_000})));
        assert!(cache.get(&d, 1_030).is_some(), "inside the leeway");
        assert!(cache.get(&d, 1_031).is_none(), "past exp + leeway");
        assert!(
            cache.get(&d, 1_000).is_none(),
            "the expired entry was dropped"
        );
    }

    #[test]
    fn nbf_is_checked_on_every_hit() {
        let cache = Verified::new(0);
        let d = digest("t");
        cache.put(d, claims(json!({"exp": 2_000, "nbf": 1_500})));
        // A clock stepped back before nbf: the token is early again.
        assert!(cache.get(&d, 1_499).is_none());
    }

    #[test]
    fn claims_whose_times_do_not_read_as_numbers_are_not_kept() {
        let cache = Verified::new(0);
        for (i, c) in [
            json!({"exp": 1.5e9}),
            json!({"exp": "2000"}),
            json!({"exp": 2_000, "nbf": "soon"}),
            json!({"sub": "no exp"}),
        ]
        .into_iter()
        .enumerate()
        {
            let d = digest(&i.to_string());
            cache.put(d, claims(c));
            assert!(cache.get(&d, 1).is_none());
        }
    }

    #[test]
    fn a_token_in_the_same_slot_replaces_the_one_before() {
        let cache = Verified::new(0);
        let first = digest("first");
        // Find a second token landing in the same slot.
        let second = (0..)
            .map(|i| digest(&format!("t{i}")))
            .find(|d| std::ptr::eq(cache.slot(d), cache.slot(&first)))
            .expect("some token shares the slot");
        cache.put(first, claims(json!({"exp": 10})));
        // Sharing a slot is not being the same token.
        assert!(cache.get(&second, 1).is_none());
        cache.put(second, claims(json!({"exp": 10})));
        assert!(cache.get(&first, 1).is_none());
        assert!(cache.get(&second, 1).is_some());
    }
}
