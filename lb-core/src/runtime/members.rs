//! Live membership changes: DNS answers and the admin API change a running pool's members
//! through [`Shared::set_members`], which builds the next snapshot the way a reload does
//! ([`Shared::commit`]): the pool is rebuilt reusing every backend that stays (health,
//! counters, admin state and Maglev slots kept), listeners of every kind get routes over it,
//! and connections keep the backend they have.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::engine::Engine;
use super::{ListenerEntry, PoolEntry, Shared, Snapshot};
use crate::config::{self, Backend, Loaded};
use crate::discovery::task::{self, Watch};
use crate::discovery::Dynamic;
use crate::proxy::tcp::Route;

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemberError {
    #[error("no pool named \"{0}\"")]
    NoPool(String),
    #[error("lb is not running yet")]
    NotRunning,
    #[error("{0}")]
    Refused(String),
}

/// What a commit changed in the listeners, for the reload's answer.
pub(crate) struct Committed {
    pub kept: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Shared {
    /// Changes the members of `pool` with `change` (given the pool's dynamic members and its
    /// config) and applies the result at once. The one way members change at run time.
    pub fn set_members(
        &self,
        pool: &str,
        change: impl FnOnce(&mut Dynamic, &config::Pool) -> Result<(), MemberError>,
    ) -> Result<(), MemberError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let engine = self.engine.get().ok_or(MemberError::NotRunning)?;
        let old = self.state.load_full();
        let cfg = old
            .loaded
            .config
            .pools
            .iter()
            .find(|p| p.name == pool)
            .ok_or_else(|| MemberError::NoPool(pool.to_string()))?;
        let mut dynamic = old.dynamic.clone();
        let d = dynamic.entry(pool.to_string()).or_default();
        change(d, cfg)?;
        if dynamic.get(pool) == Some(&Dynamic::default()) {
            dynamic.remove(pool);
        }
        if dynamic == old.dynamic {
            return Ok(());
        }
        self.commit(engine, &old, old.loaded.clone(), dynamic, Vec::new());
        Ok(())
    }

    /// Swaps in the snapshot of `loaded` with `dynamic` members: pools rebuilt (unchanged
    /// ones kept), every listener's route rebuilt over them, new listeners started on
    /// `fresh` sockets (bound by the caller, in config order of the listeners not kept),
    /// health tasks moved to the pools that replace theirs, DNS loops synced.
    pub(crate) fn commit(
        &self,
        engine: &Engine,
        old: &Snapshot,
        loaded: Loaded,
        dynamic: BTreeMap<String, Dynamic>,
        fresh: Vec<(Vec<super::bind::Sock>, std::net::SocketAddr, super::FdList)>,
    ) -> Committed {
        let cfg = &loaded.config;
        let pools = PoolEntry::build_all(cfg, Some(old), &dynamic);
        let pool_arcs: Vec<_> = pools.iter().map(|p| p.pool.clone()).collect();
        let mut listeners = Vec::new();
        let mut started = Vec::new();
        let mut fresh = fresh.into_iter();
        let (mut added, mut kept) = (Vec::new(), Vec::new());
        for (li, l) in cfg.listeners.iter().enumerate() {
            let route = Route::build(&loaded, li, &pool_arcs);
            match old.kept_listener(l) {
                Some(e) => {
                    e.shared.route.store(Arc::new(route));
                    kept.push(l.name.clone());
                    listeners.push(e.clone());
                }
                None => {
                    let Some((sockets, addr, fds)) = fresh.next() else {
                        continue;
                    };
                    let entry = ListenerEntry::new(route, addr, &self.accept, fds);
                    added.push(format!("{} on {addr}", l.name));
                    started.push((entry.clone(), sockets));
                    listeners.push(entry);
                }
            }
        }
        let removed: Vec<&ListenerEntry> = old
            .listeners
            .iter()
            .filter(|o| !listeners.iter().any(|n| Arc::ptr_eq(&n.shared, &o.shared)))
            .collect();
        self.limits.global_max.store(
            cfg.global.max_connections,
            std::sync::atomic::Ordering::Relaxed,
        );
        let same = |a: &PoolEntry, b: &PoolEntry| Arc::ptr_eq(&a.pool, &b.pool);
        for p in pools
            .iter()
            .filter(|p| !old.pools.iter().any(|o| same(o, p)))
        {
            engine.start_health(p);
        }
        for (entry, sockets) in started {
            engine.start_listener(&entry, sockets);
        }
        let removed_names = removed
            .iter()
            .map(|e| format!("{} on {}", e.shared.name, e.addr))
            .collect();
        for e in &removed {
            e.stop.cancel();
        }
        for o in old
            .pools
            .iter()
            .filter(|o| !pools.iter().any(|p| same(o, p)))
        {
            o.health_stop.cancel();
        }
        self.sync_watches(engine, cfg, &dynamic);
        self.state.store(Arc::new(Snapshot {
            loaded,
            pools,
            listeners,
            dynamic,
        }));
        Committed {
            kept,
            added,
            removed: removed_names,
        }
    }

    /// Starts the DNS loops `cfg` needs and stops those it no longer does; a loop whose
    /// settings did not change goes on.
    pub(crate) fn sync_watches(
        &self,
        engine: &Engine,
        cfg: &config::Config,
        dynamic: &BTreeMap<String, Dynamic>,
    ) {
        let wanted: Vec<Watch> = cfg
            .pools
            .iter()
            .flat_map(|p| task::watches(p, &cfg.global))
            .collect();
        let mut running = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|w, stop| {
            let keep = wanted.contains(w);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for w in wanted {
            if running.contains_key(&w) {
                continue;
            }
            let stop = engine.exit.child_token();
            let initial: Vec<Backend> = dynamic
                .get(&w.pool)
                .and_then(|d| d.dns.get(&w.query.label()))
                .cloned()
                .unwrap_or_default();
            let me = self.me.clone();
            let apply: task::Apply = Arc::new(move |pool, name, members| {
                if let Some(shared) = me.upgrade() {
                    let name = name.to_string();
                    let r = shared.set_members(pool, |d, _| {
                        d.dns.insert(name, members);
                        Ok(())
                    });
                    if let Err(e) = r {
                        tracing::warn!(pool.name = %pool, error = %e, "DNS membership change not applied");
                    }
                }
            });
            engine
                .control
                .spawn(task::run(w.clone(), initial, apply, stop.clone()));
            running.insert(w, stop);
        }
    }
}

impl Snapshot {
    /// The running listener a config listener keeps: same name and bind address.
    pub(crate) fn kept_listener(&self, l: &config::Listener) -> Option<&ListenerEntry> {
        self.listeners.iter().find(|e| {
            let r = e.shared.route.load();
            e.shared.name == l.name && r.listener.bind == l.bind
        })
    }
}
