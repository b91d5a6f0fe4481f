//! Hot reload (SPEC §5) through the real binary: POST /api/reload and SIGHUP, listeners and
//! backends added and removed, bad configs refused, state kept, zero failures under load.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backends::{echo, named};
use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// `config()` plus an optional second listener "extra" on the same pool.
fn with_extra(backends: &[SocketAddr], extra: bool) -> String {
    let list: Vec<_> = backends.iter().map(|a| (*a, "")).collect();
    let mut text = config("round-robin", &list, "", "");
    if extra {
        text.push_str("\n[[listener]]\nname = \"extra\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n");
    }
    text
}

async fn reload(lb: &Lb, text: &str) -> (u16, String) {
    std::fs::write(&lb.config, text).expect("write config");
    http(lb.admin, "POST", "/api/reload", None).await
}

/// Waits until `load` has had `want` connections succeed (bounded: 10 s; the caller's
/// assertions judge what it reached).
async fn ok_reaching(load: &Load, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while load.ok() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn names(addr: SocketAddr, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        seen.insert(fetch_name(addr).await.expect("request"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_adds_and_removes_backends_and_listeners() {
    let b0 = named("b0").await;
    let b1 = named("b1").await;
    let lb = Lb::start("reload-add", &with_extra(&[b0.addr], false)).await;
    let main = lb.listener("main").await;
    assert_eq!(names(main, 6).await, HashSet::from(["b0".to_string()]));

    let (code, body) = reload(&lb, &with_extra(&[b0.addr, b1.addr], true)).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"listeners_added\":[\"extra on 127.0.0.1:"),
        "{body}"
    );
    assert_eq!(
        lb.listener("main").await,
        main,
        "a kept listener keeps its socket"
    );
    assert_eq!(
        names(main, 6).await,
        HashSet::from(["b0".to_string(), "b1".to_string()])
    );
    let extra = lb.listener("extra").await;
    assert!(fetch_name(extra).await.is_ok(), "the added listener serves");

    // An open connection on "extra" outlives the listener's removal.
    let mut held = TcpStream::connect(extra).await.expect("connect extra");
    let (code, body) = reload(&lb, &with_extra(&[b1.addr], false)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"listeners_removed\":[\"extra on"), "{body}");
    assert_eq!(names(main, 6).await, HashSet::from(["b1".to_string()]));
    let start = Instant::now();
    while TcpStream::connect(extra).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "removed listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut got = Vec::new();
    held.read_to_end(&mut got).await.expect("held connection");
    assert!(
        !got.is_empty(),
        "the connection accepted before removal was served"
    );
    let m = lb.metrics().await;
    assert_eq!(
        metric(&m, "lb_config_reloads_total", &[("result", "ok")]),
        2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_is_refused_and_the_old_one_keeps_serving() {
    let b0 = named("b0").await;
    let good = with_extra(&[b0.addr], false);
    let mut lb = Lb::start("reload-bad", &good).await;
    let main = lb.listener("main").await;
    let hash_before = lb.status().await["config"]["hash"].clone();
    let bad = good.replace(
        "algorithm = \"round-robin\"",
        "algorithm = \"round-robbin\"",
    );
    let (code, body) = reload(&lb, &bad).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("did you mean"),
        "the API answers with the validation errors: {body}"
    );
    assert!(body.contains("lb.toml:"), "errors name file:line: {body}");
    assert_eq!(fetch_name(main).await.expect("old config serves"), "b0");
    lb.wait_log("config reload refused", Duration::from_secs(5));
    let m = lb.metrics().await;
    assert_eq!(
        metric(&m, "lb_config_reloads_total", &[("result", "error")]),
        1.0,
        "{m}"
    );
    assert_eq!(
        lb.status().await["config"]["hash"],
        hash_before,
        "status still shows the running config"
    );
    // A port already in use by someone else fails the reload too, changing nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = good.clone()
        + &format!(
            "\n[[listener]]\nname = \"busy\"\nbind = \"{}\"\npool = \"p\"\n",
            taken.local_addr().expect("addr")
        );
    let (code, body) = reload(&lb, &busy).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("listener \\\"busy\\\": cannot listen"),
        "{body}"
    );
    assert_eq!(fetch_name(main).await.expect("still serving"), "b0");
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_backend_keeps_state_and_counters_and_sighup_reloads() {
    let b0 = named("b0").await;
    let b1 = named("b1").await;
    let b2 = named("b2").await;
    let mut lb = Lb::start("reload-keep", &with_extra(&[b0.addr, b1.addr], false)).await;
    let main = lb.listener("main").await;
    names(main, 4).await;
    let (code, _) = http(
        lb.admin,
        "POST",
        &format!("/api/pools/p/backends/{}/drain", b0.addr),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let before = lb.status().await["pools"][0]["backends"][0]["total_connections"].clone();
    std::fs::write(&lb.config, with_extra(&[b0.addr, b1.addr, b2.addr], false)).expect("write");
    lb.signal("HUP");
    lb.wait_log("config reloaded", Duration::from_secs(5));
    let s = lb.status().await;
    let b = &s["pools"][0]["backends"][0];
    assert_eq!(b["state"], "draining", "admin state survives a reload: {b}");
    assert_eq!(b["total_connections"], before, "counters survive a reload");
    assert_eq!(s["pools"][0]["backends"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        names(main, 8).await,
        HashSet::from(["b1".to_string(), "b2".to_string()])
    );
}

/// Ten reloads while four clients keep opening connections and echoing bytes: no failed
/// connection, no corrupted byte; the added backend gets traffic, the removed one drains.
#[tokio::test(flavor = "multi_thread")]
async fn ten_reloads_under_load_lose_nothing() {
    let e0 = echo().await;
    let e1 = echo().await;
    let e2 = echo().await;
    let configs = [
        with_extra(&[e0.addr, e1.addr], false),
        with_extra(&[e0.addr, e2.addr], true),
    ];
    let lb = Lb::start("reload-load", &configs[0]).await;
    let main = lb.listener("main").await;
    let load = Load::start(main, 4, 2048);
    // Each config carries some of the load before the next reload, the last one too.
    for i in 0..10 {
        ok_reaching(&load, load.ok() + 25).await;
        let (code, body) = reload(&lb, &configs[(i + 1) % 2]).await;
        assert_eq!(code, 200, "reload {i}: {body}");
    }
    ok_reaching(&load, load.ok() + 25).await;
    let (ok, failed) = load.finish().await;
    eprintln!("reloads under load: {ok} connections ok, {failed} failed");
    assert_eq!(failed, 0, "{ok} ok");
    assert!(ok > 200, "too little load: {ok}");
    let s = lb.status().await;
    let total = |addr: SocketAddr| {
        s["pools"][0]["backends"].as_array().and_then(|bs| {
            bs.iter()
                .find(|b| b["address"] == addr.to_string())
                .map(|b| b["total_connections"].clone())
        })
    };
    // e0 is in every config: one backend, counted across all ten reloads.
    assert!(
        total(e0.addr)
            .and_then(|t| t.as_u64())
            .is_some_and(|t| t > 0),
        "{s}"
    );
    let m = lb.metrics().await;
    assert!(
        metric(
            &m,
            "lb_connections_total",
            &[("backend", &e2.addr.to_string())]
        ) > 0.0,
        "added backend got traffic: {m}"
    );
    assert!(
        metric(
            &m,
            "lb_connections_total",
            &[("backend", &e1.addr.to_string())]
        ) > 0.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "lb_config_reloads_total", &[("result", "ok")]),
        10.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_reloads_on_file_change_and_skips_bad_edits() {
    let b0 = named("b0").await;
    let b1 = named("b1").await;
    let mut lb = Lb::start_with("reload-watch", &with_extra(&[b0.addr], false), &["--watch"]).await;
    let main = lb.listener("main").await;
    lb.wait_log("watching", Duration::from_secs(5));
    // A bad edit is refused once and the old config keeps serving.
    std::fs::write(&lb.config, "[[listener]]\nname = \"broken\"\n").expect("write");
    lb.wait_log("config reload refused", Duration::from_secs(10));
    assert_eq!(fetch_name(main).await.expect("old config serves"), "b0");
    // The fixed file is picked up by itself.
    std::fs::write(&lb.config, with_extra(&[b1.addr], false)).expect("write");
    lb.wait_log("config reloaded", Duration::from_secs(10));
    assert_eq!(names(main, 4).await, HashSet::from(["b1".to_string()]));
    let m = lb.metrics().await;
    assert_eq!(
        metric(&m, "lb_config_reloads_total", &[("result", "error")]),
        1.0,
        "refused once, not every poll: {m}"
    );
}
