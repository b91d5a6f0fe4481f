//! How many keys a consistent-hash group moves when its members change, read off the real
//! Maglev tables both configs build (what `lb check --diff` reports), beside the least any
//! change of those members could move. Pure: no I/O.

use std::collections::HashMap;

use super::{table_size, Maglev, Member};
use crate::hash::{hash64, KEY_SEED};

/// Keys hashed when the two tables differ in size (slot `k` of one is not slot `k` of the
/// other, so the tables cannot be compared slot by slot).
const SAMPLED_KEYS: u64 = 1_000_000;

/// The share of keys whose backend changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Movement {
    /// Fraction of keys (0.0–1.0) whose owner in the new table differs from the old one.
    pub moved: f64,
    /// The least any table could move: the share of traffic that changes hands by weight.
    pub ideal: f64,
    /// Exact (slot by slot, both tables the same size) or estimated over sampled keys.
    pub exact: bool,
}

/// Compares the tables built from `old` and `new`, as the runtime builds them: members are
/// the same backend when their identities (addresses as written) are equal.
pub fn movement(old: &[Member], new: &[Member]) -> Movement {
    let a = Maglev::new(old, table_size(old.len()), None);
    let b = Maglev::new(new, table_size(new.len()), None);
    let id = |members: &'_ [Member], owner: Option<usize>| owner.map(|i| members[i].id.clone());
    let (a_size, b_size) = (table_size(old.len()), table_size(new.len()));
    let (keys, exact): (Box<dyn Iterator<Item = u64>>, bool) = if a_size == b_size {
        // owner(k) reads slot k % size: the keys 0..size visit every slot once.
        (Box::new(0..a_size as u64), true)
    } else {
        let sample = (0..SAMPLED_KEYS).map(|i| hash64(KEY_SEED, &i.to_le_bytes()));
        (Box::new(sample), false)
    };
    let (mut total, mut moved) = (0u64, 0u64);
    for key in keys {
        total += 1;
        if id(old, a.owner(key)) != id(new, b.owner(key)) {
            moved += 1;
        }
    }
    Movement {
        moved: moved as f64 / total.max(1) as f64,
        ideal: ideal(old, new),
        exact,
    }
}

fn shares(members: &[Member]) -> HashMap<&str, f64> {
    let total: f64 = members.iter().map(|m| f64::from(m.weight)).sum();
    members
        .iter()
        .map(|m| (m.id.as_str(), f64::from(m.weight) / total))
        .collect()
}

/// 1 − Σ over members in both of min(old share, new share): the traffic a perfect table would
/// still have to move, since a member's keys can only stay up to its smaller share.
pub fn ideal(old: &[Member], new: &[Member]) -> f64 {
    if old.is_empty() && new.is_empty() {
        return 0.0;
    }
    let (a, b) = (shares(old), shares(new));
    let kept: f64 = a
        .iter()
        .filter_map(|(id, s)| b.get(id).map(|t| s.min(*t)))
        .sum();
    (1.0 - kept).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter()
            .map(|id| Member {
                id: id.to_string(),
                weight: 1,
            })
            .collect()
    }

    /// The fraction by brute force: hash keys as clients' keys are hashed, look both up.
    fn measured(old: &[Member], new: &[Member], keys: u64) -> f64 {
        let a = Maglev::new(old, table_size(old.len()), None);
        let b = Maglev::new(new, table_size(new.len()), None);
        let moved = (0..keys)
            .map(|i| hash64(KEY_SEED, format!("client-{i}").as_bytes()))
            .filter(|&k| a.owner(k).map(|i| &old[i].id) != b.owner(k).map(|i| &new[i].id))
            .count();
        moved as f64 / keys as f64
    }

    #[test]
    fn losing_one_of_four_moves_a_quarter_and_agrees_with_hashed_keys() {
        let old = members(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]);
        let new = members(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80"]);
        let m = movement(&old, &new);
        assert!(m.exact);
        assert!((m.ideal - 0.25).abs() < 1e-9, "{m:?}");
        assert!((m.moved - 0.25).abs() <= 0.01, "{m:?}");
        assert!(
            (m.moved - measured(&old, &new, 100_000)).abs() <= 0.005,
            "{m:?}"
        );
    }

    #[test]
    fn the_same_members_in_another_order_move_nothing() {
        let old = members(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        let new = members(&["10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80"]);
        let m = movement(&old, &new);
        assert_eq!(m.moved, 0.0);
        assert_eq!(m.ideal, 0.0);
    }

    #[test]
    fn adding_one_to_n_moves_about_one_in_n_plus_one() {
        let old: Vec<String> = (1..=9).map(|i| format!("10.0.0.{i}:80")).collect();
        let old = members(&old.iter().map(String::as_str).collect::<Vec<_>>());
        let mut new = old.clone();
        new.push(members(&["10.0.0.10:80"]).remove(0));
        let m = movement(&old, &new);
        assert!((m.ideal - 0.1).abs() < 1e-9);
        assert!(
            m.moved >= m.ideal - 0.01 && m.moved <= m.ideal + 0.03,
            "{m:?}"
        );
    }

    #[test]
    fn weights_set_the_ideal_and_emptiness_moves_everything() {
        let mut old = members(&["a:1", "b:1"]);
        old[0].weight = 3;
        let new = members(&["a:1"]);
        assert!((ideal(&old, &new) - 0.25).abs() < 1e-9);
        assert_eq!(movement(&old, &[]).moved, 1.0);
        assert_eq!(movement(&[], &old).moved, 1.0);
        assert_eq!(movement(&[], &[]).moved, 0.0);
    }

    #[test]
    fn tables_of_different_sizes_are_compared_by_sampled_keys() {
        let n = 4_000; // above the 3,276 members a default-size table holds
        let old: Vec<Member> = (0..n)
            .map(|i| Member {
                id: format!("10.1.{}.{}:80", i / 250, i % 250),
                weight: 1,
            })
            .collect();
        let new = old[..3_000].to_vec();
        let m = movement(&old, &new);
        assert!(!m.exact);
        assert!((m.ideal - 0.25).abs() < 1e-9);
        assert!(
            (m.moved - measured(&old, &new, 100_000)).abs() <= 0.01,
            "{m:?}"
        );
    }
}
