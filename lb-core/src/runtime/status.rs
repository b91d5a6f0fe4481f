//! The JSON of `GET /api/status`: version, uptime, config, and every listener, pool and
//! backend with state and counters, and the HTTP routes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;

use serde_json::{json, Value};

use super::Shared;
use crate::backend::Backend;

pub fn status(shared: &Shared) -> Value {
    let state = shared.state.load();
    let listeners: Vec<Value> = state
        .listeners
        .iter()
        .map(|e| {
            let (l, addr) = (&e.shared, e.addr);
            let r = l.route.load();
            json!({
                "name": l.name,
                "bind": addr.to_string(),
                "protocol": r.listener.protocol.name(),
                "pool": r.default.as_ref().map(|t| t.pool.name()),
                "active_connections": l.active.load(Relaxed),
                "total_connections": l.total.load(Relaxed),
                "rejected_connections": l.rejected.load(Relaxed),
                "inherited_connections": l.inherited.load(Relaxed),
                "max_connections": r.listener.max_connections,
            })
        })
        .collect();
    let pools: Vec<Value> = state
        .pools
        .iter()
        .map(|e| {
            let p = &e.pool;
            let d = state.dynamic.get(p.name());
            json!({
                "name": p.name(),
                "algorithm": p.config.algorithm.name(),
                "overprovisioning": f64::from(p.config.overprovisioning_pct) / 100.0,
                // Each level's share of new traffic now (Envoy's priority load), in percent.
                "priority_load": p.priority_loads().iter().map(|&(priority, load)| json!({
                    "priority": priority,
                    "percent": f64::from(load) / 100.0,
                })).collect::<Vec<_>>(),
                "health_check": p.config.health.as_ref().map(|h| format!("{} every {:?}", h.kind.describe(), h.interval)),
                "backends": p.backends.iter().map(|b| backend(b)).collect::<Vec<_>>(),
                // What the admin API changed against the config file (kept across reloads
                // that leave the pool unchanged).
                "api_changes": {
                    "added": d.map(|d| d.api.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
                    "removed": d.map(|d| d.removed.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
                },
            })
        })
        .collect();
    let cfg = &state.loaded;
    let c = &cfg.config;
    let routes: Vec<Value> = c
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "listener": c.listeners[r.listener].name,
                "pool": r.pool.map(|p| &c.pools[p].name),
                "aggregate": r.aggregate.iter().map(|p| json!({
                    "name": p.name,
                    "pool": c.pools[p.pool].name,
                    "path": p.path.text,
                    "timeout_seconds": p.timeout.as_secs_f64(),
                    "required": p.required,
                })).collect::<Vec<_>>(),
                "host": r.host,
                "path": r.path.as_ref().map(|p| p.text()),
                "methods": r.methods,
                "headers": r.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>(),
                "timeout_seconds": r.timeout.as_secs_f64(),
                "retries": r.retries,
                "policies": r.policies.iter().map(|&i| c.policies[i].name.as_str()).collect::<Vec<_>>(),
                "stats": route_stats(&c.listeners[r.listener].name, &r.name),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": shared.started.elapsed().as_secs_f64(),
        "phase": shared.phase.borrow().as_str(),
        "config": { "file": cfg.source.name, "hash": cfg.hash },
        "token_required": cfg.config.admin.as_ref().is_some_and(|a| a.token.is_some()),
        "workers": shared.workers,
        "active_connections": shared.limits.global_active.load(Relaxed),
        // Connections and UDP flows handed over by the previous process (binary upgrade).
        "inherited_connections": state.listeners.iter().map(|l| l.shared.inherited.load(Relaxed)).sum::<u64>(),
        "max_connections": shared.limits.global_max.load(Relaxed),
        "listeners": listeners,
        "pools": pools,
        "routes": routes,
        "policies": c.policies.iter().map(|p| json!({ "name": p.name, "kind": p.kind.name() })).collect::<Vec<_>>(),
    })
}

/// A route's counters since it was first loaded with its policies (`null` before any request).
fn route_stats(listener: &str, route: &str) -> Value {
    let Some(s) = crate::stats::Registry::global().get(listener, route) else {
        return Value::Null;
    };
    let latency = s.latency.snapshot();
    let class = |i: usize| s.classes[i].load(Relaxed);
    json!({
        "requests": s.requests(),
        "status": { "1xx": class(0), "2xx": class(1), "3xx": class(2), "4xx": class(3), "5xx": class(4) },
        "latency_p50_ms": latency.quantile_ms(0.5),
        "latency_p99_ms": latency.quantile_ms(0.99),
        "refusals": s.refusals.iter().map(|(name, by)| json!({
            "policy": name,
            "401": by[0].load(Relaxed),
            "403": by[1].load(Relaxed),
            "429": by[2].load(Relaxed),
        })).collect::<Vec<_>>(),
        "cache": { "hits": s.cache_hits.load(Relaxed), "misses": s.cache_misses.load(Relaxed) },
    })
}

/// `lb_pool_priority_load_ratio{pool,priority}`: each level's share of new traffic, set
/// from the health now when `/metrics` is read (pools of more than one level only).
pub fn set_priority_loads(shared: &Shared) {
    let state = shared.state.load();
    for e in &state.pools {
        let loads = e.pool.priority_loads();
        if loads.len() < 2 {
            continue;
        }
        for (priority, load) in loads {
            metrics::gauge!("lb_pool_priority_load_ratio", "pool" => e.pool.name().to_string(), "priority" => priority.to_string())
                .set(f64::from(load) / f64::from(crate::balance::priority::LOAD_SCALE));
        }
    }
}

fn backend(b: &Backend) -> Value {
    let last = b.last_check().map(|c| {
        json!({
            "ok": c.ok,
            "detail": c.detail,
            "at_unix": c.at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        })
    });
    json!({
        "address": b.id,
        "state": b.state().as_str(),
        "weight": b.weight,
        "effective_weight": b.effective_weight(),
        "backup": b.priority > 0,
        "priority": b.priority,
        "zone": b.zone,
        "source": b.origin.kind(),
        "source_name": match &b.origin { crate::config::Origin::Dns(n) => Some(n.as_str()), _ => None },
        "ejected": b.ejected_until_ms() != 0 && b.ejected_until_ms() > crate::clock::now_ms(),
        "active_connections": b.active.load(Relaxed),
        "total_connections": b.total.load(Relaxed),
        "bytes_in": b.bytes_in.load(Relaxed),
        "bytes_out": b.bytes_out.load(Relaxed),
        "connect_errors": b.connect_errors.load(Relaxed),
        "errors": b.errors.load(Relaxed),
        "latency_p50_ms": b.latency.snapshot().quantile_ms(0.5),
        "latency_p99_ms": b.latency.snapshot().quantile_ms(0.99),
        "last_check": last,
        "health_history": b.history(),
    })
}
