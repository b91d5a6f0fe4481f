//! The TCP data path: accept with connection limits, pick a backend, connect with timeout
//! and retry on the next candidate, relay, then account once at the end.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::relay::{relay, End, RelayMode};
use crate::config::{self, Algorithm, HashKey};
use crate::hash;
use crate::pool::{Attempt, Pool};

thread_local! {
    static RNG: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::new());
}

/// The next backend of `pool` for this client, using the thread's RNG.
pub(crate) fn next_backend(pool: &Pool, key: u64, attempt: &mut Attempt) -> Option<usize> {
    RNG.with(|r| pool.next(key, attempt, &mut r.borrow_mut()))
}

/// Metric handles for one (listener, backend) pair, registered once when the listener is
/// built so the data path only bumps atomics.
#[derive(Debug)]
pub struct PairMetrics {
    connections: metrics::Counter,
    active: metrics::Gauge,
    bytes_rx: metrics::Counter,
    bytes_tx: metrics::Counter,
}

impl PairMetrics {
    fn new(listener: &str, pool: &str, backend: &str) -> Self {
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
        Self {
            connections: metrics::counter!("lb_connections_total", &l),
            active: metrics::gauge!("lb_active_connections", &l),
            bytes_rx: dir("rx"),
            bytes_tx: dir("tx"),
        }
    }
}

/// Everything a listener's connections need; swapped whole on reload.
#[derive(Debug)]
pub struct Route {
    pub listener: config::Listener,
    pub pool: Arc<Pool>,
    pub metrics: Vec<PairMetrics>,
}

impl Route {
    pub fn new(listener: config::Listener, pool: Arc<Pool>) -> Self {
        let metrics = pool
            .backends
            .iter()
            .map(|b| PairMetrics::new(&listener.name, pool.name(), &b.id))
            .collect();
        Self {
            listener,
            pool,
            metrics,
        }
    }
}

/// Connection limits and shutdown plumbing shared by every listener and worker.
#[derive(Debug)]
pub struct Limits {
    /// Changed by reloads.
    pub global_max: AtomicU64,
    pub global_active: AtomicU64,
    last_reject_log_ms: AtomicU64,
}

impl Limits {
    pub fn new(global_max: u64) -> Self {
        Self {
            global_max: AtomicU64::new(global_max),
            global_active: AtomicU64::new(0),
            last_reject_log_ms: AtomicU64::new(0),
        }
    }
}

/// Per-listener state that outlives reloads.
#[derive(Debug)]
pub struct ListenerShared {
    pub name: String,
    pub route: ArcSwap<Route>,
    pub active: AtomicU64,
    pub total: AtomicU64,
    pub rejected: AtomicU64,
    rejected_listener: metrics::Counter,
    rejected_global: metrics::Counter,
}

impl ListenerShared {
    pub fn new(route: Route) -> Self {
        let name = route.listener.name.clone();
        let r = |reason: &'static str| metrics::counter!("lb_rejected_connections_total", "listener" => name.clone(), "reason" => reason);
        Self {
            rejected_listener: r("listener_limit"),
            rejected_global: r("global_limit"),
            name: name.clone(),
            route: ArcSwap::from_pointee(route),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }
}

/// What every connection task shares.
#[derive(Debug, Clone)]
pub struct Context {
    pub limits: Arc<Limits>,
    pub tracker: TaskTracker,
    /// Cancelled when the shutdown grace period runs out: open relays end.
    pub conn_cancel: CancellationToken,
    pub mode: RelayMode,
}

/// Accepts until `stop` is cancelled, then drops the socket (stops accepting).
pub async fn accept_loop(
    socket: TcpListener,
    shared: Arc<ListenerShared>,
    cx: Context,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = %shared.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let Some(guard) = admit(&shared, &cx.limits, peer) else {
            continue;
        };
        let route = shared.route.load_full();
        let cx2 = cx.clone();
        cx.tracker.spawn(async move {
            serve(stream, peer, route, &cx2).await;
            drop(guard);
        });
    }
}

