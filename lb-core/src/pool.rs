//! A pool at run time: its backends and one selector per priority level. Built once from
//! the config, off the data path; picking reads atomics only. Which level a new connection,
//! request or flow goes to is decided here, in [`choose_level`], for tcp, udp and http alike.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::Backend;
use crate::balance::priority::{self, LOAD_SCALE};
use crate::balance::{self, Member, Pick, Selector, Tried, View};
use crate::config::{self, Algorithm};
use crate::hash;

/// The most priority levels a pool has: priorities 0 to [`config::MAX_PRIORITY`].
const LEVELS: usize = config::MAX_PRIORITY as usize + 1;

#[derive(Debug)]
pub struct Pool {
    pub config: config::Pool,
    pub backends: Vec<Arc<Backend>>,
    /// One group per priority in use, lowest (preferred) first.
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Group {
    priority: u8,
    /// Indices into `Pool::backends`, ascending.
    members: Vec<usize>,
    /// The configured weights of `members`, summed: a level's health is the available part.
    total_weight: u64,
    selector: Box<dyn Selector>,
}

struct GroupView<'a> {
    pool: &'a Pool,
    group: &'a Group,
}

impl View for GroupView<'_> {
    fn len(&self) -> usize {
        self.group.members.len()
    }
    fn available(&self, i: usize) -> bool {
        self.pool.backends[self.group.members[i]].available()
    }
    fn active(&self, i: usize) -> u64 {
        self.pool.backends[self.group.members[i]]
            .active
            .load(std::sync::atomic::Ordering::Relaxed)
    }
    fn weight(&self, i: usize) -> u32 {
        let b = &self.pool.backends[self.group.members[i]];
        b.weight.saturating_mul(b.share()).max(1)
    }
    fn share(&self, i: usize) -> u32 {
        self.pool.backends[self.group.members[i]].share()
    }
}

/// The candidates tried so far for one client connection, per priority group. The first
/// two groups (primary and backup, the common case) need no allocation.
#[derive(Debug, Default)]
pub struct Attempt {
    /// The level (index into the pool's groups) drawn for the first pick; a retry tries it
    /// again first, then the other levels in priority order.
    level: Option<usize>,
    first: [Tried; 2],
    more: Vec<Tried>,
}

impl Attempt {
    fn group(&mut self, g: usize) -> &mut Tried {
        if g < 2 {
            return &mut self.first[g];
        }
        let i = g - 2;
        if self.more.len() <= i {
            self.more.resize_with(i + 1, Tried::default);
        }
        &mut self.more[i]
    }
}

