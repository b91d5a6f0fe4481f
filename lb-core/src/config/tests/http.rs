//! HTTP mode: `[[route]]`s, http listener keys, and the pool keys only requests can use.

use super::*;
use std::time::Duration;

const HTTP: &str = r#"
[[listener]]
name = "api"
bind = "127.0.0.1:8080"
protocol = "http"
pool = "web"
tls = { cert = "conf/certs/site.pem", key = "conf/certs/site.key" }
header_timeout = "5s"
max_body_size = "10MiB"
forwarded_headers = "append"
via = true
request_id = "replace"

[[pool]]
name = "web"
backends = [{ addr = "127.0.0.1:9001" }]

[[pool]]
name = "users"
algorithm = "consistent-hash"
hash_key = "cookie:session"
sticky_cookie = "lb_srv"
http2 = true
backends = [{ addr = "127.0.0.1:9002" }, { addr = "127.0.0.1:9003" }]

[[route]]
listener = "api"
name = "users-v2"
match = { path_prefix = "/users", host = "API.example.com", methods = ["get", "POST"], headers = { "X-Api-Version" = "2" } }
pool = "users"
strip_prefix = true
timeout = "15s"
retries = 2
max_body_size = 1024

[[route]]
listener = "api"
match = { path_regex = "^/u/([0-9]+)$" }
rewrite = "/users/$1"
pool = "users"
"#;

fn http_with(pattern: &str, replacement: &str) -> String {
    assert!(HTTP.contains(pattern), "{pattern}");
    HTTP.replacen(pattern, replacement, 1)
}

#[test]
fn routes_and_http_keys_are_read() {
    let c = validated(HTTP).expect("valid");
    let l = &c.listeners[0];
    assert_eq!(l.protocol, Protocol::Http);
    assert_eq!(l.pool, Some(0));
    assert_eq!(l.http.header_timeout, Duration::from_secs(5));
    assert_eq!(l.http.max_body_size, Some(10 << 20));
    assert_eq!(l.http.forwarded, Forwarded::Append);
    assert!(l.http.via);
    assert_eq!(l.http.request_id, RequestIdMode::Replace);
    let tls = l.tls.as_ref().expect("tls");
    assert_eq!(
        tls.alpn,
        ["h2", "http/1.1"],
        "http listeners offer h2 by default"
    );
    let r = &c.routes[0];
    assert_eq!(r.name, "users-v2");
    assert_eq!((r.listener, r.pool), (0, Some(1)));
    assert_eq!(r.host.as_deref(), Some("api.example.com"));
    assert!(matches!(&r.path, Some(RoutePath::Prefix(p)) if p == "/users"));
    assert_eq!(r.methods, ["GET", "POST"]);
    assert_eq!(r.headers, [("x-api-version".to_string(), "2".to_string())]);
    assert!(r.strip_prefix);
    assert_eq!(
        (r.timeout, r.retries, r.max_body_size),
        (Duration::from_secs(15), 2, Some(1024))
    );
    let r = &c.routes[1];
    assert_eq!(r.name, "route[1]", "unnamed routes are named by position");
    assert_eq!(r.rewrite.as_deref(), Some("/users/$1"));
    assert_eq!(r.timeout, Duration::from_secs(60));
    let p = &c.pools[1];
    assert!(p.http2);
    assert_eq!(p.sticky_cookie.as_deref(), Some("lb_srv"));
    assert_eq!(p.hash_key, HashKey::Cookie("session".into()));
}

#[test]
fn an_http_listener_may_go_without_a_default_pool() {
    let text = http_with("protocol = \"http\"\npool = \"web\"", "protocol = \"http\"");
    let text = text.replace("pool = \"web\"\n", "");
    let text = text.replace(
        "[[pool]]\nname = \"web\"\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n",
        "",
    );
    let c = validated(&text).expect("valid");
    assert_eq!(c.listeners[0].pool, None);
    // A tcp listener still needs one.
    let tcp = text.replacen("protocol = \"http\"", "protocol = \"tcp\"", 1);
    assert!(validated(&tcp).is_err());
}

#[test]
fn route_references_are_checked() {
    refused_at(
        &http_with(
            "listener = \"api\"\nname = \"users-v2\"",
            "listener = \"apj\"\nname = \"users-v2\"",
        ),
        "route[0].listener",
        "does not exist",
    );
    refused_at(
        &http_with(
            "pool = \"users\"\nstrip_prefix",
            "pool = \"userz\"\nstrip_prefix",
        ),
        "route[0].pool",
        "does not exist",
    );
    let tcp = format!("{HTTP}\n[[listener]]\nname = \"raw\"\nbind = \"127.0.0.1:8081\"\npool = \"web\"\n[[route]]\nlistener = \"raw\"\npool = \"web\"\n");
    refused_at(&tcp, "route[2].listener", "tcp listener");
    refused_at(
        &http_with(
            "listener = \"api\"\nmatch = { path_regex",
            "listener = \"api\"\nname = \"users-v2\"\nmatch = { path_regex",
        ),
        "route[1].name",
        "duplicate route name",
    );
    // An unnamed route is named by its place: a route named so would share its caches'
    // entries (keyed by route name) and its metrics.
    refused_at(
        &http_with("name = \"users-v2\"", "name = \"route[1]\""),
        "route[0].name",
        "duplicate route name",
    );
    validated(&http_with("name = \"users-v2\"", "name = \"route[0]\"")).expect("its own place");
}

