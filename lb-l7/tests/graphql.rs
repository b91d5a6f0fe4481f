//! GraphQL-aware routes through the gateway, against a backend that records what it got:
//! limits at and past their boundary, introspection, routing by operation, rate limits per
//! operation, malformed documents answered with a GraphQL error and never forwarded, and
//! WebSocket subscriptions passed through.

#[path = "support/graphql_peer.rs"]
mod graphql_peer;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use graphql_peer::*;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const LIMITS: &str = "graphql = { max_depth = 3, max_aliases = 2, max_complexity = 6 }";

/// Reads on `/graphql` go to `reads`, mutations to `writes`; no default pool.
async fn split(reads: &Peer, writes: &Peer, extra: &str) -> SocketAddr {
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"writes\"\nmatch = {{ path = \"/graphql\", graphql_operation = \"mutation\" }}\n{LIMITS}\npool = \"p1\"\n\n\
         [[route]]\nlistener = \"web\"\nname = \"reads\"\nmatch = {{ path = \"/graphql\" }}\n{LIMITS}\npool = \"p0\"\n{extra}"
    );
    let text = config(&[(&[reads.addr], ""), (&[writes.addr], "")], "", &routes);
    let (addr, gw) = gateway(&text).await;
    assert!(
        !gw.lean,
        "a listener with graphql routes never takes the lean path"
    );
    addr
}