impl Pool {
    /// Builds the pool, reusing a backend of `previous` with the same address, weight and
    /// priority so it keeps its health state, counters and admin state. A backend new to a
    /// running pool joins down until its first health check passes.
    pub fn new(cfg: &config::Pool, previous: Option<&Pool>) -> Self {
        // Indexed by address, so reloading a pool of N backends is O(N), not O(N²) (ten
        // billion comparisons for 100,000 backends). Addresses are unique within a pool.
        let old: HashMap<SocketAddr, &Arc<Backend>> = previous
            .map(|p| p.backends.iter().map(|b| (b.addr, b)).collect())
            .unwrap_or_default();
        let kept: Vec<Option<Arc<Backend>>> = cfg
            .backends
            .iter()
            .map(|b| {
                old.get(&b.addr)
                    .filter(|o| {
                        o.weight == b.weight.get() && o.priority == b.priority && o.zone == b.zone
                    })
                    .map(|o| Arc::clone(o))
            })
            .collect();
        // A member joining a running pool waits for its first health check only while
        // another member can serve; when none can (DNS replaced the whole set), it joins up
        // as at start-up, so a membership change never leaves the pool with nothing to pick.
        let wait_for_check = previous.is_some() && kept.iter().flatten().any(|b| b.available());
        let backends: Vec<Arc<Backend>> = kept
            .into_iter()
            .zip(&cfg.backends)
            .map(|(k, b)| match k {
                Some(o) => o,
                None if wait_for_check => Arc::new(Backend::joining(cfg, b)),
                None => Arc::new(Backend::new(cfg, b)),
            })
            .collect();
        drop(old);
        let mut priorities: Vec<u8> = backends.iter().map(|b| b.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let groups = priorities
            .into_iter()
            .map(|priority| {
                let members: Vec<usize> = (0..backends.len())
                    .filter(|&i| backends[i].priority == priority)
                    .collect();
                let ms: Vec<Member> = members
                    .iter()
                    .map(|&i| Member {
                        id: backends[i].id.clone(),
                        weight: backends[i].weight,
                    })
                    .collect();
                Group {
                    priority,
                    selector: balance::build(cfg.algorithm, &ms, cfg.hash_balance_factor),
                    total_weight: ms.iter().map(|m| u64::from(m.weight)).sum(),
                    members,
                }
            })
            .collect();
        Self {
            config: cfg.clone(),
            backends,
            groups,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The next backend to try for this connection, or `None` when all are down or tried.
    /// The first call draws the connection's priority level ([`Pool::level`]); each call
    /// tries that level first, then the others in priority order, so a client never sees a
    /// failure while any backend is up.
    pub fn next(&self, key: u64, attempt: &mut Attempt, rng: &mut fastrand::Rng) -> Option<usize> {
        let first = *attempt.level.get_or_insert_with(|| self.level(key, rng));
        if let Some(group) = self.groups.get(first) {
            if let Some(i) = self.pick_in(group, key, attempt.group(first), rng) {
                return Some(i);
            }
        }
        self.groups
            .iter()
            .enumerate()
            .filter(|&(g, _)| g != first)
            .find_map(|(g, group)| self.pick_in(group, key, attempt.group(g), rng))
    }

    /// The level (group index) a new connection goes to: [`choose_level`] over the levels'
    /// health now, with a draw from `rng` — or, for consistent hashing, from the key's hash, so
    /// a client stays on its level while the health does not change. A pool of one level
    /// draws nothing; while level 0 is fully healthy the other levels are not read.
    fn level(&self, key: u64, rng: &mut fastrand::Rng) -> usize {
        let n = self.groups.len().min(LEVELS);
        if n < 2 {
            return 0;
        }
        let mut now = None;
        let mut health = [0u32; LEVELS];
        health[0] = self.health(&self.groups[0], &mut now);
        if health[0] == LOAD_SCALE {
            return 0;
        }
        for (h, group) in health[1..n].iter_mut().zip(&self.groups[1..n]) {
            *h = self.health(group, &mut now);
        }
        let draw = if self.config.algorithm == Algorithm::ConsistentHash {
            hash::level_draw(key, LOAD_SCALE)
        } else {
            rng.u32(0..LOAD_SCALE)
        };
        choose_level(&health[..n], draw)
    }

    /// A level's health ([`priority::health`]): its available weight over its total, times
    /// the pool's `overprovisioning`. Stops reading members once the level is fully healthy.
    fn health(&self, group: &Group, now: &mut Option<u64>) -> u32 {
        let pct = self.config.overprovisioning_pct;
        let full = u128::from(group.total_weight) * 100;
        let mut available = 0u64;
        for &i in &group.members {
            let b = &self.backends[i];
            if b.available_lazy(now) {
                available += u64::from(b.weight);
                if u128::from(available) * u128::from(pct) >= full {
                    return LOAD_SCALE;
                }
            }
        }
        priority::health(available, group.total_weight, pct)
    }

    /// Each priority level and its share of new traffic now, in parts of [`LOAD_SCALE`]
    /// (`/api/status`, `/metrics`); all 0 when no member is available.
    pub fn priority_loads(&self) -> Vec<(u8, u32)> {
        let mut now = None;
        let health: Vec<u32> = self
            .groups
            .iter()
            .map(|g| self.health(g, &mut now))
            .collect();
        let loads = priority::loads(&health);
        self.groups.iter().map(|g| g.priority).zip(loads).collect()
    }

    fn pick_in(
        &self,
        group: &Group,
        key: u64,
        tried: &mut Tried,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        if group.members.is_empty() {
            return None;
        }
        let view = GroupView { pool: self, group };
        let gi = group.selector.select(Pick {
            key,
            view: &view,
            tried,
            rng,
        })?;
        tried.insert(gi);
        Some(group.members[gi])
    }

    /// Counts backend `i` as tried by this attempt (one picked outside the algorithm, such as
    /// a sticky one), so [`Pool::next`] does not give it again.
    pub fn mark_tried(&self, i: usize, attempt: &mut Attempt) {
        for (g, group) in self.groups.iter().enumerate() {
            // `members` is in ascending order (built by filtering 0..len).
            if let Ok(gi) = group.members.binary_search(&i) {
                attempt.group(g).insert(gi);
            }
        }
    }

    pub fn find(&self, addr: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.id == addr)
    }
}

/// The level a new connection goes to, from the levels' health scores
/// ([`priority::health`], lowest priority first) and a draw in `0..LOAD_SCALE`: the one place
/// tcp, udp and http pools decide it (Envoy's priority load, [`priority::fill_loads`]). Pure.
/// Level 0 when no level has any health (the walk over the levels then finds nothing).
pub fn choose_level(health: &[u32], draw: u32) -> usize {
    let mut loads = [0u32; LEVELS];
    let n = health.len().min(LEVELS);
    priority::fill_loads(&health[..n], &mut loads[..n]);
    priority::choose(&loads[..n], draw).unwrap_or(0)
}

/// A pool goes away when a reload replaced it and the last connection using it ended, often
/// on a worker; with a big pool, most of what lb holds goes with it. Its backends and group
/// members are freed on the reclaim thread, which then gives the memory back to the kernel
/// (see [`crate::reclaim`]).
impl Drop for Pool {
    fn drop(&mut self) {
        let backends = std::mem::take(&mut self.backends);
        let groups = std::mem::take(&mut self.groups);
        crate::reclaim::drop_later((backends, groups));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AdminState;

    fn pool(text_backends: &str, algorithm: &str) -> Pool {
        pool_with(text_backends, algorithm, "")
    }

    fn pool_with(text_backends: &str, algorithm: &str, keys: &str) -> Pool {
        let text = format!(
            "[[listener]]\nname=\"l\"\nbind=\"127.0.0.1:1\"\npool=\"p\"\n[[pool]]\nname=\"p\"\nalgorithm=\"{algorithm}\"\n{keys}\nbackends=[{text_backends}]\n"
        );
        let loaded = config::load_str("t", &text).expect("valid");
        Pool::new(&loaded.config.pools[0], None)
    }

    #[test]
    fn backups_only_when_no_primary_is_available() {
        // With overprovisioning 2.0, one primary of two is still a fully healthy level.
        let p = pool_with(
            r#"{addr="127.0.0.1:1"},{addr="127.0.0.1:2"},{addr="127.0.0.1:3",backup=true}"#,
            "round-robin",
            "overprovisioning = 2.0",
        );
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..10 {
            let i = p.next(0, &mut Attempt::default(), &mut rng).expect("some");
            assert_eq!(p.backends[i].priority, 0);
        }
        p.backends[0].set_admin_state(AdminState::Disabled);
        p.backends[1].set_admin_state(AdminState::Draining);
        assert_eq!(p.next(0, &mut Attempt::default(), &mut rng), Some(2));
        p.backends[1].set_admin_state(AdminState::Enabled);
        assert_eq!(p.next(0, &mut Attempt::default(), &mut rng), Some(1));
    }

    /// Three primaries and three backups, `available` of the primaries up: the share of
    /// `n` picks that reach the backups.
    fn spill(p: &Pool, n: u32, rng: &mut fastrand::Rng) -> f64 {
        let to_backups = (0..n)
            .filter(|&k| {
                let i = p.next(u64::from(k), &mut Attempt::default(), rng);
                p.backends[i.expect("some backend")].priority > 0
            })
            .count();
        to_backups as f64 / f64::from(n)
    }

    const SIX: &str = r#"{addr="127.0.0.1:1"},{addr="127.0.0.1:2"},{addr="127.0.0.1:3"},{addr="127.0.0.1:4",priority=1},{addr="127.0.0.1:5",priority=1},{addr="127.0.0.1:6",priority=1}"#;

    #[test]
    fn traffic_spills_to_the_next_level_by_the_formula_and_returns() {
        let mut rng = fastrand::Rng::with_seed(7);
        for algorithm in [
            "round-robin",
            "random",
            "least-connections",
            "consistent-hash",
        ] {
            let p = pool(SIX, algorithm);
            // Level 0 health with 1.4: 3/3 → 100 %, 2/3 → 93.33 %, 1/3 → 46.67 %, 0 → 0.
            for (down, want) in [(0, 0.0), (1, 1.0 - 0.9333), (2, 1.0 - 0.4666), (3, 1.0)] {
                for b in &p.backends[..3] {
                    b.set_admin_state(AdminState::Enabled);
                }
                for b in &p.backends[..down] {
                    b.set_admin_state(AdminState::Disabled);
                }
                let loads = p.priority_loads();
                assert_eq!(loads.len(), 2);
                assert!(
                    (f64::from(loads[1].1) / 10_000.0 - want).abs() < 1e-3,
                    "{loads:?}"
                );
                let got = spill(&p, 20_000, &mut rng);
                assert!(
                    (got - want).abs() < 0.015,
                    "{algorithm}, {down} down: {got} to level 1, formula {want}"
                );
            }
        }
    }

    #[test]
    fn overprovisioning_one_spills_at_the_first_failure() {
        let p = pool_with(SIX, "random", "overprovisioning = 1.0");
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(spill(&p, 2_000, &mut rng), 0.0);
        p.backends[0].set_admin_state(AdminState::Draining);
        let got = spill(&p, 20_000, &mut rng);
        assert!((got - 1.0 / 3.0).abs() < 0.015, "{got}");
    }

    #[test]
    fn a_hashed_key_keeps_its_level_and_backend_while_health_holds() {
        let p = pool(SIX, "consistent-hash");
        let mut rng = fastrand::Rng::with_seed(1);
        p.backends[0].set_admin_state(AdminState::Disabled);
        p.backends[1].set_admin_state(AdminState::Disabled);
        let first: Vec<usize> = (0..2_000u64)
            .map(|k| {
                p.next(k * 7919, &mut Attempt::default(), &mut rng)
                    .expect("some")
            })
            .collect();
        let to_backups = first.iter().filter(|&&i| i >= 3).count();
        assert!(
            (900..1_250).contains(&to_backups),
            "{to_backups} of 2000, want ~53 %"
        );
        for _ in 0..3 {
            let again: Vec<usize> = (0..2_000u64)
                .map(|k| {
                    p.next(k * 7919, &mut Attempt::default(), &mut rng)
                        .expect("some")
                })
                .collect();
            assert_eq!(again, first, "same key, same level, same backend");
        }
        // Recovery: a key on level 0 stays where it was; keys on level 1 come back.
        p.backends[1].set_admin_state(AdminState::Enabled);
        for (k, &was) in (0..2_000u64).zip(&first) {
            let now = p
                .next(k * 7919, &mut Attempt::default(), &mut rng)
                .expect("some");
            if was < 3 {
                assert!(now < 3, "key {k} left level 0 as it recovered");
            }
        }
    }

    #[test]
    fn a_retry_walks_from_the_drawn_level_to_the_others() {
        let p = pool(SIX, "round-robin");
        let mut rng = fastrand::Rng::with_seed(5);
        p.backends[0].set_admin_state(AdminState::Disabled);
        p.backends[1].set_admin_state(AdminState::Disabled);
        // Level 1 drawn ~53 % of the time: then its members first, then level 0's one.
        let mut began_on_backups = false;
        for _ in 0..50 {
            let mut a = Attempt::default();
            let seen: Vec<usize> = std::iter::from_fn(|| p.next(0, &mut a, &mut rng)).collect();
            assert_eq!(seen.len(), 4, "every available backend once: {seen:?}");
            if seen[0] >= 3 {
                began_on_backups = true;
                assert_eq!(seen[3], 2, "level 0 after the drawn level: {seen:?}");
            } else {
                assert!(seen[1..].iter().all(|&i| i >= 3), "{seen:?}");
            }
        }
        assert!(began_on_backups);
    }

    #[test]
    fn choose_level_is_the_formula() {
        // 1 of 3 up at 1.4: health 46.66 %; level 1 fully healthy.
        let h = [priority::health(1, 3, 140), LOAD_SCALE];
        assert_eq!(choose_level(&h, 0), 0);
        assert_eq!(choose_level(&h, 4665), 0);
        assert_eq!(choose_level(&h, 4666), 1);
        assert_eq!(
            choose_level(&[0, 0], 9999),
            0,
            "nothing healthy: level 0, then the walk"
        );
    }

    #[test]
    fn retries_walk_every_backend_then_backups_then_stop() {
        let p = pool(
            r#"{addr="127.0.0.1:1"},{addr="127.0.0.1:2"},{addr="127.0.0.1:3",backup=true}"#,
            "consistent-hash",
        );
        let mut rng = fastrand::Rng::with_seed(1);
        let mut a = Attempt::default();
        let mut seen: Vec<usize> = std::iter::from_fn(|| p.next(99, &mut a, &mut rng)).collect();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2], 2, "backup last");
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn a_backend_marked_tried_is_not_picked_again() {
        let p = pool(
            r#"{addr="127.0.0.1:1"},{addr="127.0.0.1:2"},{addr="127.0.0.1:3",backup=true}"#,
            "round-robin",
        );
        let mut rng = fastrand::Rng::with_seed(1);
        for marked in 0..3 {
            let mut a = Attempt::default();
            p.mark_tried(marked, &mut a);
            let rest: Vec<usize> = std::iter::from_fn(|| p.next(0, &mut a, &mut rng)).collect();
            assert_eq!(rest.len(), 2, "{rest:?}");
            assert!(!rest.contains(&marked));
        }
    }

    #[test]
    fn rebuild_makes_a_new_backend_when_weight_or_backup_changes() {
        let p1 = pool(
            r#"{addr="127.0.0.1:1",weight=2},{addr="127.0.0.1:2"},{addr="127.0.0.1:3"}"#,
            "weighted-round-robin",
        );
        let text = "[[listener]]\nname=\"l\"\nbind=\"127.0.0.1:1\"\npool=\"p\"\n[[pool]]\nname=\"p\"\nalgorithm=\"weighted-round-robin\"\nbackends=[{addr=\"127.0.0.1:3\"},{addr=\"127.0.0.1:2\",backup=true},{addr=\"127.0.0.1:1\",weight=3}]\n";
        let cfg = config::load_str("t", text).expect("valid");
        let p2 = Pool::new(&cfg.config.pools[0], Some(&p1));
        assert!(Arc::ptr_eq(&p1.backends[2], &p2.backends[0]), "same");
        assert!(
            !Arc::ptr_eq(&p1.backends[1], &p2.backends[1]),
            "now a backup"
        );
        assert!(!Arc::ptr_eq(&p1.backends[0], &p2.backends[2]), "new weight");
        let mut a = Attempt::default();
        p2.mark_tried(1, &mut a);
        let rng = &mut fastrand::Rng::with_seed(1);
        let rest: Vec<usize> = std::iter::from_fn(|| p2.next(0, &mut a, rng)).collect();
        assert_eq!(rest.len(), 2, "the marked backup is not given: {rest:?}");
    }

    #[test]
    fn rebuild_keeps_backend_state() {
        let p1 = pool(r#"{addr="127.0.0.1:1"},{addr="127.0.0.1:2"}"#, "random");
        p1.backends[1]
            .total
            .store(7, std::sync::atomic::Ordering::Relaxed);
        let text = "[[listener]]\nname=\"l\"\nbind=\"127.0.0.1:1\"\npool=\"p\"\n[[pool]]\nname=\"p\"\nbackends=[{addr=\"127.0.0.1:2\"},{addr=\"127.0.0.1:9\"}]\n";
        let cfg = config::load_str("t", text).expect("valid");
        let p2 = Pool::new(&cfg.config.pools[0], Some(&p1));
        assert!(Arc::ptr_eq(&p1.backends[1], &p2.backends[0]));
        assert_eq!(
            p2.backends[1]
                .total
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
}
