//! UDP flows moving between lb processes in a binary upgrade. The old process's socket task,
//! told to stop during a hand-over, stops each flow's reply task, and gives the flow (client,
//! backend, last activity, counts) with a copy of its upstream socket to the upgrade thread;
//! the new process's task for the same socket adopts them before it reads a datagram. The
//! upstream socket moves too, so the backend sees the same source address and port, and a
//! reply waiting in its queue is read by the new process.

use std::net::UdpSocket as StdUdp;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::flow::FlowTable;
use super::relay::{start_flow, FlowConn, FlowShell, GlobalSlot, ListenerMetrics};
use crate::clock;
use crate::handover::wire::UdpFlow;
use crate::handover::{count, Moved, Moving};
use crate::proxy::tcp::ListenerShared;

/// Old process: gives every flow of `table` (socket `index` of the listener) to the upgrade
/// thread, in one message even when there are none (the thread counts one per socket task).
pub(super) async fn hand_over(
    table: &mut FlowTable<FlowConn>,
    index: u32,
    shared: &ListenerShared,
    m: &ListenerMetrics,
    moving: &Moving,
) {
    let now = Instant::now();
    let mut flows = Vec::new();
    for (client, mut c, last_seen) in table.drain_seen() {
        // The reply task must be gone before the socket moves: a reply it read would
        // otherwise be sent by this process after the flow left.
        c.replies.abort();
        let _ = (&mut c.replies).await;
        let upstream = match c.upstream.as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                count("udp", "failed");
                tracing::warn!(listener = %shared.name, client = %client, error = %e, "binary upgrade: cannot copy a flow's socket; flow closed");
                continue;
            }
        };
        let last_reply = match c.last_reply_ms.load(Relaxed) {
            0 => None,
            at => Some(clock::instant_of(at)),
        };
        let seen = last_reply.map_or(last_seen, |r| r.max(last_seen));
        let b = c.flight.backend();
        flows.push((
            UdpFlow {
                listener: shared.name.clone(),
                socket: index,
                pool: b.pool.clone(),
                backend: b.id.clone(),
                client,
                idle_ms: now.saturating_duration_since(seen).as_millis() as u64,
                age_ms: c.started.elapsed().as_millis() as u64,
                bytes_in: c.bytes_in,
                replied: last_reply.is_some(),
            },
            upstream,
        ));
        // Uncounted here (no access-log line: the process that ends the flow writes it).
        shared.active.fetch_sub(1, Relaxed);
        m.sessions.decrement(1.0);
    }
    if let Err(Moved::UdpSocket { flows }) = moving.send(Moved::UdpSocket { flows }) {
        for _ in flows {
            count("udp", "failed");
        }
    }
}

/// New process: puts the flows handed over for this socket into its table, each on its
/// backend with its own upstream socket. A flow whose pool or backend this config lacks is
/// closed (counted `refused`); its client's next datagram starts a new flow.
pub(super) fn adopt(
    flows: Vec<(UdpFlow, OwnedFd)>,
    up: &FlowShell<'_>,
    table: &mut FlowTable<FlowConn>,
    now: Instant,
) {
    let route = up.shared.route.load();
    for (f, fd) in flows {
        let target = route.default.as_ref().filter(|t| t.pool.name() == f.pool);
        let index = target.and_then(|t| t.pool.backends.iter().position(|b| b.id == f.backend));
        let (Some(target), Some(index)) = (target, index) else {
            count("udp", "refused");
            tracing::info!(listener = %up.shared.name, client = %f.client, backend = %f.backend, "binary upgrade: an inherited flow's backend is not in this config; it starts anew");
            continue;
        };
        let upstream = match register(fd) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                count("udp", "refused");
                tracing::warn!(listener = %up.shared.name, error = %e, "binary upgrade: cannot use an inherited flow's socket");
                continue;
            }
        };
        let last_reply = match f.replied {
            true => clock::now_ms().saturating_sub(f.idle_ms).max(1),
            false => 0,
        };
        let slot = GlobalSlot::force(up.limits);
        let mut c = start_flow(up, slot, target, index, upstream, f.client, last_reply);
        c.bytes_in = f.bytes_in;
        c.started = now
            .checked_sub(Duration::from_millis(f.age_ms))
            .unwrap_or(now);
        let seen = now
            .checked_sub(Duration::from_millis(f.idle_ms))
            .unwrap_or(now);
        if let Err(c) = table.insert(f.client, c, seen) {
            // The table is smaller than the old one's (max_connections lowered).
            c.replies.abort();
            count("udp", "refused");
            up.shared.active.fetch_sub(1, Relaxed);
            up.m.sessions.decrement(1.0);
            continue;
        }
        up.shared.inherited.fetch_add(1, Relaxed);
        count("udp", "inherited");
    }
}

fn register(fd: OwnedFd) -> std::io::Result<UdpSocket> {
    let s = StdUdp::from(fd);
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}
