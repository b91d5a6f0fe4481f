//! Gateway policies with real requests through the gateway: IP filters (and spoofed
//! X-Forwarded-For), API keys, rate limits at their boundary, CORS, header templates.

mod support;

use std::time::Duration;

use support::*;

/// A gateway whose one route (`/`) applies `policies`, defined by `defs`.
async fn with_policies(b: &Backend, policies: &str, defs: &str) -> std::net::SocketAddr {
    let routes = format!("[[route]]\nlistener = \"web\"\nname = \"api\"\npool = \"p0\"\npolicies = [{policies}]\n{defs}");
    gateway(&config(&[(&[b.addr], "")], "", &routes)).await.0
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn status(gw: std::net::SocketAddr, extra: &str) -> (u16, String, String) {
    raw(
        gw,
        &format!("GET /headers HTTP/1.1\r\nHost: h\r\n{extra}Connection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_filters_allow_deny_and_ignore_untrusted_forwarding_claims() {
    let b = backend("b").await;
    let gw = with_policies(
        &b,
        "\"office\"",
        "[policy.office]\nkind = \"ip_filter\"\nallow = [\"10.0.0.0/8\"]\n",
    )
    .await;
    let (s, _, body) = status(gw, "").await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("\"status\":403"));
    // The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For counts for nothing.
    assert_eq!(status(gw, "X-Forwarded-For: 10.1.1.1\r\n").await.0, 403);
    let gw = with_policies(&b, "\"office\"", "[policy.office]\nkind = \"ip_filter\"\nallow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.9\"]\n").await;
    assert_eq!(status(gw, "").await.0, 200);
    // Behind a trusted proxy, the right-most untrusted address is the client.
    let behind = "[policy.office]\nkind = \"ip_filter\"\nallow = [\"10.0.0.0/8\"]\ntrusted_proxies = [\"127.0.0.1\"]\n";
    let gw = with_policies(&b, "\"office\"", behind).await;
    assert_eq!(status(gw, "X-Forwarded-For: 10.1.1.1\r\n").await.0, 200);
    assert_eq!(
        status(gw, "X-Forwarded-For: 10.1.1.1, 192.0.2.1\r\n")
            .await
            .0,
        403,
        "a spoofed left-most entry does not win"
    );
    assert_eq!(
        status(gw, "").await.0,
        403,
        "the proxy itself is not in 10/8"
    );
    assert_eq!(
        b.requests(),
        2,
        "only the two allowed requests reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_entry_that_is_no_address_is_the_untrusted_client() {
    let b = backend("b").await;
    let behind = "[policy.office]\nkind = \"ip_filter\"\nallow = [\"10.0.0.0/8\"]\ntrusted_proxies = [\"127.0.0.1\", \"192.168.0.0/16\"]\n";
    let gw = with_policies(&b, "\"office\"", behind).await;
    // What a client wrote sits left of what its proxy appended; an entry the proxy appended
    // that lb cannot read must not hand the choice back to the client.
    for xff in [
        "10.1.1.1, unknown",
        "10.1.1.1, 192.0.2.1:5123x",
        "10.1.1.1, _obfuscated, 192.168.0.2",
        "10.1.1.1,",
        "10.1.1.1, [2001:db8::1",
    ] {
        let (s, _, body) = status(gw, &format!("X-Forwarded-For: {xff}\r\n")).await;
        assert_eq!(s, 403, "{xff}: {body}");
    }
    // ip:port and [ipv6]:port, as some proxies append them, name the client.
    assert_eq!(
        status(gw, "X-Forwarded-For: 192.0.2.1, 10.1.1.1:5123\r\n")
            .await
            .0,
        200
    );
    assert_eq!(
        status(gw, "X-Forwarded-For: 10.1.1.1, 192.0.2.1:5123\r\n")
            .await
            .0,
        403,
        "the client behind the port is not in 10/8"
    );
    assert_eq!(
        status(
            gw,
            "X-Forwarded-For: 10.1.1.1, [2001:db8::1]:443, 192.168.0.2\r\n"
        )
        .await
        .0,
        403
    );
    assert_eq!(
        b.requests(),
        1,
        "only the readable allowed client got through"
    );
}

const KEYS: &str = "[policy.keys]\nkind = \"api_key\"\nquery = \"api_key\"\nkeys = [\n  { name = \"mobile\", sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\" },\n  { name = \"cli\", sha256 = \"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\" },\n]\n";

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_checked_and_never_reach_the_backend() {
    let b = backend("b").await;
    // sha256("secret") and sha256("password").
    let stamp = "[policy.stamp]\nkind = \"headers\"\nrequest = { set = { \"x-consumer\" = \"${consumer}\" } }\n";
    let gw = with_policies(&b, "\"keys\", \"stamp\"", &format!("{KEYS}{stamp}")).await;
    let (s, head, _) = status(gw, "").await;
    assert_eq!(s, 401);
    assert_eq!(
        header(&head, "www-authenticate"),
        Some("ApiKey header=\"x-api-key\"")
    );
    assert_eq!(status(gw, "X-API-Key: wrong\r\n").await.0, 401);
    let (s, _, body) = status(gw, "X-API-Key: secret\r\n").await;
    assert_eq!(s, 200);
    assert!(body.contains("x-consumer: mobile"), "{body}");
    assert!(
        !body.contains("x-api-key"),
        "the key went on to the backend: {body}"
    );
    let (s, _, body) = raw(
        gw,
        "GET /headers?api_key=password HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(s, 200);
    assert!(body.contains("x-consumer: cli"), "{body}");
    assert_eq!(b.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_answer_never_goes_to_another_consumer() {
    let b = backend("b").await;
    let stamp = "[policy.stamp]\nkind = \"headers\"\nrequest = { set = { \"x-consumer\" = \"${consumer}\" } }\n";
    let cache = "[policy.c]\nkind = \"cache\"\nttl = \"10m\"\n";
    let gw = with_policies(
        &b,
        "\"keys\", \"stamp\", \"c\"",
        &format!("{KEYS}{stamp}{cache}"),
    )
    .await;
    // The key leaves the query before the cache looks: what is left must not be the whole
    // key, or one consumer's answer (made for it by the backend) goes to the next.
    let by_query = |key: &str| {
        format!("GET /headers?api_key={key} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    };
    let (s, _, body) = raw(gw, &by_query("secret")).await;
    assert_eq!(s, 200);
    assert!(body.contains("x-consumer: mobile"), "{body}");
    let (s, _, body) = raw(gw, &by_query("password")).await;
    assert_eq!(s, 200);
    assert!(
        body.contains("x-consumer: cli"),
        "mobile's answer went to cli: {body}"
    );
    // The same for keys in the header.
    let (s, _, body) = status(gw, "X-API-Key: secret\r\n").await;
    assert_eq!(s, 200);
    assert!(body.contains("x-consumer: mobile"), "{body}");
    let (s, _, body) = status(gw, "X-API-Key: password\r\n").await;
    assert_eq!(s, 200);
    assert!(
        body.contains("x-consumer: cli"),
        "mobile's answer went to cli: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_answer_never_goes_to_another_basic_auth_user() {
    use base64::Engine;
    let b = backend("b").await;
    let hash = |pw: &str| bcrypt::hash(pw, 4).expect("hash");
    let login = format!(
        "[policy.login]\nkind = \"basic_auth\"\nusers = {{ alice = \"{}\", bob = \"{}\" }}\n",
        hash("a"),
        hash("b")
    );
    let stamp = "[policy.stamp]\nkind = \"headers\"\nrequest = { set = { \"x-user\" = \"${consumer}\" } }\n";
    let cache = "[policy.c]\nkind = \"cache\"\nttl = \"10m\"\n";
    let gw = with_policies(
        &b,
        "\"login\", \"stamp\", \"c\"",
        &format!("{login}{stamp}{cache}"),
    )
    .await;
    // basic_auth takes Authorization out, so the cache does not see an authorized request.
    for (user, pw) in [("alice", "a"), ("bob", "b")] {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        let (s, _, body) = status(gw, &format!("Authorization: Basic {token}\r\n")).await;
        assert_eq!(s, 200);
        assert!(
            body.contains(&format!("x-user: {user}")),
            "{user} got: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_hold_at_the_boundary_and_refill() {
    let b = backend("b").await;
    let gw = with_policies(
        &b,
        "\"three\"",
        "[policy.three]\nkind = \"rate_limit\"\nrequests = 3\nper = \"1s\"\n",
    )
    .await;
    for left in ["2", "1", "0"] {
        let (s, head, _) = status(gw, "").await;
        assert_eq!(s, 200);
        assert_eq!(header(&head, "ratelimit-limit"), Some("3"));
        assert_eq!(header(&head, "ratelimit-remaining"), Some(left), "{head}");
    }
    let (s, head, body) = status(gw, "").await;
    assert_eq!(s, 429, "{body}");
    assert!(body.contains("\"status\":429"));
    let retry: u64 = header(&head, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=1).contains(&retry), "{retry}");
    assert_eq!(header(&head, "ratelimit-remaining"), Some("0"));
    assert_eq!(
        b.requests(),
        3,
        "the refused request cost the backend nothing"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        assert_eq!(
            status(gw, "").await.0,
            200,
            "the window passed: the allowance is back"
        );
    }
    assert_eq!(status(gw, "").await.0, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_count_per_consumer_after_the_api_key() {
    let b = backend("b").await;
    let limit =
        "[policy.per-key]\nkind = \"rate_limit\"\nrequests = 2\nper = \"1m\"\nkey = \"api_key\"\n";
    let gw = with_policies(&b, "\"keys\", \"per-key\"", &format!("{KEYS}{limit}")).await;
    for key in ["secret", "password"] {
        for _ in 0..2 {
            assert_eq!(status(gw, &format!("X-API-Key: {key}\r\n")).await.0, 200);
        }
        assert_eq!(
            status(gw, &format!("X-API-Key: {key}\r\n")).await.0,
            429,
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflights_are_answered_by_lb_and_only_allowed_origins_get_headers() {
    let b = backend("b").await;
    let cors = "[policy.browser]\nkind = \"cors\"\nallow_origins = [\"https://app.example.com\", \"https://*.example.org\"]\nallow_methods = [\"GET\", \"PUT\"]\nallow_headers = [\"x-token\"]\nexpose_headers = [\"x-trace\"]\nmax_age = \"10m\"\n";
    let gw = with_policies(&b, "\"browser\"", cors).await;
    let preflight = |origin: &str| {
        format!("OPTIONS /headers HTTP/1.1\r\nHost: h\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n")
    };
    let (s, head, _) = raw(gw, &preflight("https://app.example.com")).await;
    assert_eq!(s, 204);
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&head, "access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        header(&head, "access-control-allow-headers"),
        Some("x-token")
    );
    assert_eq!(header(&head, "access-control-max-age"), Some("600"));
    let (s, head, _) = raw(gw, &preflight("https://evil.example")).await;
    assert_eq!(s, 204);
    assert_eq!(header(&head, "access-control-allow-origin"), None);
    assert_eq!(b.requests(), 0, "preflights never reach the backend");
    let (s, head, _) = status(gw, "Origin: https://x.example.org\r\n").await;
    assert_eq!(s, 200);
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("https://x.example.org")
    );
    assert_eq!(
        header(&head, "access-control-expose-headers"),
        Some("x-trace")
    );
    assert_eq!(header(&head, "vary"), Some("Origin"));
    let (s, head, _) = status(gw, "Origin: https://example.org\r\n").await;
    assert_eq!(
        s, 200,
        "not an allowed origin, but the request itself goes on"
    );
    assert_eq!(header(&head, "access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn header_templates_fill_requests_and_responses() {
    let b = backend("b").await;
    let defs = "[policy.stamp]\nkind = \"headers\"\nrequest = { set = { \"x-client\" = \"${client_ip}\", \"x-where\" = \"${method} ${host}${path}\" }, remove = [\"cookie\"] }\nresponse = { add = { \"x-served-by\" = \"lb/${route}\" }, remove = [\"server\"] }\n";
    let gw = with_policies(&b, "\"stamp\"", defs).await;
    let (s, head, body) = status(gw, "Cookie: session=1\r\n").await;
    assert_eq!(s, 200);
    assert!(body.contains("x-client: 127.0.0.1"), "{body}");
    assert!(body.contains("x-where: GET h/headers"), "{body}");
    assert!(!body.contains("cookie"), "{body}");
    assert_eq!(header(&head, "x-served-by"), Some("lb/api"));
}

fn basic(user: &str, password: &str) -> String {
    let token = lb_l7::upgrade::base64(format!("{user}:{password}").as_bytes());
    format!("Authorization: Basic {token}\r\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_checks_bcrypt_users_from_config_and_htpasswd() {
    let b = backend("b").await;
    let alice = bcrypt::hash("wonderland", 4).expect("hash");
    let bob = bcrypt::hash("builder", 4).expect("hash");
    let dir = std::env::temp_dir().join(format!("lb-htpasswd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("htpasswd");
    std::fs::write(&file, format!("# users\nbob:{bob}\n")).expect("write");
    let defs = format!(
        "[policy.login]\nkind = \"basic_auth\"\nrealm = \"staff\"\nusers = {{ alice = \"{alice}\" }}\nhtpasswd_file = \"{}\"\n\
         [policy.stamp]\nkind = \"headers\"\nrequest = {{ set = {{ \"x-user\" = \"${{consumer}}\" }} }}\n",
        file.display()
    );
    let gw = with_policies(&b, "\"login\", \"stamp\"", &defs).await;
    let (s, head, _) = status(gw, "").await;
    assert_eq!(s, 401);
    assert_eq!(
        header(&head, "www-authenticate"),
        Some("Basic realm=\"staff\", charset=\"UTF-8\"")
    );
    assert_eq!(status(gw, &basic("alice", "looking-glass")).await.0, 401);
    assert_eq!(status(gw, &basic("mallory", "wonderland")).await.0, 401);
    for _ in 0..3 {
        let (s, _, body) = status(gw, &basic("alice", "wonderland")).await;
        assert_eq!(s, 200);
        assert!(
            body.contains("x-user: alice") && !body.contains("authorization"),
            "{body}"
        );
    }
    let (s, _, body) = status(gw, &basic("bob", "builder")).await;
    assert_eq!(s, 200, "a user of the htpasswd file");
    assert!(body.contains("x-user: bob"), "{body}");
    // A file line that is not a bcrypt hash fails the config load, naming file and line.
    std::fs::write(&file, "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").expect("write");
    let routes = format!(
        "[[route]]\nlistener = \"web\"\npool = \"p0\"\npolicies = [\"login\", \"stamp\"]\n{defs}"
    );
    let err = lb_l7::gateway::load_str("t.toml", &config(&[(&[b.addr], "")], "", &routes))
        .expect_err("bad htpasswd");
    assert!(
        err.to_string()
            .contains(&format!("{}:1: expected USER:BCRYPT-HASH", file.display())),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_can_come_from_a_file() {
    let b = backend("b").await;
    let dir = std::env::temp_dir().join(format!("lb-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("keys");
    // sha256("password").
    std::fs::write(
        &file,
        "# consumers\ncli 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n",
    )
    .expect("write");
    let defs = format!(
        "[policy.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
        file.display()
    );
    let gw = with_policies(&b, "\"keys\"", &defs).await;
    assert_eq!(status(gw, "X-API-Key: password\r\n").await.0, 200);
    assert_eq!(status(gw, "X-API-Key: secret\r\n").await.0, 401);
    std::fs::write(&file, "cli password\n").expect("write");
    let routes =
        format!("[[route]]\nlistener = \"web\"\npool = \"p0\"\npolicies = [\"keys\"]\n{defs}");
    let err = lb_l7::gateway::load_str("t.toml", &config(&[(&[b.addr], "")], "", &routes))
        .expect_err("a plain key in the file");
    assert!(
        err.to_string()
            .contains(&format!("{}:1: expected NAME SHA256-HEX", file.display())),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
