//! A connection's place in its listener's `max_connections` and the global limit: taken at
//! accept (or refused, counted and logged at most once a second), held by whatever serves the
//! connection, freed when that guard drops — the one place the active counts go up and down.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::tcp::{Limits, ListenerShared};

/// Holds one slot of the listener and global limits until dropped.
pub(crate) struct Admission {
    pub(super) shared: Arc<ListenerShared>,
    limits: Arc<Limits>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Relaxed);
        self.limits.global_active.fetch_sub(1, Relaxed);
    }
}

/// A slot for a connection handed over by the previous process: counted like any other, never
/// refused (it is established; refusing it would reset it).
pub(crate) fn adopt(shared: &Arc<ListenerShared>, limits: &Arc<Limits>) -> Admission {
    limits.global_active.fetch_add(1, Relaxed);
    shared.active.fetch_add(1, Relaxed);
    Admission {
        shared: shared.clone(),
        limits: limits.clone(),
    }
}

pub(super) fn admit(
    shared: &Arc<ListenerShared>,
    limits: &Arc<Limits>,
    peer: SocketAddr,
) -> Option<Admission> {
    let route = shared.route.load();
    let max = route.listener.max_connections;
    let global = limits.global_active.fetch_add(1, Relaxed) + 1;
    let local = shared.active.fetch_add(1, Relaxed) + 1;
    if global <= limits.global_max.load(Relaxed) && local <= max {
        shared.total.fetch_add(1, Relaxed);
        return Some(Admission {
            shared: shared.clone(),
            limits: limits.clone(),
        });
    }
    shared.active.fetch_sub(1, Relaxed);
    limits.global_active.fetch_sub(1, Relaxed);
    shared.rejected.fetch_add(1, Relaxed);
    if route.listener.access_log {
        tracing::info!(target: "lb::access", client = %peer, listener = %shared.name, backend = "-", bytes_in = 0u64, bytes_out = 0u64, duration_ms = 0u64, end = if local > max { "refused_listener_limit" } else { "refused_global_limit" });
    }
    let reason = if local > max {
        shared.rejected_listener.increment(1);
        "listener max_connections"
    } else {
        shared.rejected_global.increment(1);
        "global max_connections"
    };
    // Log at most once a second: a flood must not turn into a log flood.
    let now = crate::clock::now_ms();
    let last = limits.last_reject_log_ms.load(Relaxed);
    if now.saturating_sub(last) >= 1000
        && limits
            .last_reject_log_ms
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
    {
        tracing::warn!(listener = %shared.name, "refusing connections: {reason} reached");
    }
    None
}
