//! The threading models and the run loop: accept loops on the workers, health checks and the
//! admin API on the control runtime, and the drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{admin, Bound, Phase, Shared};
use crate::health;
use crate::proxy::tcp::{accept_loop, Context};
use crate::proxy::RelayMode;

/// How connections are spread over cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threading {
    /// One single-threaded runtime per worker thread, each with its own SO_REUSEPORT socket
    /// per listener; the kernel spreads connections, and a connection never changes thread.
    #[default]
    PerCore,
    /// One tokio multi-threaded (work-stealing) runtime with `workers` threads.
    WorkStealing,
}

/// Handles the control side uses to stop the data side.
struct Stops {
    accept: CancellationToken,
    exit: CancellationToken,
    cx: Context,
}

impl Bound {
    /// Runs until `shutdown` resolves, then drains: stops accepting, lets connections finish
    /// for up to `global.shutdown_timeout`, closes the rest, and returns.
    pub fn run<F, Fut>(self, shutdown: F) -> std::io::Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let shared = self.shared.clone();
        let g = &shared.loaded.config.global;
        let mode = if g.splice && cfg!(target_os = "linux") {
            RelayMode::Splice
        } else {
            RelayMode::Copy
        };
        let stops = Stops {
            accept: CancellationToken::new(),
            exit: CancellationToken::new(),
            cx: Context {
                limits: shared.limits.clone(),
                tracker: TaskTracker::new(),
                conn_cancel: CancellationToken::new(),
                mode,
            },
        };
        match shared.threading {
            Threading::PerCore => {
                let mut threads = Vec::new();
                for w in 0..shared.workers {
                    let mine: Vec<_> = self
                        .sockets
                        .iter()
                        .enumerate()
                        .filter_map(|(li, group)| {
                            Some((
                                shared.listeners[li].0.clone(),
                                group.get(w)?.try_clone().ok()?,
                            ))
                        })
                        .collect();
                    let (accept, exit, cx) =
                        (stops.accept.clone(), stops.exit.clone(), stops.cx.clone());
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    threads.push(std::thread::Builder::new().name(format!("lb-worker-{w}")).spawn(move || {
                        rt.block_on(async move {
                            for (l, sock) in mine {
                                match tokio::net::TcpListener::from_std(sock) {
                                    Ok(sock) => {
                                        tokio::spawn(accept_loop(sock, l, cx.clone(), accept.clone()));
                                    }
                                    Err(e) => tracing::error!(listener = %l.name, error = %e, "cannot register listener socket"),
                                }
                            }
                            exit.cancelled().await;
                        });
                    })?);
                }
                drop(self.sockets);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(control(shared, self.admin, stops, shutdown));
                for t in threads {
                    let _ = t.join();
                }
            }
            Threading::WorkStealing => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(shared.workers)
                    .thread_name("lb-worker")
                    .enable_all()
                    .build()?;
                let sockets = self.sockets;
                let admin = self.admin;
                rt.block_on(async move {
                    for (li, group) in sockets.into_iter().enumerate() {
                        let l = shared.listeners[li].0.clone();
                        for sock in group {
                            let sock = tokio::net::TcpListener::from_std(sock)?;
                            tokio::spawn(accept_loop(
                                sock,
                                l.clone(),
                                stops.cx.clone(),
                                stops.accept.clone(),
                            ));
                        }
                    }
                    control(shared, admin, stops, shutdown).await;
                    Ok::<_, std::io::Error>(())
                })?;
            }
        }
        Ok(())
    }
}

async fn control<F, Fut>(
    shared: Arc<Shared>,
    admin_sock: Option<std::net::TcpListener>,
    stops: Stops,
    shutdown: F,
) where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    for p in &shared.pools {
        health::check::spawn(p, &stops.exit);
    }
    if let Some(sock) = admin_sock {
        match tokio::net::TcpListener::from_std(sock) {
            Ok(sock) => {
                tokio::spawn(admin::serve(sock, shared.clone(), stops.exit.clone()));
            }
            Err(e) => tracing::error!(error = %e, "cannot register admin socket"),
        }
    }
    shared.phase.send_replace(Phase::Ready);
    for (l, addr) in &shared.listeners {
        let route = l.route.load();
        tracing::info!(listener = %l.name, pool.name = %route.pool.name(), "listening on {addr}");
    }
    tracing::info!(workers = shared.workers, threading = ?shared.threading, mode = ?stops.cx.mode, "lb ready");
    shutdown().await;

    shared.phase.send_replace(Phase::Draining);
    stops.accept.cancel();
    stops.cx.tracker.close();
    let open = stops
        .cx
        .limits
        .global_active
        .load(std::sync::atomic::Ordering::Relaxed);
    let grace = shared.loaded.config.global.shutdown_timeout;
    tracing::info!(
        open_connections = open,
        "shutting down: stopped accepting; waiting up to {grace:?} for open connections"
    );
    if tokio::time::timeout(grace, stops.cx.tracker.wait())
        .await
        .is_err()
    {
        let left = stops.cx.tracker.len();
        tracing::warn!(
            closing = left,
            "shutdown_timeout reached; closing the remaining connections"
        );
        stops.cx.conn_cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), stops.cx.tracker.wait()).await;
    }
    stops.exit.cancel();
    shared.phase.send_replace(Phase::Stopped);
    tracing::info!("stopped");
}
