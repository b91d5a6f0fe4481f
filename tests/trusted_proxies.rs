//! `trusted_proxies` (issue 15): with `accept_proxy_protocol`, only the listed peers may send
//! a PROXY header; a connection from any other is closed before lb reads from it and is
//! counted as `untrusted_proxy`, on tcp and http listeners (tls: tests/tls.rs).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::backends::named;
use common::origin::Origin;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    let ip: IpAddr = from.parse().expect("ip");
    s.bind(SocketAddr::new(ip, 0)).expect("bind source");
    s.connect(to).await.expect("connect")
}

/// Sends a PROXY header claiming 203.0.113.9 and `payload`; returns what came back before
/// the connection ended.
async fn through(from: &str, to: SocketAddr, payload: &[u8]) -> String {
    let mut s = connect_from(from, to).await;
    let mut req = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n".to_vec();
    req.extend_from_slice(payload);
    let _ = s.write_all(&req).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("lb answers or closes");
    String::from_utf8_lossy(&got).into_owned()
}

const TRUST: &str =
    "accept_proxy_protocol = true\ntrusted_proxies = [\"127.0.0.2/32\", \"10.0.0.0/8\"]";

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_listener_takes_the_header_only_from_a_trusted_proxy() {
    let b = named("b0").await;
    let lb = Lb::start(
        "pp-trust-tcp",
        &config("round-robin", &[(b.addr, "")], "", TRUST),
    )
    .await;
    let main = lb.listener("main").await;
    assert_eq!(through("127.0.0.2", main, b"").await.trim(), "b0");
    assert_eq!(
        through("127.0.0.1", main, b"").await,
        "",
        "closed unanswered"
    );
    assert_eq!(through("127.0.0.3", main, b"").await, "");
    assert_eq!(lb.rejected("untrusted_proxy", 2.0).await, 2.0);
    assert_eq!(through("127.0.0.2", main, b"").await.trim(), "b0");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_listener_takes_the_header_only_from_a_trusted_proxy() {
    let origin = Origin::start().await;
    let lb = Lb::start("pp-trust-http", &http_site(origin.addr, TRUST, "")).await;
    let web = lb.listener("web").await;
    let req = b"GET / HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n";
    let ok = through("127.0.0.2", web, req).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(origin.count(), 1);
    assert_eq!(through("127.0.0.1", web, req).await, "");
    let refused = lb
        .metric_reaching(
            "lb_rejected_connections_total",
            &[("listener", "web"), ("reason", "untrusted_proxy")],
            1.0,
        )
        .await;
    assert_eq!(refused, 1.0);
    assert_eq!(
        origin.count(),
        1,
        "nothing from the untrusted peer reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_trusted_proxies_any_peer_is_taken_as_before_and_check_warns() {
    let b = named("b0").await;
    let text = config(
        "round-robin",
        &[(b.addr, "")],
        "",
        "accept_proxy_protocol = true",
    );
    let path = write_config("pp-any", &text);
    let (code, out, err) = run_lb(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("trusted_proxies"),
        "{out}{err}"
    );
    let lb = Lb::start("pp-any", &text).await;
    let main = lb.listener("main").await;
    assert_eq!(through("127.0.0.1", main, b"").await.trim(), "b0");
}
