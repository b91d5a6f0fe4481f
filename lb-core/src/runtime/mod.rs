//! Running lb: bind every socket first (so a bad address fails before anything starts), then
//! run the workers, health checks and admin API until a shutdown is asked for, then drain.
//!
//! Lifecycle phases `Starting → Ready → Draining → Stopped` are published on a watch channel.

mod admin;
mod bind;
mod status;
mod workers;

pub use bind::{bind, BindError, Bound};
pub use workers::Threading;

use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Loaded;
use crate::pool::Pool;
use crate::proxy::tcp::{Limits, ListenerShared};

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

/// Process-wide state the admin API reads.
#[derive(Debug)]
pub struct Shared {
    pub loaded: Loaded,
    pub pools: Vec<Arc<Pool>>,
    pub listeners: Vec<(Arc<ListenerShared>, std::net::SocketAddr)>,
    pub limits: Arc<Limits>,
    pub started: Instant,
    pub prometheus: Option<PrometheusHandle>,
    pub phase: tokio::sync::watch::Sender<Phase>,
    pub workers: usize,
    pub threading: Threading,
}
