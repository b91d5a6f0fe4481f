//! The `oauth2_introspection` policy against an in-test authorization server
//! (support/auth_server.rs) that checks lb's client credentials and form, and counts calls:
//! active, inactive and expired tokens, scopes, forwarded claims, reuse of answers (and its
//! bounds), one call for many concurrent requests, the endpoint down, slow, failing or
//! answering garbage under each `on_error`, and tokens refused without a call.

#[path = "support/auth_server.rs"]
mod auth_server;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth_server::*;
use support::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The gateway with one route guarded by policy `auth` (introspecting at `endpoint`).
async fn lb(endpoint: &str, extra: &str) -> (SocketAddr, Backend) {
    std::env::set_var(SECRET_ENV, SECRET);
    let b = backend("b").await;
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"api\"\npool = \"p0\"\npolicies = [\"auth\"]\n\
         [policy.auth]\nkind = \"oauth2_introspection\"\nendpoint = \"{endpoint}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret_env = \"{SECRET_ENV}\"\n\
         forward_claims = {{ sub = \"x-user\", client_id = \"x-client\" }}\n{extra}"
    );
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "", &routes)).await;
    (gw, b)
}

/// `GET /headers` with the bearer token (if any) and a forged `X-User`.
async fn call(gw: SocketAddr, token: Option<&str>) -> (u16, String, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    raw(
        gw,
        &format!("GET /headers HTTP/1.1\r\nHost: h\r\n{auth}X-User: mallory\r\nConnection: close\r\n\r\n"),
    )
    .await
}

fn active(extra: &str) -> Reply {
    Reply::Json(format!(
        r#"{{"active":true,"sub":"alice","client_id":"app","scope":"read write","exp":{}{extra}}}"#,
        now() + 3600
    ))
}

/// Moves tokio's clock (which the cache reads) ahead: paused only for the jump, so the
/// sockets around it work in real time.
async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

