//! The threading models and the run loop: accept loops on the workers, health checks and the
//! admin API on the control runtime, and the drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::Engine;
use super::notify::Field;
use super::{admin, Bound, Phase, Shared};
use crate::proxy::tcp::Context;
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

impl Bound {
    /// Runs until `shutdown` resolves, then drains: stops accepting, lets connections finish
    /// for up to `global.shutdown_timeout`, closes the rest, and returns.
    pub fn run<F, Fut>(self, shutdown: F) -> std::io::Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let shared = self.shared.clone();
        raise_fd_limit();
        let g = shared.state.load().loaded.config.global.clone();
        let mode = if g.splice && cfg!(target_os = "linux") {
            RelayMode::Splice
        } else {
            RelayMode::Copy
        };
        let cx = Context {
            limits: shared.limits.clone(),
            tracker: TaskTracker::new(),
            conn_cancel: CancellationToken::new(),
            mode,
            handover: shared.handover.clone(),
        };
        let exit = CancellationToken::new();
        match shared.threading {
            Threading::PerCore => {
                let mut threads = Vec::new();
                let mut handles = Vec::new();
                for w in 0..shared.workers {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    handles.push(rt.handle().clone());
                    let exit = exit.clone();
                    threads.push(
                        std::thread::Builder::new()
                            .name(format!("lb-worker-{w}"))
                            .spawn(move || rt.block_on(heartbeat(exit)))?,
                    );
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let engine = Engine {
                    workers: handles,
                    control: rt.handle().clone(),
                    cx,
                    exit,
                };
                rt.block_on(control(shared, self.sockets, self.admin, engine, shutdown));
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
                let h = rt.handle().clone();
                h.spawn(heartbeat(exit.clone()));
                let engine = Engine {
                    workers: vec![h.clone()],
                    control: h,
                    cx,
                    exit,
                };
                rt.block_on(control(shared, self.sockets, self.admin, engine, shutdown));
            }
        }
        Ok(())
    }
}

/// Keeps a timer due within [`HEARTBEAT`] on a runtime until `exit`. tokio wakes its driver
/// (an eventfd write and an extra epoll round) whenever a new timer is due before every
/// registered one; without this, each connection's connect timeout would be such a timer,
/// since the only others are idle timeouts minutes away. One tick per 100 ms saves one wake-up
/// per connection.
async fn heartbeat(exit: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = exit.cancelled() => return,
        }
    }
}

const HEARTBEAT: Duration = Duration::from_millis(100);

/// How long the exit waits for the upgrade thread to send what was handed over (it is
/// local socket writes: milliseconds; this bounds a stalled new process).
const HANDOVER_SEND: Duration = Duration::from_secs(5);

async fn control<F, Fut>(
    shared: Arc<Shared>,
    sockets: Vec<Vec<super::bind::Sock>>,
    admin_sock: Option<std::net::TcpListener>,
    engine: Engine,
    shutdown: F,
) where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let state = shared.state.load_full();
    for p in &state.pools {
        engine.start_health(p);
    }
    for (entry, group) in state.listeners.iter().zip(sockets) {
        engine.start_listener(entry, group);
    }
    let exit = engine.exit.clone();
    let cx = engine.cx.clone();
    let _ = shared.engine.set(engine);
    if let Some(engine) = shared.engine.get() {
        shared.sync_watches(engine, &state.loaded.config, &state.dynamic);
    }
    // The admin API stops accepting when draining starts, like the listeners (after a binary
    // upgrade the new process answers on the same socket), and its requests get to finish.
    let admin_stop = CancellationToken::new();
    let admin_tracker = TaskTracker::new();
    if let Some(sock) = admin_sock {
        match tokio::net::TcpListener::from_std(sock) {
            Ok(sock) => {
                tokio::spawn(super::history::sample(shared.clone(), admin_stop.clone()));
                tokio::spawn(admin::serve(
                    sock,
                    shared.clone(),
                    admin_stop.clone(),
                    admin_tracker.clone(),
                ));
            }
            Err(e) => tracing::error!(error = %e, "cannot register admin socket"),
        }
    }
    shared.phase.send_replace(Phase::Ready);
    // Every listener's socket listens and has its accept loop: systemd may now start what
    // depends on lb. MAINPID names this process: after a binary upgrade the new process is
    // the service's main one, and it says so before the old one is told to drain.
    shared.notify(&[
        Field::Ready,
        Field::MainPid(std::process::id()),
        Field::Status(shared.status_line()),
    ]);
    if let Some(n) = &shared.notify {
        tokio::spawn(keep_systemd_informed(
            shared.clone(),
            n.watchdog,
            engine_handles(&shared),
            exit.clone(),
        ));
    }
    for l in &state.listeners {
        let route = l.shared.route.load();
        tracing::info!(listener = %l.shared.name, pool.name = route.default.as_ref().map_or("-", |t| t.pool.name()), "listening on {}", l.addr);
    }
    drop(state);
    tracing::info!(workers = shared.workers, threading = ?shared.threading, mode = ?cx.mode, "lb ready");
    shutdown().await;
    serve_out_delay(&shared).await;

    // A new process that took over the sockets (binary upgrade) is the service now: the old
    // one neither tells systemd the service stops nor answers on the admin socket it handed
    // over. A plain shutdown keeps the admin API up while draining, so `/api/ready` answers
    // 503 to whatever checks it (keepalived, a balancer in front) instead of going silent.
    let handed_over = shared.shutdown.is_cancelled();
    shared.phase.send_replace(Phase::Draining);
    shared.accept.cancel();
    if handed_over {
        admin_stop.cancel();
        admin_tracker.close();
    } else {
        shared.notify(&[Field::Stopping, Field::Status(shared.status_line())]);
    }
    // Close the hand-over copies too, so the listening sockets really close (a new process
    // that took them over holds its own).
    for l in &shared.state.load().listeners {
        l.fds.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    *shared.admin_fd.lock().unwrap_or_else(|e| e.into_inner()) = None;
    cx.tracker.close();
    let open = cx
        .limits
        .global_active
        .load(std::sync::atomic::Ordering::Relaxed);
    let grace = shared.state.load().loaded.config.global.shutdown_timeout;
    tracing::info!(
        open_connections = open,
        "shutting down: stopped accepting; waiting up to {grace:?} for open connections"
    );
    if tokio::time::timeout(grace, cx.tracker.wait())
        .await
        .is_err()
    {
        let left = cx.tracker.len();
        tracing::warn!(
            closing = left,
            "shutdown_timeout reached; closing the remaining connections"
        );
        cx.conn_cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), cx.tracker.wait()).await;
    }
    // Whatever was handed over must have left before this process exits.
    cx.handover.moving.close_and_wait(HANDOVER_SEND).await;
    for p in &shared.state.load().pools {
        p.health_stop.cancel();
    }
    admin_stop.cancel();
    admin_tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), admin_tracker.wait()).await;
    exit.cancel();
    shared.phase.send_replace(Phase::Stopped);
    tracing::info!("stopped");
}

