//! Where tasks run: the worker runtimes' handles (accept loops and their connections) and the
//! control runtime's handle (health checks). Used at start-up and by reloads alike.

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::bind::Sock;
use super::{ListenerEntry, PoolEntry};
use crate::health;
use crate::proxy::tcp::{accept_loop, Context};

#[derive(Debug)]
pub(crate) struct Engine {
    /// Per-core: one handle per worker, matching the socket per worker of each listener.
    /// Work-stealing: one handle.
    pub workers: Vec<Handle>,
    pub control: Handle,
    pub cx: Context,
    /// Cancelled at exit: health tasks and the admin API stop.
    pub exit: CancellationToken,
}

impl Engine {
    /// Starts accepting on `sockets` (one per worker handle, or all on the one handle).
    pub fn start_listener(&self, entry: &ListenerEntry, sockets: Vec<Sock>) {
        for (i, sock) in sockets.into_iter().enumerate() {
            let handle = &self.workers[i % self.workers.len()];
            // `stop` is a child of the process's accept token: a reload removing this
            // listener or shutdown both end it.
            let (l, cx, stop) = (entry.shared.clone(), self.cx.clone(), entry.stop.clone());
            match sock {
                // Tracked as well: a connection it accepts as `stop` is cancelled is spawned on
                // the tracker after the drain began waiting; were the loop untracked, the wait
                // could end first and the connection be cut (reset) at exit, or find the
                // hand-over already closed.
                Sock::Tcp(sock) => handle.spawn(self.cx.tracker.track_future(async move {
                    match tokio::net::TcpListener::from_std(sock) {
                        Ok(sock) => accept_loop(sock, l, cx, stop).await,
                        Err(e) => tracing::error!(listener = %l.name, error = %e, "cannot register listener socket"),
                    }
                })),
                // Tracked: on shutdown its flows are ended, or handed over, before exit.
                Sock::Udp(sock) => handle.spawn(self.cx.tracker.track_future(async move {
                    let (limits, handover) = (cx.limits.clone(), cx.handover.clone());
                    crate::proxy::udp::relay::serve(sock, i as u32, l, limits, stop, handover)
                        .await
                })),
            };
        }
    }

    pub fn start_health(&self, entry: &PoolEntry) {
        let _guard = self.control.enter();
        health::check::spawn(&entry.pool, &entry.health_stop);
    }
}
