//! Running lb: bind every socket first (so a bad address fails before anything starts), then
//! run the workers, health checks and admin API until a shutdown is asked for, then drain.
//! The running config is a [`Snapshot`] swapped whole on reload.
//!
//! Lifecycle phases `Starting → Ready → Draining → Stopped` are published on a watch channel.

mod admin;
mod admin_access;
mod admin_conn;
mod bind;
mod engine;
pub mod notify;
mod readiness;
mod reload;
mod status;
mod upgrade;
mod watch;
mod workers;

pub use bind::BindOptions;
pub use bind::{bind, BindError, Bound};
pub use readiness::Readiness;
pub use reload::ReloadError;
pub use upgrade::{serve as serve_upgrades, take_over, Inherited};
pub use watch::watch;
pub use workers::Threading;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::Loaded;
use crate::pool::Pool;
use crate::proxy::tcp::{Limits, ListenerShared, Route};

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Ready,
    Draining,
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Stopped => "stopped",
        }
    }
}

/// A listener of the running config.
#[derive(Debug, Clone)]
pub struct ListenerEntry {
    pub shared: Arc<ListenerShared>,
    pub addr: SocketAddr,
    /// A child of [`Shared::accept`]; cancelled alone when a reload removes the listener:
    /// it stops accepting, its connections go on.
    pub stop: CancellationToken,
    /// Duplicates of the listening sockets, handed to a new process on binary upgrade;
    /// emptied on shutdown so the sockets close and new connections are refused.
    pub fds: Arc<Mutex<Vec<OwnedFd>>>,
}

impl ListenerEntry {
    /// A listener starting on freshly bound (or inherited) sockets.
    pub(crate) fn new(
        route: Route,
        addr: SocketAddr,
        accept: &CancellationToken,
        fds: Arc<Mutex<Vec<OwnedFd>>>,
    ) -> Self {
        Self {
            shared: Arc::new(ListenerShared::new(route)),
            addr,
            stop: accept.child_token(),
            fds,
        }
    }
}

/// A pool of the running config.
#[derive(Debug)]
pub struct PoolEntry {
    pub pool: Arc<Pool>,
    /// Cancelled when a reload replaces the pool: its health tasks stop.
    pub health_stop: CancellationToken,
}

impl PoolEntry {
    /// Builds the pools of `config`, each reusing the backends of the same-named pool in
    /// `previous` (a reload) so they keep their state.
    pub(crate) fn build_all(
        config: &crate::config::Config,
        previous: Option<&Snapshot>,
    ) -> Vec<Self> {
        config
            .pools
            .iter()
            .map(|p| PoolEntry {
                pool: Arc::new(Pool::new(
                    p,
                    previous.and_then(|s| s.pool(&p.name)).map(|a| a.as_ref()),
                )),
                health_stop: CancellationToken::new(),
            })
            .collect()
    }
}

/// The running config: what a reload swaps atomically.
#[derive(Debug)]
pub struct Snapshot {
    pub loaded: Loaded,
    pub pools: Vec<PoolEntry>,
    pub listeners: Vec<ListenerEntry>,
}

impl Snapshot {
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools
            .iter()
            .map(|p| &p.pool)
            .find(|p| p.name() == name)
    }
}

/// Process-wide state the admin API, signals and reloads share.
#[derive(Debug)]
pub struct Shared {
    pub state: ArcSwap<Snapshot>,
    /// The file reloads read; `None` for an embedded config (`lb demo`).
    pub config_path: Option<PathBuf>,
    pub limits: Arc<Limits>,
    pub started: Instant,
    /// Renders `/metrics`; `None` when another recorder was installed first.
    pub metrics: Option<crate::series::Exporter>,
    pub phase: tokio::sync::watch::Sender<Phase>,
    pub workers: usize,
    pub threading: Threading,
    /// Set once running: where accept loops and health tasks are spawned.
    pub(crate) engine: OnceLock<engine::Engine>,
    /// One reload at a time.
    pub(crate) reloading: Mutex<()>,
    /// Cancelled to ask for a graceful shutdown from inside (a binary upgrade took over).
    pub shutdown: CancellationToken,
    /// Cancelled when draining starts: every listener (each holds a child) stops accepting.
    pub accept: CancellationToken,
    /// A duplicate of the admin socket with its configured and actual address, for upgrades.
    pub(crate) admin_fd: Mutex<Option<(OwnedFd, SocketAddr, SocketAddr)>>,
    /// The HTTP side every reload prepares the new config with.
    pub http: Option<Arc<dyn crate::proxy::handoff::HttpSide>>,
    /// systemd's notify socket, when started by systemd with `Type=notify`.
    pub(crate) notify: Option<notify::Notifier>,
}

impl Shared {
    /// Whether lb should be sent traffic now (see [`readiness::decide`], the one place this is
    /// decided): `GET /api/ready` and systemd's `STATUS=` both ask here.
    pub fn readiness(&self) -> Readiness {
        let state = self.state.load();
        readiness::decide(*self.phase.borrow(), &state.loaded.config, |i| {
            state
                .pools
                .get(i)
                .is_some_and(|p| p.pool.backends.iter().any(|b| b.available()))
        })
    }

    /// The one-line summary systemd shows (`STATUS=`).
    pub fn status_line(&self) -> String {
        let r = self.readiness();
        let state = self.state.load();
        let backends = state.pools.iter().flat_map(|p| p.pool.backends.iter());
        let (up, total) =
            backends.fold((0, 0), |(u, t), b| (u + usize::from(b.available()), t + 1));
        readiness::status_line(&r, state.listeners.len(), up, total)
    }
}

impl Shared {
    /// Tells systemd `fields` (nothing when not started by it).
    pub(crate) fn notify(&self, fields: &[notify::Field]) {
        if let Some(n) = &self.notify {
            n.send(fields);
        }
    }
}
