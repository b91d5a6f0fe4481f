//! Idle plain HTTP/1.1 keep-alive connections, parked ([`lb_core::park`]): one that has waited
//! [`PARK_AFTER`] for its next request leaves its task and its timers behind and is kept as
//! its socket and what its requests share ([`ConnInfo`]) in its worker's parker. Its next
//! bytes wake it onto a new task that serves on exactly as before; its idle timeout, the
//! listener's drain and shutdown close it where it lies.
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
/// and waking cost no system call, but a new task and session per wake; a client
/// that comes back sooner never pays that. Short, so that a burst of connections that then
/// idle never has all their tasks alive at once (the allocator would keep that peak).
pub const PARK_AFTER: Duration = Duration::from_millis(10);

thread_local! {
    /// This worker's parker, started when its first connection parks.
    static PARKER: RefCell<Option<Parker<Idle>>> = const { RefCell::new(None) };
}

/// A parked connection's state beside its socket (its deadline is the parker's); one in
/// `lb_http_parked_connections{listener}` while it lives.
struct Idle {
    gw: Arc<Gateway>,
    info: Arc<ConnInfo>,
    drain: CancellationToken,
}

impl Idle {
    fn new(gw: Arc<Gateway>, info: Arc<ConnInfo>, drain: CancellationToken) -> Self {
        gw.parked.increment(1.0);
        Self { gw, info, drain }
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        self.gw.parked.decrement(1.0);
    }
}

impl Parked for Idle {
    fn wake(self, stream: tokio::net::TcpStream, deadline: tokio::time::Instant) {
        let (gw, info, drain) = (self.gw.clone(), self.info.clone(), self.drain.clone());
        drop(self);
        // Its idle time still runs from its last answer.
        let from = (deadline - gw.idle_timeout).into_std();
        let io = Timed::new(
            ClientStream::Plain(Prefixed::new(Vec::new(), stream)),
            gw.idle_timeout,
        );
        let (tracker, cancel) = (info.tracker.clone(), info.cancel.clone());
        tracker.spawn(gw.serve_session(io, info, drain, cancel, true, Some(from)));
    }
}

/// Whether `io`'s session may park it when it idles: a plain connection.
pub(crate) fn may_park(io: &Timed<ClientStream>) -> bool {
    matches!(io.get_ref(), ClientStream::Plain(_))
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
/// listener's drain or shutdown. One whose bytes came meanwhile is served on a new task.
pub(crate) fn park(
    gw: Arc<Gateway>,
    stream: tokio::net::TcpStream,
    info: Arc<ConnInfo>,
    drain: CancellationToken,
    from: Instant,
) {
    let parker = parker();
    let deadline = tokio::time::Instant::from_std(from) + gw.idle_timeout;
    // One group per gateway: its connections share the listener's drain and shutdown tokens.
    let group = Arc::as_ptr(&gw) as usize;
    let ends = [drain.clone(), info.cancel.clone()];
    if let Err((stream, idle)) =
        parker.park(stream, Idle::new(gw, info, drain), deadline, group, &ends)
    {
        idle.wake(stream, deadline);
    }
}

/// This worker's parker (a new one if its runtime's has shut down: tests run many).
fn parker() -> Parker<Idle> {
    PARKER.with(|p| {
        let mut p = p.borrow_mut();
        match &*p {
            Some(parker) if parker.alive() => parker.clone(),
            _ => p.insert(Parker::start()).clone(),
        }
    })
}
