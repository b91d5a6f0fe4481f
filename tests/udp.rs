//! UDP load balancing through the real binary: flow spread and stickiness, large datagrams,
//! flow expiry, the flow-table bound, and health checks taking a dead backend out.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::backends::udp_named;
use common::*;
use tokio::net::UdpSocket;

fn udp_config(
    algorithm: &str,
    backends: &[SocketAddr],
    pool_extra: &str,
    listener_extra: &str,
) -> String {
    let list: Vec<_> = backends.iter().map(|a| (*a, "")).collect();
    config(
        algorithm,
        &list,
        pool_extra,
        &format!("protocol = \"udp\"\n{listener_extra}"),
    )
}

/// A client socket on `ip`; sends `payload` to lb and returns the backend's reply.
async fn ask(sock: &UdpSocket, lb: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(payload, lb).await.expect("send");
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(Duration::from_millis(1500), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            assert_eq!(from, lb, "replies come from the listener's address");
            Some(buf[..n].to_vec())
        }
        _ => None,
    }
}

fn who(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply.split(|&b| b == b'|').next().unwrap_or(b"")).into_owned()
}

/// Waits (bounded: 5 s) until listener "main" has no flow left.
async fn until_no_flows(lb: &Lb) {
    let start = Instant::now();
    while lb.status().await["listeners"][0]["active_connections"] != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "flows never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn client(ip: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0))
        .await
        .expect("bind client")
}

