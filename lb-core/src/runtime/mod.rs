//! Running lb: bind every socket first (so a bad address fails before anything starts), then
//! run the workers, health checks and admin API until a shutdown is asked for, then drain.
//! The running config is a [`Snapshot`] swapped whole on reload.
//!
//! Lifecycle phases `Starting → Ready → Stopping → Draining → Stopped` (see [`Phase`]) are
//! published on a watch channel.

mod admin;
mod admin_access;
mod admin_conn;
mod admin_members;
mod bind;
mod engine;
mod handover;
mod history;
mod members;
pub mod notify;
mod readiness;
mod reload;
mod status;
mod upgrade;
mod watch;
mod workers;

pub use admin_members::{parse as parse_new_member, MAX_API_MEMBERS};
pub use bind::BindOptions;
pub use bind::{bind, BindError, Bound};
pub use members::MemberError;
pub use readiness::{Phase, Readiness};
pub use reload::ReloadError;
pub use upgrade::{serve as serve_upgrades, take_over, Inherited};
pub use watch::watch;
pub use workers::Threading;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::Loaded;
use crate::discovery::task::Watch;
use crate::discovery::Dynamic;
use crate::pool::Pool;
use crate::proxy::tcp::{Limits, ListenerShared, Route};

/// Duplicates of a listener's sockets, kept for a binary upgrade.
pub(crate) type FdList = Arc<Mutex<Vec<OwnedFd>>>;

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
#[derive(Debug, Clone)]
pub struct PoolEntry {
    pub pool: Arc<Pool>,
    /// Cancelled when a reload or a membership change replaces the pool: its health tasks
    /// stop (the new pool's start).
    pub health_stop: CancellationToken,
}

impl PoolEntry {
    /// Builds the pools of `config` with their members from `dynamic` (DNS, admin API). A
    /// pool whose members and settings are unchanged from `previous` is kept as it is (its
    /// health tasks go on); a changed one reuses the backends of the same-named pool, so
    /// they keep their state. This is the one way pools change, for reloads and membership
    /// changes alike.
    pub(crate) fn build_all(
        config: &crate::config::Config,
        previous: Option<&Snapshot>,
        dynamic: &BTreeMap<String, Dynamic>,
    ) -> Vec<Self> {
        let none = Dynamic::default();
        config
            .pools
            .iter()
            .map(|p| {
                let cfg = crate::discovery::effective(p, dynamic.get(&p.name).unwrap_or(&none));
                let old = previous.and_then(|s| s.entry(&p.name));
                metrics::gauge!("lb_pool_members", "pool" => p.name.clone())
                    .set(cfg.backends.len() as f64);
                match old {
                    Some(e) if e.pool.config == cfg => e.clone(),
                    _ => PoolEntry {
                        pool: Arc::new(Pool::new(&cfg, old.map(|e| e.pool.as_ref()))),
                        health_stop: CancellationToken::new(),
                    },
                }
            })
            .collect()
    }
}

/// The running config: what a reload or a membership change swaps atomically.
#[derive(Debug)]
pub struct Snapshot {
    pub loaded: Loaded,
    pub pools: Vec<PoolEntry>,
    pub listeners: Vec<ListenerEntry>,
    /// Per pool: members from DNS and the admin API, kept across changes and reloads.
    pub dynamic: BTreeMap<String, Dynamic>,
}

impl Snapshot {
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.entry(name).map(|e| &e.pool)
    }

    fn entry(&self, name: &str) -> Option<&PoolEntry> {
        self.pools.iter().find(|p| p.pool.name() == name)
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
    /// The re-resolution loops running, each stopped by its token when a reload drops it.
    pub(crate) watches: Mutex<HashMap<Watch, CancellationToken>>,
    /// Binary upgrade hand-over of open connections and UDP flows (both directions).
    pub handover: crate::handover::Handover,
    /// This `Shared`, for the tasks it starts (DNS loops, drains) to call back.
    pub(crate) me: std::sync::Weak<Shared>,
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
