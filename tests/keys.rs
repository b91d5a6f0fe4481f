//! Config keys that act, each shown through the real binary by what it changes (keys with a
//! test of their own elsewhere are not repeated here; `lb-core/src/config/tests/kinds.rs`
//! shows the keys that are refused where they could not act).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::backends::{echo, named};
use common::origin::{responses, Origin, Reply};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A listener (and its only pool) on `backends`; `listener` and `pool` keys added.
fn one(protocol: &str, backends: &[SocketAddr], listener: &str, pool: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[global]\nworkers = 1\nshutdown_timeout = \"5s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nprotocol = \"{protocol}\"\npool = \"p\"\n{listener}\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{}]\n{pool}\n",
        list.join(", ")
    )
}

/// A backend address that accepts no connection: its listen queue is full, so a connect to
/// it hangs until the connector gives up.
fn stuck() -> (socket2::Socket, TcpStream, SocketAddr) {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    s.listen(0).expect("listen");
    let addr = s.local_addr().expect("addr").as_socket().expect("inet");
    // The one connection its queue holds.
    let first = std::net::TcpStream::connect(addr).expect("fills the queue");
    first.set_nonblocking(true).expect("nonblocking");
    (s, TcpStream::from_std(first).expect("tokio"), addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_timeout_gives_up_on_a_backend_that_never_accepts() {
    let (_sock, _held, hung) = stuck();
    let good = named("good").await;
    let origin = Origin::start().await;
    for (protocol, backend) in [("tcp", good.addr), ("http", origin.addr)] {
        let lb = Lb::start(
            &format!("connect-timeout-{protocol}"),
            &one(
                protocol,
                &[hung, backend],
                "connect_timeout = \"300ms\"",
                "algorithm = \"round-robin\"",
            ),
        )
        .await;
        let addr = lb.listener("main").await;
        for _ in 0..2 {
            match protocol {
                "tcp" => assert_eq!(fetch_name(addr).await.expect("served"), "good"),
                _ => {
                    let got = responses(
                        addr,
                        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                        1,
                    )
                    .await;
                    assert_eq!(got.first().map(|r| r.0), Some(200));
                }
            }
        }
        let errors = lb
            .metric_reaching(
                "lb_connect_errors_total",
                &[("backend", &hung.to_string())],
                1.0,
            )
            .await;
        assert!(
            errors >= 1.0,
            "{protocol}: the hung connect was given up and counted"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_listeners_max_connections_holds() {
    let origin = Origin::start().await;
    let lb = Lb::start(
        "http-max",
        &one("http", &[origin.addr], "max_connections = 2", ""),
    )
    .await;
    let addr = lb.listener("main").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(common::origin::read_responses(&mut s, 1).await[0].0, 200);
        held.push(s);
    }
    let third = responses(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1).await;
    assert!(third.is_empty(), "a third connection is refused: {third:?}");
    let refused = lb
        .metric_reaching(
            "lb_rejected_connections_total",
            &[("listener", "main"), ("reason", "listener_limit")],
            1.0,
        )
        .await;
    assert_eq!(refused, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_listener_takes_the_client_from_an_accepted_proxy_header() {
    let origin = Origin::start().await;
    let lb = Lb::start(
        "http-accept-proxy",
        &one("http", &[origin.addr], "accept_proxy_protocol = true", ""),
    )
    .await;
    let addr = lb.listener("main").await;
    let got = responses(
        addr,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        1,
    )
    .await;
    assert_eq!(got.first().map(|r| r.0), Some(200));
    let r = origin.received().pop().expect("a request");
    assert_eq!(r.fields("x-forwarded-for"), ["203.0.113.9"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn passive_health_ejects_a_refusing_http_backend() {
    let good = Origin::start().await;
    let dead = Origin::start().await;
    let dead_addr = dead.addr;
    dead.kill();
    drop(dead);
    let lb = Lb::start(
        "http-passive",
        &one(
            "http",
            &[dead_addr, good.addr],
            "",
            "algorithm = \"round-robin\"\npassive = { consecutive_failures = 2, eject_for = \"1m\" }",
        ),
    )
    .await;
    let addr = lb.listener("main").await;
    for i in 0..6 {
        let got = responses(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            1,
        )
        .await;
        assert_eq!(got.first().map(|r| r.0), Some(200), "request {i}");
    }
    assert_eq!(lb.backend_state("p", dead_addr).await, "down", "ejected");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_health_checks_take_a_failing_backend_out() {
    let sick = Origin::answering(|r| {
        if r.target() == "/healthz" {
            Reply::Status(500)
        } else {
            Reply::Ok
        }
    })
    .await;
    let well = Origin::start().await;
    let health = "health = { kind = \"http\", path = \"/healthz\", expect_status = 200, interval = \"100ms\", timeout = \"100ms\", rise = 1, fall = 1 }";
    let lb = Lb::start(
        "http-health",
        &one("http", &[sick.addr, well.addr], "", health),
    )
    .await;
    lb.wait_state("p", sick.addr, "down", Duration::from_secs(5))
        .await;
    assert_eq!(lb.backend_state("p", well.addr).await, "up");
    assert!(sick.received().iter().any(|r| r.target() == "/healthz"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_start_gives_a_re_enabled_backend_a_sliver_first() {
    let (a, b) = (named("a").await, named("b").await);
    let lb = Lb::start(
        "slow-start",
        &one(
            "tcp",
            &[a.addr, b.addr],
            "",
            "algorithm = \"round-robin\"\nslow_start = \"1h\"",
        ),
    )
    .await;
    let addr = lb.listener("main").await;
    let mut before = 0;
    for _ in 0..20 {
        before += usize::from(fetch_name(addr).await.expect("served") == "a");
    }
    assert_eq!(before, 10, "at full share, every other turn");
    for verb in ["disable", "enable"] {
        let path = format!("/api/pools/p/backends/{}/{verb}", a.addr);
        assert_eq!(http(lb.admin, "POST", &path, None).await.0, 200);
    }
    let mut after = 0;
    for _ in 0..40 {
        after += usize::from(fetch_name(addr).await.expect("served") == "a");
    }
    assert!(
        after <= 2,
        "just enabled, it takes a sliver of its turns: {after} of 40"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_balance_factor_spreads_a_hot_key() {
    let backends = [echo().await, echo().await, echo().await];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    // Bounded at ceil(1.25 × (open + 1) / 3) each: the hot key spills to the next slots.
    for (factor, most) in [("", 6), ("hash_balance_factor = 1.25", 3)] {
        let lb = Lb::start(
            "bounded-load",
            &one(
                "tcp",
                &addrs,
                "",
                &format!("algorithm = \"consistent-hash\"\nhash_key = \"source-ip\"\n{factor}"),
            ),
        )
        .await;
        let addr = lb.listener("main").await;
        // Six long-lived connections from one address (one key), opened one after another.
        let mut held = Vec::new();
        for n in 1..=6u64 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"ping").await.expect("write");
            let mut back = [0u8; 4];
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut back)
                .await
                .expect("echo");
            held.push(s);
            let active: u64 = active(&lb).await.iter().sum();
            assert_eq!(active, n);
        }
        let per = active(&lb).await;
        assert_eq!(per.iter().copied().max(), Some(most), "{factor:?}: {per:?}");
    }
}

async fn active(lb: &Lb) -> Vec<u64> {
    lb.status().await["pools"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["active_connections"].as_u64().expect("active"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_and_shutdown_timeout_act() {
    let e = echo().await;
    let text = one("tcp", &[e.addr], "", "")
        .replace("workers = 1", "workers = 3")
        .replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"1s\"");
    let mut lb = Lb::start("workers-shutdown", &text).await;
    assert_eq!(lb.status().await["workers"], 3);
    // A connection that never ends would hold a graceful shutdown forever; the timeout ends it.
    let addr = lb.listener("main").await;
    let mut held = TcpStream::connect(addr).await.expect("connect");
    held.write_all(b"x").await.expect("write");
    let mut one_byte = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut held, &mut one_byte)
        .await
        .expect("echo");
    assert_eq!(lb.signal_and_wait("TERM", Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_tls_on_an_http_pool_reaches_https_backends() {
    let dir = scratch("http-backend-tls");
    let pki = common::pki::Pki::new(&dir);
    let leaf = pki.leaf("backend", &["backend.internal"]);
    let backend = https_origin(&leaf).await;
    let pool = format!(
        "backend_tls = {{ ca = \"{}\", server_name = \"backend.internal\" }}",
        pki.ca_path().display()
    );
    let lb = Lb::start("http-backend-tls", &one("http", &[backend], "", &pool)).await;
    let addr = lb.listener("main").await;
    let got = responses(
        addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        1,
    )
    .await;
    assert_eq!(
        got.first().map(|r| (r.0, r.2.as_str())),
        Some((200, "over tls"))
    );
}

/// An HTTPS origin answering `over tls` with `leaf`'s certificate.
async fn https_origin(leaf: &common::pki::Leaf) -> SocketAddr {
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der.clone()], common::pki::load_key(&leaf.key))
    .expect("cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from("over tls")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_udp_listeners_access_log_has_a_line_per_flow() {
    let b = common::backends::udp_named("u0").await;
    let mut lb = Lb::start(
        "udp-log",
        &one(
            "udp",
            &[b.addr],
            "access_log = true\nudp_session_timeout = \"200ms\"",
            "",
        ),
    )
    .await;
    let addr = lb.listener("main").await;
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    c.send_to(b"hi", addr).await.expect("send");
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
        .await
        .expect("reply");
    let line = lb.wait_log("udp flow ended", Duration::from_secs(5));
    assert!(
        line.contains(&c.local_addr().expect("addr").to_string()),
        "{line}"
    );
}
