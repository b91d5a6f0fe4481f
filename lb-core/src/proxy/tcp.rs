//! The TCP data path: accept with connection limits, pick a backend, connect with timeout
//! and retry on the next candidate, relay, then account once at the end.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio_rustls::{server, TlsAcceptor};

use super::accept_backoff::AcceptBackoff;
use super::admission::admit;
pub(crate) use super::admission::{adopt, Admission};
use super::connect::{connect, connect_failed, BackendIo};
use super::front::{self, Front, Reject};
use super::handoff::{ClientStream, Conn, Slot};
use super::prefixed::Prefixed;
use super::relay::{relay, relay_streams, Deadlines, Delivering, End, RelayMode, RelayState};
pub use super::route::{PairMetrics, Route, Target};
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

/// Connection limits and shutdown plumbing shared by every listener and worker.
#[derive(Debug)]
pub struct Limits {
    /// Changed by reloads.
    pub global_max: AtomicU64,
    pub global_active: AtomicU64,
    pub(super) last_reject_log_ms: AtomicU64,
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
    /// Connections and flows handed over by the previous process in a binary upgrade.
    pub inherited: AtomicU64,
    pub(super) rejected_listener: metrics::Counter,
    pub(super) rejected_global: metrics::Counter,
    /// By `Reject as usize`.
    rejected_early: Vec<metrics::Counter>,
    tls: TlsMetrics,
}

/// `lb_tls_handshakes_total{listener,result}` and the handshake duration histogram.
#[derive(Debug)]
struct TlsMetrics {
    ok: metrics::Counter,
    failed: metrics::Counter,
    timeout: metrics::Counter,
    duration: metrics::Histogram,
}

impl ListenerShared {
    pub fn new(route: Route) -> Self {
        let name = route.listener.name.clone();
        let r = |reason: &'static str| metrics::counter!("lb_rejected_connections_total", "listener" => name.clone(), "reason" => reason);
        Self {
            rejected_listener: r("listener_limit"),
            rejected_global: r("global_limit"),
            rejected_early: Reject::ALL.iter().map(|w| r(w.as_str())).collect(),
            tls: TlsMetrics {
                ok: metrics::counter!("lb_tls_handshakes_total", "listener" => name.clone(), "result" => "ok"),
                failed: metrics::counter!("lb_tls_handshakes_total", "listener" => name.clone(), "result" => "error"),
                timeout: metrics::counter!("lb_tls_handshakes_total", "listener" => name.clone(), "result" => "timeout"),
                duration: metrics::histogram!("lb_tls_handshake_duration_seconds", "listener" => name.clone()),
            },
            name: name.clone(),
            route: ArcSwap::from_pointee(route),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            inherited: AtomicU64::new(0),
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
    /// Binary upgrade hand-over: the pause request plain relays obey, and what this process
    /// inherited.
    pub handover: crate::handover::Handover,
}

/// Accepts until `stop` is cancelled, then drops the socket (stops accepting).
pub async fn accept_loop(
    socket: TcpListener,
    shared: Arc<ListenerShared>,
    cx: Context,
    stop: CancellationToken,
) {
    // Shared by the connections' tasks: one reference each rather than a copy of every field.
    let cx = Arc::new(cx);
    let mut backoff = AcceptBackoff::new(&shared.name);
    loop {
        let (stream, peer) = tokio::select! {
            x = backoff.accept(&socket) => x,
            () = stop.cancelled() => return,
        };
        let Some(guard) = admit(&shared, &cx.limits, peer) else {
            continue;
        };
        let route = shared.route.load_full();
        // Two task types, not one: an http connection's task would otherwise be as large as
        // the tcp relay's state for its whole life, idle keep-alive included. Each is the
        // serving function's own future (no wrapper holding its arguments a second time).
        if route.listener.protocol == config::Protocol::Http {
            if needs_front(&route) {
                let stop = stop.clone();
                cx.tracker
                    .spawn(serve_http(stream, peer, route, guard, cx.clone(), stop));
            } else {
                // Nothing to read first: the HTTP side's own task is the connection's only one.
                let (client, front) = bare(stream, peer);
                let local = local_of(&client, &route.listener);
                let start = Instant::now();
                hand_over(
                    ClientIo::Plain(client),
                    front,
                    local,
                    &route,
                    guard,
                    &cx,
                    &stop,
                    start,
                );
            }
        } else {
            cx.tracker
                .spawn(serve_tcp(stream, peer, route, guard, cx.clone()));
        }
    }
}

pub(crate) fn key_of(pool: &Pool, peer: SocketAddr) -> u64 {
    key_with_sni(pool, peer, None)
}

fn key_with_sni(pool: &Pool, peer: SocketAddr, sni: Option<&str>) -> u64 {
    if pool.config.algorithm != Algorithm::ConsistentHash {
        return 0;
    }
    match (&pool.config.hash_key, sni) {
        (HashKey::SourceIp, _)
        | (HashKey::Sni, None)
        | (HashKey::Header(_) | HashKey::Cookie(_) | HashKey::Path, _) => hash::ip_key(peer.ip()),
        (HashKey::SourceAddr, _) => hash::addr_key(peer),
        (HashKey::Sni, Some(name)) => hash::name_key(name),
    }
}

/// The client side once lb may talk to it: the socket, or the TLS session over it.
pub(crate) enum ClientIo {
    Plain(TcpStream),
    Tls(Box<server::TlsStream<Prefixed<TcpStream>>>),
}

impl ClientIo {
    /// The socket under the stream.
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(t) => t.get_ref().0.get_ref(),
        }
    }
}

