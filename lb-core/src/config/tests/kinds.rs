//! Keys that act only on some kinds of listener, pool or policy: accepted where they act,
//! an error naming why everywhere else (never accepted and ignored).

use super::*;

const UDP: &str = r#"
[[listener]]
name = "dns"
bind = "127.0.0.1:5353"
protocol = "udp"
pool = "dns"

[[pool]]
name = "dns"
backends = [{ addr = "127.0.0.1:53" }, { addr = "127.0.0.2:53" }]
"#;

const HTTP: &str = r#"
[[listener]]
name = "api"
bind = "127.0.0.1:8080"
protocol = "http"
pool = "p"

[[pool]]
name = "p"
backends = [{ addr = "127.0.0.1:9001" }]
"#;

fn set(base: &str, after: &str, line: &str) -> String {
    assert!(base.contains(after), "{after}");
    base.replacen(after, &format!("{after}\n{line}"), 1)
}

#[test]
fn udp_listeners_refuse_what_they_cannot_do() {
    assert!(load_str("t.toml", UDP).is_ok());
    for (line, key, needle) in [
        (
            "handshake_timeout = \"2s\"",
            "listener[0].handshake_timeout",
            "only to tcp and http",
        ),
        (
            "idle_timeout = \"2s\"",
            "listener[0].idle_timeout",
            "no effect on a udp listener",
        ),
        (
            "connect_timeout = \"2s\"",
            "listener[0].connect_timeout",
            "no effect on a udp listener",
        ),
    ] {
        one_error(&set(UDP, "pool = \"dns\"", line), key, needle);
    }
    let pool = "[[pool]]\nname = \"dns\"";
    for (line, key, needle) in [
        (
            "backend_tls = { verify = false }",
            "pool[0].backend_tls",
            "TLS to backends needs TCP",
        ),
        (
            "algorithm = \"consistent-hash\"\nhash_key = \"sni\"",
            "pool[0].hash_key",
            "no server name",
        ),
        (
            "health = { kind = \"tcp\" }",
            "pool[0].health.kind",
            "wrong transport",
        ),
    ] {
        one_error(&set(UDP, pool, line), key, needle);
    }
}

#[test]
fn pool_keys_that_could_not_act_are_errors() {
    one_error(
        &set(
            HTTP,
            "name = \"p\"",
            "algorithm = \"consistent-hash\"\nhash_key = \"sni\"",
        ),
        "pool[0].hash_key",
        "without tls",
    );
    one_error(
        &HTTP.replace(
            "{ addr = \"127.0.0.1:9001\" }",
            "{ addr = \"127.0.0.1:9001\", weight = 3 }",
        ),
        "pool[0].backends[0].weight",
        "round-robin ignores weights",
    );
    one_error(
        &set(
            HTTP,
            "name = \"p\"",
            "backend_tls = { verify = false, ca = \"conf/certs/ca.pem\" }",
        ),
        "pool[0].backend_tls.ca",
        "no effect with verify = false",
    );
    one_error(
        &set(
            HTTP,
            "name = \"p\"",
            "health = { kind = \"dns\", query = \"a.example\" }",
        ),
        "pool[0].health.kind",
        "wrong transport",
    );
    // Where they act, they are taken.
    let weighted = HTTP.replace(
        "{ addr = \"127.0.0.1:9001\" }",
        "{ addr = \"127.0.0.1:9001\", weight = 3 }, { addr = \"127.0.0.1:9002\" }",
    );
    assert!(load_str(
        "t.toml",
        &set(
            &weighted,
            "name = \"p\"",
            "algorithm = \"weighted-round-robin\""
        )
    )
    .is_ok());
    assert!(load_str(
        "t.toml",
        &set(
            HTTP,
            "name = \"p\"",
            "algorithm = \"consistent-hash\"\nhash_key = \"source-addr\""
        )
    )
    .is_ok());
}

