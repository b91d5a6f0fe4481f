//! Harness for the gateway over real loopback sockets: in-process hyper backends (HTTP/1.1
//! and HTTP/2) that report what they received, and a gateway built from a config text, fed
//! by its own accept loop the way lb-core hands connections over.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use lb_core::pool::Pool;
use lb_core::proxy::handoff::{ClientStream, Conn};
use lb_core::proxy::prefixed::Prefixed;
use lb_l7::gateway::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A backend that answers `name METHOD URI xff=... host=...`, and on special paths:
/// `/status/N` answers N, `/count` answers how many body bytes it read, `/headers` lists the request headers, `/trailers` ends its
/// body with a `grpc-status: 0` trailer, `/cookie` echoes the Cookie header, `/slow` waits
/// 3 s first, `/pause` 300 ms, `/cc/X` answers with `Cache-Control: X`, `/vary/X` with `Vary: X`
/// and the request's values of those fields, `/xml` and
/// `/badxml` answer `application/xml`. It counts its connections and requests.
pub struct Backend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
}

impl Backend {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

pub async fn backend(name: &'static str) -> Backend {
    serve(move |s, r| async move {
        let svc = service_fn(move |req: Request<Incoming>| {
            r.fetch_add(1, Ordering::SeqCst);
            answer(name, req)
        });
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(s), svc)
            .await;
    })
    .await
}

/// A backend on a loopback port: each connection is counted and handed to `conn` with the
/// request counter.
async fn serve<F, Fut>(conn: F) -> Backend
where
    F: Fn(TcpStream, Arc<AtomicU64>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let connections = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(conn(s, r.clone()));
        }
    });
    Backend {
        addr,
        connections,
        requests,
    }
}

type Reply = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

async fn answer(name: &'static str, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let path = req.uri().path().to_string();
    let text = format!(
        "{name} {} {} xff={} host={} version={:?}",
        req.method(),
        req.uri(),
        h("x-forwarded-for"),
        h("host"),
        req.version()
    );
    if let Some(cc) = path.strip_prefix("/cc/") {
        let mut resp = Response::new(Full::new(Bytes::from(text)).boxed());
        if let Ok(v) = http::HeaderValue::from_str(cc) {
            resp.headers_mut().insert(http::header::CACHE_CONTROL, v);
        }
        return Ok(resp);
    }
    if let Some(names) = path.strip_prefix("/vary/") {
        // `Vary: NAMES` (`%20` for a space), and the request's value of each (`-`: absent).
        let names = names.replace("%20", " ");
        let seen: Vec<String> = names
            .split(',')
            .map(|n| format!("{}={}", n.trim(), h(n.trim())))
            .collect();
        let mut resp =
            Response::new(Full::new(Bytes::from(format!("{text} {}", seen.join(" ")))).boxed());
        if let Ok(v) = http::HeaderValue::from_str(&names) {
            resp.headers_mut().insert(http::header::VARY, v);
        }
        return Ok(resp);
    }
    if path == "/xml" || path == "/badxml" {
        let xml = if path == "/xml" {
            "<?xml version=\"1.0\"?><order id=\"7\"><item>a</item><item>b &amp; c</item></order>"
        } else {
            "<a><b></a>"
        };
        let mut resp = Response::new(Full::new(Bytes::from(xml)).boxed());
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/xml; charset=utf-8"),
        );
        return Ok(resp);
    }
    if path == "/pause" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code = code.parse().unwrap_or(500);
        let mut resp = Response::new(Full::new(Bytes::from(text)).boxed());
        *resp.status_mut() =
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(resp);
    }
    let body = match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            text
        }
        "/cookie" => h("cookie"),
        "/headers" => {
            let mut lines: Vec<String> = req
                .headers()
                .iter()
                .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            lines.sort();
            lines.join("\n")
        }
        "/count" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            n.to_string()
        }
        "/trailers" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from(text))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            return Ok(Response::new(BodyExt::boxed(body)));
        }
        _ => text,
    };
    Ok(Response::new(Full::new(Bytes::from(body)).boxed()))
}

