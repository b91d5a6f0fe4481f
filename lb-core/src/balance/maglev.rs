//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI 2016), weighted, with
//! optional bounded load. The table is built from the *configured* backends, never from the
//! healthy ones: a backend going down changes no slot, its keys fall through to the next slot
//! whose backend is eligible, and every other key stays put; when it comes back, its keys
//! return. Only a config change rebuilds the table.
//!
//! Determinism: a backend's permutation comes from hashing its address with the fixed seeds
//! in [`crate::hash`], and members take their turns in identity order, so every lb process with the same members,
//! listed in any order, builds the same table.

use super::{eligible, Member, Pick, Selector, View};
use crate::hash::{hash64, OFFSET_SEED, SKIP_SEED};
use crate::health::state::FULL_SHARE;

/// Default table size: a prime well above any sane backend count, as the paper recommends
/// (M ≫ 100·N keeps per-backend shares within about 1%).
pub const DEFAULT_TABLE_SIZE: usize = 65_537;

/// Slots per backend below which a bigger table is used. Maglev fills its table in rounds,
/// one slot per backend (per unit of weight) each, so backends' slot counts differ by at
/// most one: 20 slots each keeps shares within 5%. A fixed 65,537 slots gave 100,000
/// backends fewer slots than backends (a third got none); 100 each would cost 40 MB there.
pub const MIN_SLOTS_PER_BACKEND: usize = 20;

/// The table size for `n` members: [`DEFAULT_TABLE_SIZE`] up to 3,276 members (so their
/// tables, and where keys go, are what they always were), else the first prime from
/// `n` × [`MIN_SLOTS_PER_BACKEND`]. A function of `n` only, so every lb process with the same
/// config builds the same table.
pub fn table_size(n: usize) -> usize {
    let want = n.saturating_mul(MIN_SLOTS_PER_BACKEND);
    if want <= DEFAULT_TABLE_SIZE {
        return DEFAULT_TABLE_SIZE;
    }
    (want..)
        .find(|&m| is_prime(m as u64))
        .unwrap_or(DEFAULT_TABLE_SIZE)
}

const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
    members: usize,
    balance_factor: Option<f64>,
}

impl Maglev {
    /// Builds the table. `size` must be prime and larger than the number of members (the
    /// permutation needs a prime modulus to visit every slot).
    pub fn new(members: &[Member], size: usize, balance_factor: Option<f64>) -> Self {
        assert!(
            size > 1 && is_prime(size as u64),
            "Maglev table size {size} must be prime"
        );
        let n = members.len();
        let mut table = vec![EMPTY; size].into_boxed_slice();
        if n > 0 {
            populate(&mut table, members);
        }
        Self {
            table,
            members: n,
            balance_factor,
        }
    }

    /// The slot's owner for `key`, ignoring health (for tests and status).
    pub fn owner(&self, key: u64) -> Option<usize> {
        let i = self.table[(key % self.table.len() as u64) as usize];
        (i != EMPTY).then_some(i as usize)
    }

    fn fits(&self, view: &dyn View, i: usize, bound: Option<u64>) -> bool {
        bound.is_none_or(|b| view.active(i) < b)
    }

    /// Bounded-load capacity: ceil(factor × (active + 1) / available backends).
    fn bound(&self, p: &Pick<'_>) -> Option<u64> {
        let factor = self.balance_factor?;
        let (mut total, mut avail) = (0u64, 0u64);
        for i in 0..p.view.len() {
            if p.view.available(i) {
                total += p.view.active(i);
                avail += 1;
            }
        }
        (avail > 0).then(|| (factor * (total + 1) as f64 / avail as f64).ceil() as u64)
    }
}

fn populate(table: &mut [u32], members: &[Member]) {
    let m = table.len() as u64;
    // Each member's next slot in its permutation, (offset + j·skip) mod m for its j-th
    // probe, kept as a running position: one add and compare per probe instead of a
    // multiply and a division (the build of a 2,000,003-slot table is mostly probes).
    let mut perms: Vec<(u64, u64)> = members
        .iter()
        .map(|mb| {
            let offset = hash64(OFFSET_SEED, mb.id.as_bytes()) % m;
            let skip = hash64(SKIP_SEED, mb.id.as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    // Members take their turns in identity order, not config order: turns only decide which
    // of two members probing the same empty slot in one round gets it, and in config order a
    // reordered config (or a DNS answer in another order) moved a few keys for no reason.
    let mut turns: Vec<usize> = (0..members.len()).collect();
    turns.sort_by(|&a, &b| members[a].id.cmp(&members[b].id));
    let mut filled = 0usize;
    loop {
        for &i in &turns {
            let mb = &members[i];
            // Weighted Maglev: a backend claims `weight` slots per round.
            for _ in 0..mb.weight.max(1) {
                let (pos, skip) = &mut perms[i];
                loop {
                    let slot = *pos as usize;
                    *pos += *skip;
                    if *pos >= m {
                        *pos -= m;
                    }
                    if table[slot] == EMPTY {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == table.len() {
                    return;
                }
            }
        }
    }
}

/// Whether backend `i` takes `key` at its share: all keys at a full share; while slow start
/// ramps, the keys whose second hash falls below the share, so each key moves once (to the
/// backend it belongs to, when the share reaches it) and the same keys in every process.
fn takes(view: &dyn View, i: usize, key: u64) -> bool {
    let share = view.share(i);
    share >= FULL_SHARE || (mix(key) % u64::from(FULL_SHARE)) < u64::from(share)
}

/// A hash of a key hash independent of its slot (splitmix64's finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

impl Selector for Maglev {
    fn select(&self, p: Pick<'_>) -> Option<usize> {
        if self.members == 0 {
            return None;
        }
        let m = self.table.len();
        let start = (p.key % m as u64) as usize;
        let bound = self.bound(&p);
        let first = self.table[start] as usize;
        if eligible(p.view, p.tried, first)
            && self.fits(p.view, first, bound)
            && takes(p.view, first, p.key)
        {
            return Some(first);
        }
        if !(0..p.view.len()).any(|i| eligible(p.view, p.tried, i)) {
            return None;
        }
        // Fall through to the next slots: the same walk in every process, so a down
        // backend's keys land on the same substitute everywhere.
        let mut fallback = None;
        for step in 1..m {
            let i = self.table[(start + step) % m] as usize;
            if eligible(p.view, p.tried, i) {
                if self.fits(p.view, i, bound) && takes(p.view, i, p.key) {
                    return Some(i);
                }
                fallback.get_or_insert(i);
            }
        }
        fallback
    }
}

#[cfg(test)]
mod tests;
