//! End-to-end balancing through the real binary: spread per algorithm, stickiness,
//! backups, admin drain.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::backends::named;
use common::*;

async fn spread(algorithm: &str, weights: &[u32], n: usize) -> HashMap<String, usize> {
    let mut bs = Vec::new();
    for i in 0..weights.len() {
        bs.push(named(&format!("b{i}")).await);
    }
    let list: Vec<_> = bs
        .iter()
        .zip(weights)
        .map(|(b, w)| {
            (
                b.addr,
                if *w == 1 {
                    String::new()
                } else {
                    format!(", weight = {w}")
                },
            )
        })
        .collect();
    let list: Vec<_> = list.iter().map(|(a, e)| (*a, e.as_str())).collect();
    let lb = Lb::start(algorithm, &config(algorithm, &list, "", "")).await;
    let addr = lb.listener("main").await;
    let mut counts = HashMap::new();
    for _ in 0..n {
        let name = fetch_name(addr).await.expect("request through lb");
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn share(counts: &HashMap<String, usize>, name: &str) -> f64 {
    let total: usize = counts.values().sum();
    *counts.get(name).unwrap_or(&0) as f64 / total as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_evenly() {
    let c = spread("round-robin", &[1, 1, 1], 300).await;
    for b in ["b0", "b1", "b2"] {
        assert!((share(&c, b) - 1.0 / 3.0).abs() < 0.05, "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_round_robin_follows_weights() {
    let c = spread("weighted-round-robin", &[3, 2, 1], 600).await;
    assert!((share(&c, "b0") - 0.5).abs() < 0.05, "{c:?}");
    assert!((share(&c, "b1") - 1.0 / 3.0).abs() < 0.05, "{c:?}");
    assert!((share(&c, "b2") - 1.0 / 6.0).abs() < 0.05, "{c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn least_connections_spreads_sequential_clients() {
    let c = spread("least-connections", &[1, 1, 1], 300).await;
    for b in ["b0", "b1", "b2"] {
        assert!(share(&c, b) > 0.2, "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_and_power_of_two_reach_every_backend() {
    for alg in ["random", "power-of-two"] {
        let c = spread(alg, &[1, 1, 2], 400).await;
        assert!(
            share(&c, "b0") > 0.12 && share(&c, "b1") > 0.12,
            "{alg}: {c:?}"
        );
        assert!(share(&c, "b2") > 0.35, "{alg}: {c:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_sticks_per_source_ip_and_spreads_over_ips() {
    let bs = [named("b0").await, named("b1").await, named("b2").await];
    let list: Vec<_> = bs.iter().map(|b| (b.addr, "")).collect();
    let text = config("consistent-hash", &list, "hash_key = \"source-ip\"", "");
    let lb = Lb::start("hash", &text).await;
    let addr = lb.listener("main").await;
    let mut per_ip: HashMap<IpAddr, String> = HashMap::new();
    for round in 0..3 {
        for i in 1..=40u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i));
            let name = fetch_name_from(addr, Some(ip)).await.expect("request");
            match per_ip.get(&ip) {
                Some(prev) => assert_eq!(prev, &name, "client {ip} moved in round {round}"),
                None => {
                    per_ip.insert(ip, name);
                }
            }
        }
    }
    let mut used: Vec<_> = per_ip.values().collect();
    used.sort();
    used.dedup();
    assert_eq!(
        used.len(),
        3,
        "40 source IPs should reach all 3 backends: {per_ip:?}"
    );

    // A second lb process with the same config picks the same backend for every client.
    let lb2 = Lb::start("hash2", &text).await;
    let addr2 = lb2.listener("main").await;
    for (ip, name) in &per_ip {
        assert_eq!(
            &fetch_name_from(addr2, Some(*ip)).await.expect("request"),
            name,
            "{ip}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_moves_only_the_down_backends_clients() {
    let bs = [named("b0").await, named("b1").await, named("b2").await];
    let list: Vec<_> = bs.iter().map(|b| (b.addr, "")).collect();
    let text = config("consistent-hash", &list, "health = { kind = \"tcp\", interval = \"100ms\", timeout = \"100ms\", fall = 1, rise = 1 }", "");
    let lb = Lb::start("hash-down", &text).await;
    let addr = lb.listener("main").await;
    let ips: Vec<IpAddr> = (1..=40u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 1, i)))
        .collect();
    let mut before = HashMap::new();
    for ip in &ips {
        before.insert(
            *ip,
            fetch_name_from(addr, Some(*ip)).await.expect("request"),
        );
    }
    bs[1].stop();
    lb.wait_state("p", bs[1].addr, "down", Duration::from_secs(5))
        .await;
    for ip in &ips {
        let now = fetch_name_from(addr, Some(*ip))
            .await
            .expect("no client failure while backends are up");
        if before[ip] != "b1" {
            assert_eq!(now, before[ip], "{ip} was on a healthy backend and moved");
        } else {
            assert_ne!(now, "b1");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_takes_over_only_when_primaries_are_down() {
    let p0 = named("p0").await;
    let p1 = named("p1").await;
    let bk = named("backup").await;
    // Overprovisioning 2.0: one primary of two is still a fully healthy level, so the backup
    // serves only when both are down (the gradual spill is tests/priority.rs).
    let text = config(
        "round-robin",
        &[(p0.addr, ""), (p1.addr, ""), (bk.addr, ", backup = true")],
        "health = { kind = \"tcp\", interval = \"100ms\", timeout = \"100ms\", fall = 1, rise = 1 }\noverprovisioning = 2.0",
        "",
    );
    let lb = Lb::start("backup", &text).await;
    let addr = lb.listener("main").await;
    for _ in 0..20 {
        assert_ne!(fetch_name(addr).await.expect("request"), "backup");
    }
    p0.stop();
    p1.stop();
    lb.wait_state("p", p0.addr, "down", Duration::from_secs(5))
        .await;
    lb.wait_state("p", p1.addr, "down", Duration::from_secs(5))
        .await;
    for _ in 0..10 {
        assert_eq!(fetch_name(addr).await.expect("backup serves"), "backup");
    }
    // A primary comes back on the same port: traffic returns to it.
    let back = common::backends::named_at(p0.addr, "p0").await;
    lb.wait_state("p", back.addr, "up", Duration::from_secs(5))
        .await;
    for _ in 0..10 {
        assert_eq!(fetch_name(addr).await.expect("primary again"), "p0");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_drain_disable_enable_change_picks_and_status() {
    let b0 = named("b0").await;
    let b1 = named("b1").await;
    let mut text = config("round-robin", &[(b0.addr, ""), (b1.addr, "")], "", "");
    text = text.replace(
        "bind = \"127.0.0.1:0\"\n\n[[listener]]",
        "bind = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n\n[[listener]]",
    );
    let lb = Lb::start("admin", &text).await;
    let addr = lb.listener("main").await;
    let path = format!("/api/pools/p/backends/{}/drain", b0.addr);
    assert_eq!(
        http(lb.admin, "POST", &path, None).await.0,
        401,
        "token required"
    );
    assert_eq!(http(lb.admin, "POST", &path, Some("wrong")).await.0, 401);
    let (code, body) = http(lb.admin, "POST", &path, Some("s3cret")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"draining\""), "{body}");
    assert_eq!(lb.backend_state("p", b0.addr).await, "draining");
    for _ in 0..10 {
        assert_eq!(fetch_name(addr).await.expect("request"), "b1");
    }
    let (code, _) = http(
        lb.admin,
        "POST",
        &format!("/api/pools/p/backends/{}/disable", b1.addr),
        Some("s3cret"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(lb.backend_state("p", b1.addr).await, "disabled");
    assert!(
        fetch_name(addr).await.is_err(),
        "no backend enabled: the connection is closed"
    );
    http(
        lb.admin,
        "POST",
        &format!("/api/pools/p/backends/{}/enable", b0.addr),
        Some("s3cret"),
    )
    .await;
    assert_eq!(fetch_name(addr).await.expect("b0 back"), "b0");
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "lb_backend_up",
            &[("pool", "p"), ("backend", &b1.addr.to_string())]
        ),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "lb_backend_up",
            &[("pool", "p"), ("backend", &b0.addr.to_string())]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        http(
            lb.admin,
            "POST",
            "/api/pools/p/backends/10.9.9.9:1/drain",
            Some("s3cret")
        )
        .await
        .0,
        404
    );
    assert_eq!(
        http(
            lb.admin,
            "POST",
            "/api/pools/nope/backends/1.2.3.4:1/drain",
            Some("s3cret")
        )
        .await
        .0,
        404
    );
}
