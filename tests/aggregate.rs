//! Aggregate routes through the real binary: the answer assembled from a JSON backend and a
//! dead one, `lb_aggregate_parts_total` by outcome, and `/api/status` listing the parts.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Answers `{"path": PATH_AND_QUERY}`.
async fn json_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let body = serde_json::json!({ "path": req.uri().to_string() }).to_string();
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn parts_are_answered_counted_and_listed() {
    let users = json_backend().await;
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\n\
         [[pool]]\nname = \"users\"\nbackends = [{{ addr = \"{users}\" }}]\n\n\
         [[pool]]\nname = \"orders\"\nbackends = [{{ addr = \"{dead_addr}\" }}]\n\n\
         [[route]]\nlistener = \"web\"\nname = \"me\"\nmatch = {{ path = \"/me\" }}\n\
         aggregate = [\n  {{ name = \"user\", pool = \"users\", path = \"/users/${{query.id}}\", required = true }},\n  \
         {{ name = \"orders\", pool = \"orders\", path = \"/orders?user=${{query.id}}\", timeout = \"2s\" }},\n]\n"
    );
    let lb = Lb::start("aggregate", &config).await;
    let addr = lb.listener("web").await;
    let (status, body) = http(addr, "GET", "/me?id=a%2Fb", None).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["user"]["path"], "/users/a%2Fb");
    assert_eq!(v["orders"]["status"], 502, "{v}");
    let (status, body) = http(addr, "GET", "/me", None).await;
    assert_eq!(status, 400, "a required part's variable is missing: {body}");
    let labels = |part, outcome| {
        [
            ("listener", "web"),
            ("route", "me"),
            ("part", part),
            ("outcome", outcome),
        ]
    };
    let ok = lb
        .metric_reaching("lb_aggregate_parts_total", &labels("user", "ok"), 1.0)
        .await;
    assert_eq!(ok, 1.0);
    let down = lb
        .metric_reaching(
            "lb_aggregate_parts_total",
            &labels("orders", "unreachable"),
            1.0,
        )
        .await;
    assert_eq!(down, 1.0);
    let unfilled = lb
        .metric_reaching("lb_aggregate_parts_total", &labels("user", "unfilled"), 1.0)
        .await;
    assert_eq!(unfilled, 1.0);
    let s = lb.status().await;
    let r = &s["routes"][0];
    assert!(r["pool"].is_null(), "{r}");
    assert_eq!(r["aggregate"][1]["name"], "orders", "{r}");
    assert_eq!(r["aggregate"][1]["pool"], "orders");
    assert_eq!(r["aggregate"][0]["required"], true);
}

#[test]
fn check_prints_each_part() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/aggregate.toml");
    let (code, out, err) = run_lb(&["check", "--config", conf]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "route \"me\": path = \"/me\", GET|HEAD → aggregate of 3 parts",
        "part \"user\": GET /users/${jwt.sub} on pool \"users\", timeout 2s, required",
        "part \"recommendations\": GET /for/${jwt.sub} on pool \"recommendations\", timeout 300ms",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }
}
