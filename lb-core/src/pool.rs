//! A pool at run time: its backends and the selectors over the primary and backup groups.
//! Built once from the config, off the data path; picking reads atomics only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::Backend;
use crate::balance::{self, Member, Pick, Selector, Tried, View};
use crate::config;

#[derive(Debug)]
pub struct Pool {
    pub config: config::Pool,
    pub backends: Vec<Arc<Backend>>,
    /// One group per priority in use, lowest (preferred) first.
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Group {
    /// Indices into `Pool::backends`, ascending.
    members: Vec<usize>,
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
                    .filter(|o| o.weight == b.weight.get() && o.priority == b.priority)
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
                    selector: balance::build(cfg.algorithm, &ms, cfg.hash_balance_factor),
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
    /// A group of higher priority serves only when no member of the lower ones is available
    /// — or when every one was tried and failed, so a client never sees a failure while any
    /// backend is up.
    pub fn next(&self, key: u64, attempt: &mut Attempt, rng: &mut fastrand::Rng) -> Option<usize> {
        self.groups
            .iter()
            .enumerate()
            .find_map(|(g, group)| self.pick_in(group, key, attempt.group(g), rng))
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
        let text = format!(
            "[[listener]]\nname=\"l\"\nbind=\"127.0.0.1:1\"\npool=\"p\"\n[[pool]]\nname=\"p\"\nalgorithm=\"{algorithm}\"\nbackends=[{text_backends}]\n"
        );
        let loaded = config::load_str("t", &text).expect("valid");
        Pool::new(&loaded.config.pools[0], None)
    }

    #[test]
    fn backups_only_when_no_primary_is_available() {
        let p = pool(
            r#"{addr="127.0.0.1:1"},{addr="127.0.0.1:2"},{addr="127.0.0.1:3",backup=true}"#,
            "round-robin",
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
