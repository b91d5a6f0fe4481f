//! Live membership through the admin API: `POST /api/pools/{pool}/backends` adds a member
//! that then gets traffic; `DELETE /api/pools/{pool}/backends/{addr}` drains it first (open
//! connections go on, no new ones) and removes it when its last connection ends.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backends::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect admin");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

fn backend<'a>(status: &'a serde_json::Value, addr: &str) -> Option<&'a serde_json::Value> {
    status["pools"][0]["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_adds_a_member_that_gets_traffic_and_deletes_one_that_drains_first() {
    let a = named("a").await;
    let b = named("b").await;
    let health = "health = { kind = \"tcp\", interval = \"200ms\", timeout = \"200ms\" }";
    let text = config("round-robin", &[(a.addr, "")], health, "");
    let lb = Lb::start("membership", &text).await;
    let addr = lb.listener("main").await;
    let path = "/api/pools/p/backends";

    // Hostile bodies are refused, and change nothing.
    for bad in [
        "",
        "{",
        r#"{"addr":"app:80"}"#,
        r#"{"addr":"127.0.0.1:1","weight":0}"#,
        r#"{"addr":"127.0.0.1:1","evil":1}"#,
    ] {
        let (code, _) = request(lb.admin, "POST", path, bad).await;
        assert_eq!(code, 400, "{bad}");
    }
    let (code, _) = request(
        lb.admin,
        "POST",
        "/api/pools/nope/backends",
        &format!(r#"{{"addr":"{}"}}"#, b.addr),
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = request(
        lb.admin,
        "POST",
        path,
        &format!(r#"{{"addr":"{}"}}"#, a.addr),
    )
    .await;
    assert_eq!(code, 409, "already a member");

    let (code, body) = request(
        lb.admin,
        "POST",
        path,
        &format!(r#"{{"addr":"{}","weight":1}}"#, b.addr),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let s = lb.status().await;
    let added = backend(&s, &b.addr.to_string()).expect("listed");
    assert_eq!(added["source"], "api");
    assert_eq!(
        backend(&s, &a.addr.to_string()).expect("kept")["source"],
        "config"
    );
    // It gets traffic (after its first health check passes).
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut name = Vec::new();
        s.read_to_end(&mut name).await.expect("read");
        if name == b"b\n" {
            // Kept open: the backend waits for the client's close, so lb counts it active.
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the added member never got traffic"
        );
    };

    let (code, body) = request(lb.admin, "DELETE", &format!("{path}/{}", b.addr), "").await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(lb.backend_state("p", b.addr).await, "draining");
    for _ in 0..10 {
        assert_eq!(
            fetch_name(addr).await.expect("through lb"),
            "a",
            "no new connections to a draining member"
        );
    }
    // Still listed while its connection is open.
    assert!(backend(&lb.status().await, &b.addr.to_string()).is_some());
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend(&lb.status().await, &b.addr.to_string()).is_some() {
        assert!(
            Instant::now() < deadline,
            "not removed after its last connection ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        lb.metric_reaching("lb_pool_members", &[("pool", "p")], 1.0)
            .await,
        1.0
    );
}
