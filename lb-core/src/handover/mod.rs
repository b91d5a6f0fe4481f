//! Handing open connections and UDP flows to a new lb process in a binary upgrade
//! (`global.upgrade_handover`). The old process's side is [`Moving`]: once the new process is
//! READY it asks every plain relay to pause and every UDP socket task to give up its flow
//! table, and they pass what they hold (sockets and state) to the upgrade thread, which sends
//! it on ([`io`], [`wire`]). The new process's side is [`Inbox`]: UDP flows wait there for
//! the socket tasks to adopt them (those tasks do not read until every flow has arrived), and
//! TCP connections are resumed as they come (`crate::proxy::moved`). Counted in
//! `lb_upgrade_handover_total{kind,result}` (see [`count`]).

pub mod io;
pub mod wire;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use wire::{TcpConn, UdpFlow};

/// How long the new process's UDP sockets wait for the old one's flows before reading anyway
/// (the old one sends them within milliseconds of READY; this only bounds a broken peer).
pub const UDP_WAIT: Duration = Duration::from_secs(3);

/// What a task of the old process gives the upgrade thread to send.
#[derive(Debug)]
pub enum Moved {
    /// A paused relay: the client's socket, the backend's, and the state.
    Tcp {
        conn: Box<TcpConn>,
        client: OwnedFd,
        backend: OwnedFd,
    },
    /// One UDP socket task's whole flow table (possibly empty), each flow with its upstream
    /// socket. Exactly one per UDP socket task.
    UdpSocket { flows: Vec<(UdpFlow, OwnedFd)> },
}

/// `lb_upgrade_handover_total{kind,result}`. Results: `moved` (the old process sent it),
/// `drained` (it could not move — TLS, HTTP — and finished in the old process), `failed`
/// (sending it failed: it is closed), `inherited` (the new process resumed it), `refused`
/// (the new process could not place it — its listener, pool or backend is not in the new
/// config — and closed it).
pub fn count(kind: &'static str, result: &'static str) {
    metrics::counter!("lb_upgrade_handover_total", "kind" => kind, "result" => result).increment(1);
}

/// The old process's side: the pause request and the channel to the upgrade thread.
#[derive(Debug, Clone, Default)]
pub struct Moving {
    /// Cancelled to ask every plain relay to pause (only once a hand-over is under way).
    pub request: CancellationToken,
    tx: Arc<Mutex<Option<Sender<Moved>>>>,
    opened: Arc<AtomicBool>,
    /// Set by the upgrade thread once everything given to it was sent (or failed).
    sent: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Moving {
    /// Starts a hand-over: from now on tasks give what they hold to the returned receiver.
    pub fn open(&self) -> Receiver<Moved> {
        let (tx, rx) = channel();
        *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        self.opened.store(true, Relaxed);
        rx
    }

    /// Whether a hand-over is under way (so stopping tasks give their state instead of
    /// ending it).
    pub fn is_open(&self) -> bool {
        self.opened.load(Relaxed)
    }

    /// Gives `m` to the upgrade thread; gives it back if the hand-over is closed.
    pub fn send(&self, m: Moved) -> Result<(), Moved> {
        match &*self.tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(m).map_err(|e| e.0),
            None => Err(m),
        }
    }

    /// No more to give: the upgrade thread sends what it has and closes the connection.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Called by the upgrade thread when it is done.
    pub fn finished(&self) {
        self.sent.send_replace(true);
    }

    /// Closes the hand-over and waits (up to `within`) for the upgrade thread to have sent
    /// everything; at once when no hand-over was under way.
    pub async fn close_and_wait(&self, within: Duration) {
        self.close();
        if !self.is_open() {
            return;
        }
        let mut rx = self.sent.subscribe();
        if tokio::time::timeout(within, rx.wait_for(|done| *done))
            .await
            .is_err()
        {
            tracing::warn!("binary upgrade: the hand-over did not finish in {within:?}");
        }
    }
}

/// A UDP flow received with its upstream socket.
pub type InheritedFlow = (UdpFlow, OwnedFd);

/// The new process's side: the UDP flows received, by listener and socket, until the socket
/// tasks adopt them.
#[derive(Debug)]
pub struct Inbox {
    /// This process takes the previous one's connections and flows (decided at bind).
    accepting: bool,
    /// Cancelled once the old process has sent every UDP flow (or will send none).
    udp_ready: CancellationToken,
    flows: Mutex<HashMap<(String, u32), Vec<InheritedFlow>>>,
}

impl Inbox {
    /// `waiting`: an upgrade with hand-over is under way, so UDP sockets wait for the flows.
    pub fn new(waiting: bool) -> Self {
        let udp_ready = CancellationToken::new();
        if !waiting {
            udp_ready.cancel();
        }
        Self {
            accepting: waiting,
            udp_ready,
            flows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this process asks the old one for its connections and flows.
    pub fn accepts(&self) -> bool {
        self.accepting
    }

    pub fn put_flow(&self, flow: UdpFlow, upstream: OwnedFd) {
        self.flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((flow.listener.clone(), flow.socket))
            .or_default()
            .push((flow, upstream));
    }

    /// Every flow has arrived (or none will): UDP sockets may be read.
    pub fn udp_done(&self) {
        self.udp_ready.cancel();
    }

    /// Waits (bounded by [`UDP_WAIT`]) until the old process's flows are in, then takes those
    /// of `listener`'s socket `index`.
    pub async fn flows_for(&self, listener: &str, index: u32) -> Vec<(UdpFlow, OwnedFd)> {
        if tokio::time::timeout(UDP_WAIT, self.udp_ready.cancelled())
            .await
            .is_err()
        {
            tracing::warn!(listener = %listener, "binary upgrade: no UDP flows from the old process within {UDP_WAIT:?}; serving without them");
            self.udp_ready.cancel();
        }
        self.flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(listener.to_string(), index))
            .unwrap_or_default()
    }

    /// Flows no socket task took (their listener or socket is gone): closed and counted.
    pub fn discard_leftovers(&self) {
        let left: Vec<_> = self
            .flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for ((listener, socket), flows) in left {
            tracing::info!(listener = %listener, socket, flows = flows.len(), "binary upgrade: UDP flows for a socket this process does not serve; closed");
            for _ in flows {
                count("udp", "refused");
            }
        }
    }
}

/// Both sides, as every connection task sees them.
#[derive(Debug, Clone)]
pub struct Handover {
    pub moving: Moving,
    pub inbox: Arc<Inbox>,
}
