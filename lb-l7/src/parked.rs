//! Idle plain HTTP/1.1 keep-alive connections, parked ([`lb_core::park`]): one that has waited
//! [`PARK_AFTER`] for its next request leaves its task, its timers and tokio's registration
//! behind and is kept as its socket and what its requests share ([`ConnInfo`]), watched by
//! its worker's parker. Its next bytes wake it onto a new task that serves on exactly as
//! before; its idle timeout, the listener's drain and shutdown close it where it lies.
//!
//! TLS connections are not parked (their session state is the connection's own), nor those
//! the general path serves (hyper's connection state lives in its future).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::park::{Parked, Parker};
use lb_core::proxy::handoff::ClientStream;
use lb_core::proxy::prefixed::Prefixed;
use tokio_util::sync::CancellationToken;

use crate::conn_info::ConnInfo;
use crate::gateway::Gateway;
use crate::timed::Timed;

/// How long a connection waits for its next request as a task before it is parked. Parking
/// and waking again cost a few syscalls (out of tokio's epoll set, into the parker's, and
/// back) and a task spawn; a client that comes back sooner never pays them.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

thread_local! {
    /// This worker's parker, started when its first connection parks.
    static PARKER: RefCell<Option<Parker<Idle>>> = const { RefCell::new(None) };
}

/// A parked connection's state beside its socket.
struct Idle {
    gw: Arc<Gateway>,
    info: Arc<ConnInfo>,
    drain: CancellationToken,
    /// When its last exchange ended: its idle timeout runs from there.
    from: Instant,
    _counted: Counted,
}

/// One in `lb_http_parked_connections{listener}` while it lives.
struct Counted(metrics::Gauge);

impl Counted {
    fn new(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Parked for Idle {
    fn wake(self, stream: std::net::TcpStream) {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
            return;
        };
        let Idle {
            gw,
            info,
            drain,
            from,
            ..
        } = self;
        let io = Timed::new(
            ClientStream::Plain(Prefixed::new(Vec::new(), stream)),
            gw.idle_timeout,
        );
        let (tracker, cancel) = (info.tracker.clone(), info.cancel.clone());
        tracker.spawn(gw.serve_session(io, info, drain, cancel, true, Some(from)));
    }
}

/// Whether `io`'s session may park it when it idles: a plain connection, on a worker whose
/// parker runs.
pub(crate) fn may_park(io: &Timed<ClientStream>) -> bool {
    matches!(io.get_ref(), ClientStream::Plain(_)) && parker().is_some()
}

/// The socket alone, if nothing lb read ahead from it is left unserved (else `io` back).
pub(crate) fn parkable(
    io: Timed<ClientStream>,
) -> Result<tokio::net::TcpStream, Timed<ClientStream>> {
    let limit = io.limit();
    match io.into_inner() {
        ClientStream::Plain(p) => p
            .into_drained()
            .map_err(|p| Timed::new(ClientStream::Plain(p), limit)),
        tls @ ClientStream::Tls(_) => Err(Timed::new(tls, limit)),
    }
}

/// Parks the connection until its next bytes, its idle timeout (from `from`), the
/// listener's drain or shutdown; if it cannot be parked, it is closed (as at its idle
/// timeout: nothing was in flight).
pub(crate) fn park(
    gw: Arc<Gateway>,
    stream: tokio::net::TcpStream,
    info: Arc<ConnInfo>,
    drain: CancellationToken,
    from: Instant,
) {
    let Some(parker) = parker() else { return };
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let deadline = tokio::time::Instant::from_std(from) + gw.idle_timeout;
    // One group per gateway: its connections share the listener's drain and shutdown tokens.
    let group = Arc::as_ptr(&gw) as usize;
    let ends = [drain.clone(), info.cancel.clone()];
    let idle = Idle {
        _counted: Counted::new(&gw.parked),
        gw,
        info,
        drain,
        from,
    };
    if let Err(e) = parker.park(stream, idle, deadline, group, &ends) {
        tracing::debug!(error = %e, "idle connection closed instead of parked");
    }
}

fn parker() -> Option<Parker<Idle>> {
    PARKER.with(|p| {
        let mut p = p.borrow_mut();
        if !p.as_ref().is_some_and(Parker::alive) {
            *p = match Parker::start() {
                Ok(started) => Some(started),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the idle connections' parker");
                    None
                }
            };
        }
        p.clone()
    })
}