/// `(status, GraphQL error code or "")` of a raw request.
async fn ask(gw: SocketAddr, req: &str) -> (u16, String) {
    let (s, head, body) = raw(gw, req).await;
    if s == 200 {
        return (s, String::new());
    }
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (s, code(&body))
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_pass_at_the_boundary_and_refuse_past_it() {
    let (reads, writes) = (peer("reads").await, peer("writes").await);
    let gw = split(&reads, &writes, "").await;
    let ok = [
        "{a{b{c}}}",
        "{x:a y:a}",
        "{a b c d e f}",
        "{...F ...F} fragment F on Q {a b c}",
    ];
    for doc in ok {
        assert_eq!(
            ask(gw, &post_query("/graphql", doc)).await,
            (200, String::new()),
            "{doc}"
        );
        assert_eq!(
            ask(gw, &get_query("/graphql", doc)).await,
            (200, String::new()),
            "GET {doc}"
        );
    }
    let past = [
        ("{a{b{c{d}}}}", "MAX_DEPTH_EXCEEDED"),
        ("{a{...F}} fragment F on Q {b{c{d}}}", "MAX_DEPTH_EXCEEDED"),
        ("{x:a y:a z:a}", "MAX_ALIASES_EXCEEDED"),
        ("{a b c d e f g}", "MAX_COMPLEXITY_EXCEEDED"),
        (
            "{...F ...F z} fragment F on Q {a b c}",
            "MAX_COMPLEXITY_EXCEEDED",
        ),
        ("mutation {a{b{c{d}}}}", "MAX_DEPTH_EXCEEDED"),
    ];
    for (doc, want) in past {
        assert_eq!(
            ask(gw, &post_query("/graphql", doc)).await,
            (400, want.to_string()),
            "{doc}"
        );
        assert_eq!(
            ask(gw, &get_query("/graphql", doc)).await,
            (400, want.to_string()),
            "GET {doc}"
        );
    }
    assert_eq!(
        reads.count(),
        ok.len() * 2,
        "every passing read arrived once"
    );
    assert_eq!(writes.count(), 0, "the refused mutation never arrived");
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_is_refused_when_off_and_passes_when_on() {
    let (reads, writes) = (peer("reads").await, peer("writes").await);
    let gw = split(&reads, &writes, "").await;
    for doc in [
        "{__schema{types{name}}}",
        "{__type(name:\"Q\"){name}}",
        "{...I} fragment I on Q {__schema{x}}",
    ] {
        assert_eq!(
            ask(gw, &post_query("/graphql", doc)).await,
            (400, "INTROSPECTION_DISABLED".into()),
            "{doc}"
        );
    }
    assert_eq!(
        ask(gw, &post_query("/graphql", "{__typename}")).await.0,
        200
    );
    assert_eq!(reads.count(), 1);
    let routes = "[[route]]\nlistener = \"web\"\nmatch = { path = \"/graphql\" }\ngraphql = { introspection = true }\npool = \"p0\"\n";
    let (open, _) = gateway(&config(&[(&[reads.addr], "")], "", routes)).await;
    assert_eq!(
        ask(open, &post_query("/graphql", "{__schema{types{name}}}"))
            .await
            .0,
        200
    );
    assert_eq!(reads.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn operations_route_by_type_and_name_and_bodies_arrive_unchanged() {
    let (reads, writes) = (peer("reads").await, peer("writes").await);
    let named = peer("named").await;
    let extra = "\n[[route]]\nlistener = \"web\"\nname = \"audit\"\nmatch = { path = \"/graphql\", graphql_operation = \"Audit\" }\ngraphql = {}\npool = \"p2\"\n";
    let routes_text = format!(
        "[[route]]\nlistener = \"web\"\nname = \"writes\"\nmatch = {{ path = \"/graphql\", graphql_operation = \"mutation\" }}\n{LIMITS}\npool = \"p1\"\n\n\
         [[route]]\nlistener = \"web\"\nname = \"reads\"\nmatch = {{ path = \"/graphql\" }}\n{LIMITS}\npool = \"p0\"\n{extra}"
    );
    let text = config(
        &[
            (&[reads.addr], ""),
            (&[writes.addr], ""),
            (&[named.addr], ""),
        ],
        "",
        &routes_text,
    );
    let (gw, _) = gateway(&text).await;
    let body = r#"{"query":"mutation M { add(x: 1) }","operationName":"M","variables":{"x":1}}"#;
    assert_eq!(
        ask(gw, &post("/graphql", "application/json", body)).await.0,
        200
    );
    assert_eq!(ask(gw, &post_query("/graphql", "query { a }")).await.0, 200);
    assert_eq!(
        ask(gw, &get_query("/graphql", "mutation { a }")).await.0,
        200
    );
    assert_eq!(
        ask(gw, &post_query("/graphql", "query Audit { log }"))
            .await
            .0,
        200
    );
    let w = writes.seen();
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0].body, body, "the body goes on byte for byte");
    assert_eq!(w[0].method, "POST");
    assert!(w[1].uri.starts_with("/graphql?query=mutation"), "{w:?}");
    assert_eq!(reads.count(), 1);
    assert_eq!(
        named.count(),
        1,
        "a name is more specific than a type or nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_count_per_operation() {
    let (reads, writes) = (peer("reads").await, peer("writes").await);
    let extra = "policies = [\"per-op\"]\n[policy.per-op]\nkind = \"rate_limit\"\nrequests = 1\nper = \"1h\"\nkey = \"graphql:operation\"\n";
    let gw = split(&reads, &writes, extra).await;
    let a = post_query("/graphql", "query A { a }");
    assert_eq!(ask(gw, &a).await.0, 200);
    let (s, head, _) = raw(gw, &a).await;
    assert_eq!(s, 429, "{head}");
    assert_eq!(
        ask(gw, &post_query("/graphql", "query B { a }")).await.0,
        200,
        "another operation, another bucket"
    );
    assert_eq!(
        ask(gw, &get_query("/graphql", "query C { a }")).await.0,
        200
    );
    assert_eq!(
        raw(gw, &get_query("/graphql", "query C { b }")).await.0,
        429,
        "same operation by GET"
    );
    assert_eq!(reads.count(), 3);
}

/// A body read before routing (to find the operation) is still held to the route's
/// `max_body_size` on its way on, as a streamed one would be.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_read_before_routing_keeps_the_route_size_limit() {
    let (reads, writes) = (peer("reads").await, peer("writes").await);
    let gw = split(&reads, &writes, "max_body_size = 64\n").await;
    let small = post_query("/graphql", "{a}");
    assert_eq!(ask(gw, &small).await.0, 200);
    let padded = format!("{{a{}}}", " ".repeat(80));
    let (s, head, _) = raw(gw, &post_query("/graphql", &padded)).await;
    assert_eq!(s, 413, "{head}");
    // Chunked: no length to refuse it by before the body is read.
    let body = serde_json::json!({ "query": padded }).to_string();
    let chunked = format!(
        "POST /graphql HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let (s, head, _) = raw(gw, &chunked).await;
    assert_eq!(s, 413, "{head}");
    assert_eq!(reads.count(), 1, "no body over the limit arrived");
    assert_eq!(writes.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_a_graphql_error_and_are_never_forwarded() {
    let (reads, writes) = (peer("reads").await, peer("writes").await);
    let gw = split(&reads, &writes, "").await;
    let cases = [
        (post_query("/graphql", "{ a "), 400, "GRAPHQL_PARSE_FAILED"),
        (
            post_query("/graphql", "mutation { a } query { b }"),
            400,
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            post("/graphql", "application/json", "{\"query\": 7}"),
            400,
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            post("/graphql", "application/json", "{\"query\": \"{a}\""),
            400,
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            post("/graphql", "application/graphql", "{ a }"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (get("h", "/graphql"), 400, "GRAPHQL_PARSE_FAILED"),
        (
            post(
                "/graphql",
                "application/json",
                &format!("{{\"query\":\"{}\"}}", "{".repeat(10_000)),
            ),
            400,
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            post(
                "/graphql",
                "application/json",
                &format!(
                    "{{\"query\":\"{{a}}\",\"pad\":\"{}\"}}",
                    "x".repeat(1 << 20)
                ),
            ),
            413,
            "REQUEST_TOO_LARGE",
        ),
        (
            "PUT /graphql HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{a}"
                .to_string(),
            405,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for (req, status, want) in cases {
        let (s, code) = ask(gw, &req).await;
        assert_eq!(
            (s, code.as_str()),
            (status, want),
            "{}",
            &req[..req.len().min(120)]
        );
    }
    assert_eq!(
        reads.count() + writes.count(),
        0,
        "nothing refused was forwarded"
    );
    // A CORS preflight carries no operation and passes.
    let pre = "OPTIONS /graphql HTTP/1.1\r\nHost: h\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(gw, pre).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_over_websocket_pass_through() {
    let echo = websocket_echo().await;
    let routes = "[[route]]\nlistener = \"web\"\nmatch = { path = \"/graphql\" }\ngraphql = {}\npool = \"p0\"\n";
    let (gw, _) = gateway(&config(&[(&[echo], "")], "", routes)).await;
    let tcp = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{gw}/graphql"), tcp)
        .await
        .expect("websocket handshake through lb");
    assert_eq!(resp.status(), 101);
    let start = r#"{"type":"subscribe","id":"1","payload":{"query":"subscription { ticks }"}}"#;
    ws.send(Message::text(start)).await.expect("send");
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("open")
        .expect("message");
    assert_eq!(back.into_text().expect("text").as_str(), start);
    ws.close(None).await.expect("close");
    // An upgrade that also names an operation in its URL is refused: lb would not see it run.
    let tcp = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let err =
        tokio_tungstenite::client_async(format!("ws://{gw}/graphql?query=mutation%7Ba%7D"), tcp)
            .await;
    assert!(
        err.is_err(),
        "an upgrade with a query in its URL is refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_are_read_routed_and_gated_alike() {
    use bytes::Bytes;
    use http_body_util::Full;
    let (reads, writes) = (peer("reads").await, peer("writes").await);
    let gw = split(&reads, &writes, "").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let send = |doc: &str| {
        let body = serde_json::json!({ "query": doc }).to_string();
        let req = http::Request::post(format!("http://{gw}/graphql"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        client.request(req)
    };
    let resp = send("mutation { a }").await.expect("response");
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (http::Version::HTTP_2, 200)
    );
    let resp = send("{ a { b { c { d } } } }").await.expect("response");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(code(&body_text(resp).await), "MAX_DEPTH_EXCEEDED");
    assert_eq!((reads.count(), writes.count()), (0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_more_specific_than_a_graphql_catch_all_take_their_requests_unread() {
    // A `graphql` route on `/` beside a plain route and an aggregate route: what the router
    // sends to those never reaches the GraphQL route, so lb must not read it as GraphQL.
    let (api, files) = (peer("api").await, peer("files").await);
    let routes = "[[route]]\nlistener = \"web\"\nname = \"api\"\nmatch = { path_prefix = \"/\" }\ngraphql = {}\npool = \"p0\"\n\n\
         [[route]]\nlistener = \"web\"\nname = \"files\"\nmatch = { path_prefix = \"/static\" }\npool = \"p1\"\n\n\
         [[route]]\nlistener = \"web\"\nname = \"me\"\nmatch = { path = \"/me\" }\naggregate = [{ name = \"f\", pool = \"p1\", path = \"/f\" }]\n";
    let (gw, _) = gateway(&config(
        &[(&[api.addr], ""), (&[files.addr], "")],
        "",
        routes,
    ))
    .await;
    let (s, _, body) = raw(
        gw,
        "GET /static/app.js HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(s, 200, "a plain GET to the plain route: {body}");
    let (s, _, body) = raw(gw, &post("/static/upload", "text/plain", "hello")).await;
    assert_eq!(s, 200, "a text POST to the plain route: {body}");
    let (s, _, body) = raw(
        gw,
        "GET /me HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(s, 200, "the aggregate route: {body}");
    assert_eq!(files.count(), 3, "{:?}", files.seen());
    // The catch-all still reads and holds what it takes.
    assert_eq!(
        ask(gw, &post_query("/graphql", "{ a }")).await,
        (200, String::new())
    );
    let (s, code) = ask(
        gw,
        "GET /other HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((s, code.as_str()), (400, "GRAPHQL_PARSE_FAILED"));
    assert_eq!(api.count(), 1);
}
