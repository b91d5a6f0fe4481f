//! What an aggregate route costs a request: filling a part's path template, checking and
//! assembling two part bodies (~0.1 and ~0.9 KB of JSON), and a whole request through a gateway over loopback (two
//! parts) next to one on a plain route to the same backend.
//! Run: `cargo bench -p lb-l7 --bench aggregate`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use lb_core::config::Template;
use lb_l7::aggregate::assemble::{body, decode, verdict};
use lb_l7::aggregate::template::{render, Source};

fn pure(c: &mut Criterion) {
    let t = Template::parse("/orders?user=${jwt.sub}&page=${query.page}").expect("template");
    let claims = serde_json::json!({ "sub": "alice@example.com", "exp": 1 });
    let headers = HeaderMap::new();
    let src = Source {
        claims: Some(&claims),
        query: Some("page=2&sort=desc"),
        headers: &headers,
    };
    c.bench_function("aggregate/fill_template", |b| {
        b.iter(|| render(black_box(&t), black_box(&src)))
    });
    let user = serde_json::json!({ "id": 1, "name": "alice", "email": "a@example.com", "tags": vec!["x"; 20] })
        .to_string();
    let orders: Vec<_> = (0..20)
        .map(|i| serde_json::json!({ "id": i, "total": 12.5, "items": ["a", "b"] }))
        .collect();
    let orders = serde_json::Value::from(orders).to_string();
    c.bench_function("aggregate/assemble_2_parts", |b| {
        b.iter(|| {
            let u = decode(200, black_box(user.as_bytes()));
            let o = decode(200, black_box(orders.as_bytes()));
            let _ = verdict([("user", true, &u), ("orders", false, &o)]);
            body([("user", &u), ("orders", &o)])
        })
    });
}

fn gateway(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (gw, backend) = rt.block_on(async {
        let b = json_backend().await;
        let routes = "[[route]]\nlistener = \"web\"\nname = \"plain\"\nmatch = { path_prefix = \"/plain\" }\npool = \"p0\"\n\
            [[route]]\nlistener = \"web\"\nname = \"agg\"\nmatch = { path = \"/agg\" }\n\
            aggregate = [{ name = \"a\", pool = \"p0\", path = \"/a?u=${query.u}\" }, { name = \"b\", pool = \"p0\", path = \"/b\" }]\n";
        let (gw, _) = support::gateway(&support::config(&[(&[b], "")], "", routes)).await;
        (gw, b)
    });
    let client = support::client();
    let ask = |path: &'static str| {
        let uri: http::Uri = format!("http://{gw}{path}").parse().expect("uri");
        let client = client.clone();
        async move {
            let resp = client.get(uri).await.expect("answer");
            support::body_text(resp).await
        }
    };
    c.bench_function("gateway/plain_route", |b| {
        b.iter(|| rt.block_on(ask("/plain")))
    });
    c.bench_function("gateway/aggregate_2_parts", |b| {
        b.iter(|| rt.block_on(ask("/agg?u=alice")))
    });
    let _ = backend;
}

/// A backend answering every request with a small JSON object.
async fn json_backend() -> std::net::SocketAddr {
    use hyper_util::rt::TokioIo;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let body = r#"{"id": 1, "name": "alice", "items": [1, 2, 3]}"#;
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

criterion_group!(benches, pure, gateway);
criterion_main!(benches);
