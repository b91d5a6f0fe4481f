//! Active health probes (I/O): a TCP connect, or an HTTP GET whose status line is checked.
//! One task per backend feeds results into the backend's state machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::backend::{AdminState, Backend};
use crate::config::{Health, HealthKind};
use crate::pool::Pool;
use crate::proxy::udp::relay::connected_socket;

/// Longest status line read from an HTTP health endpoint.
const MAX_STATUS_LINE: usize = 1024;

/// Runs one probe; `Ok` carries a short description for status, `Err` the reason it failed.
pub async fn probe(
    kind: &HealthKind,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<String, String> {
    match tokio::time::timeout(timeout, probe_inner(kind, addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

async fn probe_inner(kind: &HealthKind, addr: SocketAddr) -> Result<String, String> {
    match kind {
        HealthKind::Udp { send, expect } => return probe_udp(addr, send, expect).await,
        HealthKind::Dns { query } => return probe_dns(addr, query).await,
        HealthKind::Tcp | HealthKind::Http { .. } => {}
    }
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match kind {
        HealthKind::Tcp | HealthKind::Udp { .. } | HealthKind::Dns { .. } => Ok("connected".into()),
        HealthKind::Http {
            path,
            expect_status,
        } => {
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lb-health-check\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut buf = vec![0u8; MAX_STATUS_LINE];
            let mut n = 0;
            while !buf[..n].contains(&b'\n') && n < buf.len() {
                let k = s
                    .read(&mut buf[n..])
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if k == 0 {
                    break;
                }
                n += k;
            }
            let status =
                parse_status(&buf[..n]).ok_or_else(|| "no valid HTTP status line".to_string())?;
            if status == *expect_status {
                Ok(format!("HTTP {status}"))
            } else {
                Err(format!("HTTP {status}, expected {expect_status}"))
            }
        }
    }
}

async fn probe_udp(addr: SocketAddr, send: &[u8], expect: &[u8]) -> Result<String, String> {
    let s = connected_socket(addr).map_err(|e| format!("socket: {e}"))?;
    s.send(send).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 65_536];
    let n = s.recv(&mut buf).await.map_err(|e| format!("recv: {e}"))?;
    if buf[..n].starts_with(expect) {
        Ok(format!("reply of {n} bytes"))
    } else {
        Err(format!("unexpected reply of {n} bytes"))
    }
}

async fn probe_dns(addr: SocketAddr, name: &str) -> Result<String, String> {
    let id = fastrand::u16(..);
    let q = super::dns::query(id, name).map_err(|e| e.to_string())?;
    let s = connected_socket(addr).map_err(|e| format!("socket: {e}"))?;
    s.send(&q).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.recv(&mut buf).await.map_err(|e| format!("recv: {e}"))?;
        match super::dns::check_response(id, &buf[..n]) {
            Ok(answers) => return Ok(format!("NOERROR, {answers} answers")),
            // A late answer to an earlier probe: keep waiting for ours (the timeout bounds it).
            Err(super::dns::Verdict::WrongId { .. }) => continue,
            Err(v) => return Err(v.to_string()),
        }
    }
}

/// The status code of an HTTP/1.x status line.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

/// Starts the health tasks of a pool: one checker per backend when active checks are set,
/// and an ejection ticker when passive detection is set. They stop with `stop`.
pub fn spawn(pool: &Arc<Pool>, stop: &CancellationToken) {
    if let Some(h) = &pool.config.health {
        let n = pool.backends.len().max(1) as u32;
        for (i, b) in pool.backends.iter().enumerate() {
            // Spread the first checks over one interval so N backends are not probed at once.
            let offset = h.interval * i as u32 / n;
            tokio::spawn(check_loop(b.clone(), h.clone(), offset, stop.clone()));
        }
    }
    if pool.config.passive.is_some() {
        let backends = pool.backends.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => backends.iter().for_each(|b| b.tick()),
                    () = stop.cancelled() => return,
                }
            }
        });
    }
}

async fn check_loop(b: Arc<Backend>, h: Health, offset: Duration, stop: CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(offset) => {}
        () = stop.cancelled() => return,
    }
    let mut tick = tokio::time::interval(h.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if b.admin_state() == AdminState::Disabled {
            continue;
        }
        let (ok, detail) = match probe(&h.kind, b.addr, h.timeout).await {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        b.record_check(ok, detail, h.rise, h.fall);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/2 200\r\n"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 OK\r\n"), None);
    }

    proptest! {
        #[test]
        fn status_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_status(&bytes);
        }
    }

    async fn http_server(status: u16) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probe_checks_status() {
        let good = http_server(200).await;
        let bad = http_server(500).await;
        let kind = HealthKind::Http {
            path: "/healthz".into(),
            expect_status: 200,
        };
        assert_eq!(
            probe(&kind, good, Duration::from_secs(1)).await,
            Ok("HTTP 200".into())
        );
        assert_eq!(
            probe(&kind, bad, Duration::from_secs(1)).await,
            Err("HTTP 500, expected 200".into())
        );
    }

    #[tokio::test]
    async fn tcp_probe_fails_on_closed_port() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        assert!(probe(&HealthKind::Tcp, addr, Duration::from_secs(1))
            .await
            .is_ok());
        drop(l);
        let e = probe(&HealthKind::Tcp, addr, Duration::from_secs(1))
            .await
            .expect_err("closed");
        assert!(e.starts_with("connect:"), "{e}");
    }

    #[tokio::test]
    async fn probe_times_out_on_silent_server() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        // Accepts (kernel backlog) but never answers the GET.
        let kind = HealthKind::Http {
            path: "/".into(),
            expect_status: 200,
        };
        let e = probe(&kind, addr, Duration::from_millis(200))
            .await
            .expect_err("silent");
        assert!(e.contains("timed out"), "{e}");
        drop(l);
    }
}
