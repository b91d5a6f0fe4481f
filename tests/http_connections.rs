//! HTTP client connections through the real binary, on both paths: PROXY headers to the
//! backends (one backend connection per client connection, never shared), the listener's
//! `idle_timeout` on HTTP/1.1 and HTTP/2, a client that stops reading, and the admin API's
//! header timeout, and an upgraded connection counted against `max_connections` while its
//! tunnel lasts (HTTP/1.1 upgrades and HTTP/2 WebSockets).

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

/// A WebSocket backend: answers the handshake with 101 and the accept for whatever key lb
/// sent (lb makes its own for a WebSocket that came over HTTP/2, and checks the answer), then
/// echoes.
async fn websocket_echo() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let accept = lb_l7::upgrade::accept_for(key.as_bytes());
                let answer = format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Waits (bounded) until the "web" listener reports `n` active connections.
async fn active_becomes(lb: &Lb, n: u64) {
    let start = Instant::now();
    while lb.status().await["listeners"][0]["active_connections"] != n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "active connections never became {n}: {}",
            lb.status().await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgraded_connection_keeps_its_place_in_max_connections() {
    let backend = websocket_echo().await;
    let lb = Lb::start("ws-slot", &http_site(backend, "max_connections = 1", "")).await;
    let addr = lb.listener("web").await;
    let mut ws = TcpStream::connect(addr).await.expect("connect");
    ws.write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            ws.read(&mut byte).await.expect("head"),
            1,
            "closed: {head:?}"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // The tunnel carries bytes: the HTTP exchange is over, the connection is not.
    ws.write_all(b"ping").await.expect("ping");
    let mut echoed = [0u8; 4];
    ws.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"ping");
    active_becomes(&lb, 1).await;
    // The tunnel holds the listener's only place: another client is refused.
    let mut other = TcpStream::connect(addr).await.expect("syn");
    let r = tokio::time::timeout(Duration::from_secs(5), other.read(&mut byte))
        .await
        .expect("closed promptly");
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "second connection admitted: {r:?}"
    );
    ws.write_all(b"pong").await.expect("tunnel still open");
    ws.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"pong");
    // The tunnel's end frees the place.
    drop(ws);
    active_becomes(&lb, 0).await;
}

/// RFC 8441 WebSockets on one HTTP/2 connection: however many tunnels it carries, it is one
/// connection to `max_connections`, and its place is freed when the client goes while its
/// tunnels are still open (each tunnel holds the place, so none may outlive it).
#[tokio::test(flavor = "multi_thread")]
async fn http2_websocket_tunnels_hold_one_place_and_free_it_with_their_connection() {
    let backend = websocket_echo().await;
    let lb = Lb::start("h2-ws-slot", &http_site(backend, "max_connections = 1", "")).await;
    let addr = lb.listener("web").await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    // A second handle on the socket: hyper keeps the HTTP/2 connection running on its own
    // task while streams are open, so only closing the socket itself makes the client go.
    let tcp = tcp.into_std().expect("std");
    let socket = tcp.try_clone().expect("dup");
    let tcp = TcpStream::from_std(tcp).expect("tokio");
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let mut tunnels = Vec::new();
    for i in 0..3 {
        let mut req = http::Request::connect(format!("http://{addr}/chat"))
            .version(http::Version::HTTP_2)
            .header("sec-websocket-version", "13")
            .body(Empty::new())
            .expect("request");
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200, "tunnel {i}");
        let mut io = TokioIo::new(hyper::upgrade::on(resp).await.expect("upgraded"));
        io.write_all(b"ping").await.expect("ping");
        let mut echoed = [0u8; 4];
        io.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(&echoed, b"ping");
        tunnels.push(io);
    }
    active_becomes(&lb, 1).await;
    let mut other = TcpStream::connect(addr).await.expect("syn");
    let mut byte = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), other.read(&mut byte))
        .await
        .expect("closed promptly");
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "second connection admitted: {r:?}"
    );
    // The client's socket goes with its tunnels still open on both sides.
    socket.shutdown(std::net::Shutdown::Both).expect("shutdown");
    active_becomes(&lb, 0).await;
    drop(tunnels);
}

/// lb's own address on an HTTP connection — the `Host` an HTTP/1.0 request without one goes
/// on with, and the PROXY header's destination — is the one the client reached: behind a
/// wildcard bind each connection's own (two loopback addresses), behind a fixed bind the
/// listener's; on both paths.
#[tokio::test(flavor = "multi_thread")]
async fn lbs_address_on_a_connection_is_the_one_the_client_reached() {
    let origin = Origin::start().await;
    for path in ["default", "general"] {
        let fixed: std::net::SocketAddr = format!("127.0.0.1:{}", free_port(&["127.0.0.1"]))
            .parse()
            .expect("addr");
        // A wildcard with a port of its own: only the address is left to the connection.
        let wild = free_port(&["0.0.0.0"]);
        let listener = |name: &str, bind: &str| {
            format!(
                "[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\nprotocol = \"http\"\npool = \"site\"\nproxy_protocol = \"v1\"\n\n"
            )
        };
        let config = format!(
            "[global]\nworkers = 1\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n{}{}\
             [[pool]]\nname = \"site\"\nbackends = [{{ addr = \"{}\" }}]\n",
            listener("wild", &format!("0.0.0.0:{wild}")),
            listener("fixed", &fixed.to_string()),
            origin.addr
        );
        let name = format!("local-address-{path}");
        let _lb = match path {
            "general" => Lb::start_env(&name, &config, &[], &[("LB_HTTP_PATH", "general")]).await,
            _ => Lb::start(&name, &config).await,
        };
        for reached in [
            format!("127.0.0.1:{wild}"),
            format!("127.0.0.2:{wild}"),
            fixed.to_string(),
        ] {
            let before = origin.count();
            let mut s = TcpStream::connect(&reached).await.expect("connect");
            s.write_all(b"GET /x HTTP/1.0\r\n\r\n")
                .await
                .expect("write");
            let got = read_responses(&mut s, 1).await;
            assert_eq!(got.first().map(|r| r.0), Some(200), "{path} {reached}");
            let seen = origin.since(before);
            let r = seen.first().expect("forwarded");
            assert_eq!(r.field("host").as_deref(), Some(reached.as_str()), "{path}");
            let header =
                String::from_utf8_lossy(r.proxy.as_deref().expect("a PROXY header")).to_string();
            let (ip, port) = reached.rsplit_once(':').expect("ip:port");
            let f: Vec<&str> = header.split_whitespace().collect();
            assert_eq!((f[3], f[5]), (ip, port), "{path}: {header:?}");
        }
    }
}