#[tokio::test(flavor = "multi_thread")]
async fn new_flows_spread_and_each_flow_sticks() {
    let bs = [
        udp_named("u0").await,
        udp_named("u1").await,
        udp_named("u2").await,
    ];
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let lb = Lb::start("udp-spread", &udp_config("round-robin", &addrs, "", "")).await;
    let addr = lb.listener("main").await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    // Every client socket stays open to the end: a port freed by one could be handed to the
    // next, which would then be the same flow, not a new one.
    let mut clients = Vec::new();
    for _ in 0..30 {
        let c = client(Ipv4Addr::LOCALHOST).await;
        let first = who(&ask(&c, addr, b"hello").await.expect("reply"));
        for i in 0..5 {
            let r = ask(&c, addr, format!("again {i}").as_bytes())
                .await
                .expect("reply");
            assert_eq!(who(&r), first, "a flow stays on its backend");
            assert!(r.ends_with(format!("again {i}").as_bytes()));
        }
        *counts.entry(first).or_default() += 1;
        clients.push(c);
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 10),
        "round-robin over 30 new flows: {counts:?}"
    );
    let m = lb.metrics().await;
    assert_eq!(
        metric(&m, "lb_udp_datagrams_total", &[("direction", "rx")]),
        180.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "lb_udp_datagrams_total", &[("direction", "tx")]),
        180.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "lb_udp_sessions", &[("listener", "main")]),
        30.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_sticks_many_source_ips() {
    let bs = [
        udp_named("u0").await,
        udp_named("u1").await,
        udp_named("u2").await,
    ];
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let text = udp_config(
        "consistent-hash",
        &addrs,
        "hash_key = \"source-ip\"",
        "udp_session_timeout = \"200ms\"",
    );
    let lb = Lb::start("udp-hash", &text).await;
    let addr = lb.listener("main").await;
    let mut seen: HashMap<Ipv4Addr, String> = HashMap::new();
    for round in 0..2 {
        for i in 1..=30u8 {
            let ip = Ipv4Addr::new(127, 0, 2, i);
            // A fresh socket (new port, new flow) each round: stickiness comes from the IP.
            let c = client(ip).await;
            let name = who(&ask(&c, addr, b"x").await.expect("reply"));
            match seen.get(&ip) {
                Some(prev) => assert_eq!(prev, &name, "{ip} moved in round {round}"),
                None => {
                    seen.insert(ip, name);
                }
            }
        }
        if round == 0 {
            // Let every flow expire so round two creates new ones.
            until_no_flows(&lb).await;
        }
    }
    let backends: std::collections::HashSet<_> = seen.values().collect();
    assert_eq!(backends.len(), 3, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_65000_byte_datagram_passes_intact_ipv4_and_ipv6() {
    let b4 = udp_named("v4").await;
    let lb = Lb::start("udp-big", &udp_config("round-robin", &[b4.addr], "", "")).await;
    let addr = lb.listener("main").await;
    let c = client(Ipv4Addr::LOCALHOST).await;
    let mut payload = vec![0u8; 65_000];
    let mut seed = 9;
    common::backends::fill(&mut payload, &mut seed);
    let r = ask(&c, addr, &payload).await.expect("reply");
    assert_eq!(r.len(), 3 + 65_000);
    assert_eq!(&r[3..], &payload[..], "no truncation, no corruption");

    // The same over IPv6 loopback, when the machine has it.
    let Ok(b6) = tokio::net::UdpSocket::bind("[::1]:0").await else {
        return;
    };
    drop(b6);
    let b6 = common::backends::udp_named_at("[::1]:0".parse().expect("addr"), "v6").await;
    let text = udp_config("round-robin", &[b6.addr], "", "")
        .replace("bind = \"127.0.0.1:0\"\npool", "bind = \"[::1]:0\"\npool");
    let lb6 = Lb::start("udp-big6", &text).await;
    let addr6 = lb6.listener("main").await;
    assert!(addr6.is_ipv6());
    let c6 = UdpSocket::bind("[::1]:0").await.expect("bind v6 client");
    let r = ask(&c6, addr6, &payload).await.expect("reply over v6");
    assert_eq!(&r[3..], &payload[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_expire_after_the_session_timeout() {
    let b = udp_named("u0").await;
    let lb = Lb::start(
        "udp-expire",
        &udp_config(
            "round-robin",
            &[b.addr],
            "",
            "udp_session_timeout = \"400ms\"",
        ),
    )
    .await;
    let addr = lb.listener("main").await;
    let c = client(Ipv4Addr::LOCALHOST).await;
    ask(&c, addr, b"a").await.expect("reply");
    assert_eq!(lb.status().await["listeners"][0]["active_connections"], 1);
    let start = Instant::now();
    while lb.status().await["listeners"][0]["active_connections"] != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "flow never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "expired too early: {:?}",
        start.elapsed()
    );
    let m = lb.metrics().await;
    assert_eq!(metric(&m, "lb_udp_sessions", &[("listener", "main")]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn full_flow_table_drops_new_flows_and_keeps_old_ones() {
    let b = udp_named("u0").await;
    let lb = Lb::start(
        "udp-full",
        &udp_config("round-robin", &[b.addr], "", "max_connections = 2"),
    )
    .await;
    let addr = lb.listener("main").await;
    let c1 = client(Ipv4Addr::LOCALHOST).await;
    let c2 = client(Ipv4Addr::LOCALHOST).await;
    let c3 = client(Ipv4Addr::LOCALHOST).await;
    ask(&c1, addr, b"1").await.expect("first flow");
    ask(&c2, addr, b"2").await.expect("second flow");
    assert!(
        ask(&c3, addr, b"3").await.is_none(),
        "a third flow is dropped"
    );
    assert!(
        ask(&c1, addr, b"1 again").await.is_some(),
        "old flows are unaffected"
    );
    let m = lb.metrics().await;
    assert_eq!(
        metric(&m, "lb_udp_dropped_total", &[("reason", "flow_table_full")]),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn global_max_connections_counts_flows_too() {
    let b = udp_named("u0").await;
    let text = udp_config("round-robin", &[b.addr], "", "")
        .replace("[global]\n", "[global]\nmax_connections = 2\n");
    let lb = Lb::start("udp-global", &text).await;
    let addr = lb.listener("main").await;
    let (c1, c2, c3) = (
        client(Ipv4Addr::LOCALHOST).await,
        client(Ipv4Addr::LOCALHOST).await,
        client(Ipv4Addr::LOCALHOST).await,
    );
    ask(&c1, addr, b"1").await.expect("first flow");
    ask(&c2, addr, b"2").await.expect("second flow");
    assert!(
        ask(&c3, addr, b"3").await.is_none(),
        "over the global bound"
    );
    assert_eq!(lb.status().await["active_connections"], 2);
    assert!(ask(&c1, addr, b"1 again").await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_backend_is_marked_down_and_new_flows_avoid_it() {
    let bs = [udp_named("u0").await, udp_named("u1").await];
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let health = "health = { kind = \"udp\", send = \"ping\", expect = \"pong\", interval = \"200ms\", timeout = \"150ms\", fall = 2, rise = 1 }";
    let lb = Lb::start("udp-health", &udp_config("round-robin", &addrs, health, "")).await;
    let addr = lb.listener("main").await;
    bs[1].stop();
    lb.wait_state("p", bs[1].addr, "down", Duration::from_secs(5))
        .await;
    for _ in 0..10 {
        let c = client(Ipv4Addr::LOCALHOST).await;
        assert_eq!(who(&ask(&c, addr, b"x").await.expect("reply")), "u0");
    }
    let s = lb.status().await;
    let last = &s["pools"][0]["backends"][0]["last_check"];
    assert_eq!(last["ok"], true, "{last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_backend_is_ejected_passively() {
    let good = udp_named("good").await;
    // A backend that takes datagrams and never answers (and so sends no ICMP error either).
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let text = udp_config(
        "round-robin",
        &[good.addr, silent_addr],
        "passive = { consecutive_failures = 2, eject_for = \"30s\" }",
        "udp_session_timeout = \"200ms\"",
    );
    let lb = Lb::start("udp-passive", &text).await;
    let addr = lb.listener("main").await;
    // New flows alternate; the ones on the silent backend get no reply and, when they
    // expire unanswered, count against it.
    let mut unanswered = 0;
    for _ in 0..6 {
        let c = client(Ipv4Addr::LOCALHOST).await;
        if ask(&c, addr, b"x").await.is_none() {
            unanswered += 1;
        }
    }
    assert!(unanswered >= 2, "some flows went to the silent backend");
    // The unanswered flows count against it once they expire.
    lb.wait_state("p", silent_addr, "down", Duration::from_secs(5))
        .await;
    let s = lb.status().await;
    assert_eq!(
        lb.backend_state("p", silent_addr).await,
        "down",
        "ejected after two unanswered flows: {s}"
    );
    for _ in 0..6 {
        let c = client(Ipv4Addr::LOCALHOST).await;
        assert_eq!(
            who(&ask(&c, addr, b"y")
                .await
                .expect("only the good backend now")),
            "good"
        );
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_algorithm_spreads_new_flows() {
    let bs = [
        udp_named("u0").await,
        udp_named("u1").await,
        udp_named("u2").await,
    ];
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    for alg in [
        "weighted-round-robin",
        "least-connections",
        "random",
        "power-of-two",
        "consistent-hash",
    ] {
        let extra = if alg == "consistent-hash" {
            "hash_key = \"source-addr\""
        } else {
            ""
        };
        let lb = Lb::start(&format!("udp-{alg}"), &udp_config(alg, &addrs, extra, "")).await;
        let addr = lb.listener("main").await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..60 {
            let c = client(Ipv4Addr::LOCALHOST).await;
            *counts
                .entry(who(&ask(&c, addr, b"x").await.expect("reply")))
                .or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{alg}: {counts:?}");
        assert!(counts.values().all(|&n| n >= 5), "{alg}: {counts:?}");
    }
}
