//! Backends by name under every listener kind, against dnsmasq: an http and a udp listener
//! follow an A record that changes while bounded clients loop through lb, with no failed
//! request; and a health-checked member added by DNS gets no traffic before its first
//! passing check. (One membership mechanism under every listener kind.)
#![cfg(feature = "external-tests")]

mod common;
mod dnsmasq;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backends::*;
use common::*;
use dnsmasq::{twin_port, wait_members, write, Dnsmasq};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 backend at `bind` answering every request with `name`, keep-alive.
async fn http_named_at(bind: SocketAddr, name: &'static str) -> Backend {
    let l = tokio::net::TcpListener::bind(bind).await.expect("bind");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if s.write_all(r.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    Backend::from_task(bind, task)
}

fn pool_config(dns: SocketAddr, protocol: &str, port: u16, health: &str) -> String {
    format!(
        "[global]\nresolve_interval_min = \"200ms\"\nresolve_interval_max = \"1s\"\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nprotocol = \"{protocol}\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nresolver = \"{dns}\"\nbackends = [{{ addr = \"app.test:{port}\" }}]\n{health}\n"
    )
}

/// The looping clients' answers (with their times) and failures.
type Looping = tokio::task::JoinHandle<(Vec<(Instant, String)>, u64)>;

/// Requests in a loop until stopped (bounded: 60 s, 50,000), each answer with its time; a
/// request that gets no answer counts as failed.
fn loop_clients<F, Fut>(ask: F) -> (Arc<AtomicBool>, Looping)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let (mut seen, mut failed) = (Vec::new(), 0u64);
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..50_000 {
            if s.load(Ordering::Relaxed) || Instant::now() > deadline {
                break;
            }
            match ask().await {
                Some(n) => seen.push((Instant::now(), n)),
                None => failed += 1,
            }
        }
        (seen, failed)
    });
    (stop, task)
}

