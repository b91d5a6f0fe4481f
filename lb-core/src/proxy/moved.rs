//! A plain TCP connection moving between lb processes in a binary upgrade: the old process
//! gives a paused relay's two sockets and state to the upgrade thread ([`hand_over`]); the new
//! one places it on the same listener, pool and backend and resumes the relay ([`adopt`]),
//! writing the carried bytes first. The connection's counters and access-log line are written
//! once, by whichever process ends it.

use std::net::TcpStream as StdStream;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;

use super::connect::connect_failed;
use super::front::Front;
use super::relay::{relay, RelayState};
use super::tcp::{adopt as admit_adopted, proxy_to, ClientIo};
use super::tcp::{Context, Ending, ListenerShared};
use crate::handover::wire::TcpConn;
use crate::handover::{count, Moved, Moving};
use crate::pool::Attempt;

/// When `start` was, in ms since the Unix epoch.
fn unix_ms_of(start: Instant) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(start.elapsed()).as_millis() as u64
}

/// The `Instant` of a Unix time in ms (now, if it is in the future).
fn instant_of_unix_ms(ms: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ago = now.saturating_sub(Duration::from_millis(ms));
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// Old process: gives a paused relay to the upgrade thread. Counted `moved` once sent.
pub(crate) fn hand_over(
    client: TcpStream,
    backend: TcpStream,
    e: &Ending<'_>,
    relay: RelayState,
    moving: &Moving,
) {
    let conn = Box::new(TcpConn {
        listener: e.listener.name.clone(),
        pool: e.pool.to_string(),
        backend: e.backend.to_string(),
        sni: e.sni.unwrap_or("").to_string(),
        client: e.client,
        started_unix_ms: unix_ms_of(e.start),
        relay,
    });
    let (client, backend) = match (client.into_std(), backend.into_std()) {
        (Ok(c), Ok(b)) => (OwnedFd::from(c), OwnedFd::from(b)),
        (Err(err), _) | (_, Err(err)) => {
            count("tcp", "failed");
            tracing::warn!(client = %e.client, error = %err, "binary upgrade: cannot release a connection's sockets; closed");
            return;
        }
    };
    if moving
        .send(Moved::Tcp {
            conn,
            client,
            backend,
        })
        .is_err()
    {
        count("tcp", "failed");
        tracing::warn!(client = %e.client, "binary upgrade: the hand-over had closed; connection closed");
    }
}

/// New process: places a connection handed over by the old one on its listener, pool and
/// backend and resumes it on `handle`. An error (closed, counted `refused`) says why it could
/// not be placed: the new config has no such listener, pool or backend.
pub fn adopt(
    conn: TcpConn,
    client: OwnedFd,
    backend: OwnedFd,
    listener: &Arc<ListenerShared>,
    cx: &Context,
    handle: &tokio::runtime::Handle,
) -> Result<(), String> {
    let route = listener.route.load_full();
    let sni = (!conn.sni.is_empty()).then_some(conn.sni.as_str());
    let target = route
        .target_for(sni)
        .filter(|t| t.pool.name() == conn.pool)
        .ok_or_else(|| format!("pool {:?} is not this listener's any more", conn.pool))?;
    let index = target
        .pool
        .backends
        .iter()
        .position(|b| b.id == conn.backend)
        .ok_or_else(|| format!("backend {} is not in pool {:?}", conn.backend, conn.pool))?;
    let guard = admit_adopted(listener, &cx.limits);
    listener.inherited.fetch_add(1, Relaxed);
    count("tcp", "inherited");
    let cx2 = cx.clone();
    let (client, backend) = (StdStream::from(client), StdStream::from(backend));
    handle.spawn(cx.tracker.track_future(async move {
        resume(client, backend, conn, &route, index, &cx2).await;
        drop(guard);
    }));
    Ok(())
}

async fn resume(
    client: StdStream,
    backend: StdStream,
    conn: TcpConn,
    route: &super::route::Route,
    index: usize,
    cx: &Context,
) {
    let sni = (!conn.sni.is_empty()).then_some(conn.sni.as_str());
    let Some(target) = route.target_for(sni) else {
        return;
    };
    let registered = client
        .set_nonblocking(true)
        .and_then(|()| backend.set_nonblocking(true))
        .and_then(|()| Ok((TcpStream::from_std(client)?, TcpStream::from_std(backend)?)));
    let (c, u) = match registered {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(client = %conn.client, error = %e, "binary upgrade: cannot resume an inherited connection");
            return;
        }
    };
    let (b, m) = (&target.pool.backends[index], &target.metrics[index]);
    let in_flight = b.begin();
    m.active.increment(1.0);
    let l = &route.listener;
    let start = instant_of_unix_ms(conn.started_unix_ms);
    // Its age counts from when the first process accepted it (the jitter is drawn anew).
    // Its own pause token, as every relay's (see `tcp::proxy_to`).
    let pause = cx.handover.moving.request.child_token();
    let out = relay(
        &c,
        &u,
        cx.mode,
        super::relay::Deadlines::of(l, start),
        &cx.conn_cancel,
        Some(&pause),
        conn.relay,
    )
    .await;
    m.active.decrement(1.0);
    if out.retryable() {
        // Not a byte either way yet and the client still open: the backend closed (or
        // failed) first, so, as the first process would have, another backend gets it.
        let (pool, passive) = (&target.pool, target.pool.config.passive.as_ref());
        let why = format!("{}: closed before any byte was exchanged", b.id);
        connect_failed(b, passive, l, pool, Some(&why));
        drop((u, in_flight));
        let mut attempt = Attempt::default();
        pool.mark_tried(index, &mut attempt);
        let front = Front {
            client: conn.client,
            prefix: Vec::new(),
            sni: sni.map(str::to_string),
        };
        proxy_to(
            ClientIo::Plain(c),
            &front,
            target,
            route,
            start,
            cx,
            attempt,
        )
        .await;
        return;
    }
    let ending = Ending {
        listener: l,
        client: conn.client,
        pool: target.pool.name(),
        backend: &b.id,
        sni,
        start,
    };
    match out.moved {
        // Upgraded again before it ended: on to the next process.
        Some(moved) => {
            drop(in_flight);
            hand_over(c, u, &ending, *moved, &cx.handover.moving);
        }
        None => ending.finish(out.from_client, out.from_backend, out.end, in_flight, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_survives_the_trip_through_unix_time() {
        let start = Instant::now() - Duration::from_millis(1500);
        let back = instant_of_unix_ms(unix_ms_of(start));
        let off = back.max(start) - back.min(start);
        assert!(off < Duration::from_millis(50), "{off:?}");
        // A start in the future (clock stepped) is now, not a panic.
        let future = unix_ms_of(Instant::now()) + 60_000;
        assert!(instant_of_unix_ms(future) <= Instant::now());
    }
}