/// Counts and logs a connection refused before any backend was involved.
fn refuse(
    shared: &ListenerShared,
    l: &config::Listener,
    peer: SocketAddr,
    start: Instant,
    why: Reject,
    detail: &str,
) {
    shared.rejected_early[why as usize].increment(1);
    let reason = why.as_str();
    if l.access_log {
        tracing::info!(target: "lb::access", client = %peer, listener = %l.name, backend = "-", bytes_in = 0u64, bytes_out = 0u64, duration_ms = start.elapsed().as_millis() as u64, end = reason, error = %detail);
    } else {
        tracing::debug!(listener = %l.name, client = %peer, "connection refused ({reason}): {detail}");
    }
}

/// A tcp (or tls) listener's connection: what precedes the payload, then the relay.
/// `guard` holds the connection's admission slot until it ends.
async fn serve_tcp(
    client: TcpStream,
    peer: SocketAddr,
    route: Arc<Route>,
    guard: Admission,
    cx: Arc<Context>,
) {
    let (shared, cx) = (&*guard.shared, &*cx);
    let start = Instant::now();
    let Some((io, front)) = begin(client, peer, &route, shared, start).await else {
        return;
    };
    match route.target_for(front.sni.as_deref()) {
        Some(target) => proxy_to(io, &front, target, &route, start, cx, Attempt::default()).await,
        None => tracing::error!(listener = %route.listener.name, "tcp listener without a pool"),
    }
}

/// An http listener's connection that has something to read or a handshake to make before
/// the payload (PROXY header, TLS): that first, then the HTTP side takes it.
async fn serve_http(
    client: TcpStream,
    peer: SocketAddr,
    route: Arc<Route>,
    guard: Admission,
    cx: Arc<Context>,
    stop: CancellationToken,
) {
    let start = Instant::now();
    let Some((io, front)) = begin(client, peer, &route, &guard.shared, start).await else {
        return;
    };
    let local = local_of(io.tcp(), &route.listener);
    hand_over(io, front, local, &route, guard, &cx, &stop, start);
}

/// Whether a connection has anything before its payload: a PROXY header, a ClientHello to
/// read, a TLS handshake.
fn needs_front(route: &Route) -> bool {
    route.listener.accept_proxy_protocol || route.needs_client_hello() || route.tls.is_some()
}

/// An accepted connection before anything is read from it: no Nagle delay, the socket's
/// peer as the client.
fn bare(client: TcpStream, peer: SocketAddr) -> (TcpStream, Front) {
    let _ = client.set_nodelay(true);
    let front = Front {
        client: peer,
        prefix: Vec::new(),
        sni: None,
    };
    (client, front)
}

/// lb's own address on an accepted connection (the HTTP side's): the listener's, when it
/// names one address and port, as every connection it accepts then has; asked of the
/// socket (a system call per connection) only for a wildcard address or port 0.
pub(super) fn local_of(client: &TcpStream, l: &config::Listener) -> SocketAddr {
    if l.bind.ip().is_unspecified() || l.bind.port() == 0 {
        client.local_addr().unwrap_or(l.bind)
    } else {
        l.bind
    }
}

/// Gives an http listener's connection to the HTTP side, which serves it on a task of its
/// own holding `guard` (the connection's admission slot) until it ends.
#[allow(clippy::too_many_arguments)]
fn hand_over(
    io: ClientIo,
    front: Front,
    local: SocketAddr,
    route: &Route,
    guard: Admission,
    cx: &Context,
    stop: &CancellationToken,
    start: Instant,
) {
    let l = &route.listener;
    let Some(app) = route.app.clone() else {
        tracing::error!(listener = %l.name, "this build of lb cannot serve http listeners");
        return;
    };
    let io = match io {
        ClientIo::Plain(c) => ClientStream::Plain(Prefixed::new(front.prefix, c)),
        ClientIo::Tls(t) => ClientStream::Tls(t),
    };
    let conn = Conn {
        alpn: match &io {
            ClientStream::Tls(t) => t.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
            ClientStream::Plain(_) => None,
        },
        io,
        client: front.client,
        local,
        sni: front.sni,
        drain: stop.clone(),
        cancel: cx.conn_cancel.clone(),
        tracker: cx.tracker.clone(),
        old_at: Deadlines::of(l, start).old_at,
        slot: Slot::held(guard),
    };
    app.serve(conn);
}

