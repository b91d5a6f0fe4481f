//! A real DNS server behind lb: dnsmasq (Debian's dnsmasq-base, installed by scripts/test.sh)
//! answers through a UDP listener, with lb's own `dns` health check watching it.
#![cfg(feature = "external-tests")]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts dnsmasq on a free port and waits until it answers; a port that turns out to be
/// taken (dnsmasq binds TCP on it too) gets another try.
async fn dnsmasq() -> (Dnsmasq, SocketAddr) {
    for _ in 0..5 {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                "--address=/health.example/127.0.0.9",
                "--address=/www.example/10.1.2.3",
                "--pid-file=",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        let server = Dnsmasq(child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let probe = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let q = lb_core::health::dns::query(1, "health.example").expect("query");
        for _ in 0..30 {
            probe.send_to(&q, addr).await.expect("send");
            let mut buf = [0u8; 512];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(100), probe.recv_from(&mut buf)).await
            {
                return (server, addr);
            }
        }
    }
    panic!("dnsmasq never answered");
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_query_through_lb_gets_the_right_answer() {
    let (_server, dns) = dnsmasq().await;
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
