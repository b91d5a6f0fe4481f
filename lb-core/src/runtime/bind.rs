//! Socket setup: every listener and the admin port are bound before anything runs, so a
//! port in use fails start-up with the listener's name and address (exit 1). Reloads bind
//! new listeners the same way before they change anything.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use super::upgrade::Inherited;
use super::workers::Threading;
use super::{ListenerEntry, Phase, PoolEntry, Shared, Snapshot};
use crate::config::{self, Loaded};
use crate::proxy::tcp::{Limits, Route};

/// The name the admin socket travels under in a binary upgrade (no listener can have it:
/// config names cannot hold a NUL).
pub(crate) const ADMIN_LISTENER: &str = "\0admin";

/// Listen backlog: the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("listener \"{listener}\": cannot listen on {addr}: {source}")]
    Listener {
        listener: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin: cannot listen on {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A config with all its sockets bound, ready to run.
#[derive(Debug)]
pub struct Bound {
    pub(crate) shared: Arc<Shared>,
    /// Per listener (in snapshot order): one socket per worker (per-core) or one in all.
    pub(crate) sockets: Vec<Vec<Sock>>,
    pub(crate) admin: Option<StdListener>,
}

impl Bound {
    /// Actual listener addresses (port 0 in the config becomes the port the kernel chose).
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.shared
            .state
            .load()
            .listeners
            .iter()
            .map(|l| (l.shared.name.clone(), l.addr))
            .collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// A listening socket of either protocol.
#[derive(Debug)]
pub(crate) enum Sock {
    Tcp(StdListener),
    Udp(std::net::UdpSocket),
}

impl Sock {
    fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        match self {
            Self::Tcp(s) => s.try_clone().map(OwnedFd::from),
            Self::Udp(s) => s.try_clone().map(OwnedFd::from),
        }
    }

    pub(crate) fn from_fd(fd: OwnedFd, udp: bool) -> std::io::Result<Self> {
        Ok(if udp {
            let s = std::net::UdpSocket::from(fd);
            s.set_nonblocking(true)?;
            Self::Udp(s)
        } else {
            let s = StdListener::from(fd);
            s.set_nonblocking(true)?;
            Self::Tcp(s)
        })
    }
}

/// A UDP socket for a listener (SO_REUSEPORT so the kernel keeps a client on one worker's
/// socket: it hashes the 4-tuple).
fn listen_udp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    #[cfg(unix)]
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn listen_any(addr: SocketAddr, udp: bool, reuse_port: bool) -> std::io::Result<Sock> {
    if udp {
        listen_udp(addr, reuse_port).map(Sock::Udp)
    } else {
        listen(addr, reuse_port).map(Sock::Tcp)
    }
}

fn local_addr(s: &Sock) -> std::io::Result<SocketAddr> {
    match s {
        Sock::Tcp(s) => s.local_addr(),
        Sock::Udp(s) => s.local_addr(),
    }
}

fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<StdListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Binds `count` sockets for a listener (SO_REUSEPORT when more than one); returns them and
/// the actual address.
pub(crate) fn bind_listener(
    l: &config::Listener,
    count: usize,
) -> Result<(Vec<Sock>, SocketAddr), BindError> {
    let err = |source| BindError::Listener {
        listener: l.name.clone(),
        addr: l.bind,
        source,
    };
    let udp = l.protocol == config::Protocol::Udp;
    let first = listen_any(l.bind, udp, count > 1).map_err(err)?;
    // With port 0 the kernel picks a port; the other workers' sockets must share it.
    let actual = local_addr(&first).map_err(err)?;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(listen_any(actual, udp, true).map_err(err)?);
    }
    Ok((group, actual))
}

/// Sockets per listener for a threading model.
pub(crate) fn sockets_per_listener(threading: Threading, workers: usize) -> usize {
    match threading {
        Threading::PerCore => workers,
        Threading::WorkStealing => 1,
    }
}

/// What `bind` needs besides the config.
#[derive(Debug, Default)]
pub struct BindOptions {
    /// The file reloads read again; `None` for an embedded config.
    pub config_path: Option<PathBuf>,
    pub threading: Threading,
    /// Renders `/metrics` (see [`crate::series`]).
    pub metrics: Option<crate::series::Exporter>,
    /// Listening sockets taken over from a previous process (binary upgrade).
    pub inherited: Inherited,
    /// What serves http listeners and prepares their part of each reloaded config.
    pub http: Option<Arc<dyn crate::proxy::handoff::HttpSide>>,
    /// Members resolved from the config's names at load (see [`crate::discovery::resolve_blocking`]).
    pub dynamic: std::collections::BTreeMap<String, crate::discovery::Dynamic>,
    /// systemd's notify socket (see [`super::notify::Notifier::from_env`]).
    pub notify: Option<super::notify::Notifier>,
}

/// Duplicates sockets so a binary upgrade can hand them over later.
pub(crate) fn dup_fds(sockets: &[Sock]) -> std::io::Result<Arc<Mutex<Vec<OwnedFd>>>> {
    let fds = sockets
        .iter()
        .map(Sock::try_clone_fd)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Mutex::new(fds)))
}

