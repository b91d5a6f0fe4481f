//! HTTP failover through the real binary, on both paths: a backend that refuses connections
//! or goes away under load costs clients nothing while another is up (as lb's TCP relay),
//! every attempt gets its own deadline, and a request abandoned mid-way leaves no count
//! raised.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::origin::{responses, Origin, Reply};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// An http listener "web" over pool "p" of `origins`, round-robin, with `pool_extra`.
fn pool_config(origins: &[std::net::SocketAddr], pool_extra: &str, routes: &str) -> String {
    let list: Vec<String> = origins
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[global]\nworkers = 1\nshutdown_timeout = \"5s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nalgorithm = \"round-robin\"\nbackends = [{}]\n{pool_extra}\n\n{routes}",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_backend_costs_no_request_of_any_method() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    let dead = Origin::start().await;
    let dead_addr = dead.addr;
    dead.kill();
    drop(dead);
    // No health checks and no `retries`: failover alone, on the default pool and a route.
    let route = "[[route]]\nlistener = \"web\"\nname = \"r\"\nmatch = { path_prefix = \"/r\" }\npool = \"p\"\n";
    let config = pool_config(&[a.addr, dead_addr, b.addr], "", route);
    for (path, lb) in both_paths("refusing", &config).await {
        let addr = lb.listener("web").await;
        for i in 0..30 {
            let target = if i % 2 == 0 { "/x" } else { "/r/x" };
            let req = match i % 3 {
                0 => format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
                1 => format!("POST {target} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"),
                _ => format!("DELETE {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            };
            let got = responses(addr, req.as_bytes(), 1).await;
            assert_eq!(got.first().map(|r| r.0), Some(200), "{path}: request {i}");
        }
        let m = lb.metrics().await;
        let refused = metric(
            &m,
            "lb_http_upstream_errors_total",
            &[("backend", &dead_addr.to_string()), ("kind", "connect")],
        );
        assert!(
            refused >= 1.0,
            "{path}: the refusals were counted: {refused}"
        );
    }
    assert_eq!(
        a.count() + b.count(),
        60,
        "every request reached a live backend once"
    );
}

/// Clients in a loop until `stop`; (ok, failed).
struct Clients {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    KeepAlive,
    NewConnections,
    H2,
}

impl Clients {
    fn start(addr: std::net::SocketAddr, mode: Mode, until: Instant) -> Clients {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..4)
            .map(|_| {
                let (ok, failed) = (ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let count = |good: bool| {
                        if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                    };
                    match mode {
                        Mode::NewConnections => {
                            for _ in 0..20_000 {
                                if Instant::now() > until {
                                    break;
                                }
                                let got = responses(
                                    addr,
                                    b"GET /n HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                                    1,
                                )
                                .await;
                                count(got.first().is_some_and(|r| r.0 == 200));
                            }
                        }
                        Mode::KeepAlive | Mode::H2 => {
                            let client =
                                hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                                    .http2_only(matches!(mode, Mode::H2))
                                    .build_http::<Empty<Bytes>>();
                            let uri: http::Uri = format!("http://{addr}/k").parse().expect("uri");
                            for _ in 0..20_000 {
                                if Instant::now() > until {
                                    break;
                                }
                                let good = match client.get(uri.clone()).await {
                                    Ok(r) => {
                                        r.status() == 200 && r.into_body().collect().await.is_ok()
                                    }
                                    Err(_) => false,
                                };
                                count(good);
                            }
                        }
                    }
                })
            })
            .collect();
        Clients { ok, failed, tasks }
    }

    async fn finish(self) -> (u64, u64) {
        for t in self.tasks {
            t.await.expect("client");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_going_away_under_load_costs_clients_nothing() {
    for mode in [Mode::KeepAlive, Mode::NewConnections, Mode::H2] {
        let origins = [
            Origin::start().await,
            Origin::start().await,
            Origin::start().await,
        ];
        let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
        let config = pool_config(&addrs, "", "");
        for (path, lb) in both_paths("going-away", &config).await {
            let addr = lb.listener("web").await;
            let until = Instant::now() + Duration::from_millis(1500);
            let clients = Clients::start(addr, mode, until);
            // Killed once every backend has served under this load.
            let start = Instant::now();
            while origins.iter().any(|o| o.count() == 0) && start.elapsed() < Duration::from_secs(5)
            {
                tokio::task::yield_now().await;
            }
            let at_kill = origins[1].count();
            origins[1].kill();
            let (ok, failed) = clients.finish().await;
            assert_eq!(failed, 0, "{path} {mode:?}: {ok} ok");
            assert!(ok > 100, "{path} {mode:?}: only {ok}");
            assert!(
                origins[1].count() - at_kill < 10,
                "{path} {mode:?}: it went away"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_attempt_has_its_own_deadline_and_blames_its_own_backend() {
    let slow = Origin::answering(|_| Reply::After(Duration::from_secs(3))).await;
    let quick = Origin::start().await;
    let route = "[[route]]\nlistener = \"web\"\nname = \"r\"\nmatch = { path_prefix = \"/\" }\npool = \"p\"\ntimeout = \"300ms\"\nretries = 1\n";
    let config = pool_config(&[slow.addr, quick.addr], "", route);
    for (path, lb) in both_paths("deadline", &config).await {
        let addr = lb.listener("web").await;
        // Round-robin: some requests try the slow backend first; every one is answered by
        // the quick one within its own full timeout.
        for i in 0..4 {
            let got = responses(
                addr,
                format!("GET /{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
                1,
            )
            .await;
            assert_eq!(got.first().map(|r| r.0), Some(200), "{path}: {i}");
        }
        let m = lb.metrics().await;
        let errors = |b: std::net::SocketAddr, kind: &str| {
            metric(
                &m,
                "lb_http_upstream_errors_total",
                &[("backend", &b.to_string()), ("kind", kind)],
            )
        };
        assert!(errors(slow.addr, "timeout") >= 1.0, "{path}");
        assert_eq!(
            errors(quick.addr, "connect"),
            0.0,
            "{path}: a timeout is not the next one's fault"
        );
        assert_eq!(errors(quick.addr, "timeout"), 0.0, "{path}");
    }
}

/// Active counts per backend of pool "p", from the admin API.
async fn active(lb: &Lb) -> Vec<u64> {
    let s = lb.status().await;
    s["pools"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["active_connections"].as_u64().expect("active"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_abandoned_mid_way_leave_no_count_raised() {
    let slow = Origin::answering(|_| Reply::After(Duration::from_millis(400))).await;
    let config = pool_config(&[slow.addr], "", "");
    for (path, lb) in both_paths("abandoned", &config).await {
        let addr = lb.listener("web").await;
        // HTTP/1.1 clients that reset while the backend works on their request.
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .expect("write");
            while active(&lb).await[0] == 0 {
                tokio::task::yield_now().await;
            }
            // A reset, not a close: linger zero does not block (the deprecation's concern).
            #[allow(deprecated)]
            s.set_linger(Some(Duration::ZERO)).expect("linger");
            drop(s);
        }
        // An HTTP/2 client that resets its streams (the future of each request is dropped).
        let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2");
        tokio::spawn(conn);
        for _ in 0..3 {
            let req = http::Request::get(format!("http://{addr}/slow"))
                .body(Empty::<Bytes>::new())
                .expect("request");
            let pending = send.send_request(req);
            let _ = tokio::time::timeout(Duration::from_millis(100), pending).await;
        }
        // Every exchange ends once the backend answers the requests nobody waits for.
        let deadline = Instant::now() + Duration::from_secs(5);
        while active(&lb).await[0] != 0 {
            assert!(
                Instant::now() < deadline,
                "{path}: active stays {:?}",
                active(&lb).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
