//! What a listener's connections are routed with: the default pool, the pools of its SNI
//! routes, and its TLS acceptor config, built from a loaded config and swapped whole on reload.

use std::sync::Arc;

use super::handoff::Handler;
use crate::config::{self, HashKey, Loaded, Protocol};
use crate::pool::Pool;
use crate::tls::material::Backends;
use crate::tls::sni::SniMap;

/// Metric handles for one (listener, backend) pair, registered once when the listener is
/// built so the data path only bumps atomics.
#[derive(Debug)]
pub struct PairMetrics {
    pub(crate) connections: metrics::Counter,
    pub(crate) active: metrics::Gauge,
    pub(crate) bytes_rx: metrics::Counter,
    pub(crate) bytes_tx: metrics::Counter,
    /// `lb_udp_datagrams_total` rx and tx, on udp listeners only.
    udp: Option<[metrics::Counter; 2]>,
}

impl PairMetrics {
    fn new(listener: &str, pool: &str, backend: &str, udp: bool) -> Self {
        let l = [
            ("listener", listener.to_string()),
            ("pool", pool.to_string()),
            ("backend", backend.to_string()),
        ];
        let dir = |d: &'static str| {
            let mut v = l.to_vec();
            v.push(("direction", d.to_string()));
            metrics::counter!("lb_bytes_total", &v)
        };
        let datagrams = |d: &'static str| {
            let mut v = l.to_vec();
            v.push(("direction", d.to_string()));
            metrics::counter!("lb_udp_datagrams_total", &v)
        };
        Self {
            connections: metrics::counter!("lb_connections_total", &l),
            active: metrics::gauge!("lb_active_connections", &l),
            bytes_rx: dir("rx"),
            bytes_tx: dir("tx"),
            udp: udp.then(|| [datagrams("rx"), datagrams("tx")]),
        }
    }

    /// The datagram counters (to the backend, from it) of a udp listener's pair; counters
    /// that record nothing elsewhere.
    pub(crate) fn udp_datagrams(&self) -> [metrics::Counter; 2] {
        self.udp
            .clone()
            .unwrap_or_else(|| [metrics::Counter::noop(), metrics::Counter::noop()])
    }
}

/// A pool as one listener uses it.
#[derive(Debug)]
pub struct Target {
    pub pool: Arc<Pool>,
    /// By backend index.
    pub metrics: Vec<PairMetrics>,
    /// TLS to the backends (`backend_tls`).
    pub backend_tls: Option<Arc<Backends>>,
}

impl Target {
    fn new(listener: &str, udp: bool, pool: Arc<Pool>, backend_tls: Option<Arc<Backends>>) -> Self {
        let metrics = pool
            .backends
            .iter()
            .map(|b| PairMetrics::new(listener, pool.name(), &b.id, udp))
            .collect();
        Self {
            pool,
            metrics,
            backend_tls,
        }
    }
}

/// Dropped when a reload replaced the listener's route and its last connection ended, often
/// on a worker: a big pool's handles (four per backend) are freed on the reclaim thread.
impl Drop for Target {
    fn drop(&mut self) {
        crate::reclaim::drop_later(std::mem::take(&mut self.metrics));
    }
}

/// Everything a listener's connections need; swapped whole on reload.
#[derive(Debug)]
pub struct Route {
    pub listener: config::Listener,
    /// The listener's `pool`: what no SNI route claims. `None` only on an http listener
    /// without a default pool.
    pub default: Option<Target>,
    /// `sni_routes`.
    pub by_sni: SniMap<Target>,
    /// TLS termination (`tls`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// What serves the connections of a listener whose protocol lb-core does not speak
    /// (http); `None` on an http listener only when no HTTP support is registered.
    pub app: Option<Arc<dyn Handler>>,
}

impl Route {
    /// The route of listener `index` of `loaded`, over the running pools (`pools[i]` is the
    /// config's pool `i`).
    pub fn build(loaded: &Loaded, index: usize, pools: &[Arc<Pool>]) -> Self {
        let l = &loaded.config.listeners[index];
        let target = |p: usize| {
            let tls = loaded.tls.pools.get(p).cloned().flatten();
            Target::new(&l.name, l.protocol == Protocol::Udp, pools[p].clone(), tls)
        };
        let by_sni = SniMap::new(
            l.sni_routes
                .iter()
                .map(|r| (r.pattern.clone(), target(r.pool))),
        );
        let tls = loaded.tls.listeners.get(index).cloned().flatten();
        let app = match l.protocol {
            Protocol::Http => loaded.http.as_ref().map(|h| h.build(loaded, index, pools)),
            Protocol::Tcp | Protocol::Udp => None,
        };
        Self {
            default: l.pool.map(target),
            listener: l.clone(),
            by_sni,
            tls,
            app,
        }
    }

    /// The pool a connection goes to: its SNI route's, else the listener's.
    pub(crate) fn target_for(&self, sni: Option<&str>) -> Option<&Target> {
        sni.and_then(|n| self.by_sni.get(n))
            .or(self.default.as_ref())
    }

    /// Whether connections must be read before a backend is picked.
    pub(crate) fn needs_client_hello(&self) -> bool {
        self.tls.is_none()
            && self.listener.protocol == Protocol::Tcp
            && (!self.by_sni.is_empty()
                || self
                    .default
                    .as_ref()
                    .is_some_and(|t| t.pool.config.hash_key == HashKey::Sni))
    }
}
