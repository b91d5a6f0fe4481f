//! Policy keys that act, each shown by what it changes for a real request (keys with a test
//! of their own in the other suites are not repeated here). Runs on both paths.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use support::*;

/// A gateway whose one route applies `policies` (defined by `defs`) in front of `b`.
async fn guarded(b: &Backend, policies: &str, defs: &str) -> std::net::SocketAddr {
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"api\"\npool = \"p0\"\npolicies = [{policies}]\n{defs}"
    );
    gateway(&config(&[(&[b.addr], "")], "", &routes)).await.0
}

async fn call(gw: std::net::SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    raw(
        gw,
        &format!("GET {path} HTTP/1.1\r\nHost: h\r\n{extra}Connection: close\r\n\r\n"),
    )
    .await
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// sha256("password").
const PASSWORD: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

#[tokio::test(flavor = "multi_thread")]
async fn api_key_header_names_where_the_key_comes() {
    let b = backend("b").await;
    let defs = format!(
        "[policy.k]\nkind = \"api_key\"\nheader = \"x-token\"\nkeys = [{{ name = \"cli\", sha256 = \"{PASSWORD}\" }}]\n"
    );
    let gw = guarded(&b, "\"k\"", &defs).await;
    assert_eq!(call(gw, "/headers", "X-Token: password\r\n").await.0, 200);
    assert_eq!(
        call(gw, "/headers", "X-API-Key: password\r\n").await.0,
        401,
        "the default header is not read"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_burst_and_header_key_act() {
    let b = backend("b").await;
    // One request a minute, a burst of three, counted per X-Team.
    let defs = "[policy.r]\nkind = \"rate_limit\"\nrequests = 1\nper = \"1m\"\nburst = 3\nkey = \"header:x-team\"\n";
    let gw = guarded(&b, "\"r\"", defs).await;
    for n in 0..3 {
        assert_eq!(
            call(gw, "/", "X-Team: red\r\n").await.0,
            200,
            "burst request {n}"
        );
    }
    assert_eq!(
        call(gw, "/", "X-Team: red\r\n").await.0,
        429,
        "past the burst"
    );
    assert_eq!(
        call(gw, "/", "X-Team: blue\r\n").await.0,
        200,
        "another key, another bucket"
    );
}

/// Issue 15: each `header:NAME` key used to be kept as sent (up to ~32 KiB), 100k of them by
/// default. Distinct huge keys now cost a fixed-size digest each, within a byte bound.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_huge_header_keys_stay_within_the_byte_bound() {
    let b = backend("b").await;
    let defs = "[policy.r]\nkind = \"rate_limit\"\nrequests = 1\nper = \"1h\"\nkey = \"header:x-key\"\nmax_keys = 64\n";
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"api\"\npool = \"p0\"\npolicies = [\"r\"]\n{defs}"
    );
    let (gw, g) = gateway(&config(&[(&[b.addr], "")], "", &routes)).await;
    let mut key = "k".repeat(30 * 1024);
    for i in 0..300 {
        key.replace_range(..8, &format!("{i:08}"));
        let s = call(gw, "/", &format!("X-Key: {key}\r\n")).await.0;
        assert_eq!(s, 200, "key {i} is new: its own bucket");
        let (used, bound) = g.policy_memory();
        assert!(
            used <= bound,
            "after key {i}: {used} bytes over the bound {bound}"
        );
    }
    let (used, bound) = g.policy_memory();
    assert!(used > 0, "the buckets are accounted");
    // 300 keys as sent would hold 9 MiB; 64 digests and their times fit in a few KiB.
    assert!(bound < 16 * 1024, "bound {bound} bytes");
    assert_eq!(
        call(gw, "/", &format!("X-Key: {key}\r\n")).await.0,
        429,
        "a key still has its own bucket"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_allow_credentials_is_said_to_browsers() {
    let b = backend("b").await;
    for (credentials, want) in [("true", Some("true")), ("false", None)] {
        let defs = format!("[policy.c]\nkind = \"cors\"\nallow_origins = [\"https://app.example\"]\nallow_credentials = {credentials}\n");
        let gw = guarded(&b, "\"c\"", &defs).await;
        let (s, head, _) = call(gw, "/", "Origin: https://app.example\r\n").await;
        assert_eq!(s, 200);
        assert_eq!(
            header(&head, "access-control-allow-credentials"),
            want,
            "{head}"
        );
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"policy-keys-secret-that-is-long-enough"),
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_leeway_and_roles_claim_act() {
    std::env::set_var(
        "LB_TEST_POLICY_KEYS_SECRET",
        "policy-keys-secret-that-is-long-enough",
    );
    let b = backend("b").await;
    let jwt = |extra: &str| {
        format!("[policy.j]\nkind = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"LB_TEST_POLICY_KEYS_SECRET\"\n{extra}")
    };
    // Expired 30 s ago: refused without leeway, let through with a minute of it.
    let late = hs256(json!({ "sub": "a", "exp": now() - 30 }));
    let bearer = format!("Authorization: Bearer {late}\r\n");
    let strict = guarded(&b, "\"j\"", &jwt("")).await;
    assert_eq!(call(strict, "/", &bearer).await.0, 401);
    let lenient = guarded(&b, "\"j\"", &jwt("leeway = \"60s\"")).await;
    assert_eq!(call(lenient, "/", &bearer).await.0, 200);
    // Roles read from the claim the policy names.
    let gw = guarded(
        &b,
        "\"j\"",
        &jwt("require_roles = [\"admin\"]\nroles_claim = \"groups\""),
    )
    .await;
    let fresh = |c: serde_json::Value| format!("Authorization: Bearer {}\r\n", hs256(c));
    let exp = now() + 600;
    assert_eq!(
        call(
            gw,
            "/",
            &fresh(json!({ "sub": "a", "exp": exp, "groups": ["admin"] }))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            gw,
            "/",
            &fresh(json!({ "sub": "a", "exp": exp, "roles": ["admin"] }))
        )
        .await
        .0,
        403,
        "the default claim is not read"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_max_object_size_keeps_big_answers_out() {
    let b = backend("b").await;
    // The backend's answers to /cc/public,max-age=60 are ~60 bytes: over a 16-byte limit.
    for (limit, second) in [("1MiB", "HIT"), ("16", "MISS")] {
        let defs =
            format!("[policy.c]\nkind = \"cache\"\nttl = \"1m\"\nmax_object_size = \"{limit}\"\n");
        let gw = guarded(&b, "\"c\"", &defs).await;
        let _ = call(gw, "/cc/public,max-age=60", "").await;
        let (_, head, _) = call(gw, "/cc/public,max-age=60", "").await;
        assert_eq!(
            header(&head, "x-cache"),
            Some(second),
            "max_object_size {limit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_max_size_bounds_what_is_kept() {
    let b = backend("b").await;
    // A cache of 16 bytes in all cannot keep a 60-byte answer; one of 1 MiB can.
    for (size, second) in [("1MiB", "HIT"), ("16", "MISS")] {
        let defs = format!("[policy.c]\nkind = \"cache\"\nttl = \"1m\"\nmax_size = \"{size}\"\n");
        let gw = guarded(&b, "\"c\"", &defs).await;
        let _ = call(gw, "/cc/public,max-age=60", "").await;
        let (_, head, _) = call(gw, "/cc/public,max-age=60", "").await;
        assert_eq!(header(&head, "x-cache"), Some(second), "max_size {size}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transform_max_object_size_bounds_what_is_read_whole() {
    let b = backend("b").await;
    let dir = std::env::temp_dir().join(format!("lb-policy-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let schema = dir.join("schema.json");
    std::fs::write(&schema, r#"{ "type": "object" }"#).expect("write");
    let defs = format!(
        "[policy.t]\nkind = \"transform\"\njson_schema_file = \"{}\"\nmax_object_size = \"32\"\n",
        schema.display()
    );
    let gw = guarded(&b, "\"t\"", &defs).await;
    let post = |body: &str| {
        format!("POST /count HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    };
    assert_eq!(raw(gw, &post(r#"{"a":1}"#)).await.0, 200);
    let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(40));
    assert_eq!(
        raw(gw, &post(&big)).await.0,
        413,
        "over what the route checks"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
