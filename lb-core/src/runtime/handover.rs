//! The upgrade socket after READY, when both processes agreed to hand over: the old process
//! sends what its tasks give up ([`send_all`]), the new one places what arrives
//! ([`receive`]). Blocking, on the upgrade threads.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::SocketType;

use super::Shared;
use crate::config::Protocol;
use crate::handover::io::{is_inet_socket, send, Reader};
use crate::handover::wire::Frame;
use crate::handover::{count, Moved, UDP_WAIT};

/// How long the old process waits for its UDP socket tasks to give up their flows before it
/// lets the new one read its UDP sockets anyway (they stop within a scheduling round).
const UDP_GIVE_UP: Duration = Duration::from_secs(2);

/// Old process: sends every flow and connection its tasks give up, until the hand-over is
/// closed (every connection task has ended). UDP flows come first, then the "udp_done" mark
/// (after `udp_tasks` socket tasks reported, or [`UDP_GIVE_UP`]); connections as they pause.
pub(crate) fn send_all(conn: &UnixStream, rx: &Receiver<Moved>, udp_tasks: usize) {
    let started = Instant::now();
    let mut udp_left = udp_tasks;
    let mut broken = false;
    let mut frame = |f: &Frame, fds: &[std::os::fd::BorrowedFd<'_>]| -> bool {
        if broken {
            return false;
        }
        match send(conn, f, fds) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "binary upgrade: the new process stopped taking the hand-over; what is left closes");
                broken = true;
                false
            }
        }
    };
    let (mut tcp, mut udp) = (0usize, 0usize);
    if udp_left == 0 {
        frame(&Frame::UdpDone, &[]);
    }
    loop {
        let next = if udp_left > 0 {
            let left = UDP_GIVE_UP.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        missing = udp_left,
                        "binary upgrade: UDP sockets did not give up their flows in time"
                    );
                    udp_left = 0;
                    frame(&Frame::UdpDone, &[]);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => None,
            }
        } else {
            rx.recv().ok()
        };
        let Some(m) = next else { break };
        match m {
            Moved::Tcp {
                conn: c,
                client,
                backend,
            } => {
                let ok = frame(&Frame::Tcp(c), &[client.as_fd(), backend.as_fd()]);
                count("tcp", if ok { "moved" } else { "failed" });
                tcp += usize::from(ok);
            }
            Moved::UdpSocket { flows } => {
                for (f, fd) in flows {
                    let ok = frame(&Frame::Udp(Box::new(f)), &[fd.as_fd()]);
                    count("udp", if ok { "moved" } else { "failed" });
                    udp += usize::from(ok);
                }
                udp_left = udp_left.saturating_sub(1);
                if udp_left == 0 && udp_tasks > 0 {
                    frame(&Frame::UdpDone, &[]);
                }
            }
        }
    }
    if udp_left > 0 {
        frame(&Frame::UdpDone, &[]);
    }
    tracing::info!(
        connections = tcp,
        udp_flows = udp,
        "binary upgrade: handed over to the new process in {:?}",
        started.elapsed()
    );
}

/// The number of UDP socket tasks running: each gives up its flows once.
pub(crate) fn udp_tasks(shared: &Shared) -> usize {
    let state = shared.state.load();
    state
        .listeners
        .iter()
        .filter(|l| l.shared.route.load().listener.protocol == Protocol::Udp)
        .map(|l| l.fds.lock().unwrap_or_else(|e| e.into_inner()).len())
        .sum()
}

/// New process: places every flow and connection the old one sends, until it closes the
/// upgrade socket. Any end (clean or not) lets the UDP sockets be read.
pub(crate) fn receive(conn: UnixStream, shared: Arc<Shared>) {
    let inbox = shared.handover.inbox.clone();
    // Counted as a task of this process while it receives: were this process itself upgraded
    // meanwhile, its drain waits for the connections still arriving (they pause at once and
    // move on) instead of ending first and cutting them.
    let receiving = shared.engine.get().map(|e| e.cx.tracker.token());
    let mut reader = Reader::new(&conn);
    let (mut tcp, mut udp) = (0usize, 0usize);
    loop {
        match reader.next_frame() {
            Ok(Some((Frame::Udp(f), mut fds))) => {
                udp += 1;
                let fd = fds.remove(0);
                if is_inet_socket(&fd, SocketType::DGRAM) {
                    inbox.put_flow(*f, fd);
                } else {
                    count("udp", "refused");
                    tracing::warn!(client = %f.client, "binary upgrade: an inherited flow came without a UDP socket; closed");
                }
            }
            Ok(Some((Frame::UdpDone, _))) => inbox.udp_done(),
            Ok(Some((Frame::Tcp(c), fds))) => {
                tcp += 1;
                place(&shared, *c, fds);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "binary upgrade: bad hand-over from the old process; stopped taking it");
                break;
            }
        }
    }
    inbox.udp_done();
    drop(receiving);
    tracing::info!(
        connections = tcp,
        udp_flows = udp,
        "binary upgrade: inherited from the old process"
    );
    // Flows for a socket no task serves are never taken: closed once every task has looked.
    std::thread::sleep(UDP_WAIT);
    inbox.discard_leftovers();
}

/// Resumes one connection on its listener (on a worker chosen by the client's port), or
/// closes it, counted `refused`.
fn place(shared: &Shared, conn: crate::handover::wire::TcpConn, fds: Vec<std::os::fd::OwnedFd>) {
    let mut fds = fds.into_iter();
    let (Some(client), Some(backend)) = (fds.next(), fds.next()) else {
        return;
    };
    if !(is_inet_socket(&client, SocketType::STREAM)
        && is_inet_socket(&backend, SocketType::STREAM))
    {
        count("tcp", "refused");
        tracing::warn!(client = %conn.client, "binary upgrade: an inherited connection came without its two TCP sockets; closed");
        return;
    }
    let Some(engine) = shared.engine.get() else {
        count("tcp", "refused");
        return;
    };
    let state = shared.state.load();
    let listener = state.listeners.iter().find(|l| {
        l.shared.name == conn.listener && l.shared.route.load().listener.protocol == Protocol::Tcp
    });
    let who = conn.client;
    let placed = match listener {
        None => Err(format!(
            "no tcp listener {:?} in this config",
            conn.listener
        )),
        Some(l) => {
            let handle = &engine.workers[usize::from(who.port()) % engine.workers.len()];
            crate::proxy::moved::adopt(conn, client, backend, &l.shared, &engine.cx, handle)
        }
    };
    if let Err(why) = placed {
        count("tcp", "refused");
        tracing::info!(client = %who, "binary upgrade: an inherited connection closed: {why}");
    }
}