/// What precedes the payload, within the listener's `handshake_timeout`: the PROXY header,
/// the ClientHello, the TLS handshake. `None`: the connection was refused (and logged).
async fn begin(
    client: TcpStream,
    peer: SocketAddr,
    route: &Route,
    shared: &ListenerShared,
    start: Instant,
) -> Option<(ClientIo, Front)> {
    let l = &route.listener;
    let (client, mut front) = bare(client, peer);
    // One budget for everything before the payload: PROXY header, ClientHello, TLS handshake.
    let deadline = tokio::time::Instant::from_std(start + l.handshake_timeout);
    let late = |what: &str| format!("no complete {what} within {:?}", l.handshake_timeout);
    let want_hello = route.needs_client_hello();
    if let (true, Some(trusted)) = (l.accept_proxy_protocol, &l.trusted_proxies) {
        // Refused before a byte is read: whatever it sends, it may not say who the client is.
        if !trusted.iter().any(|c| c.contains(peer.ip())) {
            let detail = format!("{} is not in trusted_proxies", peer.ip());
            refuse(shared, l, peer, start, Reject::UntrustedProxy, &detail);
            return None;
        }
    }
    if l.accept_proxy_protocol || want_hello {
        // Boxed, as the TLS handshake below: a plain connection's task should not carry
        // their state for the whole of its life.
        let read = Box::pin(front::read(
            &client,
            peer,
            l.accept_proxy_protocol,
            want_hello,
        ));
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(f)) => front = f,
            Ok(Err(e)) => {
                match e.reject() {
                    Some(why) => refuse(shared, l, peer, start, why, &e.to_string()),
                    None => tracing::debug!(listener = %l.name, client = %peer, "{e}"),
                }
                return None;
            }
            Err(_) => {
                let what = if l.accept_proxy_protocol {
                    "PROXY header"
                } else {
                    "ClientHello"
                };
                refuse(
                    shared,
                    l,
                    peer,
                    start,
                    Reject::HandshakeTimeout,
                    &late(what),
                );
                return None;
            }
        }
    }
    let io = match &route.tls {
        None => ClientIo::Plain(client),
        Some(config) => {
            let stream = Prefixed::new(std::mem::take(&mut front.prefix), client);
            let t0 = Instant::now();
            let accept = Box::pin(TlsAcceptor::from(config.clone()).accept(stream));
            match tokio::time::timeout_at(deadline, accept).await {
                Ok(Ok(tls)) => {
                    shared.tls.ok.increment(1);
                    shared.tls.duration.record(t0.elapsed().as_secs_f64());
                    let conn = tls.get_ref().1;
                    front.sni = conn.server_name().map(str::to_string);
                    tracing::debug!(listener = %l.name, client = %front.client, sni = ?front.sni, version = ?conn.protocol_version(), cipher = ?conn.negotiated_cipher_suite().map(|c| c.suite()), alpn = ?conn.alpn_protocol().map(String::from_utf8_lossy), "tls handshake done");
                    ClientIo::Tls(Box::new(tls))
                }
                Ok(Err(e)) => {
                    shared.tls.failed.increment(1);
                    refuse(
                        shared,
                        l,
                        front.client,
                        start,
                        Reject::TlsHandshake,
                        &e.to_string(),
                    );
                    return None;
                }
                Err(_) => {
                    shared.tls.timeout.increment(1);
                    refuse(
                        shared,
                        l,
                        front.client,
                        start,
                        Reject::HandshakeTimeout,
                        &late("TLS handshake"),
                    );
                    return None;
                }
            }
        }
    };
    Some((io, front))
}

