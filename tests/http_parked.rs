//! Parked idle HTTP/1.1 keep-alive connections, through the real binary: a connection idle for
//! a moment leaves its task and is kept by its worker's parker
//! (`lb_http_parked_connections`). Whatever a client sends to a parked connection is served
//! as if it had never been parked — a request, two pipelined, a head in pieces, a request
//! and its FIN at once, a slow head (still timed) — and a parked connection keeps its place
//! in `max_connections`, closes at its idle timeout, and closes when its listener is removed
//! by a reload.

mod common;

use std::time::{Duration, Instant};

use common::origin::{read_responses, Origin};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PARKED: &str = "lb_http_parked_connections";

/// Waits until exactly `n` connections of listener "web" are parked (bounded: 5 s).
async fn parked_becomes(lb: &Lb, n: f64) {
    let start = Instant::now();
    loop {
        let v = metric(&lb.metrics().await, PARKED, &[("listener", "web")]);
        if v == n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "parked connections stayed {v}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(s: &mut TcpStream, path: &str) -> u16 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
        .await
        .expect("write");
    read_responses(s, 1).await[0].0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_connection_serves_whatever_comes_as_if_never_parked() {
    let origin = Origin::start().await;
    let config = http_site(
        origin.addr,
        "idle_timeout = \"30s\"\nheader_timeout = \"2s\"",
        "",
    );
    let lb = Lb::start("parked-serve", &config).await;
    let addr = lb.listener("web").await;
    let mut conns = Vec::new();
    for i in 0..5 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(get(&mut s, &format!("/first/{i}")).await, 200);
        conns.push(s);
    }
    parked_becomes(&lb, 5.0).await;
    let before = origin.count();

    // A plain request.
    assert_eq!(get(&mut conns[0], "/again").await, 200);
    // Two pipelined in one write.
    conns[1]
        .write_all(b"GET /p1 HTTP/1.1\r\nHost: h\r\n\r\nGET /p2 HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    let two = read_responses(&mut conns[1], 2).await;
    assert_eq!(two.iter().map(|r| r.0).collect::<Vec<_>>(), [200, 200]);
    // A head in two pieces: the first wakes it, the rest completes it.
    conns[2]
        .write_all(b"GET /pieces HTTP/1.1\r\nHo")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    conns[2].write_all(b"st: h\r\n\r\n").await.expect("write");
    assert_eq!(read_responses(&mut conns[2], 1).await[0].0, 200);
    // A request and the client's FIN together: answered, then closed.
    conns[3]
        .write_all(b"GET /last HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    conns[3].shutdown().await.expect("fin");
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conns[3].read_to_end(&mut all))
        .await
        .expect("answered and closed")
        .expect("read");
    assert!(
        all.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&all)
    );
    // A head begun and never finished: woken, then cut at header_timeout (408), as any.
    conns[4]
        .write_all(b"GET /slow HTTP/1.1\r\n")
        .await
        .expect("write");
    let took = closed_within(&mut conns[4], Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(1500), "cut after {took:?}");

    let paths: Vec<String> = origin
        .since(before)
        .iter()
        .map(|r| r.target().to_string())
        .collect();
    assert_eq!(paths, ["/again", "/p1", "/p2", "/pieces", "/last"]);
    // The ones still open park again; a connection parked twice still serves.
    parked_becomes(&lb, 3.0).await;
    for s in &mut conns[..3] {
        assert_eq!(get(s, "/third").await, 200);
    }
    // Closed by the client while parked: nothing left parked for it.
    drop(conns);
    parked_becomes(&lb, 0.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_connection_keeps_its_place_and_closes_at_its_idle_timeout() {
    let origin = Origin::start().await;
    let config = http_site(
        origin.addr,
        "idle_timeout = \"2s\"\nmax_connections = 1",
        "",
    );
    let lb = Lb::start("parked-slot", &config).await;
    let addr = lb.listener("web").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(get(&mut s, "/x").await, 200);
    let idle_from = Instant::now();
    parked_becomes(&lb, 1.0).await;
    // Parked, it still holds the listener's only place: another client is refused.
    let mut other = TcpStream::connect(addr).await.expect("syn");
    let r = tokio::time::timeout(Duration::from_secs(5), other.read(&mut [0u8; 1]))
        .await
        .expect("closed promptly");
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "second connection admitted: {r:?}"
    );
    // Its idle time counts from its last answer, parked or not.
    closed_within(&mut s, Duration::from_secs(10)).await;
    let idled = idle_from.elapsed();
    assert!(
        idled >= Duration::from_millis(1900) && idled < Duration::from_secs(4),
        "closed after {idled:?} idle"
    );
    parked_becomes(&lb, 0.0).await;
    // Its place is free again.
    let mut third = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(get(&mut third, "/y").await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_removing_the_listener_closes_its_parked_connections() {
    let origin = Origin::start().await;
    let config = http_site(origin.addr, "idle_timeout = \"60s\"", "");
    let lb = Lb::start("parked-reload", &config).await;
    let addr = lb.listener("web").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(get(&mut s, "/x").await, 200);
    parked_becomes(&lb, 1.0).await;
    // The same config with the listener renamed: "web" is removed (and drained).
    std::fs::write(
        &lb.config,
        config.replace("name = \"web\"", "name = \"web2\""),
    )
    .expect("write config");
    let (code, body) = http(lb.admin, "POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let took = closed_within(&mut s, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    parked_becomes(&lb, 0.0).await;
}