/// Whether this run forces the general path (`LB_HTTP_PATH=general`): tests of how the lean
/// path moves bytes (field spelling, chunk extensions kept, hand-over) have nothing to test
/// then and say so; every test of what a client or backend gets runs on both paths.
pub fn general_path_run(test: &str) -> bool {
    let forced = lb_l7::gateway::general_path_only();
    if forced {
        eprintln!("{test}: about the lean path's bytes; not run with LB_HTTP_PATH=general");
    }
    forced
}

/// A loopback address where nothing listens.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// A config with one http listener "web" (default pool "p0" unless `routes` says otherwise)
/// and pools `p0`, `p1`… over `pools`.
pub fn config(pools: &[(&[SocketAddr], &str)], listener_extra: &str, routes: &str) -> String {
    let mut text = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\n{listener_extra}\n"
    );
    for (i, (addrs, extra)) in pools.iter().enumerate() {
        let list: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        text.push_str(&format!(
            "[[pool]]\nname = \"p{i}\"\nbackends = [{}]\n{extra}\n",
            list.join(", ")
        ));
    }
    text.push_str(routes);
    text
}

/// The gateway of `config` serving on a loopback port, as lb-core would hand it
/// connections. Returns its address and the gateway (for its pools' live state).
pub async fn gateway(config: &str) -> (SocketAddr, Arc<Gateway>) {
    let (addr, gw, _) = gateway_draining(config).await;
    (addr, gw)
}

/// [`gateway`], with the token that drains its connections (as lb-core's listener stop does).
pub async fn gateway_draining(config: &str) -> (SocketAddr, Arc<Gateway>, CancellationToken) {
    let (loaded, prepared) =
        lb_l7::gateway::load_str("test.toml", config).unwrap_or_else(|e| panic!("{e}"));
    let pools: Vec<Arc<Pool>> = loaded
        .config
        .pools
        .iter()
        .map(|p| Arc::new(Pool::new(p, None)))
        .collect();
    let gw = Arc::new(Gateway::build(&loaded, &prepared, 0, &pools));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let served = gw.clone();
    let drain = CancellationToken::new();
    let draining = drain.clone();
    tokio::spawn(async move {
        while let Ok((s, peer)) = l.accept().await {
            let conn = Conn {
                io: ClientStream::Plain(Prefixed::new(Vec::new(), s)),
                client: peer,
                local: addr,
                sni: None,
                alpn: None,
                drain: draining.clone(),
                cancel: CancellationToken::new(),
                tracker: TaskTracker::new(),
                old_at: None,
                slot: Default::default(),
            };
            tokio::spawn(served.clone().serve_conn(conn));
        }
    });
    (addr, gw, drain)
}

/// One raw HTTP/1.1 exchange on a fresh connection, read until lb closes it: status code,
/// head and body.
pub async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

pub fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// `GET path` with a Host and extra header lines; status and body.
pub async fn fetch(addr: SocketAddr, host: &str, path: &str, headers: &str) -> (u16, String) {
    let (s, _, b) = raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"),
    )
    .await;
    (s, b)
}

/// A hyper HTTP/1.1 keep-alive client.
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub async fn body_text(resp: Response<Incoming>) -> String {
    let b = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

/// A backend that reads a request head (and whatever body came with it) and closes without
/// answering; counts the requests it swallowed.
pub async fn swallower() -> Backend {
    serve(|mut s, r| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        r.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    })
    .await
}

/// A backend that answers every request with `status`.
pub async fn failing(status: u16) -> Backend {
    serve(move |s, r| async move {
        let svc = service_fn(move |req: Request<Incoming>| {
            r.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = req.into_body().collect().await;
                let mut resp = Response::new(Full::new(Bytes::from("failing")));
                *resp.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                Ok::<_, Infallible>(resp)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), svc)
            .await;
    })
    .await
}

/// A WebSocket echo server (tokio-tungstenite).
pub async fn websocket_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}
