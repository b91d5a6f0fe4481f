//! The gateway built from config, over real loopback sockets: routing, forwarding, lb's own
//! answers, request smuggling defences, connection reuse, HTTP/2 both ways.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use support::*;

const ROUTES: &str = r#"
[[route]]
listener = "web"
name = "api"
match = { host = "api.example.com", path_prefix = "/v1" }
pool = "p1"
strip_prefix = true

[[route]]
listener = "web"
name = "any-api-host"
match = { host = "*.example.com", path_prefix = "/v1" }
pool = "p2"

[[route]]
listener = "web"
name = "admin"
match = { path_prefix = "/admin", methods = ["GET"] }
pool = "p2"

[[route]]
listener = "web"
name = "exact"
match = { path = "/admin/exact" }
pool = "p1"

[[route]]
listener = "web"
name = "canary"
match = { path_prefix = "/admin", headers = { "x-canary" = "1" } }
pool = "p1"

[[route]]
listener = "web"
name = "numbers"
match = { path_regex = "^/u/([0-9]+)$" }
rewrite = "/users/$1"
pool = "p1"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_path_method_and_header_most_specific_first() {
    let (web, api, other) = (
        backend("web").await,
        backend("api").await,
        backend("other").await,
    );
    let text = config(
        &[(&[web.addr], ""), (&[api.addr], ""), (&[other.addr], "")],
        "pool = \"p0\"",
        ROUTES,
    );
    let (gw, _) = gateway(&text).await;
    let cases = [
        // Exact host beats the wildcard; the prefix is stripped.
        (
            "api.example.com",
            "/v1/users?id=7",
            "",
            "api GET /users?id=7",
        ),
        ("API.Example.com:8080", "/v1", "", "api GET /"),
        ("eu.example.com", "/v1/users", "", "other GET /v1/users"),
        // The wildcard does not take the bare domain.
        ("example.com", "/v1/users", "", "web GET /v1/users"),
        // Prefixes match on segment boundaries.
        ("h", "/adminx", "", "web GET /adminx"),
        ("h", "/admin/panel", "", "other GET /admin/panel"),
        // An exact path beats a prefix; a header condition beats none.
        ("h", "/admin/exact", "", "api GET /admin/exact"),
        (
            "h",
            "/admin/panel",
            "X-Canary: 1\r\n",
            "api GET /admin/panel",
        ),
        // Regex with a rewrite naming its group.
        ("h", "/u/42", "", "api GET /users/42"),
        ("h", "/u/4x", "", "web GET /u/4x"),
        // Normalised before routing: a dot-dot spelling still meets the admin route.
        ("h", "/static/../admin/panel", "", "other GET /admin/panel"),
        ("h", "/%61dmin//panel", "", "other GET /admin/panel"),
    ];
    for (host, path, headers, want) in cases {
        let (status, body) = fetch(gw, host, path, headers).await;
        assert_eq!(status, 200, "{host}{path}: {body}");
        assert!(
            body.starts_with(want),
            "{host}{path} {headers:?}: got {body:?}, want {want:?}"
        );
    }
    // The method condition: POST /admin falls through to the default pool.
    let (_, _, body) = raw(
        gw,
        "POST /admin/panel HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(body.starts_with("web POST /admin/panel"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_and_no_backend_get_json_answers() {
    let b = backend("b").await;
    let dead = dead_addr().await;
    let routes = "[[route]]\nlistener = \"web\"\nmatch = { path_prefix = \"/ok\" }\npool = \"p0\"\n\
                  [[route]]\nlistener = \"web\"\nmatch = { path_prefix = \"/dead\" }\npool = \"p1\"\n";
    let (gw, pools) = gateway(&config(&[(&[b.addr], ""), (&[dead], "")], "", routes)).await;
    let (s, body) = fetch(gw, "h", "/elsewhere", "").await;
    assert_eq!(s, 404);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (v["status"].as_u64(), v["error"].is_string()),
        (Some(404), true)
    );
    let (s, body) = fetch(gw, "h", "/dead", "").await;
    assert_eq!(s, 502, "{body}");
    assert!(body.contains("\"status\":502"), "{body}");
    // Disabled by the admin: no backend left.
    let p1 = pools.pools[1].as_ref().expect("p1 used");
    p1.pool.backends[0].set_admin_state(lb_core::backend::AdminState::Disabled);
    let (s, body) = fetch(gw, "h", "/dead", "").await;
    assert_eq!(s, 503, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_backend_is_504_after_the_route_timeout() {
    let b = backend("b").await;
    let routes = "[[route]]\nlistener = \"web\"\nmatch = { path = \"/slow\" }\npool = \"p0\"\ntimeout = \"300ms\"\n";
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "", routes)).await;
    let started = std::time::Instant::now();
    let (s, body) = fetch(gw, "h", "/slow", "").await;
    assert_eq!(s, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_reuses_one_upstream_connection() {
    let b = backend("b").await;
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "pool = \"p0\"", "")).await;
    let client = client();
    for i in 0..20 {
        let resp = client
            .get(format!("http://{gw}/n/{i}").parse().expect("uri"))
            .await
            .expect("response");
        let text = body_text(resp).await;
        assert!(text.starts_with(&format!("b GET /n/{i}")), "{text}");
    }
    assert_eq!(b.requests(), 20);
    assert_eq!(b.connections(), 1, "upstream connection not reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_probes_are_refused_and_never_forwarded() {
    let b = backend("b").await;
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "pool = \"p0\"", "")).await;
    let probes = [
        // Duplicate, conflicting Content-Length.
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /%2e%2e%00 HTTP/1.1\r\nHost: h\r\n\r\n",
        // Space before the colon, obs-fold, bare LF inside a header: the parser refuses them.
        "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n  folded\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
        // Transfer-Encoding that is not chunked last.
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    ];
    for p in probes {
        let (status, _, _) = raw(gw, p).await;
        assert_eq!(status, 400, "{p:?}");
    }
    assert_eq!(b.requests(), 0, "a probe reached the backend");
}

