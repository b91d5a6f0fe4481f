//! The UDP socket shell: one task per listening socket receives datagrams in batches, routes
//! them through the [`FlowTable`], and sends each flow's run of datagrams from a connected
//! upstream socket of its own; a task per flow carries the backend's replies back to the
//! client from the listener's address. Flows end after `udp_session_timeout` of silence both
//! ways.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batch::{self, RecvBatch};
use super::flow::{FlowTable, Route};
use crate::backend::{Backend, InFlight};
use crate::clock;
use crate::handover::Handover;
use crate::pool::Attempt;
use crate::proxy::tcp::{key_of, next_backend, Limits, ListenerShared};

/// The largest UDP payload over IPv4 (65,535 − 8 UDP − 20 IP). Receive slots are larger still
/// (see [`batch::SLOT`]), so nothing is ever truncated, over IPv6 either.
pub const MAX_DATAGRAM: usize = 65_507;

thread_local! {
    /// One batch of receive buffers per thread for replies, used only between readiness and
    /// send, so an idle flow holds no buffer.
    static REPLY_BATCH: std::cell::RefCell<RecvBatch> = std::cell::RefCell::new(RecvBatch::default());
}

pub(super) struct FlowConn {
    /// The backend, counted active while the flow lives.
    pub(super) flight: InFlight,
    /// The flow's place under `global.max_connections`.
    _slot: GlobalSlot,
    pub(super) upstream: Arc<UdpSocket>,
    pub(super) replies: JoinHandle<()>,
    pub(super) last_reply_ms: Arc<AtomicU64>,
    to_backend: metrics::Counter,
    pub(super) started: Instant,
    pub(super) bytes_in: u64,
}

/// One flow counted in `global.max_connections` (a flow is a UDP listener's connection),
/// until dropped.
pub(super) struct GlobalSlot(Arc<Limits>);

impl GlobalSlot {
    /// A slot for a flow handed over by the previous process: never refused.
    pub(super) fn force(limits: &Arc<Limits>) -> Self {
        limits.global_active.fetch_add(1, Relaxed);
        Self(limits.clone())
    }

    fn take(limits: &Arc<Limits>) -> Option<Self> {
        let n = limits.global_active.fetch_add(1, Relaxed) + 1;
        if n > limits.global_max.load(Relaxed) {
            limits.global_active.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Self(limits.clone()))
    }
}

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        self.0.global_active.fetch_sub(1, Relaxed);
    }
}

/// Why no flow could be opened for a new client.
#[derive(Debug, Clone, Copy)]
enum Refused {
    /// The listener's `max_connections` flows are open.
    Full,
    NoBackend,
}

/// Per-listener UDP metric handles.
pub(super) struct ListenerMetrics {
    pub(super) sessions: metrics::Gauge,
    full: metrics::Counter,
    no_backend: metrics::Counter,
    send_error: metrics::Counter,
    truncated: metrics::Counter,
}

impl ListenerMetrics {
    /// Where datagrams dropped for `why` are counted.
    fn refused(&self, why: Refused) -> &metrics::Counter {
        match why {
            Refused::Full => &self.full,
            Refused::NoBackend => &self.no_backend,
        }
    }

    fn new(listener: &str) -> Self {
        let drop = |reason: &'static str| metrics::counter!("lb_udp_dropped_total", "listener" => listener.to_string(), "reason" => reason);
        Self {
            sessions: metrics::gauge!("lb_udp_sessions", "listener" => listener.to_string()),
            full: drop("flow_table_full"),
            no_backend: drop("no_backend"),
            send_error: drop("send_error"),
            truncated: drop("truncated"),
        }
    }
}

