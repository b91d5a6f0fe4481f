//! A real DNS server behind lb: dnsmasq (Debian's dnsmasq-base, installed by scripts/test.sh)
//! answers through a UDP listener, with lb's own `dns` health check watching it.
#![cfg(feature = "external-tests")]

mod common;
mod dnsmasq;

use std::time::Duration;

use common::*;
use dnsmasq::Dnsmasq;
use tokio::net::UdpSocket;

#[tokio::test(flavor = "multi_thread")]
async fn dns_query_through_lb_gets_the_right_answer() {
    let hosts = scratch("dns").join("hosts");
    std::fs::write(&hosts, "").expect("hosts");
    let answers = [
        "--address=/health.example/127.0.0.9".to_string(),
        "--address=/www.example/10.1.2.3".to_string(),
    ];
    let server = Dnsmasq::start(0, &hosts, &answers).await;
    let dns = server.addr();
    let health = "health = { kind = \"dns\", query = \"health.example\", interval = \"200ms\", timeout = \"200ms\", rise = 1 }";
    let text = config("round-robin", &[(dns, "")], health, "protocol = \"udp\"");
    let lb = Lb::start("dns", &text).await;
    let addr = lb.listener("main").await;
    // The health check reaches dnsmasq and sees NOERROR.
    let start = std::time::Instant::now();
    loop {
        let s = lb.status().await;
        let last = &s["pools"][0]["backends"][0]["last_check"];
        if last["ok"] == true {
            assert!(
                last["detail"].as_str().unwrap_or("").contains("NOERROR"),
                "{last}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "dns health check never passed: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let q = lb_core::health::dns::query(0x4242, "www.example").expect("query");
    let c = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    c.send_to(&q, addr).await.expect("send");
    let mut buf = [0u8; 512];
    let (n, from) = tokio::time::timeout(Duration::from_secs(3), c.recv_from(&mut buf))
        .await
        .expect("answer in time")
        .expect("recv");
    assert_eq!(from, addr);
    let answers = lb_core::health::dns::check_response(0x4242, &buf[..n]).expect("NOERROR answer");
    assert_eq!(answers, 1);
    // The A record's address is the last four bytes of a one-answer response.
    assert_eq!(
        &buf[n - 4..n],
        &[10, 1, 2, 3],
        "dnsmasq's answer for www.example"
    );
}