#[tokio::test]
async fn active_tokens_pass_with_their_claims_and_others_get_401() {
    let auth = auth_server().await;
    auth.reply("good", active(""));
    auth.reply("off", Reply::Json(r#"{"active":false}"#.into()));
    let past = format!(r#"{{"active":true,"sub":"alice","exp":{}}}"#, now() - 10);
    auth.reply("old", Reply::Json(past));
    let (gw, b) = lb(&auth.url(), "").await;

    let (s, _, body) = call(gw, Some("good")).await;
    assert_eq!(s, 200, "{body}");
    // The checked claims replace the client's copy; the token goes on, as with jwt.
    assert!(body.contains("x-user: alice"), "{body}");
    assert!(body.contains("x-client: app"), "{body}");
    assert!(!body.contains("mallory"), "{body}");
    assert!(body.contains("authorization: Bearer good"), "{body}");

    for token in ["off", "old", "never-issued"] {
        let (s, head, _) = call(gw, Some(token)).await;
        assert_eq!(s, 401, "{token}");
        assert!(head.contains("error=\"invalid_token\""), "{token}: {head}");
    }
    let (s, head, _) = call(gw, None).await;
    assert_eq!(s, 401);
    assert!(head.contains("www-authenticate: Bearer"), "{head}");
    assert_eq!(auth.calls(), 4, "no token, no call");
    assert_eq!(
        auth.refused(),
        0,
        "lb authenticated as the client, with a proper form"
    );
    assert_eq!(b.requests(), 1, "only the active token reached the backend");
}

#[tokio::test]
async fn a_token_without_every_required_scope_gets_403() {
    let auth = auth_server().await;
    auth.reply("rw", active(""));
    auth.reply("r", Reply::Json(r#"{"active":true,"scope":"read"}"#.into()));
    auth.reply("none", Reply::Json(r#"{"active":true}"#.into()));
    let (gw, b) = lb(&auth.url(), "require_scopes = [\"read\", \"write\"]\n").await;
    assert_eq!(call(gw, Some("rw")).await.0, 200);
    for token in ["r", "none"] {
        let (s, head, _) = call(gw, Some(token)).await;
        assert_eq!(s, 403, "{token}");
        assert!(head.contains("error=\"insufficient_scope\""), "{head}");
        assert!(head.contains("scope=\"read write\""), "{head}");
    }
    assert_eq!(b.requests(), 1);
}

#[tokio::test]
async fn answers_are_reused_within_cache_ttl_exp_and_the_negative_bound() {
    let auth = auth_server().await;
    auth.reply("good", active(""));
    // Valid for 5 more seconds: reused no longer than that, whatever cache_ttl says.
    let short = format!(r#"{{"active":true,"sub":"bob","exp":{}}}"#, now() + 5);
    auth.reply("short", Reply::Json(short));
    let (gw, _) = lb(&auth.url(), "cache_ttl = \"10m\"\n").await;

    assert_eq!(call(gw, Some("good")).await.0, 200);
    assert_eq!(call(gw, Some("good")).await.0, 200);
    assert_eq!(auth.calls(), 1, "the second request made no call");
    assert_eq!(call(gw, Some("short")).await.0, 200);
    assert_eq!(call(gw, Some("short")).await.0, 200);
    assert_eq!(auth.calls(), 2);
    assert_eq!(call(gw, Some("bad")).await.0, 401);
    assert_eq!(call(gw, Some("bad")).await.0, 401);
    assert_eq!(auth.calls(), 3, "a negative answer is reused too");

    // 11 s on: past the token's exp-bound and the negative bound, within cache_ttl.
    skip(Duration::from_secs(11)).await;
    assert_eq!(call(gw, Some("good")).await.0, 200);
    assert_eq!(auth.calls(), 3, "cache_ttl not over");
    assert_eq!(call(gw, Some("short")).await.0, 200);
    assert_eq!(auth.calls(), 4, "asked again at the token's exp");
    assert_eq!(call(gw, Some("bad")).await.0, 401);
    assert_eq!(auth.calls(), 5, "a negative answer is kept briefly");
    // Past cache_ttl: asked again, and the token revoked meanwhile is refused.
    auth.reply("good", Reply::Json(r#"{"active":false}"#.into()));
    skip(Duration::from_secs(600)).await;
    assert_eq!(call(gw, Some("good")).await.0, 401);
    assert_eq!(auth.calls(), 6);
}

#[tokio::test]
async fn cache_ttl_zero_asks_every_time() {
    let auth = auth_server().await;
    auth.reply("good", active(""));
    let (gw, _) = lb(&auth.url(), "cache_ttl = \"0s\"\n").await;
    for n in 1..=3 {
        assert_eq!(call(gw, Some("good")).await.0, 200);
        assert_eq!(auth.calls(), n);
    }
}

// One thread, paused clock: the server's 1 s wait ends only once every request is stuck
// (tokio advances a paused clock only when nothing else can run), i.e. all 100 are in.
#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_requests_with_one_new_token_make_one_call() {
    let auth = auth_server().await;
    let slow = format!(r#"{{"active":true,"sub":"alice","exp":{}}}"#, now() + 3600);
    auth.reply("fresh", Reply::Later(Duration::from_secs(1), slow));
    let (gw, b) = lb(&auth.url(), "timeout = \"5s\"\n").await;
    let tasks: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { call(gw, Some("fresh")).await.0 }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    assert_eq!(auth.calls(), 1);
    assert_eq!(b.requests(), 100);
}

#[tokio::test]
async fn an_endpoint_that_is_down_gives_503_deny_or_allow() {
    let dead = format!("http://{}/introspect", dead_addr().await);
    let (gw, _) = lb(&dead, "").await;
    let (s, head, _) = call(gw, Some("tok")).await;
    assert_eq!(s, 503, "{head}");
    // Not reused: a second request tries again (and fails again).
    assert_eq!(call(gw, Some("tok")).await.0, 503);

    let (gw, b) = lb(&dead, "on_error = \"deny\"\n").await;
    let (s, head, _) = call(gw, Some("tok")).await;
    assert_eq!(s, 401);
    assert!(head.contains("error=\"invalid_token\""), "{head}");
    assert_eq!(b.requests(), 0);

    let (gw, b) = lb(&dead, "on_error = \"allow\"\n").await;
    let (s, _, body) = call(gw, Some("tok")).await;
    assert_eq!(s, 200, "allow: through, unauthenticated");
    assert!(
        !body.contains("x-user"),
        "no claims, and the forged one removed: {body}"
    );
    // Still refused without any token, or with a malformed one: those need no endpoint.
    assert_eq!(call(gw, None).await.0, 401);
    assert_eq!(call(gw, Some("a b")).await.0, 400);
    assert_eq!(b.requests(), 1);
}

#[tokio::test]
async fn allow_still_honours_answers_already_cached() {
    let auth = auth_server().await;
    auth.reply("good", active(""));
    auth.reply("off", Reply::Json(r#"{"active":false}"#.into()));
    let (gw, _) = lb(&auth.url(), "on_error = \"allow\"\n").await;
    assert_eq!(call(gw, Some("good")).await.0, 200);
    assert_eq!(call(gw, Some("off")).await.0, 401);
    auth.reply("good", Reply::Status(500));
    auth.reply("off", Reply::Status(500));
    let (s, _, body) = call(gw, Some("good")).await;
    assert_eq!(s, 200);
    assert!(
        body.contains("x-user: alice"),
        "still the cached claims: {body}"
    );
    assert_eq!(
        call(gw, Some("off")).await.0,
        401,
        "still the cached refusal"
    );
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_times_out_to_503() {
    let auth = auth_server().await;
    auth.reply("tok", Reply::Hang);
    let (gw, b) = lb(&auth.url(), "timeout = \"2s\"\n").await;
    let started = tokio::time::Instant::now();
    assert_eq!(call(gw, Some("tok")).await.0, 503);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn failing_and_hostile_answers_are_errors_or_refusals() {
    let auth = auth_server().await;
    let huge = format!(r#"{{"active":true,"pad":"{}"}}"#, "x".repeat(100_000));
    for (token, reply) in [
        ("e500", Reply::Status(500)),
        ("e404", Reply::Status(404)),
        ("huge", Reply::Json(huge)),
        ("html", Reply::Json("<html>oops</html>".into())),
        (
            "str",
            Reply::Json(r#"{"active":"true","sub":"alice"}"#.into()),
        ),
        ("num", Reply::Json(r#"{"active":1}"#.into())),
        (
            "badexp",
            Reply::Json(r#"{"active":true,"exp":"never"}"#.into()),
        ),
        ("arr", Reply::Json(r#"[{"active":true}]"#.into())),
    ] {
        auth.reply(token, reply);
    }
    let (gw, b) = lb(&auth.url(), "").await;
    for token in [
        "e500", "e404", "huge", "html", "str", "num", "badexp", "arr",
    ] {
        assert_eq!(call(gw, Some(token)).await.0, 503, "{token}");
    }
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn wrong_client_credentials_are_an_endpoint_failure() {
    let auth = auth_server().await;
    auth.reply("good", active(""));
    std::env::set_var("LB_TEST_INTROSPECTION_WRONG", "not-the-secret");
    let b = backend("b").await;
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"api\"\npool = \"p0\"\npolicies = [\"auth\"]\n\
         [policy.auth]\nkind = \"oauth2_introspection\"\nendpoint = \"{}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret_env = \"LB_TEST_INTROSPECTION_WRONG\"\n",
        auth.url()
    );
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "", &routes)).await;
    assert_eq!(call(gw, Some("good")).await.0, 503);
    assert_eq!(auth.refused(), 1, "the server saw the wrong credentials");
}

#[tokio::test]
async fn odd_tokens_are_refused_without_a_call() {
    let auth = auth_server().await;
    let (gw, b) = lb(&auth.url(), "").await;
    let long = "a".repeat(5000);
    for token in [long.as_str(), "a b", "a\"b", "a,b", "tok\x01en", "x\x7f"] {
        let (s, _, _) = call(gw, Some(token)).await;
        assert_eq!(s, 400, "{token:?}");
    }
    // Two Authorization fields: which one would the backend believe?
    let (s, _, _) = raw(
        gw,
        "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(auth.calls(), 0);
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn a_missing_secret_variable_is_a_config_error() {
    let text = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\n\
        [[pool]]\nname = \"p0\"\nbackends = [{ addr = \"127.0.0.1:9\" }]\n\
        [[route]]\nlistener = \"web\"\nname = \"api\"\npool = \"p0\"\npolicies = [\"auth\"]\n\
        [policy.auth]\nkind = \"oauth2_introspection\"\nendpoint = \"http://127.0.0.1:9/i\"\n\
        client_id = \"lb\"\nclient_secret_env = \"LB_TEST_INTROSPECTION_NEVER_SET\"\n";
    let err = lb_l7::gateway::load_str("t.toml", text).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("LB_TEST_INTROSPECTION_NEVER_SET"), "{text}");
    assert!(text.contains("policy.auth.client_secret_env"), "{text}");
}
