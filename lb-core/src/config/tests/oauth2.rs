//! `kind = "oauth2_introspection"`: every key read, each bad value named with why.

use super::*;
use std::time::Duration;

const BASE: &str = r#"
[[listener]]
name = "api"
bind = "127.0.0.1:8080"
protocol = "http"

[[pool]]
name = "p"
backends = [{ addr = "127.0.0.1:9001" }]

[[route]]
listener = "api"
pool = "p"
policies = ["auth", "per-user"]

[policy.per-user]
kind = "rate_limit"
requests = 10
key = "jwt:sub"

[policy.auth]
kind = "oauth2_introspection"
endpoint = "https://auth.example.com:8443/oauth2/introspect?realm=a"
client_id = "lb-gateway"
client_secret_env = "LB_SECRET"
"#;

fn with(extra: &str) -> String {
    format!("{BASE}{extra}\n")
}

fn introspection(text: &str) -> Introspection {
    let c = validate(Source {
        name: "o.toml".into(),
        text: text.into(),
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .config;
    match &c.policies[1].kind {
        PolicyKind::OAuth2Introspection(i) => (**i).clone(),
        other => panic!("{other:?}"),
    }
}

fn error_at(text: &str, key: &str, needle: &str) {
    let errs = errors(text);
    let hit = errs
        .iter()
        .find(|d| d.key_path.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no error at {key}; got {errs:#?}"));
    assert!(
        hit.message.contains(needle) || hit.help.as_deref().is_some_and(|h| h.contains(needle)),
        "{hit:?} lacks {needle:?}"
    );
}

#[test]
fn every_key_is_read_with_its_default() {
    let i = introspection(BASE);
    assert_eq!(
        (i.endpoint.tls, i.endpoint.host.as_str(), i.endpoint.port),
        (true, "auth.example.com", 8443)
    );
    assert_eq!(i.endpoint.path, "/oauth2/introspect?realm=a");
    assert_eq!(i.endpoint.authority(), "auth.example.com:8443");
    assert_eq!(i.client_id, "lb-gateway");
    assert_eq!(i.client_secret_env.var, "LB_SECRET");
    assert_eq!(i.cache_ttl, Duration::from_secs(60));
    assert_eq!(i.timeout, Duration::from_secs(2));
    assert_eq!(i.on_error, OnIntrospectionError::Unavailable);
    assert!(i.require_scopes.is_empty() && i.forward_claims.is_empty() && i.ca.is_none());

    let i = introspection(&with(
        "cache_ttl = \"0s\"\ntimeout = \"250ms\"\nrequire_scopes = [\"read\", \"orders:write\", \"read\"]\n\
         forward_claims = { sub = \"X-User\" }\non_error = \"deny\"\nca = \"conf/certs/ca.pem\"",
    ));
    assert_eq!(i.cache_ttl, Duration::ZERO);
    assert_eq!(i.timeout, Duration::from_millis(250));
    assert_eq!(i.require_scopes, ["read", "orders:write"]);
    assert_eq!(
        i.forward_claims,
        [("sub".to_string(), "x-user".to_string())]
    );
    assert_eq!(i.on_error, OnIntrospectionError::Deny);
    assert_eq!(i.ca.map(|f| f.path), Some("conf/certs/ca.pem".into()));
    assert_eq!(
        introspection(&with("on_error = \"allow\"")).on_error,
        OnIntrospectionError::Allow
    );
}

#[test]
fn endpoints_are_taken_apart_or_refused_with_why() {
    let e = |u: &str| Endpoint::parse(u);
    let ok = e("http://[::1]/i").expect("v6");
    assert_eq!(
        (ok.host.as_str(), ok.port, ok.path.as_str()),
        ("::1", 80, "/i")
    );
    assert_eq!(ok.authority(), "[::1]");
    assert_eq!(e("https://a.example").expect("bare").path, "/");
    assert_eq!(e("http://a?x=1").expect("query").path, "/?x=1");
    for (bad, why) in [
        ("ftp://a/i", "http:// or https://"),
        ("https://user:pw@a/i", "client_id"),
        ("https://a:0/i", "port"),
        ("https://a:99999/i", "port"),
        ("https://a:x/i", "port"),
        ("https:///i", "no host"),
        ("https://a b/i", "spaces"),
        ("https://a/i#frag", "fragment"),
        ("https://-a-/i", "host name"),
        ("https://[zz]/i", "IPv6"),
        ("https://[::1/i", "closing ]"),
    ] {
        let err = e(bad).expect_err(bad);
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn bad_values_are_named() {
    let replace = |from: &str, to: &str| BASE.replacen(from, to, 1);
    error_at(
        &replace(
            "\"https://auth.example.com:8443/oauth2/introspect?realm=a\"",
            "\"auth.example.com\"",
        ),
        "policy.auth.endpoint",
        "http:// or https://",
    );
    error_at(
        &replace("\"LB_SECRET\"", "\"hunter2 \""),
        "policy.auth.client_secret_env",
        "never the secret",
    );
    error_at(
        &replace("\"lb-gateway\"", "\"\""),
        "policy.auth.client_id",
        "not empty",
    );
    error_at(
        &with("cache_ttl = \"2d\""),
        "policy.auth.cache_ttl",
        "between",
    );
    error_at(&with("cache_ttl = \"soon\""), "policy.auth.cache_ttl", "");
    error_at(&with("timeout = \"0s\""), "policy.auth.timeout", "between");
    error_at(&with("timeout = \"2m\""), "policy.auth.timeout", "between");
    error_at(
        &with("require_scopes = [\"read write\"]"),
        "policy.auth.require_scopes[0]",
        "expected a scope",
    );
    error_at(
        &with("require_scopes = [\"\"]"),
        "policy.auth.require_scopes[0]",
        "expected a scope",
    );
    error_at(
        &with("on_error = \"open\""),
        "policy.auth.on_error",
        "\"unavailable\"",
    );
    error_at(
        &with("forward_claims = { sub = \"host\" }"),
        "policy.auth.forward_claims.\"sub\"",
        "not a header a claim may set",
    );
    error_at(
        &with("forward_claims = { sub = \"x u\" }"),
        "policy.auth.forward_claims.\"sub\"",
        "not a valid header name",
    );
    error_at(
        &with("forward_claims = { sub = \"x-u\", username = \"X-U\" }"),
        "policy.auth.forward_claims.\"username\"",
        "two claims",
    );
    error_at(
        &with("algorithms = [\"RS256\"]"),
        "policy.auth.algorithms",
        "belongs to kind = \"jwt\"",
    );
    let http = BASE.replacen(
        "https://auth.example.com:8443",
        "http://auth.example.com",
        1,
    );
    error_at(
        &format!("{http}ca = \"ca.pem\"\n"),
        "policy.auth.ca",
        "https",
    );
    for (key, line) in [
        (
            "endpoint",
            "endpoint = \"https://auth.example.com:8443/oauth2/introspect?realm=a\"\n",
        ),
        ("client_id", "client_id = \"lb-gateway\"\n"),
        ("client_secret_env", "client_secret_env = \"LB_SECRET\"\n"),
    ] {
        error_at(
            &BASE.replacen(line, "", 1),
            &format!("policy.auth.{key}"),
            "needs",
        );
    }
}

#[test]
fn cleartext_and_allow_are_warned_about() {
    let warned = |text: &str, needle: &str| {
        let v = validate(Source {
            name: "o.toml".into(),
            text: text.into(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            v.warnings.iter().any(|d| d.message.contains(needle)),
            "{needle}: {:#?}",
            v.warnings
        );
    };
    let http = BASE.replacen(
        "https://auth.example.com:8443",
        "http://auth.example.com",
        1,
    );
    warned(&http, "in clear");
    warned(&with("on_error = \"allow\""), "unauthenticated");
    let local = BASE.replacen("https://auth.example.com:8443", "http://127.0.0.1:8080", 1);
    let v = validate(Source {
        name: "o.toml".into(),
        text: local,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        v.warnings.is_empty(),
        "loopback is private: {:#?}",
        v.warnings
    );
}