/// Content-Length with Transfer-Encoding, in either order and on a reused connection: 400
/// and never forwarded (RFC 9112 §6.1's strict option), even though the parser alone would
/// have framed it by chunked.
#[tokio::test(flavor = "multi_thread")]
async fn length_with_chunked_is_refused_in_either_order() {
    let b = backend("b").await;
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "pool = \"p0\"", "")).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    for fields in [
        "Content-Length: 40\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 40",
        "transfer-encoding: chunked\r\ncontent-length: 0",
    ] {
        let probe =
            format!("POST /first HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n0\r\n\r\n{smuggled}");
        let (status, _, body) = raw(gw, &probe).await;
        assert_eq!(status, 400, "{fields:?}: {body}");
        // Behind a good request on the same connection too.
        let (status, _, body) =
            raw(gw, &format!("GET /ok HTTP/1.1\r\nHost: h\r\n\r\n{probe}")).await;
        assert!(body.starts_with("b GET /ok"), "{body}");
        assert!(
            body.contains("\"status\":400"),
            "{fields:?} second on the connection: {status} {body}"
        );
    }
    assert_eq!(
        b.requests(),
        3,
        "only the good requests reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_replace_client_claims_unless_trusted() {
    let b = backend("b").await;
    let claim = "X-Forwarded-For: 10.6.6.6\r\n";
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "pool = \"p0\"\nvia = true", "")).await;
    let (_, head, body) = raw(
        gw,
        &format!("GET / HTTP/1.1\r\nHost: h\r\n{claim}Connection: close\r\n\r\n"),
    )
    .await;
    assert!(body.contains("xff=127.0.0.1 "), "{body}");
    assert!(head.to_ascii_lowercase().contains("via: 1.1 lb"), "{head}");
    let trusting = "pool = \"p0\"\nforwarded_headers = \"append\"";
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], trusting, "")).await;
    let (_, body) = fetch(gw, "h", "/", claim).await;
    assert!(body.contains("xff=10.6.6.6, 127.0.0.1 "), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_reach_http1_backends() {
    let b = backend("b").await;
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "pool = \"p0\"", "")).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{gw}/h2/path").parse().expect("uri"))
        .await
        .expect("response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let text = body_text(resp).await;
    assert!(
        text.starts_with(&format!(
            "b GET /h2/path xff=127.0.0.1 host={gw} version=HTTP/1.1"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_end_to_end_multiplexes_on_one_backend_connection_and_keeps_trailers() {
    let b = backend("b").await;
    let (gw, _) = gateway(&config(&[(&[b.addr], "http2 = true")], "pool = \"p0\"", "")).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let resp = c
                .get(format!("http://{gw}/n/{i}").parse().expect("uri"))
                .await
                .expect("response");
            body_text(resp).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let text = t.await.expect("task");
        assert!(
            text.starts_with(&format!("b GET http://{gw}/n/{i} ")),
            "{text}"
        );
        assert!(text.ends_with("version=HTTP/2.0"), "{text}");
    }
    assert_eq!(
        b.connections(),
        1,
        "h2 to the backend is one multiplexed connection"
    );
    // Trailers (what gRPC's status rides on) cross lb.
    let resp = client
        .get(format!("http://{gw}/trailers").parse().expect("uri"))
        .await
        .expect("response");
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_stream_to_the_backend_in_both_framings() {
    let b = backend("b").await;
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "pool = \"p0\"", "")).await;
    let client = client();
    let payload = Bytes::from(vec![7u8; 3 << 20]);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{gw}/count"))
        .body(Full::new(payload))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    assert_eq!(body_text(resp).await, (3u64 << 20).to_string());
    // Chunked, with a trailer the backend reads past.
    let (status, _, body) = raw(
        gw,
        "POST /count HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "11"));
    // HEAD: no body comes back, whatever the backend's length says.
    let (status, head, body) = raw(
        gw,
        "HEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty(), "{body:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_before_the_body() {
    let b = backend("b").await;
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "pool = \"p0\"", "")).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw).await.expect("connect");
    s.write_all(b"POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("100 in time")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"abcd").await.expect("body");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.expect("read");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.ends_with("\r\n\r\n4"), "{text}");
}
