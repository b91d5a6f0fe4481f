//! Attacks on GraphQL-aware routes: a mutation must not reach a query-only route by any
//! encoding lb could read differently from the backend, and hidden or oversized documents
//! must not pass the limits or hold lb up. Every case also proves the backend saw nothing.

#[path = "support/graphql_peer.rs"]
mod graphql_peer;
mod support;

use std::net::SocketAddr;

use graphql_peer::*;
use support::*;

/// One route, queries only, to `reads`; nothing else on the listener.
async fn query_only(reads: &Peer) -> SocketAddr {
    let routes = "[[route]]\nlistener = \"web\"\nname = \"reads\"\nmatch = { path_prefix = \"/graphql\", graphql_operation = \"query\" }\ngraphql = { max_depth = 4, max_complexity = 50 }\npool = \"p0\"\n";
    gateway(&config(&[(&[reads.addr], "")], "", routes)).await.0
}

/// A POST of the query `{ a }` with `fields` (each ending in CRLF) as its only fields
/// besides Host and framing.
fn with_fields(fields: &str) -> String {
    let body = r##"{"query":"{ a }"}"##;
    format!(
        "POST /graphql HTTP/1.1\r\nHost: h\r\n{fields}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn json(body: &str) -> String {
    post("/graphql", "application/json", body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mutation_reaches_a_query_only_route_by_no_encoding() {
    let reads = peer("reads").await;
    let gw = query_only(&reads).await;
    let chunked = "POST /graphql HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n{\"query\":\"mutat\r\nb\r\nion{drop}\"}\r\n0\r\n\r\n";
    let attempts: Vec<(&str, String)> = vec![
        ("plain POST", post_query("/graphql", "mutation { drop }")),
        ("GET", get_query("/graphql", "mutation { drop }")),
        ("GET, path variant", get_query("/graphql/", "mutation { drop }")),
        ("chunked body", chunked.to_string()),
        ("unicode escape in the value", json(r##"{"query":"\u006dutation { drop }"}"##)),
        ("comment first", json(r##"{"query":"# query\n mutation { drop }"}"##)),
        ("leading whitespace and commas", json(r##"{"query":" ,,\n\t mutation{drop}"}"##)),
        ("BOM and whitespace", json("{\"query\":\"\u{feff} mutation { drop }\"}")),
        ("operationName picks the mutation", json(r##"{"query":"query Q { a } mutation M { drop }","operationName":"M"}"##)),
        ("no operationName with two operations", json(r##"{"query":"query Q { a } mutation M { drop }"}"##)),
        ("operationName null with two operations", json(r##"{"query":"query Q { a } mutation M { drop }","operationName":null}"##)),
        ("operationName names nothing", json(r##"{"query":"mutation M { drop }","operationName":"Q"}"##)),
        ("operationName for an anonymous query", json(r##"{"query":"{ a } ","operationName":"M"}"##)),
        ("empty operationName by GET", "GET /graphql?query=mutation%20M%7Bdrop%7D&operationName= HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".to_string()),
        ("batched array", json(r##"[{"query":"{ a }"},{"query":"mutation { drop }"}]"##)),
        ("duplicate query key", json(r##"{"query":"{ a }","query":"mutation { drop }"}"##)),
        ("duplicate key by escape", json(r##"{"query":"{ a }","\u0071uery":"mutation { drop }"}"##)),
        // A case-insensitive JSON reader (Json.NET's default) takes the last of these.
        ("query key in another case", json(r##"{"query":"{ a }","Query":"mutation { drop }"}"##)),
        ("operationName key in another case", json(r##"{"query":"query Q { a } mutation M { drop }","operationName":"Q","OperationName":"M"}"##)),
        ("GET query parameter in another case", "GET /graphql?query=%7Ba%7D&QUERY=mutation%7Bdrop%7D HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".into()),
        // Rack before 3 (Rails) and old Python split a query string on `;` too: the query
        // lb reads ends in a comment, the one such a server reads last is the mutation.
        ("GET parameters split on `;`", "GET /graphql?query=%7Ba%7D%20%23;query=mutation%7Bdrop%7D HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".into()),
        ("POST with a `;` parameter in its URL", post("/graphql?x=1;query=mutation%7Bdrop%7D", "application/json", r##"{"query":"{ a }"}"##)),
        ("duplicate operationName", json(r##"{"query":"query Q { a } mutation M { drop }","operationName":"Q","operationName":"M"}"##)),
        ("repeated GET query", "GET /graphql?query=%7Ba%7D&query=mutation%7Bdrop%7D HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".into()),
        ("query in the URL of a POST", post("/graphql?query=mutation%7Bdrop%7D", "application/json", r##"{"query":"{ a }"}"##)),
        ("application/graphql", post("/graphql", "application/graphql", "mutation { drop }")),
        ("text/plain", post("/graphql", "text/plain", r##"{"query":"mutation { drop }"}"##)),
        ("form body", post("/graphql", "application/x-www-form-urlencoded", "query=mutation%7Bdrop%7D")),
        ("gzip-encoded body", "POST /graphql HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".into()),
        ("GET with a body", "GET /graphql?query=%7Ba%7D HTTP/1.1\r\nHost: h\r\nContent-Length: 29\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"query\":\"mutation { drop }\"}".into()),
        // A query, which the route would take, but its body is read under one of two types.
        ("two Content-Types", with_fields("Content-Type: application/json\r\nContent-Type: text/plain\r\n")),
        ("identity then gzip", with_fields("Content-Type: application/json\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\n")),
        ("PUT", "PUT /graphql HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 29\r\nConnection: close\r\n\r\n{\"query\":\"mutation { drop }\"}".into()),
        ("subscription", post_query("/graphql", "subscription { ticks }")),
        ("upgrade naming a mutation", "GET /graphql?query=mutation%7Bdrop%7D HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".into()),
    ];
    for (what, req) in &attempts {
        let (s, _, body) = raw(gw, req).await;
        assert_ne!(s, 200, "{what}: {body}");
        assert!((400..500).contains(&s), "{what}: {s} {body}");
    }
    assert_eq!(reads.count(), 0, "{:?}", reads.seen());
    // The same route still serves a query sent any of the honest ways.
    assert_eq!(raw(gw, &post_query("/graphql", "query { a }")).await.0, 200);
    assert_eq!(
        raw(
            gw,
            &json(r##"{"query":"query Q { a } mutation M { drop }","operationName":"Q"}"##)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        raw(
            gw,
            &with_fields("Content-Type: application/json\r\nContent-Encoding: identity\r\n")
        )
        .await
        .0,
        200,
        "the same fields, once each"
    );
    assert_eq!(reads.count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn hidden_and_hostile_documents_are_refused_quickly() {
    let reads = peer("reads").await;
    let gw = query_only(&reads).await;
    let mut bomb = String::from("query { ...F0 }");
    for i in 0..30 {
        bomb += &format!(" fragment F{i} on Q {{ ...F{n} ...F{n} }}", n = i + 1);
    }
    bomb += " fragment F30 on Q { a }";
    let mut chain = String::from("query { a { ...F0 } }");
    for i in 0..200 {
        chain += &format!(" fragment F{i} on Q {{ ...F{} }}", i + 1);
    }
    chain += " fragment F200 on Q { b }";
    let cases = [
        (
            "introspection in a fragment",
            "query { ...I } fragment I on Q { __schema { types { name } } }".to_string(),
            "INTROSPECTION_DISABLED",
        ),
        (
            "introspection in an inline fragment",
            "query { ... on Q { __type(name: \"X\") { name } } }".into(),
            "INTROSPECTION_DISABLED",
        ),
        (
            "depth through fragments",
            "query { a { ...F } } fragment F on Q { b { ...G } } fragment G on Q { c { d { e } } }"
                .into(),
            "MAX_DEPTH_EXCEEDED",
        ),
        (
            "fragment cycle",
            "query { ...A } fragment A on Q { ...B } fragment B on Q { ...A }".into(),
            "GRAPHQL_PARSE_FAILED",
        ),
        ("fragment bomb", bomb, "MAX_COMPLEXITY_EXCEEDED"),
        ("fragment chain", chain, "GRAPHQL_PARSE_FAILED"),
        (
            "deep braces",
            format!("query {}", "{ a ".repeat(5000)),
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            "deep list argument",
            format!("query {{ a(x: {}) }}", "[".repeat(5000)),
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            "unknown fragment",
            "query { ...Nope }".into(),
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            "document over 128 KiB",
            format!("query {{ a{} }}", " b".repeat(70_000)),
            "DOCUMENT_TOO_LARGE",
        ),
    ];
    for (what, doc, want) in cases {
        let (s, _, body) = raw(gw, &post_query("/graphql", &doc)).await;
        let status = if want == "DOCUMENT_TOO_LARGE" {
            413
        } else {
            400
        };
        assert_eq!((s, code(&body).as_str()), (status, want), "{what}: {body}");
    }
    // Long but within limits: many strings and comments do not count as nesting.
    let padded = format!(
        "query {{ a(s: \"{}\") # {}\n }}",
        "{".repeat(2000),
        "[".repeat(2000)
    );
    assert_eq!(raw(gw, &post_query("/graphql", &padded)).await.0, 200);
    assert_eq!(reads.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_ask_carries_no_operation_past_the_limits() {
    // A route without an operation condition takes WebSocket upgrades unparsed. A backend
    // that declines the upgrade answers the request as a plain one, so a body or a method
    // other than a handshake's would run an operation lb never looked at.
    let reads = peer("reads").await;
    let routes = "[[route]]\nlistener = \"web\"\nname = \"reads\"\nmatch = { path = \"/graphql\" }\ngraphql = { max_depth = 2, introspection = false }\npool = \"p0\"\n";
    let gw = gateway(&config(&[(&[reads.addr], "")], "", routes)).await.0;
    let upgrade = "Connection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let body = r##"{"query":"mutation { a { b { c { __schema { types { name } } } } } }"}"##;
    let with = |method: &str, framing: &str, body: &str| {
        format!("{method} /graphql HTTP/1.1\r\nHost: h\r\n{upgrade}Content-Type: application/json\r\n{framing}\r\n{body}")
    };
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let attempts = [
        (
            "POST with a length",
            with("POST", &format!("Content-Length: {}\r\n", body.len()), body),
        ),
        (
            "POST chunked",
            with("POST", "Transfer-Encoding: chunked\r\n", &chunked),
        ),
        (
            "GET with a length",
            with("GET", &format!("Content-Length: {}\r\n", body.len()), body),
        ),
        (
            "GET chunked",
            with("GET", "Transfer-Encoding: chunked\r\n", &chunked),
        ),
        (
            "PUT with a length",
            with("PUT", &format!("Content-Length: {}\r\n", body.len()), body),
        ),
        ("DELETE", with("DELETE", "", "")),
    ];
    for (what, req) in &attempts {
        let (s, _, body) = raw(gw, req).await;
        assert!((400..500).contains(&s), "{what}: {s} {body}");
    }
    assert_eq!(reads.count(), 0, "{:?}", reads.seen());
}
