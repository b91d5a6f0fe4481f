//! `grpc_transcode` end to end: JSON/HTTP clients in front of lb, a tonic gRPC service behind
//! it built from `tests/fixtures/transcode/bookstore.proto` (compiled by protox in the test),
//! and a hostile HTTP/2 backend whose answers are not the gRPC they claim to be.

mod support;
mod transcode_peers;

use std::net::SocketAddr;

use support::*;
use transcode_peers::*;

/// One request with an optional JSON body: status and body.
async fn call(gw: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let req = match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"),
    };
    let (status, _, body) = raw(gw, &req).await;
    (status, body)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn json_requests_become_grpc_calls_and_statuses_map_back() {
    let (backend, seen) = bookstore().await;
    let file = descriptor_file("calls");
    let (gw, _) = gateway(&config(
        &[(&[backend], "http2 = true")],
        "",
        &route(&file, "\"bookstore.v1.Bookstore\""),
    ))
    .await;

    // GET with path variables.
    let (st, body) = call(gw, "GET", "/v1/shelves/1/books/1", None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        json(&body),
        json(r#"{"name":"shelves/1/books/1","title":"Dune","pages":"412"}"#)
    );
    {
        let seen = seen.lock().expect("seen");
        let (method, req, timeout) = &seen[0];
        assert_eq!(
            (method.as_str(), req.as_str()),
            ("GetBook", r#"{"name":"shelves/1/books/1"}"#)
        );
        assert_eq!(
            timeout.as_deref(),
            Some("5000m"),
            "the route's timeout is the call's deadline"
        );
    }

    // POST with a body field, the path variable converted to int64.
    let (st, body) = call(
        gw,
        "POST",
        "/v1/shelves/7/books",
        Some(r#"{"title":"Solaris","genre":"FICTION","tags":["a","b"]}"#),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        json(&body),
        json(
            r#"{"name":"shelves/7/books/new","title":"Solaris","genre":"FICTION","tags":["a","b"]}"#
        )
    );

    // body "*" with a path variable; the verb form with response_body.
    let (st, body) = call(
        gw,
        "PATCH",
        "/v1/shelves/2/books/3",
        Some(r#"{"title":"New title","pages":12}"#),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        json(&body),
        json(r#"{"name":"shelves/2/books/3","title":"New title","pages":"12"}"#)
    );
    let (st, body) = call(gw, "POST", "/v1/shelves/2/books/3:archive", None).await;
    assert_eq!((st, body.as_str()), (200, "\"Archived\""));
    // The standard Update shape: `{book.name=...}` fills a field of the `book` body.
    let (st, body) = call(
        gw,
        "PATCH",
        "/v1/shelves/2/books/3:rename",
        Some(r#"{"title":"T"}"#),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        json(&body),
        json(r#"{"name":"shelves/2/books/3","title":"T"}"#)
    );

    // Query parameters: nested, repeated, enum names and numbers, bool, bytes.
    let (st, body) = call(gw, "GET", "/v1/shelves/4/books?page.size=20&page.token=t%20x&genres=FICTION&genres=2&archived=true&cursor=AAE%3D", None).await;
    assert_eq!(st, 200, "{body}");
    let got = json(&body);
    assert_eq!(got["books"][0]["name"], "shelves/4/books/1");
    assert_eq!(
        json(got["next"].as_str().expect("next")),
        json(
            r#"{"shelf":"4","page":{"size":20,"token":"t x"},"genres":["FICTION","SCIENCE"],"archived":true,"cursor":"AAE="}"#
        )
    );
    let (st, _) = call(gw, "GET", "/v1/books", None).await;
    assert_eq!(st, 200, "the additional binding");

    // Error statuses: the standard mapping, with google.rpc.Status as JSON.
    let (st, body) = call(gw, "GET", "/v1/shelves/1/books/9", None).await;
    assert_eq!(st, 404);
    assert_eq!(
        json(&body),
        json(r#"{"code":5,"message":"no book \"shelves/1/books/9\" here","details":[]}"#)
    );
    let (st, body) = call(gw, "GET", "/v1/shelves/1/books/bad", None).await;
    assert_eq!((st, json(&body)["code"].as_u64()), (400, Some(3)));
    let want = [
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
    ];
    for (code, status) in want {
        let (st, body) = call(gw, "DELETE", &format!("/v1/shelves/1/books/{code}"), None).await;
        assert_eq!(st, status, "code {code}: {body}");
        let got = json(&body);
        assert_eq!(got["code"], code);
        assert_eq!(
            got["message"],
            format!("code {code}: ünïcode"),
            "grpc-message is percent-decoded"
        );
    }
    let (st, body) = call(gw, "DELETE", "/v1/shelves/1/books/0", None).await;
    assert_eq!((st, body.as_str()), (200, "{}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_never_reach_the_backend() {
    let (backend, seen) = bookstore().await;
    let file = descriptor_file("hostile");
    let (gw, _) = gateway(&config(
        &[(&[backend], "http2 = true")],
        "",
        &(route(&file, "\"bookstore.v1.Bookstore\"") + "max_body_size = 1024\n"),
    ))
    .await;
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/v1/shelves/1/books",
            Some("{\"title\":"),
            400,
            "not JSON",
        ),
        (
            "POST",
            "/v1/shelves/1/books",
            Some(r#"{"title":"x","bogus":1}"#),
            400,
            "bogus",
        ),
        (
            "POST",
            "/v1/shelves/1/books",
            Some(r#"{"pages":"lots"}"#),
            400,
            "does not fit",
        ),
        (
            "PATCH",
            "/v1/shelves/1/books/2",
            Some(r#"{"name":"shelves/9/books/9"}"#),
            400,
            "set by the path",
        ),
        ("GET", "/v1/shelves/x/books", None, 400, "64-bit integer"),
        (
            "GET",
            "/v1/shelves/1/books?shelf=2",
            None,
            400,
            "path binds",
        ),
        (
            "GET",
            "/v1/shelves/1/books?nope=1",
            None,
            400,
            "unknown query parameter",
        ),
        (
            "GET",
            "/v1/shelves/1/books?archived=1",
            None,
            400,
            "true or false",
        ),
        (
            "GET",
            "/v1/shelves/1/books/1",
            Some("{}"),
            400,
            "no request body",
        ),
        ("GET", "/v1/nowhere", None, 404, "no gRPC method"),
        ("PUT", "/v1/shelves/1/books/1", None, 405, "no gRPC method"),
        // `%2F` is refused before routing (the listener's escaped_slashes default), and `..`
        // is resolved: neither can make `{name=shelves/*/books/*}` reach another shape.
        ("GET", "/v1/shelves/1%2Fbooks%2F1/books/1", None, 400, ""),
        (
            "GET",
            "/v1/shelves/1/books/%2E%2E",
            None,
            404,
            "no gRPC method",
        ),
        ("GET", "/v1/shelves/9/x/../books", None, 200, ""),
    ];
    for (method, path, body, status, says) in cases {
        let (st, got) = call(gw, method, path, *body).await;
        assert_eq!(st, *status, "{method} {path}: {got}");
        assert!(got.contains(says), "{method} {path}: {got}");
    }
    let (st, _) = call(
        gw,
        "POST",
        "/v1/shelves/1/books",
        Some(&format!("{{\"title\":\"{}\"}}", "x".repeat(2000))),
    )
    .await;
    assert_eq!(st, 413);
    let deep = format!("{}{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    let (st, _) = call(gw, "POST", "/v1/shelves/1/books", Some(&deep[..1000])).await;
    assert_eq!(st, 400);
    let (st, _, _) = raw(gw, "POST /v1/shelves/1/books HTTP/1.1\r\nHost: api\r\nContent-Type: text/xml\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").await;
    assert_eq!(st, 415);
    // Only the one valid request (the `..` one, resolved to ListBooks) reached the backend.
    let seen = seen.lock().expect("seen");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "ListBooks");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_grpc_answers_are_502() {
    let backend = liar().await;
    let file = descriptor_file("liar");
    let (gw, g) = gateway(&config(
        &[(&[backend], "http2 = true")],
        "",
        &route(&file, "\"bookstore.v1.Bookstore\""),
    ))
    .await;
    for (method, path, body) in [
        ("GET", "/v1/shelves/1/books/1", None),
        ("GET", "/v1/shelves/1/books", None),
        ("POST", "/v1/shelves/1/books", Some("{}")),
        ("PATCH", "/v1/shelves/1/books/1", Some("{}")),
        ("POST", "/v1/shelves/1/books/1:archive", None),
        ("PATCH", "/v1/shelves/1/books/1:rename", Some("{}")),
    ] {
        let (st, got) = call(gw, method, path, body).await;
        assert_eq!(st, 502, "{method} {path}: {got}");
        assert!(got.contains("malformed"), "{got}");
    }
    // A Trailers-Only answer carries its status in the head.
    let (st, got) = call(gw, "DELETE", "/v1/shelves/1/books/1", None).await;
    assert_eq!(
        (st, json(&got)),
        (404, json(r#"{"code":5,"message":"gone","details":[]}"#))
    );
    // Each broken answer is the backend's response error (a gRPC status is not), and none
    // is a connect failure, which alone decides passive health.
    let b = &g.pools[0].as_ref().expect("pool").pool.backends[0];
    assert_eq!(b.errors.load(std::sync::atomic::Ordering::Relaxed), 6);
    assert_eq!(
        b.connect_errors.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn config_load_refuses_streaming_methods_and_http1_pools() {
    let file = descriptor_file("config");
    let load = |pool: &str, services: &str, extra: &str| {
        let text = config(
            &[(&["127.0.0.1:1".parse().expect("addr")], pool)],
            "",
            &(route(&file, services) + extra),
        );
        lb_l7::gateway::load_str("test.toml", &text)
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(load("http2 = true", "\"bookstore.v1.Bookstore\"", ""), None);
    let e = load("http2 = true", "\"refused.v1.Streaming\"", "").expect("streaming refused");
    assert!(
        e.contains("refused.v1.Streaming.Watch") && e.contains("streaming method"),
        "{e}"
    );
    assert!(e.contains("grpc_transcode.services"), "{e}");
    let e = load("http2 = true", "\"refused.v1.Unannotated\"", "").expect("no option refused");
    assert!(
        e.contains("Unannotated.Plain") && e.contains("google.api.http"),
        "{e}"
    );
    let e = load("http2 = true", "\"bookstore.v1.Nope\"", "").expect("missing service refused");
    assert!(
        e.contains("\"bookstore.v1.Nope\" is not in the descriptor set"),
        "{e}"
    );
    let e = load("", "\"bookstore.v1.Bookstore\"", "").expect("http1 pool refused");
    assert!(
        e.contains("speaks HTTP/1.1") && e.contains("http2 = true"),
        "{e}"
    );
    let e = load(
        "http2 = true",
        "\"bookstore.v1.Bookstore\"",
        "rewrite = \"/x\"\n",
    )
    .expect("rewrite refused");
    assert!(
        e.contains("`rewrite` does nothing on a grpc_transcode route"),
        "{e}"
    );
    let e = load("http2 = true", "", "").expect("no services refused");
    assert!(e.contains("at least one gRPC service"), "{e}");
    let text = config(
        &[(&["127.0.0.1:1".parse().expect("addr")], "http2 = true")],
        "",
        &route("/nonexistent/api.pb", "\"a.B\""),
    );
    let e = lb_l7::gateway::load_str("test.toml", &text)
        .expect_err("missing file")
        .to_string();
    assert!(
        e.contains("/nonexistent/api.pb: cannot read") && e.contains("descriptor_set"),
        "{e}"
    );
    let text = config(
        &[(&["127.0.0.1:1".parse().expect("addr")], "http2 = true")],
        "",
        &route(&file, "\"a.B\"").replace("services", "servics"),
    );
    let e = lb_l7::gateway::load_str("test.toml", &text)
        .expect_err("typo")
        .to_string();
    assert!(e.contains("servics"), "{e}");
}

/// `conf/grpc-transcode.pb`, the example config's descriptor set, is the bookstore fixture
/// compiled: `LB_REGENERATE=1 cargo test -p lb-l7 --test transcode` rewrites it.
#[test]
fn shipped_descriptor_set_is_current() {
    let mut c = protox::Compiler::new([fixtures()]).expect("fixtures");
    c.include_imports(true);
    c.open_files(["bookstore.proto"]).expect("compiles");
    let want = c.encode_file_descriptor_set();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/grpc-transcode.pb");
    if std::env::var_os("LB_REGENERATE").is_some() {
        std::fs::write(&path, &want).expect("write");
    }
    let got = std::fs::read(&path).expect("conf/grpc-transcode.pb exists");
    assert!(
        got == want,
        "conf/grpc-transcode.pb is stale: run LB_REGENERATE=1 cargo test -p lb-l7 --test transcode"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transcoding_routes_never_take_the_lean_path() {
    // A plain HTTP/1.1 default pool turns the listener's lean path on.
    let (backend, seen) = bookstore().await;
    let plain = support::backend("plain").await;
    let file = descriptor_file("lean");
    let (gw, g) = gateway(&config(
        &[(&[plain.addr], ""), (&[backend], "http2 = true")],
        "pool = \"p0\"",
        &route(&file, "\"bookstore.v1.Bookstore\"").replace("pool = \"p0\"", "pool = \"p1\""),
    ))
    .await;
    assert!(
        g.lean || lb_l7::gateway::general_path_only(),
        "the listener has a lean path"
    );
    assert!(g.routes.iter().all(|r| r.transcode.is_none() || !r.lean));
    let (st, body) = call(gw, "GET", "/v1/shelves/1/books/1", None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["title"], "Dune");
    let (st, body) = call(gw, "GET", "/other", None).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.starts_with("plain GET /other"), "{body}");
    assert_eq!(seen.lock().expect("seen").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_run_first_and_failover_reaches_a_live_backend() {
    let (backend, seen) = bookstore().await;
    let dead = dead_addr().await;
    let file = descriptor_file("policies");
    let books = route(&file, "\"bookstore.v1.Bookstore\"");
    // A refusing policy answers before any call.
    let office = "policies = [\"office\"]\n[policy.office]\nkind = \"ip_filter\"\nallow = [\"10.0.0.0/8\"]\n";
    let (gw, _) = gateway(&config(
        &[(&[backend], "http2 = true")],
        "",
        &(books.clone() + office),
    ))
    .await;
    let (st, _) = call(gw, "GET", "/v1/shelves/1/books/1", None).await;
    assert_eq!(st, 403);
    assert!(seen.lock().expect("seen").is_empty());
    // A response policy stamps the transcoded answer; a dead backend is skipped.
    let stamp = "policies = [\"stamp\"]\n[policy.stamp]\nkind = \"headers\"\nresponse = { set = { \"x-served-by\" = \"lb/${route}\" } }\n";
    let (gw, _) = gateway(&config(
        &[(&[dead, backend], "http2 = true")],
        "",
        &(books + stamp),
    ))
    .await;
    for _ in 0..2 {
        let (st, head, body) = raw(gw, &get("api", "/v1/shelves/1/books/1")).await;
        assert_eq!(st, 200, "{body}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("x-served-by: lb/books"), "{head}");
        assert!(head.contains("application/json"), "{head}");
    }
    assert_eq!(seen.lock().expect("seen").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_are_transcoded_too() {
    let (backend, _) = bookstore().await;
    let file = descriptor_file("h2");
    let (gw, _) = gateway(&config(
        &[(&[backend], "http2 = true")],
        "",
        &route(&file, "\"bookstore.v1.Bookstore\""),
    ))
    .await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(format!("http://{gw}/v1/shelves/5/books"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"title":"Over h2"}"#,
        )))
        .expect("request");
    let resp = client.request(req).await.expect("answer");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = body_text(resp).await;
    assert_eq!(
        json(&body),
        json(r#"{"name":"shelves/5/books/new","title":"Over h2"}"#)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_grpc_answer_takes_grpcs_own_code() {
    let file = descriptor_file("not-grpc");
    for (status, want, code) in [(503, 503, 14), (404, 501, 12), (418, 500, 2)] {
        let backend = not_grpc(status).await;
        let (gw, _) = gateway(&config(
            &[(&[backend], "http2 = true")],
            "",
            &route(&file, "\"bookstore.v1.Bookstore\""),
        ))
        .await;
        // A POST is not resent, so the 503 is the client's answer.
        let (st, body) = call(gw, "POST", "/v1/shelves/1/books", Some("{}")).await;
        assert_eq!(st, want, "{status}: {body}");
        assert_eq!(json(&body)["code"], code, "{body}");
    }
}
