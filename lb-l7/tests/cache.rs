//! The `cache` policy with real requests: hits, misses and expiry, `Cache-Control` from
//! either side, `Vary` by configured headers, purge, and a burst of misses coalesced into one
//! backend request.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;

async fn cached(b: &Backend, cache: &str) -> (std::net::SocketAddr, Arc<lb_l7::gateway::Gateway>) {
    let routes = format!("[[route]]\nlistener = \"web\"\nname = \"api\"\npool = \"p0\"\npolicies = [\"c\"]\n[policy.c]\nkind = \"cache\"\n{cache}");
    gateway(&config(&[(&[b.addr], "")], "", &routes)).await
}

fn x_cache(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix("x-cache: ").map(str::to_string))
}

async fn get_path(gw: std::net::SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    raw(
        gw,
        &format!("GET {path} HTTP/1.1\r\nHost: h\r\n{extra}Connection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn hits_misses_and_expiry() {
    let b = backend("b").await;
    let (gw, g) = cached(&b, "ttl = \"1s\"\n").await;
    let (s, head, body) = get_path(gw, "/page?x=1", "").await;
    assert_eq!((s, x_cache(&head).as_deref()), (200, Some("MISS")));
    let (s, head, again) = get_path(gw, "/page?x=1", "").await;
    assert_eq!((s, x_cache(&head).as_deref()), (200, Some("HIT")));
    assert_eq!(again, body, "the same response");
    assert!(head.contains("age: "), "{head}");
    assert_eq!(b.requests(), 1);
    // Another query is another entry; HEAD is answered from the GET entry.
    assert_eq!(
        x_cache(&get_path(gw, "/page?x=2", "").await.1).as_deref(),
        Some("MISS")
    );
    let (s, head, body) = raw(
        gw,
        "HEAD /page?x=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (s, x_cache(&head).as_deref(), body.as_str()),
        (200, Some("HIT"), "")
    );
    // After the ttl, the backend again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        x_cache(&get_path(gw, "/page?x=1", "").await.1).as_deref(),
        Some("MISS")
    );
    assert_eq!(b.requests(), 3);
    // POST is never cached nor answered from the cache.
    let (s, head, _) = raw(
        gw,
        "POST /page?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((s, x_cache(&head)), (200, None));
    // Purge (the admin API's /api/cache/purge) empties it.
    g.purge_caches();
    assert_eq!(
        x_cache(&get_path(gw, "/page?x=1", "").await.1).as_deref(),
        Some("MISS")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_control_is_honoured_both_ways() {
    let b = backend("b").await;
    let (gw, _) = cached(&b, "ttl = \"10m\"\n").await;
    for _ in 0..2 {
        assert_eq!(
            x_cache(&get_path(gw, "/cc/no-store", "").await.1).as_deref(),
            Some("MISS")
        );
        assert_eq!(
            x_cache(&get_path(gw, "/cc/private", "").await.1).as_deref(),
            Some("MISS")
        );
    }
    assert_eq!(
        b.requests(),
        4,
        "no-store and private responses are never stored"
    );
    get_path(gw, "/cc/max-age=1", "").await;
    assert_eq!(
        x_cache(&get_path(gw, "/cc/max-age=1", "").await.1).as_deref(),
        Some("HIT")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        x_cache(&get_path(gw, "/cc/max-age=1", "").await.1).as_deref(),
        Some("MISS"),
        "max-age shortens the ttl"
    );
    // A client asking for a fresh copy bypasses the cache.
    get_path(gw, "/fresh", "").await;
    let (_, head, _) = get_path(gw, "/fresh", "Cache-Control: no-cache\r\n").await;
    assert_eq!(x_cache(&head), None);
    // A request with credentials is not answered with a response stored without `public`.
    let (_, head, _) = get_path(gw, "/fresh", "Authorization: Bearer x\r\n").await;
    assert_eq!(x_cache(&head).as_deref(), Some("MISS"));
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_headers_are_part_of_the_key() {
    let b = backend("b").await;
    let (gw, _) = cached(&b, "ttl = \"10m\"\nvary = [\"Accept-Language\"]\n").await;
    assert_eq!(
        x_cache(&get_path(gw, "/v", "Accept-Language: fr\r\n").await.1).as_deref(),
        Some("MISS")
    );
    assert_eq!(
        x_cache(&get_path(gw, "/v", "Accept-Language: de\r\n").await.1).as_deref(),
        Some("MISS")
    );
    assert_eq!(
        x_cache(&get_path(gw, "/v", "Accept-Language: fr\r\n").await.1).as_deref(),
        Some("HIT")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_misses_sends_one_request() {
    let b = backend("b").await;
    let (gw, _) = cached(&b, "ttl = \"10m\"\n").await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        tasks.push(tokio::spawn(
            async move { get_path(gw, "/pause", "").await },
        ));
    }
    let mut hits = 0;
    for t in tasks {
        let (s, head, body) = t.await.expect("task");
        assert_eq!(s, 200);
        assert!(body.starts_with("b GET /pause"), "{body}");
        hits += usize::from(x_cache(&head).as_deref() == Some("HIT"));
    }
    assert_eq!(
        b.requests(),
        1,
        "100 concurrent misses, one backend request"
    );
    assert_eq!(hits, 99);
}
