//! Checks of `kind = "oauth2_introspection"` (RFC 7662): the endpoint URL, the client
//! credentials' names, durations, scopes and `on_error`. Pure; no I/O (the secret is read
//! from the environment, and the CA file, by the HTTP side when the config loads).

use std::time::Duration;

use super::super::diag::Diagnostic;
use super::super::raw::RawPolicy;
use super::Ctx;
use crate::config::model::*;

/// Default `cache_ttl`.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Longest `cache_ttl`: a revoked token must stop working within a bounded time.
const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default `timeout`.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Longest `timeout`: requests wait this long for the endpoint.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// A scope token (RFC 6749 §3.3): `%x21 / %x23-5B / %x5D-7E`, at least one.
pub fn is_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// An environment variable name as a shell writes it: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn required(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str, name: &str, example: &str) {
    cx.push(
        Diagnostic::error(format!(
            "an oauth2_introspection policy needs `{name}`, e.g. {example}"
        ))
        .at(p.kind.span())
        .key(format!("{key}.{name}")),
    );
}

fn duration_within(
    cx: &mut Ctx<'_>,
    v: &Option<toml::Spanned<String>>,
    key: String,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Duration {
    let d = cx.duration(v, key.clone(), default);
    if let Some(v) = v {
        if d < min || d > max {
            cx.err(
                v.span(),
                key,
                format!("expected between {min:?} and {max:?}, found {d:?}"),
            );
        }
    }
    d.clamp(min, max)
}

pub(super) fn introspection(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
    let endpoint = match &p.endpoint {
        None => {
            required(
                cx,
                p,
                key,
                "endpoint",
                "\"https://auth.example.com/oauth2/introspect\"",
            );
            None
        }
        Some(v) => match Endpoint::parse(v.get_ref()) {
            Ok(e) => Some(e),
            Err(why) => {
                cx.err(
                    v.span(),
                    format!("{key}.endpoint"),
                    format!(
                        "expected http(s)://HOST[:PORT]/PATH, found \"{}\": {why}",
                        v.get_ref()
                    ),
                );
                None
            }
        },
    };
    if let (Some(e), Some(v)) = (&endpoint, &p.endpoint) {
        let local = e.host == "localhost"
            || e.host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        if !e.tls && !local {
            cx.push(
                Diagnostic::warning(
                    "the client secret and every token cross the network in clear to this endpoint",
                )
                .at(v.span())
                .key(format!("{key}.endpoint"))
                .help("use https:// unless the path to it is private"),
            );
        }
    }
    let client_id = match &p.client_id {
        None => {
            required(cx, p, key, "client_id", "\"lb-gateway\"");
            String::new()
        }
        Some(v) => {
            let id = v.get_ref();
            if id.is_empty() || id.chars().any(char::is_control) {
                cx.err(
                    v.span(),
                    format!("{key}.client_id"),
                    "a client_id is not empty and holds no control characters",
                );
            }
            id.clone()
        }
    };
    let client_secret_env = match &p.client_secret_env {
        None => {
            required(
                cx,
                p,
                key,
                "client_secret_env",
                "\"LB_INTROSPECTION_SECRET\"",
            );
            EnvVar {
                var: String::new(),
                span: 0..0,
                key: String::new(),
            }
        }
        Some(v) => {
            if !is_env_name(v.get_ref()) {
                cx.push(
                    Diagnostic::error(format!(
                        "expected the name of an environment variable, found \"{}\"",
                        v.get_ref()
                    ))
                    .at(v.span())
                    .key(format!("{key}.client_secret_env"))
                    .help("name the variable that holds the secret, never the secret itself"),
                );
            }
            EnvVar {
                var: v.get_ref().clone(),
                span: v.span(),
                key: format!("{key}.client_secret_env"),
            }
        }
    };
    let cache_ttl = duration_within(
        cx,
        &p.cache_ttl,
        format!("{key}.cache_ttl"),
        CACHE_TTL,
        (Duration::ZERO, MAX_CACHE_TTL),
    );
    let timeout = duration_within(
        cx,
        &p.timeout,
        format!("{key}.timeout"),
        TIMEOUT,
        (Duration::from_millis(1), MAX_TIMEOUT),
    );
    let mut require_scopes: Vec<String> = Vec::new();
    for (i, s) in p
        .require_scopes
        .iter()
        .flat_map(|l| l.get_ref().iter())
        .enumerate()
    {
        if !is_scope(s.get_ref()) {
            cx.err(
                s.span(),
                format!("{key}.require_scopes[{i}]"),
                format!(
                    "expected a scope (visible ASCII without space, '\"' or '\\'), found \"{}\"",
                    s.get_ref()
                ),
            );
        } else if !require_scopes.contains(s.get_ref()) {
            require_scopes.push(s.get_ref().clone());
        }
    }
    let on_error = match p
        .on_error
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("unavailable", _)) => OnIntrospectionError::Unavailable,
        Some(("deny", _)) => OnIntrospectionError::Deny,
        Some(("allow", span)) => {
            cx.push(
                Diagnostic::warning(
                    "on_error = \"allow\" lets requests with unchecked tokens through, unauthenticated, while the endpoint fails",
                )
                .at(span)
                .key(format!("{key}.on_error"))
                .help("whoever can slow the endpoint down opens this route; prefer \"unavailable\" (503) or \"deny\""),
            );
            OnIntrospectionError::Allow
        }
        Some((other, span)) => {
            cx.err(
                span,
                format!("{key}.on_error"),
                format!("expected \"unavailable\" (503, the default), \"deny\" or \"allow\", found \"{other}\""),
            );
            OnIntrospectionError::Unavailable
        }
    };
    let ca =
        p.ca.as_ref()
            .map(|f| super::file_ref(f, format!("{key}.ca")));
    if let (Some(f), Some(e)) = (&p.ca, &endpoint) {
        if !e.tls {
            cx.err(
                f.span(),
                format!("{key}.ca"),
                "`ca` verifies an https endpoint; this one is http://",
            );
        }
    }
    let forward_claims = super::policy_auth::forward_claims(cx, p, key);
    PolicyKind::OAuth2Introspection(Box::new(Introspection {
        endpoint: endpoint.unwrap_or(Endpoint {
            url: String::new(),
            tls: false,
            host: String::new(),
            port: 0,
            path: "/".into(),
        }),
        client_id,
        client_secret_env,
        cache_ttl,
        require_scopes,
        forward_claims,
        on_error,
        timeout,
        ca,
    }))
}
