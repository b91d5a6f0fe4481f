//! HTTP client connections through the real binary, on both paths: PROXY headers to the
//! backends (one backend connection per client connection, never shared), the listener's
//! `idle_timeout` on HTTP/1.1 and HTTP/2, a client that stops reading, and the admin API's
//! header timeout.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origin::{read_responses, Origin};
use common::web::web;
use common::*;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (bounded by `within`); how long it took.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, s.read(&mut sink)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("still open after {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_headers_go_to_backends_one_connection_per_client() {
    for (version, sig) in [
        ("v1", &b"PROXY TCP4 127.0.0.1 "[..]),
        ("v2", b"\r\n\r\n\0\r\nQUIT\n"),
    ] {
        let origin = Origin::start().await;
        let config = http_site(origin.addr, &format!("proxy_protocol = \"{version}\""), "");
        for (path, lb) in both_paths(&format!("proxy-{version}"), &config).await {
            let addr = lb.listener("web").await;
            let before = origin.count();
            let (mut a, mut b) = (
                TcpStream::connect(addr).await.expect("a"),
                TcpStream::connect(addr).await.expect("b"),
            );
            let ports = [
                a.local_addr().expect("a").port(),
                b.local_addr().expect("b").port(),
            ];
            for _ in 0..2 {
                for s in [&mut a, &mut b] {
                    s.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
                        .await
                        .expect("write");
                    let got = read_responses(s, 1).await;
                    assert_eq!(got.first().map(|r| r.0), Some(200), "{path} {version}");
                }
            }
            let got = origin.since(before);
            assert_eq!(got.len(), 4, "{path} {version}");
            for (n, r) in got.iter().enumerate() {
                let header = r.proxy.as_ref().expect("a PROXY header");
                assert!(header.starts_with(sig), "{path} {version}: {header:?}");
                // The header names the client whose requests travel on that connection.
                let port = ports[n % 2];
                let names = match version {
                    "v1" => String::from_utf8_lossy(header).contains(&format!(" {port} ")),
                    _ => header[16 + 8..16 + 10] == port.to_be_bytes(),
                };
                assert!(
                    names,
                    "{path} {version}: request {n} on {header:?}, client port {port}"
                );
            }
            // One backend connection per client connection, kept for its requests.
            assert_eq!(got[0].conn, got[2].conn, "{path} {version}");
            assert_eq!(got[1].conn, got[3].conn, "{path} {version}");
            assert_ne!(got[0].conn, got[1].conn, "{path} {version}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_close_after_idle_timeout_on_h1_and_h2() {
    let origin = Origin::start().await;
    let config = http_site(
        origin.addr,
        "idle_timeout = \"1s\"\nheader_timeout = \"30s\"",
        "",
    );
    for (path, lb) in both_paths("idle", &config).await {
        let addr = lb.listener("web").await;
        // HTTP/1.1 keep-alive: one exchange, then silence.
        let mut h1 = TcpStream::connect(addr).await.expect("connect");
        h1.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(read_responses(&mut h1, 1).await[0].0, 200, "{path}");
        let took = closed_within(&mut h1, Duration::from_secs(10)).await;
        assert!(
            took >= Duration::from_millis(900),
            "{path}: h1 closed after {took:?}"
        );
        // HTTP/2 by prior knowledge: one exchange, then silence; lb ends it with a GOAWAY.
        let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2");
        let conn = tokio::spawn(conn);
        let req = http::Request::get(format!("http://{addr}/y"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        assert_eq!(send.send_request(req).await.expect("answer").status(), 200);
        let start = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("lb ends an idle HTTP/2 connection")
            .expect("task")
            .expect("a clean end");
        assert!(start.elapsed() >= Duration::from_millis(900), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_let_go() {
    let (site, served) = web("site").await;
    let config = http_site(site.addr, "idle_timeout = \"1s\"", "");
    for (path, lb) in both_paths("slow-reader", &config).await {
        let addr = lb.listener("web").await;
        let before = served.load(std::sync::atomic::Ordering::SeqCst);
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.write_all(b"GET /big/64 HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .expect("write");
        // The client reads nothing; lb's writes stall, and after idle_timeout it lets go.
        let deadline = Instant::now() + Duration::from_secs(15);
        while served.load(std::sync::atomic::Ordering::SeqCst) == before {
            assert!(
                Instant::now() < deadline,
                "{path}: the request never reached the backend"
            );
            tokio::task::yield_now().await;
        }
        while lb.status().await["active_connections"] != 0 {
            assert!(
                Instant::now() < deadline,
                "{path}: the connection is still held"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(
            got.len() < 64 << 20,
            "{path}: the answer was cut short: {}",
            got.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_cuts_a_client_too_slow_with_its_head() {
    let origin = Origin::start().await;
    let lb = Lb::start("admin-slow", &http_site(origin.addr, "", "")).await;
    let mut s = TcpStream::connect(lb.admin).await.expect("connect");
    s.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let took = closed_within(&mut s, Duration::from_secs(15)).await;
    assert!(took >= Duration::from_secs(4), "closed after {took:?}");
    // Others are served meanwhile and after.
    assert_eq!(http(lb.admin, "GET", "/api/status", None).await.0, 200);
}