#[test]
fn route_conditions_are_checked() {
    refused_at(
        &http_with(
            "path_regex = \"^/u/([0-9]+)$\"",
            "path_regex = \"^/u/([0-9]+$\"",
        ),
        "route[1].match.path_regex",
        "invalid regex",
    );
    refused_at(
        &http_with(
            "path_prefix = \"/users\",",
            "path_prefix = \"/users\", path = \"/x\",",
        ),
        "route[0].match.path_prefix",
        "second",
    );
    refused_at(
        &http_with("path_prefix = \"/users\"", "path_prefix = \"users\""),
        "route[0].match.path_prefix",
        "starting with '/'",
    );
    refused_at(
        &http_with("host = \"API.example.com\"", "host = \"a.*.example\""),
        "route[0].match.host",
        "host name",
    );
    refused_at(
        &http_with("methods = [\"get\", \"POST\"]", "methods = [\"GE T\"]"),
        "route[0].match.methods[0]",
        "HTTP method",
    );
    refused_at(
        &http_with("\"X-Api-Version\" = \"2\"", "\"X Api\" = \"2\""),
        "route[0].match.headers.\"X Api\"",
        "header name",
    );
    refused_at(
        &http_with(
            "match = { path_regex = \"^/u/([0-9]+)$\" }\nrewrite",
            "rewrite",
        ),
        "route[1].rewrite",
        "no",
    );
    refused_at(
        &http_with(
            "strip_prefix = true",
            "strip_prefix = true\nrewrite = \"/x\"",
        ),
        "route[0].rewrite",
        "not both",
    );
    refused_at(
        &http_with(
            "path_regex = \"^/u/([0-9]+)$\" }",
            "path = \"/u\" }\nstrip_prefix = true",
        ),
        "route[1].strip_prefix",
        "path_prefix",
    );
    refused_at(
        &http_with("retries = 2", "retries = 11"),
        "route[0].retries",
        "0 to 10",
    );
    refused_at(
        &http_with("max_body_size = 1024", "max_body_size = \"1 parsec\""),
        "route[0].max_body_size",
        "size",
    );
    refused_at(
        &http_with("timeout = \"15s\"", "timeout = \"0s\""),
        "route[0].timeout",
        "greater than 0",
    );
    refused_at(
        &http_with("retries = 2", "retries = 2\npolicies = [\"jwt\"]"),
        "route[0].policies[0]",
        "does not exist",
    );
    refused_at(
        &http_with("retries = 2", "retries = 2\nwhat = 1"),
        "route[0].what",
        "unknown key",
    );
}

#[test]
fn http_only_keys_on_other_listeners_and_pools_are_errors() {
    let tcp = HTTP.replacen("protocol = \"http\"", "protocol = \"tcp\"", 1);
    for key in [
        "header_timeout",
        "max_body_size",
        "forwarded_headers",
        "via",
        "request_id",
    ] {
        refused_at(
            &tcp,
            &format!("listener[0].{key}"),
            "only to protocol = \"http\"",
        );
    }
    let pool_on_tcp = format!(
        "{HTTP}\n[[listener]]\nname = \"raw\"\nbind = \"127.0.0.1:8081\"\npool = \"users\"\n"
    );
    for key in ["http2", "sticky_cookie", "hash_key"] {
        refused_at(
            &pool_on_tcp,
            &format!("pool[1].{key}"),
            "tcp or udp listener",
        );
    }
    refused_at(
        &http_with(
            "forwarded_headers = \"append\"",
            "forwarded_headers = \"trust\"",
        ),
        "listener[0].forwarded_headers",
        "\"replace\" or \"append\"",
    );
    refused_at(
        &http_with("request_id = \"replace\"", "request_id = \"trust\""),
        "listener[0].request_id",
        "\"keep\", \"replace\" or \"off\"",
    );
    refused_at(
        &http_with("sticky_cookie = \"lb_srv\"", "sticky_cookie = \"lb srv\""),
        "pool[1].sticky_cookie",
        "cookie name",
    );
    refused_at(
        &http_with("hash_key = \"cookie:session\"", "hash_key = \"header:\""),
        "pool[1].hash_key",
        "header name",
    );
    let sni = http_with(
        "via = true",
        "via = true\nsni_routes = { \"a.example\" = \"web\" }",
    );
    refused_at(&sni, "listener[0].sni_routes", "only to tcp");
}