/// A UDP socket connected to `peer`, from an ephemeral port of the right family. Each flow
/// gets one (so replies identify their flow), and so does each UDP health probe.
pub fn connected_socket(peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = StdUdp::bind(local)?;
    s.connect(peer)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// Serves one listening socket (the listener's `index`th) until `stop`. After a binary upgrade
/// it first adopts the previous process's flows for this socket; on a hand-over it gives its
/// flows to the next process instead of ending them.
pub async fn serve(
    sock: StdUdp,
    index: u32,
    shared: Arc<ListenerShared>,
    limits: Arc<Limits>,
    stop: CancellationToken,
    handover: Handover,
) {
    let sock = match UdpSocket::from_std(sock) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(listener = %shared.name, error = %e, "cannot register udp socket");
            return;
        }
    };
    let m = ListenerMetrics::new(&shared.name);
    let (timeout, max_flows) = {
        let l = &shared.route.load().listener;
        (l.udp_session_timeout, l.max_connections as usize)
    };
    // This socket's table can never hold more than the listener's bound; the bound across
    // every worker's socket is kept by the listener's shared count.
    let mut table: FlowTable<FlowConn> = FlowTable::new(max_flows, timeout);
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<SocketAddr>();
    // Nothing is read from the socket before the old process's flows are in: a datagram
    // waiting in its queue belongs to one of them.
    let inherited = handover.inbox.flows_for(&shared.name, index).await;
    let up = FlowShell {
        shared: &shared,
        limits: &limits,
        m: &m,
        sock: &sock,
        closed: &closed_tx,
    };
    super::moved::adopt(inherited, &up, &mut table, Instant::now());
    let mut batch = RecvBatch::default();
    let mut tick = tokio::time::interval(
        (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
    );
    loop {
        tokio::select! {
            r = sock.readable() => {
                // ICMP errors for earlier sends surface as receive errors on some kernels; not
                // fatal, and a spurious wake-up is just `WouldBlock`.
                if r.is_err() || batch.try_recv(&sock).is_err() {
                    continue;
                }
                let now = Instant::now();
                // One flow lookup and one send per run of datagrams from one client.
                let mut i = 0;
                while i < batch.len() {
                    let Some((client, end)) = batch.run_from(i) else {
                        m.truncated.increment(1);
                        i += 1;
                        continue;
                    };
                    let datagrams = batch.slices(i..end);
                    i = end;
                    let dropped = datagrams.len() as u64;
                    let fresh = match table.route(client, now) {
                        Route::Existing(c) => {
                            forward(c, &datagrams, &m).await;
                            continue;
                        }
                        Route::Full(stale) => {
                            if let Some(old) = stale {
                                end_flow(&shared, &m, client, old, "timeout");
                            }
                            m.full.increment(dropped);
                            continue;
                        }
                        Route::New(stale) => {
                            // A flow that went stale is closed before its client starts anew.
                            if let Some(old) = stale {
                                end_flow(&shared, &m, client, old, "timeout");
                            }
                            match open_flow(&up, client) {
                                Ok(c) => c,
                                Err(why) => {
                                    m.refused(why).increment(dropped);
                                    continue;
                                }
                            }
                        }
                    };
                    match table.insert(client, fresh, now) {
                        Ok(c) => forward(c, &datagrams, &m).await,
                        Err(c) => {
                            m.full.increment(dropped);
                            end_flow(&shared, &m, client, c, "refused");
                        }
                    }
                }
            }
            Some(client) = closed_rx.recv() => {
                if let Some(c) = table.remove(&client) {
                    end_flow(&shared, &m, client, c, "backend_error");
                }
            }
            _ = tick.tick() => {
                table.set_timeout(shared.route.load().listener.udp_session_timeout);
                table.refresh(|c| match c.last_reply_ms.load(Relaxed) {
                    0 => None,
                    at => Some(clock::instant_of(at)),
                });
                for (client, c) in table.expire(Instant::now()) {
                    end_flow(&shared, &m, client, c, "timeout");
                }
            }
            () = stop.cancelled() => break,
        }
    }
    if handover.moving.is_open() {
        super::moved::hand_over(&mut table, index, &shared, &m, &handover.moving).await;
    }
    for (client, c) in table.drain() {
        end_flow(&shared, &m, client, c, "shutdown");
    }
}

/// Sends one client's run of datagrams through its flow, waiting only when the upstream send
/// buffer is full.
async fn forward(c: &mut FlowConn, datagrams: &[&[u8]], m: &ListenerMetrics) {
    let mut done = 0;
    while done < datagrams.len() {
        match batch::try_send_all(&c.upstream, &datagrams[done..], None) {
            Ok(n) => {
                let bytes: usize = datagrams[done..done + n].iter().map(|d| d.len()).sum();
                c.to_backend.increment(n as u64);
                c.bytes_in += bytes as u64;
                c.flight.backend().bytes_in.fetch_add(bytes as u64, Relaxed);
                done += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if c.upstream.writable().await.is_err() {
                    m.send_error.increment((datagrams.len() - done) as u64);
                    return;
                }
            }
            // One datagram failed (say an ICMP error from an earlier one surfaced): drop it,
            // counted, and go on with the rest.
            Err(_) => {
                m.send_error.increment(1);
                done += 1;
            }
        }
    }
}

/// What starting a flow needs of its socket task.
pub(super) struct FlowShell<'a> {
    pub(super) shared: &'a ListenerShared,
    pub(super) limits: &'a Arc<Limits>,
    pub(super) m: &'a ListenerMetrics,
    pub(super) sock: &'a Arc<UdpSocket>,
    pub(super) closed: &'a mpsc::UnboundedSender<SocketAddr>,
}

