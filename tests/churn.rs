//! State that must not grow with churn (issue 15), through the real binary: reloads that add
//! and then remove a big pool leave no metric series and give the memory back, and requests
//! and the admin API are served while a big reload runs. Speed and memory figures are
//! measured by `scripts/churn.sh`, not asserted here; the bounds below are generous limits.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backends::echo;
use common::*;

/// Backends of the big pool in each churn cycle.
const BIG: usize = 10_000;

/// How far above its start lb's RSS may stay once the big pool is gone. Measured (debug
/// build, glibc): start ~20 MB, ~53-64 MB with a 10,000-backend pool, ~41 MB after it left;
/// without the series registry and malloc_trim it ratcheted 20 -> 228 MB over three cycles.
const RSS_SLACK_KIB: u64 = 30 * 1024;

/// The base config: listener "main" in front of `backend`, admin on a kernel-chosen port.
fn base(backend: SocketAddr) -> String {
    config("round-robin", &[(backend, "")], "", "")
}

/// `base` plus listener "big" in front of pool "big": `n` loopback addresses nothing listens
/// on (no health checks, so no socket is opened to them), different for each `cycle`.
fn with_big_pool(backend: SocketAddr, n: usize, cycle: u16) -> String {
    let mut text = base(backend);
    text.push_str("\n[[listener]]\nname = \"big\"\nbind = \"127.0.0.1:0\"\npool = \"big\"\n");
    text.push_str("\n[[pool]]\nname = \"big\"\nalgorithm = \"consistent-hash\"\nbackends = [\n");
    for i in 0..n {
        text.push_str(&format!("  {{ addr = \"{}\" }},\n", big_backend(i, cycle)));
    }
    text.push_str("]\n");
    text
}

fn big_backend(i: usize, cycle: u16) -> SocketAddr {
    let ip = std::net::Ipv4Addr::new(
        127,
        1 + (i / 62_500) as u8,
        (i / 250 % 250) as u8,
        (i % 250 + 1) as u8,
    );
    SocketAddr::from((ip, 20_000 + cycle))
}

async fn reload(lb: &Lb, text: &str) -> (u16, String) {
    std::fs::write(&lb.config, text).expect("write config");
    http(lb.admin, "POST", "/api/reload", None).await
}