/// Moves app.test from 127.0.0.2 to 127.0.0.3 under `ask` in a loop; returns the answers
/// and failures, having checked that traffic reached b and that a got none a second later.
async fn move_record<F, Fut>(
    lb: &Lb,
    dns: &Dnsmasq,
    hosts: &std::path::PathBuf,
    port: u16,
    what: &str,
    ask: F,
) where
    F: Fn() -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send,
{
    assert_eq!(
        ask().await.as_deref(),
        Some("a"),
        "{what}: the first member serves"
    );
    let (stop, task) = loop_clients(ask.clone());
    write(hosts, "127.0.0.3 app.test\n");
    let changed = Instant::now();
    dns.reload();
    wait_members(lb, &[&format!("127.0.0.3:{port}")], Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ask().await.as_deref() != Some("b") {
        assert!(Instant::now() < deadline, "{what}: traffic never reached b");
    }
    stop.store(true, Ordering::Relaxed);
    let (seen, failed) = task.await.expect("clients");
    let first_b = seen
        .iter()
        .find(|(t, n)| *t >= changed && n == "b")
        .map(|(t, _)| t.duration_since(changed))
        .expect("a looping request reached the new member");
    assert!(
        seen.iter()
            .filter(|(t, _)| t.duration_since(changed) > first_b + Duration::from_secs(1))
            .all(|(_, n)| n == "b"),
        "{what}: the removed member still got new traffic"
    );
    eprintln!("{what}: DNS change -> first request at the new member {first_b:?}; {} requests, {failed} failed", seen.len());
    assert_eq!(failed, 0, "{what}: failed requests during the change");
    assert!(seen.len() > 10, "{what}: the clients looped");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_listener_follows_a_changed_a_record_without_a_failed_request() {
    let port = twin_port();
    let _a = http_named_at(SocketAddr::from(([127, 0, 0, 2], port)), "a").await;
    let _b = http_named_at(SocketAddr::from(([127, 0, 0, 3], port)), "b").await;
    let hosts = scratch("discovery-http").join("hosts");
    write(&hosts, "127.0.0.2 app.test\n");
    let dns = Dnsmasq::start(0, &hosts, &[]).await;
    let lb = Lb::start("discovery-http", &pool_config(dns.addr(), "http", port, "")).await;
    let web = lb.listener("main").await;
    // A failed request is any answer but 200 from the backend (lb's 502/503 included), or
    // none at all.
    let ask = move || async move {
        let r = common::web::fetch(web, "/", "").await;
        (r.status == 200).then_some(r.body)
    };
    move_record(&lb, &dns, &hosts, port, "http", ask).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_udp_listener_follows_a_changed_a_record_answering_every_datagram() {
    let port = twin_port();
    let _a = udp_named_at(SocketAddr::from(([127, 0, 0, 2], port)), "a").await;
    let _b = udp_named_at(SocketAddr::from(([127, 0, 0, 3], port)), "b").await;
    let hosts = scratch("discovery-udp").join("hosts");
    write(&hosts, "127.0.0.2 app.test\n");
    let dns = Dnsmasq::start(0, &hosts, &[]).await;
    let lb = Lb::start("discovery-udp", &pool_config(dns.addr(), "udp", port, "")).await;
    let main = lb.listener("main").await;
    // UDP has no connection to fail: a failed request is a datagram that gets no reply
    // within 2 s. Each request is a new client socket, so a new flow that lb places by the
    // members it has then; a flow already placed stays with its member until it times out.
    let ask = move || async move {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
        s.send_to(b"hello", main).await.ok()?;
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        reply.strip_suffix("|hello").map(String::from)
    };
    move_record(&lb, &dns, &hosts, port, "udp", ask).await;
}

/// A member that DNS adds to a health-checked pool while another member is up starts down:
/// no connection reaches it before its first check passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_added_by_dns_gets_no_traffic_before_its_first_passing_check() {
    let port = twin_port();
    let _a = named_at(SocketAddr::from(([127, 0, 0, 2], port)), "a").await;
    let hosts = scratch("discovery-health").join("hosts");
    write(&hosts, "127.0.0.2 app.test\n");
    let dns = Dnsmasq::start(0, &hosts, &[]).await;
    // Long enough between checks that a member could be picked many times before its first.
    let health =
        "health = { kind = \"tcp\", interval = \"1500ms\", timeout = \"200ms\", rise = 1 }";
    let lb = Lb::start(
        "discovery-health",
        &pool_config(dns.addr(), "tcp", port, health),
    )
    .await;
    let main = lb.listener("main").await;
    lb.wait_state(
        "p",
        SocketAddr::from(([127, 0, 0, 2], port)),
        "up",
        Duration::from_secs(10),
    )
    .await;
    // b is not listening yet: it joins, and its first check fails.
    write(&hosts, "127.0.0.2 app.test\n127.0.0.3 app.test\n");
    dns.reload();
    let b_addr = SocketAddr::from(([127, 0, 0, 3], port));
    wait_members(
        &lb,
        &[&format!("127.0.0.2:{port}"), &b_addr.to_string()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        lb.backend_state("p", b_addr).await,
        "down",
        "a new member starts down"
    );
    let before = Instant::now();
    for _ in 0..30 {
        assert_eq!(
            fetch_name(main).await.expect("a serves"),
            "a",
            "no traffic to b before its check"
        );
    }
    let b_total = |s: serde_json::Value| {
        s["pools"][0]["backends"]
            .as_array()
            .and_then(|v| {
                v.iter()
                    .find(|x| x["address"] == b_addr.to_string())
                    .cloned()
            })
            .map(|x| {
                (
                    x["total_connections"].as_u64(),
                    x["connect_errors"].as_u64(),
                )
            })
    };
    assert_eq!(
        b_total(lb.status().await),
        Some((Some(0), Some(0))),
        "lb never tried b"
    );
    // Now b listens: its first passing check brings it up, then it gets traffic.
    let _b = named_at(b_addr, "b").await;
    lb.wait_state("p", b_addr, "up", Duration::from_secs(10))
        .await;
    eprintln!("member up {:?} after joining", before.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch_name(main).await.expect("through lb") != "b" {
        assert!(Instant::now() < deadline, "b never got traffic once up");
    }
}