/// Binds everything `loaded` asks for, taking inherited sockets where a previous process had
/// the same listener. Nothing is left bound on error.
pub fn bind(loaded: Loaded, opts: &mut BindOptions) -> Result<Bound, BindError> {
    let cfg = &loaded.config;
    let threading = opts.threading;
    let workers = match cfg.global.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let per_listener = sockets_per_listener(threading, workers);
    let dynamic = std::mem::take(&mut opts.dynamic);
    let pools = PoolEntry::build_all(cfg, None, &dynamic);
    let pool_arcs: Vec<_> = pools.iter().map(|p| p.pool.clone()).collect();
    let accept = CancellationToken::new();
    let mut sockets = Vec::new();
    let mut listeners = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let (group, actual) = match opts.inherited.take(&l.name, l.bind) {
            // Every inherited socket gets an accept loop, whatever the new worker count:
            // a socket nobody accepts on would strand the connections queued on it.
            Some((mut group, actual)) => {
                while group.len() < per_listener {
                    let err = |source| BindError::Listener {
                        listener: l.name.clone(),
                        addr: actual,
                        source,
                    };
                    let udp = l.protocol == config::Protocol::Udp;
                    group.push(listen_any(actual, udp, true).map_err(err)?);
                }
                tracing::info!(listener = %l.name, sockets = group.len(), "took over the listening socket on {actual}");
                (group, actual)
            }
            None => bind_listener(l, per_listener)?,
        };
        let fds = dup_fds(&group).map_err(|source| BindError::Listener {
            listener: l.name.clone(),
            addr: actual,
            source,
        })?;
        sockets.push(group);
        let route = Route::build(&loaded, i, &pool_arcs);
        listeners.push(ListenerEntry::new(route, actual, &accept, fds));
    }
    // The admin socket is handed over too, so a fixed admin port does not block an upgrade.
    let admin = match &cfg.admin {
        Some(a) => match opts.inherited.take(ADMIN_LISTENER, a.bind) {
            Some((mut socks, _)) if matches!(socks.first(), Some(Sock::Tcp(_))) => {
                match socks.swap_remove(0) {
                    Sock::Tcp(s) => Some(s),
                    Sock::Udp(_) => None,
                }
            }
            _ => Some(listen(a.bind, false).map_err(|source| BindError::Admin {
                addr: a.bind,
                source,
            })?),
        },
        None => None,
    };
    let admin_fd = match (&admin, &cfg.admin) {
        (Some(sock), Some(a)) => {
            let err = |source| BindError::Admin {
                addr: a.bind,
                source,
            };
            let actual = sock.local_addr().map_err(err)?;
            Some((
                OwnedFd::from(sock.try_clone().map_err(err)?),
                a.bind,
                actual,
            ))
        }
        _ => None,
    };
    for left in opts.inherited.leftovers() {
        tracing::info!(
            "binary upgrade: listener {left} is not in the new config; its socket closes"
        );
    }
    let (phase, _) = tokio::sync::watch::channel(Phase::Starting);
    // Decided once: the new process of an upgrade takes the old one's connections and flows
    // when its config allows (the old one's config decides whether it gives them).
    let accept_handover = opts.inherited.is_upgrade() && cfg.global.upgrade_handover;
    let limits = Arc::new(Limits::new(cfg.global.max_connections));
    let shared = Arc::new_cyclic(|me| Shared {
        limits,
        state: ArcSwap::from_pointee(Snapshot {
            loaded,
            pools,
            listeners,
            dynamic,
        }),
        config_path: opts.config_path.clone(),
        started: Instant::now(),
        metrics: opts.metrics.take(),
        phase,
        workers,
        threading,
        engine: OnceLock::new(),
        reloading: Mutex::new(()),
        shutdown: CancellationToken::new(),
        accept,
        admin_fd: Mutex::new(admin_fd),
        http: opts.http.clone(),
        watches: Mutex::new(std::collections::HashMap::new()),
        handover: crate::handover::Handover {
            moving: crate::handover::Moving::default(),
            inbox: Arc::new(crate::handover::Inbox::new(accept_handover)),
        },
        me: me.clone(),
        notify: opts.notify.take(),
    });
    Ok(Bound {
        shared,
        sockets,
        admin,
    })
}
