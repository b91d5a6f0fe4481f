//! Aggregate routes (SPEC §6 `aggregate`) over loopback: parts sent at once (proved by
//! backends that answer only once every part has arrived), a failing optional part in its
//! place, a failing required part (502), each part's own timeout, claims that try to leave
//! their place in the path, bounded part bodies, and what a part's GET carries.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::Barrier;

const SECRET_ENV: &str = "LB_TEST_AGGREGATE_SECRET";
const SECRET: &str = "aggregate-test-secret-long-enough";

/// A JSON backend: answers `{"backend", "path", "query", "headers"}`, and on special paths
/// `/status/N` answers N, `/gate` waits on `gate` first (every part must arrive before any
/// answers), `/sleep/MS` waits MS ms, `/hold` never answers, `/big` answers 2 MiB of JSON,
/// `/text` answers plain text, `/empty` answers 204.
async fn json_backend(name: &'static str, gate: Option<Arc<Barrier>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let gate = gate.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let gate = gate.clone();
                    async move { Ok::<_, Infallible>(reply(name, gate, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(s), svc)
                .await;
            });
        }
    });
    addr
}

async fn reply(
    name: &str,
    gate: Option<Arc<Barrier>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let respond = |status: u16, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        r
    };
    if path == "/gate" {
        if let Some(g) = gate {
            g.wait().await;
        }
    } else if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    } else if path == "/hold" {
        std::future::pending::<()>().await;
    } else if let Some(n) = path.strip_prefix("/status/") {
        return respond(n.parse().unwrap_or(500), "{\"oops\": true}".into());
    } else if path == "/big" {
        return respond(200, format!("[\"{}\"]", "x".repeat(2 << 20)));
    } else if path == "/text" {
        return respond(200, "<html>not json</html>".into());
    } else if path == "/empty" {
        return respond(204, String::new());
    }
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
        .collect();
    let body = json!({
        "backend": name,
        "version": format!("{:?}", req.version()),
        "path": path,
        "query": req.uri().query(),
        "headers": headers,
    });
    respond(200, body.to_string())
}

/// A gateway whose route `agg` (at `/agg`, jwt-checked) has `parts`, with the backends'
/// addresses as pools `p0`, `p1`…; also a plain route at `/plain` to `p0`.
async fn gateway_with(addrs: &[SocketAddr], route_extra: &str, parts: &str) -> SocketAddr {
    std::env::set_var(SECRET_ENV, SECRET);
    let pools: Vec<[SocketAddr; 1]> = addrs.iter().map(|a| [*a]).collect();
    let pools: Vec<(&[SocketAddr], &str)> = pools.iter().map(|p| (&p[..], "")).collect();
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"agg\"\nmatch = {{ path = \"/agg\" }}\n\
         policies = [\"auth\"]\n{route_extra}\naggregate = [{parts}]\n\
         [[route]]\nlistener = \"web\"\nname = \"plain\"\nmatch = {{ path_prefix = \"/plain\" }}\npool = \"p0\"\n\
         [policy.auth]\nkind = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"{SECRET_ENV}\"\n"
    );
    gateway(&config(&pools, "", &routes)).await.0
}

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 600;
    let claims = json!({ "sub": sub, "exp": exp, "tenant": 7 });
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).expect("sign")
}