/// `global.shutdown_delay` (HAProxy's `grace`, Kubernetes' preStop sleep): before draining,
/// lb says it is stopping (`/api/ready` 503, systemd `STOPPING=1`) and goes on accepting and
/// serving, so whatever checks readiness (keepalived's `track_script`, a balancer in front)
/// moves traffic away while no request is refused. Skipped when a new process took the
/// sockets over (it serves them), and cut short if one does meanwhile. A second SIGTERM or
/// SIGINT exits at once, as it does while draining.
async fn serve_out_delay(shared: &Shared) {
    let delay = shared.state.load().loaded.config.global.shutdown_delay;
    if delay.is_zero() || shared.shutdown.is_cancelled() {
        return;
    }
    shared.phase.send_replace(Phase::Stopping);
    // STOPPING=1 now, not after the delay: the service is on its way down from here, and
    // systemd's stop timeout (TimeoutStopSec) must cover the delay and the drain together.
    shared.notify(&[Field::Stopping, Field::Status(shared.status_line())]);
    tracing::info!(
        "stopping: /api/ready answers 503; listeners go on accepting for shutdown_delay {delay:?}, then drain"
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = shared.shutdown.cancelled() => {
            tracing::info!("a new lb process took over the listening sockets during shutdown_delay; draining now");
        }
    }
}

/// The worker runtimes' handles, for the watchdog to check they still run tasks.
fn engine_handles(shared: &Shared) -> Vec<tokio::runtime::Handle> {
    shared
        .engine
        .get()
        .map(|e| e.workers.clone())
        .unwrap_or_default()
}

/// While running: `WATCHDOG=1` every half `WatchdogSec=` (when set), but only once every
/// worker runtime has run a task since the last one, so a wedged worker lets systemd restart
/// lb; and `STATUS=` again whenever the summary changed (backends going up or down), checked
/// as often (at most every [`STATUS_EVERY`]).
async fn keep_systemd_informed(
    shared: Arc<Shared>,
    watchdog: Option<Duration>,
    workers: Vec<tokio::runtime::Handle>,
    exit: CancellationToken,
) {
    let every = watchdog.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = shared.status_line();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = exit.cancelled() => return,
        }
        let mut fields = Vec::new();
        if watchdog.is_some() {
            let mut alive = true;
            for h in &workers {
                let ran = h.spawn(async {});
                alive &= tokio::time::timeout(every, ran)
                    .await
                    .is_ok_and(|r| r.is_ok());
            }
            if alive {
                fields.push(Field::Watchdog);
            } else {
                tracing::error!("a worker runtime did not run a task within {every:?}; not telling systemd's watchdog lb is alive");
            }
        }
        let status = shared.status_line();
        if status != last_status {
            fields.push(Field::Status(status.clone()));
            last_status = status;
        }
        if !fields.is_empty() {
            shared.notify(&fields);
        }
    }
}

/// How often the `STATUS=` line is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Raises the open-file limit and keeps the spare descriptor accept loops use when out of
/// them (see `crate::fd_limit`).
fn raise_fd_limit() {
    match crate::fd_limit::raise_nofile() {
        Ok(Some((old, new))) => {
            let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
            tracing::info!("open-file limit raised from {} to {}", show(old), show(new));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit; staying at {:?}", crate::fd_limit::nofile())
        }
    }
    crate::fd_limit::keep_spare();
}
