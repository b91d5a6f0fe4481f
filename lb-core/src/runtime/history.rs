//! The dashboard's plots: once a second, every listener's and backend's totals are sampled
//! into [`stats::History`] (five minutes of fixed rings), served as `GET /api/history`. Runs
//! only with an admin listener; its cost is one pass over the config a second.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::config::Protocol;
use crate::stats::{self, Counts, History, Registry, Totals};

/// Seconds between samples.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Backends with a plot at most (the first in config order): a series is five minutes of
/// points (~7 KB), so a pool of 100,000 backends would otherwise cost 700 MB and 100,000
/// samples a second; with the cap it costs what 256 do.
pub const MAX_BACKEND_SERIES: usize = 256;

fn history() -> &'static Mutex<History> {
    static H: OnceLock<Mutex<History>> = OnceLock::new();
    H.get_or_init(Mutex::default)
}

/// Samples until `stop`.
pub async fn sample(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        let totals = totals(&shared);
        history()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample(totals, (now - last).as_secs_f64());
        last = now;
    }
}

/// Every listener's (`listener:NAME`) and backend's (`backend:POOL/ADDR`) totals now; and the
/// route statistics of routes no longer configured are forgotten.
fn totals(shared: &Shared) -> Vec<(String, Totals)> {
    let state = shared.state.load();
    let c = &state.loaded.config;
    let reg = Registry::global();
    let mut out = Vec::new();
    for e in &state.listeners {
        let l = &e.shared;
        let cfg = c.listeners.iter().find(|x| x.name == l.name);
        let t = match cfg {
            Some(x) if x.protocol == Protocol::Http => {
                let mut t = Totals::default();
                let names = c
                    .routes
                    .iter()
                    .filter(|r| c.listeners[r.listener].name == l.name)
                    .map(|r| r.name.as_str())
                    .chain(["default", "-"]);
                for name in names {
                    if let Some(s) = reg.get(&l.name, name) {
                        t.count += s.requests();
                        t.errors += s.errors();
                        let lat = s.latency.snapshot();
                        t.latency = Counts(std::array::from_fn(|i| t.latency.0[i] + lat.0[i]));
                    }
                }
                t
            }
            _ => Totals {
                count: l.total.load(Relaxed),
                errors: l.rejected.load(Relaxed),
                latency: Counts::default(),
            },
        };
        out.push((format!("listener:{}", l.name), t));
    }
    let backends = state
        .pools
        .iter()
        .flat_map(|p| p.pool.backends.iter().map(move |b| (p, b)))
        .take(MAX_BACKEND_SERIES);
    for (p, b) in backends {
        out.push((
            format!("backend:{}/{}", p.pool.name(), b.id),
            Totals {
                count: b.total.load(Relaxed),
                errors: b.connect_errors.load(Relaxed) + b.errors.load(Relaxed),
                latency: b.latency.snapshot(),
            },
        ));
    }
    reg.retain(|listener, route| {
        matches!(route, "default" | "-") && c.listeners.iter().any(|l| l.name == listener)
            || c.routes
                .iter()
                .any(|r| r.name == route && c.listeners[r.listener].name == listener)
    });
    out
}

/// `GET /api/history`: each series' points, oldest first, one per [`INTERVAL`].
pub fn json() -> Value {
    let h = history().lock().unwrap_or_else(|e| e.into_inner());
    let mut listeners = serde_json::Map::new();
    let mut backends = serde_json::Map::new();
    for (name, series) in h.iter() {
        let pts: Vec<&stats::Point> = series.points().collect();
        let v = json!({
            "rate": pts.iter().map(|p| round(p.rate)).collect::<Vec<_>>(),
            "errors": pts.iter().map(|p| round(p.errors)).collect::<Vec<_>>(),
            "p99_ms": pts.iter().map(|p| p.p99_ms).collect::<Vec<_>>(),
        });
        if let Some(n) = name.strip_prefix("listener:") {
            listeners.insert(n.to_string(), v);
        } else if let Some(n) = name.strip_prefix("backend:") {
            backends.insert(n.to_string(), v);
        }
    }
    json!({
        "interval_seconds": INTERVAL.as_secs_f64(),
        "slots": stats::SLOTS,
        "listeners": listeners,
        "backends": backends,
    })
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
