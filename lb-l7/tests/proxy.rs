//! The HTTP proxy over real loopback sockets: in-process hyper backends that report what they
//! received, a gateway accepting on its own port, and raw or hyper clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_l7::forward::Trust;
use lb_l7::guard::Limits;
use lb_l7::proxy::{Gateway, Target, Upstreams};
use lb_l7::router::{Conditions, HostMatch, PathMatch, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers `name method path xff=... host=...` and counts its connections
/// and requests; `delay` holds every answer back.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

async fn backend(name: &'static str, delay: Duration) -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let connections = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::Relaxed);
            let r = r.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let r = r.clone();
                    async move {
                        r.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        let text = format!(
                            "{name} {} {} xff={} host={}",
                            req.method(),
                            req.uri(),
                            h("x-forwarded-for"),
                            h("host")
                        );
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        connections,
        requests,
    }
}

/// Pools as fixed lists, round-robin.
struct Lists {
    pools: Vec<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Upstreams for Lists {
    fn pick(&self, pool: usize) -> Option<SocketAddr> {
        let list = self.pools.get(pool)?;
        if list.is_empty() {
            return None;
        }
        Some(list[self.next.fetch_add(1, Ordering::Relaxed) % list.len()])
    }
}

fn target(name: &str, pool: usize, strip: Option<&str>, timeout: Duration) -> Target {
    Target {
        name: name.into(),
        pool,
        strip_prefix: strip.map(str::to_string),
        timeout,
    }
}

/// A gateway on a loopback port with these routes and pools.
async fn gateway(
    routes: Vec<(Conditions, Target)>,
    default: Option<Target>,
    pools: Vec<Vec<SocketAddr>>,
) -> SocketAddr {
    let gw = Arc::new(Gateway::new(
        Router::new(routes),
        default,
        Lists {
            pools,
            next: AtomicUsize::new(0),
        },
        Limits::default(),
        Trust::Replace,
        None,
    ));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, peer)) = l.accept().await {
            tokio::spawn(gw.clone().serve(s, peer, false));
        }
    });
    addr
}

/// A backend named "b" behind a gateway that sends it everything.
async fn single_backend() -> (Backend, SocketAddr) {
    let b = backend("b", Duration::ZERO).await;
    let all = target("all", 0, None, Duration::from_secs(5));
    let gw = gateway(vec![], Some(all), vec![vec![b.addr]]).await;
    (b, gw)
}