/// Picks a backend of `target` not yet in `attempt`, connects (retrying on the next
/// candidate), and relays.
pub(crate) async fn proxy_to(
    mut io: ClientIo,
    front: &Front,
    target: &Target,
    route: &Route,
    start: Instant,
    cx: &Context,
    mut attempt: Attempt,
) {
    let pool = &target.pool;
    let l = &route.listener;
    let peer = front.client;
    let passive = pool.config.passive.as_ref();
    let key = key_with_sni(pool, peer, front.sni.as_deref());
    let mut last_error: Option<String> = None;
    while let Some(i) = next_backend(pool, key, &mut attempt) {
        let b = &pool.backends[i];
        let in_flight = b.begin();
        // Boxed: its state (a TLS handshake to the backend, say) is needed only while
        // connecting, and would otherwise size the connection's task for its whole life.
        let connect = Box::pin(connect(b.addr, front, target, route, &io));
        let mut upstream = match tokio::time::timeout(l.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("connect timeout after {:?}", l.connect_timeout),
                };
                last_error = Some(format!("{}: {why}", b.id));
                connect_failed(b, passive, l, pool, last_error.as_deref());
                drop(in_flight);
                continue;
            }
        };
        b.record_traffic(true, passive, "");
        let m = &target.metrics[i];
        b.total.fetch_add(1, Relaxed);
        m.connections.increment(1);
        m.active.increment(1.0);
        let (idle, cancel) = (Deadlines::of(l, start), &cx.conn_cancel);
        // Its own child of the process-wide hand-over request: a relay's every wait polls the
        // token, and one shared token would take one lock for all workers' connections.
        let pause = cx.handover.moving.request.child_token();
        let pause = Some(&pause);
        let delivering = Delivering::of(Some(io.tcp()), Some(upstream.tcp()));
        let out = match (&mut io, &mut upstream) {
            (ClientIo::Plain(c), BackendIo::Plain(u)) => {
                relay(c, u, cx.mode, idle, cancel, pause, RelayState::default()).await
            }
            (ClientIo::Plain(c), BackendIo::Tls(u)) => {
                Box::pin(relay_streams(c, &mut **u, idle, delivering, cancel)).await
            }
            (ClientIo::Tls(c), BackendIo::Plain(u)) => {
                Box::pin(relay_streams(&mut **c, u, idle, delivering, cancel)).await
            }
            (ClientIo::Tls(c), BackendIo::Tls(u)) => {
                Box::pin(relay_streams(&mut **c, &mut **u, idle, delivering, cancel)).await
            }
        };
        m.active.decrement(1.0);
        if out.retryable() {
            last_error = Some(format!("{}: reset before any byte was exchanged", b.id));
            connect_failed(b, passive, l, pool, last_error.as_deref());
            drop(in_flight);
            continue;
        }
        let ending = Ending {
            listener: l,
            client: peer,
            pool: pool.name(),
            backend: &b.id,
            sni: front.sni.as_deref(),
            start,
        };
        // The bytes lb read before the relay (PROXY header aside) count as the client's.
        let prefix = front.prefix.len() as u64;
        match (out.moved, io, upstream) {
            (Some(mut moved), ClientIo::Plain(c), BackendIo::Plain(u)) => {
                moved.from_client += prefix;
                drop(in_flight);
                super::moved::hand_over(c, u, &ending, *moved, &cx.handover.moving);
            }
            (_, io, _) => {
                if cx.handover.moving.is_open() {
                    // Ended here during a hand-over: TLS kept it, or it ended first.
                    crate::handover::count("tcp", "drained");
                }
                drop(io);
                let (c, k) = (out.from_client + prefix, out.from_backend);
                ending.finish(c, k, out.end, in_flight, m);
            }
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

/// Who a connection was, for its one access-log line: written by whichever process ends it.
pub(crate) struct Ending<'a> {
    pub listener: &'a config::Listener,
    pub client: SocketAddr,
    pub pool: &'a str,
    pub backend: &'a str,
    pub sni: Option<&'a str>,
    pub start: Instant,
}

impl Ending<'_> {
    /// Counts a finished connection's bytes (once, here: counts are not taken along the way)
    /// and writes its access-log line. `from_client`/`from_backend` are the connection's
    /// whole counts, including any a previous process relayed before handing it over.
    pub(crate) fn finish(
        &self,
        from_client: u64,
        from_backend: u64,
        end: End,
        mut in_flight: crate::backend::InFlight,
        m: &PairMetrics,
    ) {
        in_flight.add_bytes(from_client, from_backend);
        m.bytes_rx.increment(from_client);
        m.bytes_tx.increment(from_backend);
        // Counted before the connection stops being active: whoever sees it ended sees its bytes.
        drop(in_flight);
        let l = self.listener;
        if l.access_log {
            let detail = match end {
                End::ClientError(k) | End::BackendError(k) => format!("{k:?}"),
                _ => String::new(),
            };
            tracing::info!(target: "lb::access", client = %self.client, listener = %l.name, pool = %self.pool, backend = %self.backend, sni = self.sni.unwrap_or("-"), bytes_in = from_client, bytes_out = from_backend, duration_ms = self.start.elapsed().as_millis() as u64, end = end.as_str(), error = %detail);
        }
    }
}