#[test]
fn http_listener_path_and_upgrade_keys() {
    let c = load_str(
        "t.toml",
        &set(HTTP, "pool = \"p\"", "escaped_slashes = \"decode\""),
    )
    .expect("valid")
    .config;
    assert_eq!(c.listeners[0].http.escaped_slashes, EscapedSlashes::Decode);
    let default = load_str("t.toml", HTTP).expect("valid").config;
    assert_eq!(
        default.listeners[0].http.escaped_slashes,
        EscapedSlashes::Reject
    );
    one_error(
        &set(HTTP, "pool = \"p\"", "escaped_slashes = \"merge\""),
        "listener[0].escaped_slashes",
        "expected \"reject\", \"decode\" or \"keep\"",
    );
    one_error(
        &set(UDP, "pool = \"dns\"", "escaped_slashes = \"keep\""),
        "listener[0].escaped_slashes",
        "only to protocol = \"http\"",
    );
    let route = |m: &str, extra: &str| {
        format!("{HTTP}\n[[route]]\nlistener = \"api\"\nname = \"r\"\nmatch = {{ {m} }}\npool = \"p\"\n{extra}")
    };
    let c = load_str(
        "t.toml",
        &route(
            "path_prefix = \"/a\", case = \"insensitive\"",
            "upgrades = [\"WebSocket\", \"h2c\"]",
        ),
    )
    .expect("valid")
    .config;
    assert!(c.routes[0].case_insensitive);
    assert_eq!(c.routes[0].upgrades, ["websocket", "h2c"]);
    let c = load_str("t.toml", &route("path_prefix = \"/a\"", ""))
        .expect("valid")
        .config;
    assert_eq!(c.routes[0].upgrades, ["websocket"], "the default");
    assert!(!c.routes[0].case_insensitive);
    one_error(
        &route("path_prefix = \"/a\", case = \"upper\"", ""),
        "route[0].match.case",
        "expected \"sensitive\" or \"insensitive\"",
    );
    one_error(
        &route("host = \"a.example\", case = \"insensitive\"", ""),
        "route[0].match.case",
        "has none",
    );
    one_error(
        &route("path_prefix = \"/a\"", "upgrades = [\"web socket\"]"),
        "route[0].upgrades[0]",
        "expected a protocol name",
    );
}

#[test]
fn policies_must_be_used_and_in_an_order_that_works() {
    let base = format!(
        "{HTTP}\n[[route]]\nlistener = \"api\"\nname = \"r\"\nmatch = {{ path_prefix = \"/a\" }}\npool = \"p\"\npolicies = POLICIES\n\
         [policy.keys]\nkind = \"api_key\"\nkeys = [{{ name = \"cli\", sha256 = \"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\" }}]\n\
         [policy.per-key]\nkind = \"rate_limit\"\nrequests = 10\nper = \"1s\"\nkey = \"api_key\"\n"
    );
    assert!(load_str(
        "t.toml",
        &base.replace("POLICIES", "[\"keys\", \"per-key\"]")
    )
    .is_ok());
    one_error(
        &base.replace("POLICIES", "[\"per-key\", \"keys\"]"),
        "route \"r\".policies[0]",
        "no api_key policy comes before it",
    );
    one_error(
        &base.replace("POLICIES", "[\"keys\"]"),
        "policy.per-key",
        "not named by any route",
    );
}

#[test]
fn policy_values_a_kind_cannot_carry_are_errors() {
    let p = |kind_body: &str| {
        format!(
            "{HTTP}\n[[route]]\nlistener = \"api\"\nname = \"r\"\npool = \"p\"\npolicies = [\"x\"]\n[policy.x]\n{kind_body}"
        )
    };
    one_error(
        &p("kind = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"S\"\nleeway = \"1500ms\""),
        "policy.x.leeway",
        "whole seconds",
    );
    one_error(
        &p("kind = \"cors\"\nallow_origins = [\"https://a.example\"]\nmax_age = \"500ms\""),
        "policy.x.max_age",
        "whole seconds",
    );
    for field in [
        "Content-Length",
        "host",
        "transfer-encoding",
        "connection",
        "te",
    ] {
        one_error(
            &p(&format!(
                "kind = \"headers\"\nrequest = {{ set = {{ \"{field}\" = \"x\" }} }}"
            )),
            &format!("policy.x.request.set.\"{field}\""),
            "lb writes it itself",
        );
    }
    let redis = "kind = \"rate_limit\"\nrequests = 1\nper = \"1s\"\nstore = \"redis\"\n";
    one_error(
        &p(&format!("{redis}redis_url = \"redis://127.0.0.1:6379\"\non_redis_error = \"deny\"\nmax_keys = 10")),
        "policy.x.max_keys",
        "never does",
    );
    assert!(load_str("t.toml", &p(&format!("{redis}redis_url = \"redis://127.0.0.1:6379\"\non_redis_error = \"local\"\nmax_keys = 10"))).is_ok());
    for bad in [
        "redis://",
        "redis://host:port",
        "redis://a b:1",
        "redis://h:1/x",
        "http://h:1",
    ] {
        one_error(
            &p(&format!("{redis}redis_url = \"{bad}\"")),
            "policy.x.redis_url",
            "expected redis://",
        );
    }
    for good in [
        "redis://127.0.0.1:6379",
        "redis://cache.internal",
        "redis://u:pw@[::1]:6380/2",
    ] {
        assert!(
            load_str("t.toml", &p(&format!("{redis}redis_url = \"{good}\""))).is_ok(),
            "{good}"
        );
    }
}