/// One raw HTTP/1.1 exchange on a fresh connection: status code and body.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn prefix(p: &str) -> Option<PathMatch> {
    Some(PathMatch::prefix(p).expect("prefix"))
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_and_path_and_strips_prefixes() {
    let (api, web, admin) = (
        backend("api", Duration::ZERO).await,
        backend("web", Duration::ZERO).await,
        backend("admin", Duration::ZERO).await,
    );
    let t = Duration::from_secs(5);
    let gw = gateway(
        vec![
            (
                Conditions {
                    host: Some(HostMatch::parse("api.example.com").expect("host")),
                    path: prefix("/v1"),
                    ..Conditions::default()
                },
                target("api", 0, Some("/v1"), t),
            ),
            (
                Conditions {
                    path: prefix("/admin"),
                    methods: vec![Method::GET],
                    ..Conditions::default()
                },
                target("admin", 2, None, t),
            ),
        ],
        Some(target("web", 1, None, t)),
        vec![vec![api.addr], vec![web.addr], vec![admin.addr]],
    )
    .await;
    let (s, b) = raw(gw, &get("api.example.com", "/v1/users?id=7")).await;
    assert_eq!(
        (s, b.as_str()),
        (
            200,
            "api GET /users?id=7 xff=127.0.0.1 host=api.example.com"
        )
    );
    let (_, b) = raw(gw, &get("www.example.com", "/v1/users")).await;
    assert!(b.starts_with("web GET /v1/users"), "{b}");
    // Normalised before routing: a dot-dot spelling still reaches the admin route.
    let (_, b) = raw(gw, &get("x", "/static/../admin/panel")).await;
    assert!(b.starts_with("admin GET /admin/panel"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_and_no_backend_get_json_answers() {
    let b = backend("b", Duration::ZERO).await;
    let t = Duration::from_secs(5);
    let gw = gateway(
        vec![
            (
                Conditions {
                    path: prefix("/ok"),
                    ..Conditions::default()
                },
                target("ok", 0, None, t),
            ),
            (
                Conditions {
                    path: prefix("/empty"),
                    ..Conditions::default()
                },
                target("empty", 1, None, t),
            ),
        ],
        None,
        vec![vec![b.addr], vec![]],
    )
    .await;
    let (s, body) = raw(gw, &get("h", "/elsewhere")).await;
    assert_eq!(s, 404);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["status"], 404);
    let (s, body) = raw(gw, &get("h", "/empty")).await;
    assert_eq!(s, 503);
    assert!(body.contains("\"status\":503"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_reuses_one_upstream_connection() {
    let (b, gw) = single_backend().await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for i in 0..20 {
        let resp = client
            .get(format!("http://{gw}/n/{i}").parse().expect("uri"))
            .await
            .expect("response");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(String::from_utf8_lossy(&body).starts_with(&format!("b GET /n/{i}")));
    }
    assert_eq!(b.requests.load(Ordering::Relaxed), 20);
    assert_eq!(
        b.connections.load(Ordering::Relaxed),
        1,
        "upstream connection not reused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_probes_are_refused_and_never_forwarded() {
    let (b, gw) = single_backend().await;
    let probes = [
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /%2e%2e%00 HTTP/1.1\r\nHost: h\r\n\r\n",
    ];
    for p in probes {
        let (status, _) = raw(gw, p).await;
        assert_eq!(status, 400, "{p:?}");
    }
    // The parser itself refuses a space before the colon.
    let (status, _) = raw(gw, "GET / HTTP/1.1\r\nHost : h\r\n\r\n").await;
    assert_eq!(status, 400);
    assert_eq!(
        b.requests.load(Ordering::Relaxed),
        0,
        "a probe reached the backend"
    );
}

/// Content-Length with Transfer-Encoding: the HTTP/1 parser (hyper) does what RFC 9112 §6.1
/// asks of an intermediary — drops Content-Length, frames the body by chunked, and closes
/// the connection after answering, so nothing can be smuggled behind the body.
#[tokio::test(flavor = "multi_thread")]
async fn length_with_chunked_is_framed_by_chunked_and_the_connection_closed() {
    let (b, gw) = single_backend().await;
    // Were Content-Length believed, "GET /smuggled" would be a second request.
    let probe = "POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    // `raw` reads to the end: it returns only because lb closed the connection.
    let (status, body) = raw(gw, probe).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("b POST /first"), "{body}");
    assert_eq!(
        b.requests.load(Ordering::Relaxed),
        1,
        "the smuggled request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_backend_is_502_and_a_slow_one_504() {
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let slow = backend("slow", Duration::from_secs(3)).await;
    let gw = gateway(
        vec![(
            Conditions {
                path: prefix("/slow"),
                ..Conditions::default()
            },
            target("slow", 1, None, Duration::from_millis(300)),
        )],
        Some(target("dead", 0, None, Duration::from_secs(5))),
        vec![vec![dead_addr], vec![slow.addr]],
    )
    .await;
    let (s, body) = raw(gw, &get("h", "/")).await;
    assert_eq!(s, 502, "{body}");
    let (s, _) = raw(gw, &get("h", "/slow")).await;
    assert_eq!(s, 504);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_claims_of_forwarding_are_replaced() {
    let (_b, gw) = single_backend().await;
    let (_, body) = raw(
        gw,
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.6.6.6\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(body.contains("xff=127.0.0.1 "), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_reach_http1_backends() {
    let (_b, gw) = single_backend().await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{gw}/h2/path").parse().expect("uri"))
        .await
        .expect("response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.starts_with(&format!("b GET /h2/path xff=127.0.0.1 host={gw}")),
        "{text}"
    );
}