/// Waits until `/metrics` has no series of a backend on `port` (they go when the removed
/// listener's accept loops let go of its route); returns the last scrape. Bounded: 10 s.
async fn metrics_without_port(lb: &Lb, port: u16) -> String {
    let needle = format!(":{port}\"");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = lb.metrics().await;
        if !m.contains(&needle) || Instant::now() >= deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until lb's RSS is at most `limit` KiB (freed memory is given back on lb's trimming
/// thread shortly after the pool is dropped); returns the last reading. Bounded: 10 s.
async fn rss_reaching(lb: &Lb, limit: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rss = lb.rss_kib();
        if rss <= limit || Instant::now() >= deadline {
            return rss;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_pool_added_and_removed_three_times_leaves_no_series_and_no_memory() {
    let b = echo().await;
    let lb = Lb::start("churn", &base(b.addr)).await;
    let main = lb.listener("main").await;
    assert_eq!(
        echo_round_trip(main, b"warm").await.expect("serves"),
        b"warm"
    );
    let start_metrics = lb.metrics().await;
    let start_rss = lb.rss_kib();
    for cycle in 1..=3u16 {
        let (code, body) = reload(&lb, &with_big_pool(b.addr, BIG, cycle)).await;
        assert_eq!(code, 200, "{body}");
        let m = lb.metrics().await;
        let one = big_backend(BIG - 1, cycle).to_string();
        for name in ["lb_backend_up", "lb_connections_total", "lb_bytes_total"] {
            assert!(
                m.contains(&format!("{name}{{")) && m.contains(&format!("backend=\"{one}\"")),
                "cycle {cycle}: the big pool's {name} series are exported"
            );
        }
        let added_rss = lb.rss_kib();

        let (code, body) = reload(&lb, &base(b.addr)).await;
        assert_eq!(code, 200, "{body}");
        let m = metrics_without_port(&lb, 20_000 + cycle).await;
        assert!(
            !m.contains(&format!(":{}\"", 20_000 + cycle)),
            "cycle {cycle}: series of removed backends are still exported:\n{}",
            m.lines()
                .filter(|l| l.contains("127.1."))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            m.len() <= start_metrics.len() + 4096,
            "cycle {cycle}: /metrics is {} bytes after the pool left, {} at the start",
            m.len(),
            start_metrics.len()
        );
        let rss = rss_reaching(&lb, start_rss + RSS_SLACK_KIB).await;
        eprintln!(
            "cycle {cycle}: rss start {} MiB, with the pool {} MiB, after {} MiB",
            start_rss / 1024,
            added_rss / 1024,
            rss / 1024
        );
        assert!(
            rss <= start_rss + RSS_SLACK_KIB,
            "cycle {cycle}: RSS {rss} KiB after the pool left; started at {start_rss} KiB"
        );
    }
    assert_eq!(
        echo_round_trip(main, b"still").await.expect("serves"),
        b"still"
    );
}

/// Backends of the pool added by the big reload: enough that building it takes a while.
const BIGGER: usize = 50_000;

#[tokio::test(flavor = "multi_thread")]
async fn connections_and_the_admin_api_are_served_while_a_big_reload_runs() {
    let b = echo().await;
    let mut lb = Lb::start("churn-serve", &base(b.addr)).await;
    let main = lb.listener("main").await;
    let load = Load::start(main, 4, 512);
    let text = with_big_pool(b.addr, BIGGER, 9);
    std::fs::write(&lb.config, &text).expect("write config");
    let admin = lb.admin;
    let reloading = tokio::spawn(async move { http(admin, "POST", "/api/reload", None).await });
    lb.wait_log("config reload started", Duration::from_secs(20));
    let ok_at_start = load.ok();

    // The admin API answers while the reload builds the new config (it used to run on the
    // admin's own thread, so status waited for the whole reload).
    let (code, _) = http(lb.admin, "GET", "/api/status", None).await;
    assert_eq!(code, 200);
    assert!(
        !reloading.is_finished(),
        "/api/status answered only after the reload finished"
    );
    // Connections through a kept listener go on meanwhile (bounded wait: 20 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    while load.ok() < ok_at_start + 20 && !reloading.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let served_during = load.ok() - ok_at_start;

    let (code, body) = reloading.await.expect("reload task");
    assert_eq!(code, 200, "{body}");
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "{ok} connections succeeded, {failed} failed");
    assert!(
        served_during > 0,
        "no connection completed while the reload ran"
    );
    assert!(
        lb.metrics()
            .await
            .contains(&big_backend(BIGGER - 1, 9).to_string()),
        "the reload took effect"
    );
}

/// The decision for series of a removed backend that a connection still uses: they stay,
/// with true counts, until the last connection through it ends, then go.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_backends_series_stay_while_a_connection_uses_it_then_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (b0, b1) = (echo().await, echo().await);
    let lb = Lb::start("churn-held", &base(b0.addr)).await;
    let main = lb.listener("main").await;
    let mut held = tokio::net::TcpStream::connect(main).await.expect("connect");
    held.write_all(b"ping").await.expect("write");
    let mut got = [0u8; 4];
    held.read_exact(&mut got)
        .await
        .expect("echoed: the connection is up");

    let (code, body) = reload(&lb, &base(b1.addr)).await;
    assert_eq!(code, 200, "{body}");
    let old = b0.addr.to_string();
    let active = [("backend", old.as_str())];
    assert_eq!(
        metric(&lb.metrics().await, "lb_active_connections", &active),
        1.0,
        "the removed backend's series stay while its connection lives"
    );
    held.write_all(b"more")
        .await
        .expect("write after the reload");
    held.read_exact(&mut got).await.expect("still served by b0");
    drop(held);
    let m = metrics_without_port(&lb, b0.addr.port()).await;
    assert!(
        !m.contains(&format!("backend=\"{old}\"")),
        "the series went with the last connection:\n{m}"
    );
    assert!(m.contains(&format!("backend=\"{}\"", b1.addr)), "{m}");
}
