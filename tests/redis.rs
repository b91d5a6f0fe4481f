//! Rate limits shared through a real redis-server (started here on a free port): two lb
//! processes pointed at one Redis give one allowance between them, not one each; when
//! Redis dies each falls back as its `on_redis_error` says. Needs `redis-server`
//! (installed by scripts/test.sh), hence the `external-tests` feature.
#![cfg(feature = "external-tests")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::web::{fetch, web};
use common::*;
use tokio::net::TcpStream;

/// A redis-server on a free loopback port, killed (by its PID) on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // Owned by `Redis` at once, so every way out of here kills and reaps it.
    let redis = Redis {
        child: Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)"),
        port,
    };
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return redis;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start on port {port}");
}

fn shared_config(backend: std::net::SocketAddr, redis_port: u16, on_error: &str) -> String {
    format!(
        "[global]\nworkers = 1\nshutdown_timeout = \"2s\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{backend}\" }}]\n\
         [[route]]\nlistener = \"web\"\npool = \"p\"\npolicies = [\"shared\"]\n\
         [policy.shared]\nkind = \"rate_limit\"\nrequests = 5\nper = \"1m\"\nkey = \"route\"\n\
         store = \"redis\"\nredis_url = \"redis://127.0.0.1:{redis_port}\"\non_redis_error = \"{on_error}\"\n"
    )
}

async fn status(addr: std::net::SocketAddr) -> u16 {
    fetch(addr, "/", "").await.status
}

#[tokio::test(flavor = "multi_thread")]
async fn two_lbs_share_one_limit_and_fall_back_when_redis_dies() {
    let redis = redis().await;
    let (b, _) = web("b").await;
    let mut deny = Lb::start("redis-deny", &shared_config(b.addr, redis.port, "deny")).await;
    let mut local = Lb::start("redis-local", &shared_config(b.addr, redis.port, "local")).await;
    let (a1, a2) = (deny.listener("web").await, local.listener("web").await);
    // Alternate between the two: together they get the five, not five each.
    let mut passed = 0;
    for i in 0..10 {
        let code = status(if i % 2 == 0 { a1 } else { a2 }).await;
        assert!(code == 200 || code == 429, "{code}");
        passed += u32::from(code == 200);
    }
    assert_eq!(passed, 5, "the combined allowance is the limit");
    assert_eq!(
        local
            .metric_reaching("lb_ratelimited_total", &[("policy", "shared")], 3.0)
            .await,
        3.0
    );
    // Redis goes away: "deny" refuses, "local" counts on its own (a fresh local allowance).
    drop(redis);
    assert_eq!(status(a1).await, 503);
    deny.wait_log("rate limit store unreachable", Duration::from_secs(5));
    let mut fallback = Vec::new();
    for _ in 0..6 {
        fallback.push(status(a2).await);
    }
    assert_eq!(
        fallback,
        [200, 200, 200, 200, 200, 429],
        "the local limit stands in"
    );
    local.wait_log("rate limit store unreachable", Duration::from_secs(5));
    let warnings = local
        .log_text()
        .matches("rate limit store unreachable")
        .count();
    assert_eq!(warnings, 1, "the switch is logged once");
}

fn cache_config(backend: std::net::SocketAddr, redis_port: u16) -> String {
    format!(
        "[global]\nworkers = 1\nshutdown_timeout = \"2s\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{backend}\" }}]\n\
         [[route]]\nlistener = \"web\"\npool = \"p\"\npolicies = [\"c\"]\n\
         [policy.c]\nkind = \"cache\"\nttl = \"10m\"\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:{redis_port}\"\n"
    )
}

async fn x_cache(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    fetch(addr, path, "")
        .await
        .header("x-cache")
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_cached_by_one_lb_is_served_by_another() {
    let redis = redis().await;
    let (b, hits) = web("b").await;
    let one = Lb::start("cache-one", &cache_config(b.addr, redis.port)).await;
    let two = Lb::start("cache-two", &cache_config(b.addr, redis.port)).await;
    let (a1, a2) = (one.listener("web").await, two.listener("web").await);
    assert_eq!(x_cache(a1, "/doc").await.as_deref(), Some("MISS"));
    // The entry reaches Redis from a task after the response: give it a moment.
    let mut second = None;
    for _ in 0..50 {
        second = x_cache(a2, "/doc").await;
        if second.as_deref() == Some("HIT") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        second.as_deref(),
        Some("HIT"),
        "lb two answered from what lb one stored"
    );
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(x_cache(a2, "/doc").await.as_deref(), Some("HIT"));
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "no backend request for a hit"
    );
    // Without Redis each keeps working from its own copy.
    drop(redis);
    assert_eq!(x_cache(a1, "/doc").await.as_deref(), Some("HIT"));
    assert_eq!(x_cache(a1, "/other").await.as_deref(), Some("MISS"));
}
