//! `GET /api/ready` and `GET /api/live` (SPEC §6) on the real binary: ready flips to 503 when
//! every backend of a pool a listener uses is down (and back), when an admin drains the last
//! one, and while lb drains on SIGTERM; live stays 200 throughout. With `shutdown_delay`, a
//! SIGTERM first makes it 503 ("stopping") while every listener still serves, and only then
//! drains.

mod common;

use std::time::{Duration, Instant};

use common::backends::{echo, named_at};
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Polls `/api/ready` until it answers `want` (bounded by `within`); returns the body.
async fn ready_becomes(lb: &Lb, want: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = http(lb.admin, "GET", "/api/ready", None).await;
        if code == want {
            return serde_json::from_str(&body).expect("ready JSON");
        }
        assert!(
            Instant::now() < deadline,
            "/api/ready not {want} within {within:?}: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const HEALTH: &str =
    "health = { kind = \"tcp\", interval = \"100ms\", timeout = \"200ms\", rise = 1, fall = 1 }";

#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_the_backends_of_used_pools() {
    let a = echo().await;
    let b = echo().await;
    let mut text = config("round-robin", &[(a.addr, ""), (b.addr, "")], HEALTH, "");
    // A pool no listener uses, with nothing behind it: it must not make lb unready.
    text.push_str("\n[[pool]]\nname = \"spare\"\nbackends = [{ addr = \"127.0.0.1:9\" }]\n");
    let lb = Lb::start("ready", &text).await;
    let body = ready_becomes(&lb, 200, Duration::from_secs(5)).await;
    assert_eq!(body["ready"], true);
    assert_eq!(body["phase"], "ready");

    // One backend down: still ready.
    a.stop();
    lb.wait_state("p", a.addr, "down", Duration::from_secs(5))
        .await;
    let (code, _) = http(lb.admin, "GET", "/api/ready", None).await;
    assert_eq!(code, 200, "one backend up is enough");

    // Both down: 503, naming the pool.
    b.stop();
    let body = ready_becomes(&lb, 503, Duration::from_secs(5)).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["pools_without_backends"], serde_json::json!(["p"]));
    let (code, live) = http(lb.admin, "GET", "/api/live", None).await;
    assert_eq!(code, 200, "alive though unready: {live}");

    // One comes back on its old address: ready again.
    let _back = named_at(b.addr, "b").await;
    ready_becomes(&lb, 200, Duration::from_secs(5)).await;

    // An operator draining the last backend up makes lb unready too.
    let path = format!("/api/pools/p/backends/{}/drain", b.addr);
    let (code, body) = http(lb.admin, "POST", &path, None).await;
    assert_eq!(code, 200, "{body}");
    let body = ready_becomes(&lb, 503, Duration::from_secs(5)).await;
    assert_eq!(body["pools_without_backends"], serde_json::json!(["p"]));

    // Only GET and HEAD.
    let (code, _) = http(lb.admin, "POST", "/api/ready", None).await;
    assert_eq!(code, 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_is_503_while_draining_and_live_stays_200() {
    let e = echo().await;
    let text = config("round-robin", &[(e.addr, "")], "", "")
        .replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"20s\"");
    let mut lb = Lb::start("ready-drain", &text).await;
    let addr = lb.listener("main").await;
    ready_becomes(&lb, 200, Duration::from_secs(5)).await;

    // An open connection keeps lb draining after SIGTERM.
    let mut held = TcpStream::connect(addr).await.expect("connect");
    held.write_all(b"x").await.expect("write");
    lb.metric_reaching("lb_active_connections", &[("listener", "main")], 1.0)
        .await;
    lb.signal("TERM");
    lb.wait_log("shutting down: stopped accepting", Duration::from_secs(5));
    let body = ready_becomes(&lb, 503, Duration::from_secs(5)).await;
    assert_eq!(body["phase"], "draining");
    // Without `shutdown_delay` there is no stopping phase: the listener refuses at once.
    assert!(
        !lb.log_text().contains("stopping:"),
        "no shutdown_delay, no stopping phase:\n{}",
        lb.log_text()
    );
    assert!(TcpStream::connect(addr).await.is_err(), "draining refuses");
    let (code, live) = http(lb.admin, "GET", "/api/live", None).await;
    assert_eq!(code, 200, "{live}");
    assert!(live.contains("draining"), "{live}");

    // The last connection ends: lb exits 0.
    drop(held);
    let code = tokio::task::spawn_blocking(move || lb.wait_exit(Duration::from_secs(20)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}

/// One echo round trip on a fresh connection.
async fn served(addr: std::net::SocketAddr, payload: &[u8]) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(payload).await?;
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::other("no echo within 2s"))??;
    assert_eq!(back, payload);
    Ok(s)
}

/// Polls until a connect to `addr` is refused (bounded by `within`).
async fn refuses_within(addr: std::net::SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "{addr} still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Long enough for the test to prove the listener still serves on a loaded machine, short
/// enough to wait out.
const DELAY: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_delay_withdraws_readiness_but_keeps_serving_then_drains() {
    let e = echo().await;
    let text = config("round-robin", &[(e.addr, "")], "", "").replace(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"10s\"\nshutdown_delay = \"2s\"",
    );
    let mut lb = Lb::start("ready-delay", &text).await;
    let addr = lb.listener("main").await;
    ready_becomes(&lb, 200, Duration::from_secs(5)).await;

    // Taken before the signal: lb may act on it before this test runs again, and its delay
    // counts from then.
    let signalled = Instant::now();
    lb.signal("TERM");
    // 503 at once, saying why, while lb is alive.
    let body = ready_becomes(&lb, 503, Duration::from_secs(1)).await;
    assert_eq!(body["phase"], "stopping", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("stopping")),
        "{body}"
    );
    let (code, live) = http(lb.admin, "GET", "/api/live", None).await;
    assert_eq!(code, 200, "{live}");

    // A fresh connection is accepted and proxied during the delay; it is kept open across
    // the drain to show connections accepted while stopping finish like any other.
    let mut held = served(addr, b"during the delay")
        .await
        .expect("a fresh connection is served while stopping");
    assert!(
        signalled.elapsed() < DELAY,
        "proved within the delay ({:?})",
        signalled.elapsed()
    );

    // A reload while stopping applies but does not make lb ready again.
    let (code, body) = http(lb.admin, "POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(lb.admin, "GET", "/api/ready", None).await;
    assert_eq!(code, 503, "a reload must not resurrect readiness: {body}");
    assert!(body.contains("\"stopping\""), "{body}");

    // After the delay: stopped accepting (draining), the held connection still served.
    lb.wait_log("shutting down: stopped accepting", Duration::from_secs(5));
    let drained_after = signalled.elapsed();
    assert!(
        drained_after >= DELAY,
        "the drain waited out shutdown_delay: {drained_after:?}"
    );
    refuses_within(addr, Duration::from_secs(2)).await;
    let body = ready_becomes(&lb, 503, Duration::from_secs(1)).await;
    assert_eq!(body["phase"], "draining", "{body}");
    held.write_all(b"x").await.expect("write while draining");
    let mut one = [0u8; 1];
    held.read_exact(&mut one)
        .await
        .expect("echo while draining");

    drop(held);
    let code = tokio::task::spawn_blocking(move || lb.wait_exit(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "a delayed shutdown is still a graceful one");
}