/// Starts a flow for `client`: picks a backend (the next one if a socket cannot be made),
/// opens the flow's upstream socket and its reply task. Refused when the listener is at its
/// flow bound or no backend is available.
fn open_flow(up: &FlowShell<'_>, client: SocketAddr) -> Result<FlowConn, Refused> {
    let (shared, limits) = (up.shared, up.limits);
    let route = shared.route.load();
    if shared.active.load(Relaxed) >= route.listener.max_connections {
        return Err(Refused::Full);
    }
    let slot = GlobalSlot::take(limits).ok_or(Refused::Full)?;
    // udp listeners always have a pool (validated).
    let Some(target) = route.default.as_ref() else {
        return Err(Refused::NoBackend);
    };
    let pool = &target.pool;
    let key = key_of(pool, client);
    let mut attempt = Attempt::default();
    let mut made = None;
    while let Some(i) = next_backend(pool, key, &mut attempt) {
        let b = &pool.backends[i];
        match connected_socket(b.addr) {
            Ok(up) => {
                made = Some((b.clone(), Arc::new(up), i));
                break;
            }
            Err(e) => b.record_traffic(false, pool.config.passive.as_ref(), &e.to_string()),
        }
    }
    let Some((backend, upstream, index)) = made else {
        return Err(Refused::NoBackend);
    };
    backend.total.fetch_add(1, Relaxed);
    shared.total.fetch_add(1, Relaxed);
    Ok(start_flow(up, slot, target, index, upstream, client, 0))
}

/// Counts a flow on `target`'s backend `index` over `upstream` and starts its reply task; a
/// new flow and one handed over from the previous process alike. `last_reply_ms` as in
/// [`FlowConn`] (0 = no reply yet).
pub(super) fn start_flow(
    up: &FlowShell<'_>,
    slot: GlobalSlot,
    target: &crate::proxy::route::Target,
    index: usize,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    last_reply_ms: u64,
) -> FlowConn {
    let backend = &target.pool.backends[index];
    let flight = backend.begin();
    up.shared.active.fetch_add(1, Relaxed);
    up.m.sessions.increment(1.0);
    // The route's handles, not the flow's own: a series labelled `backend` lives while its
    // handles do (crate::series), and these counts must outlive each flow.
    let [to_backend, from_backend] = target.metrics[index].udp_datagrams();
    let last_reply_ms = Arc::new(AtomicU64::new(last_reply_ms));
    let replies = tokio::spawn(replies(
        upstream.clone(),
        up.sock.clone(),
        client,
        backend.clone(),
        last_reply_ms.clone(),
        from_backend,
        up.closed.clone(),
        target.pool.config.passive,
    ));
    FlowConn {
        flight,
        _slot: slot,
        upstream,
        replies,
        last_reply_ms,
        to_backend,
        started: Instant::now(),
        bytes_in: 0,
    }
}

fn end_flow(
    shared: &ListenerShared,
    m: &ListenerMetrics,
    client: SocketAddr,
    c: FlowConn,
    why: &str,
) {
    c.replies.abort();
    // Passive detection: a flow that sent datagrams and never got a single reply counts as a
    // failure of its backend (a silent backend never triggers ICMP errors either).
    if why == "timeout" && c.bytes_in > 0 && c.last_reply_ms.load(Relaxed) == 0 {
        let passive = shared
            .route
            .load()
            .default
            .as_ref()
            .and_then(|t| t.pool.config.passive);
        c.flight.backend().record_traffic(
            false,
            passive.as_ref(),
            "udp: no reply for a whole flow",
        );
    }
    shared.active.fetch_sub(1, Relaxed);
    m.sessions.decrement(1.0);
    if shared.route.load().listener.access_log {
        tracing::info!(target: "lb::access", client = %client, listener = %shared.name, pool = %c.flight.backend().pool, backend = %c.flight.backend().id, bytes_in = c.bytes_in, duration_ms = c.started.elapsed().as_millis() as u64, end = why, "udp flow ended");
    }
}

/// Carries the backend's replies to the client until the flow is ended (aborted) or the
/// backend refuses (ICMP port unreachable), which counts as a passive failure.
#[allow(clippy::too_many_arguments)]
async fn replies(
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    backend: Arc<Backend>,
    last_reply_ms: Arc<AtomicU64>,
    to_client: metrics::Counter,
    closed: mpsc::UnboundedSender<SocketAddr>,
    passive: Option<crate::config::Passive>,
) {
    loop {
        // Wait for a reply without holding a buffer: an idle flow costs no 64 KiB.
        if let Err(e) = upstream.readable().await {
            backend.record_traffic(false, passive.as_ref(), &format!("udp: {e}"));
            let _ = closed.send(client);
            return;
        }
        let got = REPLY_BATCH.with(|b| {
            let mut batch = b.borrow_mut();
            let n = batch.try_recv(&upstream)?;
            let datagrams = batch.slices(0..n);
            let bytes: usize = datagrams.iter().map(|d| d.len()).sum();
            // UDP may drop: a full send buffer loses these replies rather than stalling the flow.
            let sent = batch::try_send_all(&listener, &datagrams, Some(client)).unwrap_or(0);
            Ok::<_, std::io::Error>((bytes, sent))
        });
        match got {
            Ok((bytes, sent)) => {
                last_reply_ms.store(clock::now_ms(), Relaxed);
                backend.bytes_out.fetch_add(bytes as u64, Relaxed);
                backend.record_traffic(true, passive.as_ref(), "");
                to_client.increment(sent as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                backend.record_traffic(false, passive.as_ref(), &format!("udp: {e}"));
                let _ = closed.send(client);
                return;
            }
        }
    }
}
