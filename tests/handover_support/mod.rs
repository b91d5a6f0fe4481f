//! The hand-over tests' own backends (a UDP one naming the address it saw, a gated hashing
//! sink, a holder) and helpers (a UDP round trip, an echo round trip, an upgrade, the config).

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::backends::{fill, Backend};
use crate::common::Lb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Bytes of each echo round trip.
pub const PAYLOAD: usize = 1024;

/// A UDP backend answering `name|<the address it saw the datagram from>|<datagram>`: the
/// address shows whether the flow kept its upstream socket.
pub async fn udp_backend(name: &str) -> Backend {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = s.local_addr().expect("addr");
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let mut r = format!("{name}|{from}|").into_bytes();
            r.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&r, from).await;
        }
    });
    Backend::from_task(addr, task)
}

/// Sends `msg` and returns (backend name, address the backend saw) from the reply (bounded:
/// 3 s; `None` = lost).
pub async fn ask(sock: &UdpSocket, lb: SocketAddr, msg: &str) -> Option<(String, String)> {
    sock.send_to(msg.as_bytes(), lb).await.expect("send");
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    assert_eq!(from, lb, "replies come from the listener's address");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let mut parts = text.splitn(3, '|');
    let (name, seen, body) = (parts.next()?, parts.next()?, parts.next()?);
    assert_eq!(body, msg, "the reply is to this datagram");
    Some((name.to_string(), seen.to_string()))
}

/// Writes a fresh payload and reads exactly it back.
pub async fn echo_once(s: &mut TcpStream, seed: &mut u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    fill(&mut p, seed);
    s.write_all(&p).await.expect("write");
    let mut back = vec![0u8; PAYLOAD];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(back, p, "byte-exact echo");
    back
}

pub fn handover_config(tcp: &[SocketAddr], udp: &[SocketAddr], tls: &str) -> String {
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[global]\nworkers = 2\nshutdown_timeout = \"10s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\npool = \"tcp\"\naccess_log = true\n\n\
         [[listener]]\nname = \"dns\"\nbind = \"127.0.0.1:0\"\nprotocol = \"udp\"\npool = \"udp\"\n\n\
         [[listener]]\nname = \"secure\"\nbind = \"127.0.0.1:0\"\npool = \"tcp\"\n{tls}\n\n\
         [[pool]]\nname = \"tcp\"\nbackends = [{}]\n\n\
         [[pool]]\nname = \"udp\"\nbackends = [{}]\n",
        list(tcp),
        list(udp)
    )
}

/// SHA-256 of the `len` bytes `source(len)` sends (its blocks of 64 KiB of `fill`).
pub fn source_hash(len: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let (mut seed, mut left, mut block) = (0u64, len, vec![0u8; 64 * 1024]);
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        fill(&mut block[..k], &mut seed);
        h.update(&block[..k]);
        left -= k as u64;
    }
    format!("{:x}", h.finalize())
}

/// A backend that reads and hashes only as far as `allow` says (it stops reading there, so
/// lb's writes to it block; `u64::MAX` = to the end), and at EOF answers
/// `<hex sha-256> <count>\n`.
pub async fn gated_sink(allow: tokio::sync::watch::Receiver<u64>) -> Backend {
    use sha2::{Digest, Sha256};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let (mut allow, mut h, mut n) = (allow, Sha256::new(), 0u64);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let room = (*allow.borrow_and_update())
                .saturating_sub(n)
                .min(64 * 1024) as usize;
            if room == 0 {
                if allow.changed().await.is_err() {
                    return;
                }
                continue;
            }
            match s.read(&mut buf[..room]).await {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k as u64;
                }
                Err(_) => return,
            }
        }
        let answer = format!("{:x} {n}\n", h.finalize());
        let _ = s.write_all(answer.as_bytes()).await;
        let _ = s.shutdown().await;
    });
    Backend::from_task(addr, task)
}

/// Upgrades from `old` to a new lb with the same command line; returns the new one once
/// `old` has exited (everything it held moved), asserting it exited 0 in time, with `old`'s
/// log.
pub async fn upgrade(old: Lb, name: &str, text: &str, sock_arg: &str) -> (Lb, String) {
    let mut new = Lb::start_with(name, text, &["--upgrade-socket", sock_arg]).await;
    new.wait_log("the old process now drains", Duration::from_secs(10));
    let (code, old) = tokio::task::spawn_blocking(move || {
        let mut old = old;
        (old.wait_exit(Duration::from_secs(10)), old)
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0), "the old process exits 0");
    new.wait_log("binary upgrade socket on", Duration::from_secs(10));
    (new, old.log_text())
}

/// A backend that holds every connection without a byte either way until `close` turns
/// true, then closes them all; `accepted` counts the connections it took.
pub async fn holder(
    close: tokio::sync::watch::Receiver<bool>,
    accepted: tokio::sync::watch::Sender<usize>,
) -> Backend {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = tokio::task::JoinSet::new();
        while let Ok((s, _)) = l.accept().await {
            accepted.send_modify(|n| *n += 1);
            let mut close = close.clone();
            held.spawn(async move {
                let _ = close.wait_for(|c| *c).await;
                drop(s);
            });
        }
    });
    Backend::from_task(addr, task)
}