/// `GET /agg` as `sub`: status, head and the body as JSON (`Null` if it is none).
async fn ask(gw: SocketAddr, sub: &str, extra: &str) -> (u16, String, Value) {
    let req = format!(
        "GET /agg?page=2 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {}\r\n{extra}Connection: close\r\n\r\n",
        token(sub)
    );
    let (status, head, body) = raw(gw, &req).await;
    (
        status,
        head,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn parts_are_sent_at_once() {
    // Each backend answers only once all three parts have arrived: parts sent one after
    // another would never be answered (and `raw` fails after 10 s).
    let gate = Arc::new(Barrier::new(3));
    let a = json_backend("a", Some(gate.clone())).await;
    let b = json_backend("b", Some(gate.clone())).await;
    let gw = gateway_with(
        &[a, b],
        "timeout = \"30s\"",
        "{ name = \"one\", pool = \"p0\", path = \"/gate\" }, \
         { name = \"two\", pool = \"p1\", path = \"/gate\" }, \
         { name = \"three\", pool = \"p1\", path = \"/gate\" }",
    )
    .await;
    let (status, head, v) = ask(gw, "alice", "").await;
    assert_eq!(status, 200, "{head}\n{v}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert_eq!(v["one"]["backend"], "a");
    assert_eq!(v["two"]["backend"], "b");
    assert_eq!(v["three"]["backend"], "b");
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["one", "two", "three"], "config order");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_answer_takes_as_long_as_the_slowest_part() {
    let a = json_backend("a", None).await;
    let gw = gateway_with(
        &[a],
        "",
        "{ name = \"x\", pool = \"p0\", path = \"/sleep/700\" }, \
         { name = \"y\", pool = \"p0\", path = \"/sleep/700\" }, \
         { name = \"z\", pool = \"p0\", path = \"/sleep/700\" }",
    )
    .await;
    let start = Instant::now();
    let (status, _, v) = ask(gw, "alice", "").await;
    let took = start.elapsed();
    assert_eq!(status, 200, "{v}");
    // The sum would be 2.1 s; the slowest alone is 0.7 s. Generous for a loaded machine.
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(
        took < Duration::from_millis(1800),
        "parts ran one after another: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_optional_part_stands_in_its_place() {
    let a = json_backend("a", None).await;
    let gw = gateway_with(
        &[a],
        "",
        "{ name = \"user\", pool = \"p0\", path = \"/users/${jwt.sub}\", required = true }, \
         { name = \"orders\", pool = \"p0\", path = \"/status/500\" }, \
         { name = \"page\", pool = \"p0\", path = \"/text\" }, \
         { name = \"none\", pool = \"p0\", path = \"/empty\" }",
    )
    .await;
    let (status, _, v) = ask(gw, "alice", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user"]["path"], "/users/alice");
    assert_eq!(
        v["orders"],
        json!({ "error": "the backend answered 500", "status": 500 })
    );
    assert_eq!(
        v["page"],
        json!({ "error": "the backend's answer is not JSON", "status": 502 })
    );
    assert_eq!(v["none"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_required_part_fails_the_answer() {
    let a = json_backend("a", None).await;
    let dead = dead_addr().await;
    let gw = gateway_with(
        &[a, dead],
        "",
        "{ name = \"user\", pool = \"p0\", path = \"/users/${jwt.sub}\" }, \
         { name = \"orders\", pool = \"p1\", path = \"/orders\", required = true }",
    )
    .await;
    let (status, _, v) = ask(gw, "alice", "").await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["status"], 502);
    let error = v["error"].as_str().expect("error");
    assert!(
        error.starts_with("required part \"orders\" failed"),
        "{error}"
    );
    assert!(!error.contains("127.0.0.1"), "names no backend: {error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_part_has_its_own_timeout() {
    let a = json_backend("a", None).await;
    let gw = gateway_with(
        &[a],
        "timeout = \"30s\"",
        "{ name = \"fast\", pool = \"p0\", path = \"/x\" }, \
         { name = \"stuck\", pool = \"p0\", path = \"/hold\", timeout = \"300ms\" }",
    )
    .await;
    let start = Instant::now();
    let (status, _, v) = ask(gw, "alice", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["fast"]["path"], "/x");
    assert_eq!(v["stuck"]["status"], 504, "{v}");
    // The route's 30 s never came into it.
    assert!(start.elapsed() < Duration::from_secs(10));
    // Required, the same timeout fails the whole answer.
    let gw = gateway_with(
        &[a],
        "timeout = \"30s\"",
        "{ name = \"stuck\", pool = \"p0\", path = \"/hold\", timeout = \"300ms\", required = true }",
    )
    .await;
    let (status, _, v) = ask(gw, "alice", "").await;
    assert_eq!(status, 502, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_cannot_leave_their_place_in_the_path() {
    let a = json_backend("a", None).await;
    let gw = gateway_with(
        &[a],
        "",
        "{ name = \"user\", pool = \"p0\", path = \"/users/${jwt.sub}\", required = true }, \
         { name = \"orders\", pool = \"p0\", path = \"/orders?user=${jwt.sub}&t=${jwt.tenant}&page=${query.page}\" }",
    )
    .await;
    let (status, _, v) = ask(gw, "../admin?role=root#x", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user"]["path"], "/users/..%2Fadmin%3Frole%3Droot%23x");
    assert_eq!(v["user"]["query"], Value::Null);
    assert_eq!(
        v["orders"]["query"],
        "user=..%2Fadmin%3Frole%3Droot%23x&t=7&page=2"
    );
    let (status, _, v) = ask(gw, "a&user=bob", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["orders"]["query"], "user=a%26user%3Dbob&t=7&page=2");
    // A subject that would be a dot segment fills no path: the client's doing, 400.
    let (status, _, v) = ask(gw, "..", "").await;
    assert_eq!(status, 400, "{v}");
    // No token: the route's policy refuses once, before any part is sent.
    let (status, _, _) = raw(gw, &get("api.test", "/agg")).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn part_bodies_are_bounded() {
    let a = json_backend("a", None).await;
    let gw = gateway_with(
        &[a],
        "",
        "{ name = \"big\", pool = \"p0\", path = \"/big\" }, \
         { name = \"ok\", pool = \"p0\", path = \"/ok\" }",
    )
    .await;
    let (status, _, v) = ask(gw, "alice", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["big"]["status"], 502);
    assert!(
        v["big"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("over")),
        "{v}"
    );
    assert_eq!(v["ok"]["path"], "/ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn parts_carry_the_requests_identity_and_ask_for_plain_json() {
    let a = json_backend("a", None).await;
    let gw = gateway_with(&[a], "", "{ name = \"me\", pool = \"p0\", path = \"/me\" }").await;
    let extra = "X-Request-Id: req-42\r\nRange: bytes=0-1\r\nIf-None-Match: \"x\"\r\nAccept-Encoding: gzip\r\n";
    let (status, head, v) = ask(gw, "alice", extra).await;
    assert_eq!(status, 200, "{v}");
    let h = &v["me"]["headers"];
    assert_eq!(h["x-request-id"], "req-42");
    assert!(head.contains("req-42"), "the answer's id: {head}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["host"], "api.test");
    assert_eq!(h["accept-encoding"], "identity");
    assert_eq!(h["accept"], "application/json");
    assert!(
        h.get("range").is_none() && h.get("if-none-match").is_none(),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_get_and_head_without_a_body() {
    let a = json_backend("a", None).await;
    let gw = gateway_with(&[a], "", "{ name = \"me\", pool = \"p0\", path = \"/me\" }").await;
    let auth = format!("Authorization: Bearer {}\r\n", token("alice"));
    let (status, head, _) = raw(
        gw,
        &format!("POST /agg HTTP/1.1\r\nHost: h\r\n{auth}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
    )
    .await;
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
    let (status, head, body) = raw(
        gw,
        &format!("HEAD /agg HTTP/1.1\r\nHost: h\r\n{auth}Connection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty(), "{body}");
    let (status, _, _) = raw(
        gw,
        &format!("GET /agg HTTP/1.1\r\nHost: h\r\n{auth}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
    )
    .await;
    assert_eq!(status, 413);
    // The plain route beside it still answers (on the lean path unless forced general).
    let (status, _, _) = raw(gw, &get("h", "/plain")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_fails_over_like_any_request() {
    let a = json_backend("a", None).await;
    let dead = dead_addr().await;
    std::env::set_var(SECRET_ENV, SECRET);
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"agg\"\nmatch = {{ path = \"/agg\" }}\npolicies = [\"auth\"]\n\
         aggregate = [{{ name = \"me\", pool = \"p0\", path = \"/me\", required = true }}]\n\
         [policy.auth]\nkind = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"{SECRET_ENV}\"\n"
    );
    let (gw, _) = gateway(&config(&[(&[dead, a], "")], "", &routes)).await;
    for _ in 0..4 {
        let (status, _, v) = ask(gw, "alice", "").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["me"]["backend"], "a");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parts_reach_http2_pools() {
    let a = json_backend("a", None).await;
    std::env::set_var(SECRET_ENV, SECRET);
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"agg\"\nmatch = {{ path = \"/agg\" }}\npolicies = [\"auth\"]\n\
         aggregate = [{{ name = \"h2\", pool = \"p0\", path = \"/v2/${{jwt.sub}}?page=${{query.page}}\" }}, \
         {{ name = \"h1\", pool = \"p1\", path = \"/v1\" }}]\n\
         [policy.auth]\nkind = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"{SECRET_ENV}\"\n"
    );
    let (gw, _) = gateway(&config(&[(&[a], "http2 = true"), (&[a], "")], "", &routes)).await;
    let (status, _, v) = ask(gw, "al ice", "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["h2"]["version"], "HTTP/2.0", "{v}");
    assert_eq!(v["h2"]["path"], "/v2/al%20ice");
    assert_eq!(v["h2"]["query"], "page=2");
    assert_eq!(v["h1"]["version"], "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cors_preflight_is_answered_by_the_routes_policy() {
    // A browser sends `Authorization` (which the route's jwt reads) only after a preflight.
    let a = json_backend("a", None).await;
    std::env::set_var(SECRET_ENV, SECRET);
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"agg\"\nmatch = {{ path = \"/agg\" }}\npolicies = [\"browser\", \"auth\"]\n\
         aggregate = [{{ name = \"me\", pool = \"p0\", path = \"/me\" }}]\n\
         [policy.browser]\nkind = \"cors\"\nallow_origins = [\"https://app.example\"]\nallow_methods = [\"GET\"]\nallow_headers = [\"authorization\"]\n\
         [policy.auth]\nkind = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"{SECRET_ENV}\"\n"
    );
    let (gw, _) = gateway(&config(&[(&[a], "")], "", &routes)).await;
    let preflight = "OPTIONS /agg HTTP/1.1\r\nHost: h\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n";
    let (s, head, body) = raw(gw, preflight).await;
    assert_eq!(s, 204, "{head}{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    let (s, head, v) = ask(gw, "alice", "Origin: https://app.example\r\n").await;
    assert_eq!(s, 200, "{v}");
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    // Any other OPTIONS, and other methods, are still not the route's to answer.
    let plain = "OPTIONS /agg HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(gw, plain).await.0, 405);
    let put = "PUT /agg HTTP/1.1\r\nHost: h\r\nOrigin: https://app.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(gw, put).await.0, 405);
}