/// Holds one slot of the listener and global limits until dropped.
struct Admission {
    shared: Arc<ListenerShared>,
    limits: Arc<Limits>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Relaxed);
        self.limits.global_active.fetch_sub(1, Relaxed);
    }
}

fn admit(
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

pub(crate) fn key_of(pool: &Pool, peer: SocketAddr) -> u64 {
    if pool.config.algorithm != Algorithm::ConsistentHash {
        return 0;
    }
    match pool.config.hash_key {
        HashKey::SourceIp => hash::ip_key(peer.ip()),
        HashKey::SourceAddr => hash::addr_key(peer),
    }
}

async fn serve(client: TcpStream, peer: SocketAddr, route: Arc<Route>, cx: &Context) {
    let start = Instant::now();
    let pool = &route.pool;
    let l = &route.listener;
    let passive = pool.config.passive.as_ref();
    let _ = client.set_nodelay(true);
    let key = key_of(pool, peer);
    let mut attempt = Attempt::default();
    let mut last_error: Option<String> = None;
    while let Some(i) = next_backend(pool, key, &mut attempt) {
        let b = &pool.backends[i];
        b.active.fetch_add(1, Relaxed);
        let upstream =
            match tokio::time::timeout(l.connect_timeout, TcpStream::connect(b.addr)).await {
                Ok(Ok(s)) => s,
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("connect timeout after {:?}", l.connect_timeout),
                    };
                    last_error = Some(format!("{}: {why}", b.id));
                    connect_failed(b, passive, l, pool, last_error.as_deref());
                    continue;
                }
            };
        let _ = upstream.set_nodelay(true);
        b.record_traffic(true, passive, "");
        let m = &route.metrics[i];
        b.total.fetch_add(1, Relaxed);
        m.connections.increment(1);
        m.active.increment(1.0);
        let out = relay(&client, &upstream, cx.mode, l.idle_timeout, &cx.conn_cancel).await;
        m.active.decrement(1.0);
        if out.retryable() {
            last_error = Some(format!("{}: reset before any byte was exchanged", b.id));
            connect_failed(b, passive, l, pool, last_error.as_deref());
            continue;
        }
        b.active.fetch_sub(1, Relaxed);
        b.bytes_in.fetch_add(out.from_client, Relaxed);
        b.bytes_out.fetch_add(out.from_backend, Relaxed);
        m.bytes_rx.increment(out.from_client);
        m.bytes_tx.increment(out.from_backend);
        if l.access_log {
            let detail = match out.end {
                End::ClientError(k) | End::BackendError(k) => format!("{k:?}"),
                _ => String::new(),
            };
            tracing::info!(target: "lb::access", client = %peer, listener = %l.name, pool = %pool.name(), backend = %b.id, bytes_in = out.from_client, bytes_out = out.from_backend, duration_ms = start.elapsed().as_millis() as u64, end = out.end.as_str(), error = %detail);
        }
        return;
    }
    let why = if last_error.is_some() {
        "connect_failed"
    } else {
        "no_backend"
    };
    if l.access_log {
        tracing::info!(target: "lb::access", client = %peer, listener = %l.name, pool = %pool.name(), backend = "-", bytes_in = 0u64, bytes_out = 0u64, duration_ms = start.elapsed().as_millis() as u64, end = why, error = last_error.as_deref().unwrap_or("no backend available"));
    } else {
        tracing::debug!(listener = %l.name, pool.name = %pool.name(), "no backend for client {peer}: {}", last_error.as_deref().unwrap_or("none available"));
    }
}

fn connect_failed(
    b: &crate::backend::Backend,
    passive: Option<&config::Passive>,
    l: &config::Listener,
    pool: &Pool,
    err: Option<&str>,
) {
    b.active.fetch_sub(1, Relaxed);
    let err = err.unwrap_or("");
    b.record_traffic(false, passive, err);
    tracing::debug!(listener = %l.name, pool.name = %pool.name(), error = %err, "backend failed; trying the next one");
}
