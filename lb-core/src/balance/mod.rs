//! Balancing algorithms behind one small trait. A selector is built off the data path from
//! the pool's configured backends and asked, per connection, for the best backend that is
//! available and not yet tried; calling it again after a failed connect yields the next
//! candidate. Pure: no I/O, no clock; randomness is passed in. Counters for
//! least-connections and power-of-two are read through [`View`] (atomics in the shell).

mod least_conn;
mod maglev;
pub mod moved;
mod p2c;
pub mod priority;
mod random;
mod round_robin;
mod weighted;

pub use least_conn::LeastConnections;
pub use maglev::{table_size, Maglev, DEFAULT_TABLE_SIZE, MIN_SLOTS_PER_BACKEND};
pub use p2c::PowerOfTwo;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted::SmoothWeighted;

use crate::config::Algorithm;

/// The live state a selector reads: one entry per backend of the group, by index.
pub trait View {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Up, enabled and not ejected.
    fn available(&self, i: usize) -> bool;
    /// Connections open or being opened to backend `i`.
    fn active(&self, i: usize) -> u64;
    /// Relative weight (slow start applied), at least 1; only ratios between backends mean
    /// anything.
    fn weight(&self, i: usize) -> u32;
    /// The share of its traffic backend `i` may take, in thousandths (slow start ramps it up
    /// to [`crate::health::state::FULL_SHARE`]); for algorithms that do not pick by weight.
    fn share(&self, _i: usize) -> u32 {
        crate::health::state::FULL_SHARE
    }
}

/// Backends already tried for one client connection, so a retry moves on.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    low: u64,
    high: Vec<usize>,
}

impl Tried {
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.low |= 1 << i;
        } else if !self.high.contains(&i) {
            self.high.push(i);
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.low & (1 << i) != 0
        } else {
            self.high.contains(&i)
        }
    }

    pub fn clear(&mut self) {
        self.low = 0;
        self.high.clear();
    }
}

/// Whether backend `i` may be picked now.
#[inline]
pub(crate) fn eligible(view: &dyn View, tried: &Tried, i: usize) -> bool {
    !tried.contains(i) && view.available(i)
}

/// What a selector needs per pick.
pub struct Pick<'a> {
    /// The client's key hash (consistent-hash only).
    pub key: u64,
    pub view: &'a dyn View,
    pub tried: &'a Tried,
    pub rng: &'a mut fastrand::Rng,
}

/// One balancing algorithm over a fixed set of backends.
pub trait Selector: Send + Sync + std::fmt::Debug {
    /// The best eligible backend, or `None` when every backend is down or tried.
    fn select(&self, pick: Pick<'_>) -> Option<usize>;
}

/// Identity and weight of a configured backend, as the selectors are built from them.
#[derive(Debug, Clone)]
pub struct Member {
    /// Stable identity hashed by Maglev: the backend address as written (`10.0.0.1:80`).
    pub id: String,
    pub weight: u32,
}

/// Builds the selector for `algorithm` over `members`.
pub fn build(
    algorithm: Algorithm,
    members: &[Member],
    hash_balance_factor: Option<f64>,
) -> Box<dyn Selector> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::new()),
        Algorithm::WeightedRoundRobin => Box::new(SmoothWeighted::new(members.len())),
        Algorithm::LeastConnections => Box::new(LeastConnections::new()),
        Algorithm::Random => Box::new(Random),
        Algorithm::PowerOfTwo => Box::new(PowerOfTwo),
        Algorithm::ConsistentHash => Box::new(Maglev::new(
            members,
            table_size(members.len()),
            hash_balance_factor,
        )),
    }
}

/// Picks `i` in proportion to `weight(i)` among eligible backends: `r` in `0..total`.
pub(crate) fn weighted_choice(
    view: &dyn View,
    tried: &Tried,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let total: u64 = (0..view.len())
        .filter(|&i| eligible(view, tried, i))
        .map(|i| u64::from(view.weight(i)))
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.u64(0..total);
    for i in 0..view.len() {
        if !eligible(view, tried, i) {
            continue;
        }
        let w = u64::from(view.weight(i));
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// `a` carries less load per unit of weight than `b`.
#[inline]
pub(crate) fn less_loaded(view: &dyn View, a: usize, b: usize) -> bool {
    u128::from(view.active(a)) * u128::from(view.weight(b))
        < u128::from(view.active(b)) * u128::from(view.weight(a))
}

#[cfg(test)]
pub(crate) mod testing;
