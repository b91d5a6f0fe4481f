//! An aggregate route's bound on what it holds: the slots a request's parts take stay taken
//! until its answer has left, so clients that do not read their answers cannot make lb hold
//! more part bodies than the route's slots allow.

#[path = "support/graphql_peer.rs"]
mod graphql_peer;
mod support;

use bytes::Bytes;
use graphql_peer::*;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn answers_a_client_does_not_read_keep_their_slots() {
    let b = peer("b").await;
    let parts: Vec<String> = (0..16)
        .map(|i| {
            format!("{{ name = \"p{i}\", pool = \"p0\", path = \"/p{i}\", timeout = \"2s\" }}")
        })
        .collect();
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"agg\"\nmatch = {{ path = \"/agg\" }}\naggregate = [{}]\n",
        parts.join(", ")
    );
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "", &routes)).await;
    // An HTTP/2 client that grants no window: lb can send the answers' heads, never their
    // bodies, which it must hold.
    let stalled = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(0)
        .build_http::<Empty<Bytes>>();
    let ask = || {
        let req = http::Request::get(format!("http://{gw}/agg"))
            .body(Empty::new())
            .expect("request");
        stalled.request(req)
    };
    // 64 requests of 16 parts take the route's 1024 slots.
    let mut held = Vec::new();
    for _ in 0..64 {
        let resp = ask().await.expect("answer head");
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    assert_eq!(b.count(), 1024);
    let get = "GET /agg HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let (s, _, body) = raw(gw, get).await;
    assert_eq!(s, 503, "the held answers still hold their slots: {body}");
    assert_eq!(b.count(), 1024, "no part of the refused request was sent");
    // The client goes: its answers are dropped and their slots freed.
    drop(held);
    drop(stalled);
    let (s, _, body) = raw(gw, get).await;
    assert_eq!(s, 200, "{body}");
}
