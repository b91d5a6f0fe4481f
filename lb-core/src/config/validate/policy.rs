//! Checks of `[policy.NAME]` sections: the kind, the keys that belong to it, and each value.
//! Pure; no I/O.

use std::collections::HashMap;
use std::time::Duration;

use toml::Spanned;

use super::super::diag::{did_you_mean, Diagnostic};
use super::super::raw::{RawHeaderOps, RawPolicy, POLICY_KEYS, S};
use super::http::{header_field, is_token};
use super::policy_auth::{api_key, basic_auth, ip_filter, jwt};
use super::policy_values::{redis_url, whole_seconds};
use super::Ctx;
use crate::config::model::*;

/// Most keys a local rate limit tracks by default (each costs about 100 bytes).
const DEFAULT_MAX_KEYS: i64 = 100_000;

/// The policies in file order, and their index by name.
pub(super) fn policies(
    cx: &mut Ctx<'_>,
    raw: &[(String, std::ops::Range<usize>, RawPolicy)],
) -> (Vec<Policy>, HashMap<String, usize>) {
    let mut out = Vec::new();
    let mut index = HashMap::new();
    for (name, span, p) in raw {
        let key = format!("policy.{name}");
        if name.is_empty() || !is_token(name) {
            cx.err(
                span.clone(),
                key.clone(),
                format!("policy names are letters, digits, - and _; found \"{name}\""),
            );
        }
        if let Some(kind) = policy(cx, p, &key) {
            index.insert(name.clone(), out.len());
            out.push(Policy {
                name: name.clone(),
                kind,
            });
        }
    }
    (out, index)
}

/// Every key set in `p` with its span, by name.
fn keys_set(p: &RawPolicy) -> Vec<(&'static str, std::ops::Range<usize>)> {
    fn s<T>(v: &Option<Spanned<T>>) -> Option<std::ops::Range<usize>> {
        v.as_ref().map(Spanned::span)
    }
    [
        ("allow", s(&p.allow)),
        ("deny", s(&p.deny)),
        ("trusted_proxies", s(&p.trusted_proxies)),
        ("keys", s(&p.keys)),
        ("keys_file", s(&p.keys_file)),
        ("header", s(&p.header)),
        ("query", s(&p.query)),
        ("requests", s(&p.requests)),
        ("per", s(&p.per)),
        ("burst", s(&p.burst)),
        ("key", s(&p.key)),
        ("store", s(&p.store)),
        ("max_keys", s(&p.max_keys)),
        ("redis_url", s(&p.redis_url)),
        ("on_redis_error", s(&p.on_redis_error)),
        ("allow_origins", s(&p.allow_origins)),
        ("allow_methods", s(&p.allow_methods)),
        ("allow_headers", s(&p.allow_headers)),
        ("expose_headers", s(&p.expose_headers)),
        ("allow_credentials", s(&p.allow_credentials)),
        ("max_age", s(&p.max_age)),
        ("request", s(&p.request)),
        ("response", s(&p.response)),
        ("algorithms", s(&p.algorithms)),
        ("secret_env", s(&p.secret_env)),
        ("public_key_file", s(&p.public_key_file)),
        ("jwks_file", s(&p.jwks_file)),
        ("issuer", s(&p.issuer)),
        ("audience", s(&p.audience)),
        ("leeway", s(&p.leeway)),
        ("require_roles", s(&p.require_roles)),
        ("roles_claim", s(&p.roles_claim)),
        ("forward_claims", s(&p.forward_claims)),
        ("xml_to_json", s(&p.xml_to_json)),
        ("json_schema_file", s(&p.json_schema_file)),
        ("ttl", s(&p.ttl)),
        ("vary", s(&p.vary)),
        ("max_size", s(&p.max_size)),
        ("max_object_size", s(&p.max_object_size)),
        ("users", s(&p.users)),
        ("htpasswd_file", s(&p.htpasswd_file)),
        ("realm", s(&p.realm)),
        ("endpoint", s(&p.endpoint)),
        ("client_id", s(&p.client_id)),
        ("client_secret_env", s(&p.client_secret_env)),
        ("cache_ttl", s(&p.cache_ttl)),
        ("require_scopes", s(&p.require_scopes)),
        ("on_error", s(&p.on_error)),
        ("timeout", s(&p.timeout)),
        ("ca", s(&p.ca)),
    ]
    .into_iter()
    .filter_map(|(k, span)| span.map(|s| (k, s)))
    .collect()
}

fn policy(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> Option<PolicyKind> {
    let kind = p.kind.get_ref().as_str();
    let Some((_, allowed)) = POLICY_KEYS.iter().find(|(k, _)| *k == kind) else {
        let mut d = Diagnostic::error(format!(
            "expected a policy kind ({}), found \"{kind}\"",
            PolicyKind::NAMES.join(", ")
        ))
        .at(p.kind.span())
        .key(format!("{key}.kind"));
        if let Some(s) = did_you_mean(kind, PolicyKind::NAMES) {
            d = d.help(format!("did you mean \"{s}\"?"));
        }
        cx.push(d);
        return None;
    };
    let mut foreign = false;
    for (k, span) in keys_set(p) {
        if !allowed.contains(&k) {
            foreign = true;
            let owner = POLICY_KEYS
                .iter()
                .find(|(_, ks)| ks.contains(&k))
                .map_or("", |(n, _)| *n);
            cx.push(
                Diagnostic::error(format!("`{k}` does not apply to kind = \"{kind}\""))
                    .at(span)
                    .key(format!("{key}.{k}"))
                    .help(format!(
                        "`{k}` belongs to kind = \"{owner}\"; {kind} takes {}",
                        allowed.join(", ")
                    )),
            );
        }
    }
    let kind = match kind {
        "ip_filter" => ip_filter(cx, p, key),
        "api_key" => api_key(cx, p, key),
        "rate_limit" => rate_limit(cx, p, key),
        "cors" => cors(cx, p, key),
        "jwt" => jwt(cx, p, key),
        "basic_auth" => basic_auth(cx, p, key),
        "cache" => cache(cx, p, key),
        "transform" => transform(cx, p, key),
        "oauth2_introspection" => super::policy_oauth2::introspection(cx, p, key),
        _ => PolicyKind::Headers {
            request: header_ops(cx, p.request.as_ref(), &format!("{key}.request")),
            response: header_ops(cx, p.response.as_ref(), &format!("{key}.response")),
        },
    };
    (!foreign).then_some(kind)
}

fn rate_limit(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
    let requests = cx.int(
        &p.requests,
        format!("{key}.requests"),
        1,
        u32::MAX.into(),
        1,
    ) as u32;
    if p.requests.is_none() {
        cx.push(
            Diagnostic::error("a rate_limit needs `requests` (per `per`)")
                .at(p.kind.span())
                .key(format!("{key}.requests")),
        );
    }
    let per = cx.duration(&p.per, format!("{key}.per"), Duration::from_secs(1));
    if per.is_zero() {
        if let Some(v) = &p.per {
            cx.err(v.span(), format!("{key}.per"), "per must be greater than 0");
        }
    }
    let burst = cx.int(
        &p.burst,
        format!("{key}.burst"),
        1,
        u32::MAX.into(),
        i64::from(requests),
    ) as u32;
    let rate_key = match p.key.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
        None | Some(("ip", _)) => RateKey::Ip,
        Some(("route", _)) => RateKey::Route,
        Some(("api_key", _)) => RateKey::ApiKey,
        Some(("graphql:operation", _)) => RateKey::GraphqlOperation,
        Some((h, span)) if h.starts_with("header:") => {
            let name = &h["header:".len()..];
            if !is_token(name) {
                cx.err(
                    span.clone(),
                    format!("{key}.key"),
                    format!("\"{h}\": expected a header name after \"header:\""),
                );
            }
            RateKey::Header(name.to_ascii_lowercase())
        }
        Some((c, span)) if c.starts_with("jwt:") => {
            let claim = &c["jwt:".len()..];
            if claim.is_empty() {
                cx.err(
                    span.clone(),
                    format!("{key}.key"),
                    "expected a claim name after \"jwt:\", e.g. \"jwt:sub\"",
                );
            }
            RateKey::Jwt(claim.to_string())
        }
        Some((other, span)) => {
            cx.push(
                Diagnostic::error(format!("expected \"ip\", \"header:NAME\", \"jwt:CLAIM\", \"api_key\", \"graphql:operation\" or \"route\", found \"{other}\""))
                    .at(span)
                    .key(format!("{key}.key")),
            );
            RateKey::Ip
        }
    };
    let store = match p.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("local", _)) => {
            for (name, v) in [
                ("redis_url", &p.redis_url),
                ("on_redis_error", &p.on_redis_error),
            ] {
                if let Some(v) = v {
                    cx.push(
                        Diagnostic::error(format!("`{name}` applies to store = \"redis\" only"))
                            .at(v.span())
                            .key(format!("{key}.{name}")),
                    );
                }
            }
            RateStore::Local
        }
        Some(("redis", span)) => {
            let url = redis_url(cx, p, key, span).unwrap_or_default();
            let on_error = match p
                .on_redis_error
                .as_ref()
                .map(|v| (v.get_ref().as_str(), v.span()))
            {
                None | Some(("local", _)) => OnRedisError::Local,
                Some(("allow", _)) => OnRedisError::Allow,
                Some(("deny", _)) => OnRedisError::Deny,
                Some((other, span)) => {
                    cx.err(
                        span,
                        format!("{key}.on_redis_error"),
                        format!("expected \"local\", \"allow\" or \"deny\", found \"{other}\""),
                    );
                    OnRedisError::Local
                }
            };
            RateStore::Redis { url, on_error }
        }
        Some((other, span)) => {
            cx.err(
                span,
                format!("{key}.store"),
                format!("expected \"local\" or \"redis\", found \"{other}\""),
            );
            RateStore::Local
        }
    };
    let max_keys = cx.int(
        &p.max_keys,
        format!("{key}.max_keys"),
        1,
        100_000_000,
        DEFAULT_MAX_KEYS,
    ) as usize;
    if let (Some(v), RateStore::Redis { on_error, .. }) = (&p.max_keys, &store) {
        if *on_error != OnRedisError::Local {
            cx.push(
                Diagnostic::error("`max_keys` bounds counting in lb's memory, which this limit never does")
                    .at(v.span())
                    .key(format!("{key}.max_keys"))
                    .help("remove it, or set on_redis_error = \"local\" (counted locally while redis is down)"),
            );
        }
    }
    PolicyKind::RateLimit {
        requests,
        per,
        burst,
        key: rate_key,
        max_keys,
        store,
    }
}

fn strings(
    cx: &mut Ctx<'_>,
    v: &Option<S<Vec<S<String>>>>,
    key: String,
    check: fn(&str) -> bool,
    what: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in v.iter().flat_map(|l| l.get_ref().iter()).enumerate() {
        if check(s.get_ref()) {
            out.push(s.get_ref().clone());
        } else {
            cx.err(
                s.span(),
                format!("{key}[{i}]"),
                format!("expected {what}, found \"{}\"", s.get_ref()),
            );
        }
    }
    out
}

fn is_origin(s: &str) -> bool {
    s == "*"
        || ["http://", "https://"].iter().any(|scheme| {
            s.strip_prefix(scheme).is_some_and(|rest| {
                let host = rest.strip_prefix("*.").unwrap_or(rest);
                !host.is_empty() && !host.contains(['/', '*', ' '])
            })
        })
}

fn cors(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
    let allow_origins = strings(
        cx,
        &p.allow_origins,
        format!("{key}.allow_origins"),
        is_origin,
        "\"*\" or an origin such as \"https://app.example.com\" or \"https://*.example.com\"",
    );
    if p.allow_origins.is_none() {
        cx.push(
            Diagnostic::error("a cors policy needs `allow_origins`")
                .at(p.kind.span())
                .key(key.to_string()),
        );
    }
    let allow_credentials = p.allow_credentials.as_ref().is_some_and(|v| *v.get_ref());
    if allow_credentials && allow_origins.iter().any(|o| o == "*") {
        if let Some(v) = &p.allow_credentials {
            cx.push(
                Diagnostic::error("allow_credentials = true cannot go with allow_origins = [\"*\"]")
                    .at(v.span())
                    .key(format!("{key}.allow_credentials"))
                    .help("browsers refuse credentials for a wildcard origin (Fetch standard); list the origins"),
            );
        }
    }
    let upper = |m: Vec<String>| {
        m.into_iter()
            .map(|s| s.to_ascii_uppercase())
            .collect::<Vec<_>>()
    };
    PolicyKind::Cors {
        allow_origins,
        allow_methods: upper(strings(
            cx,
            &p.allow_methods,
            format!("{key}.allow_methods"),
            is_token,
            "an HTTP method",
        )),
        allow_headers: strings(
            cx,
            &p.allow_headers,
            format!("{key}.allow_headers"),
            is_token,
            "a header name",
        ),
        expose_headers: strings(
            cx,
            &p.expose_headers,
            format!("{key}.expose_headers"),
            is_token,
            "a header name",
        ),
        allow_credentials,
        max_age: p.max_age.as_ref().map(|v| {
            let d = cx.duration(&p.max_age, format!("{key}.max_age"), Duration::ZERO);
            whole_seconds(
                cx,
                v,
                d,
                &format!("{key}.max_age"),
                "Access-Control-Max-Age",
            )
        }),
    }
}

/// Fields a `headers` policy may not set or add: the framing, `Host` and hop-by-hop fields lb
/// writes for each connection (a policy's value would be dropped on one path, or break the
/// framing on the other).
pub(super) const CONNECTION_FIELDS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn header_ops(cx: &mut Ctx<'_>, ops: Option<&S<RawHeaderOps>>, key: &str) -> HeaderOps {
    let Some(ops) = ops else {
        return HeaderOps::default();
    };
    let ops = ops.get_ref();
    let mut pairs = |m: &Option<S<std::collections::BTreeMap<String, S<String>>>>, what: &str| {
        let mut out = Vec::new();
        for (name, v) in m.iter().flat_map(|m| m.get_ref().iter()) {
            let hkey = format!("{key}.{what}.\"{name}\"");
            if !header_field(cx, name, v, hkey.clone()) {
                continue;
            }
            if CONNECTION_FIELDS
                .iter()
                .any(|f| f.eq_ignore_ascii_case(name))
            {
                cx.push(
                    Diagnostic::error(format!(
                        "`{name}` describes one connection, and lb writes it itself"
                    ))
                    .at(v.span())
                    .key(hkey)
                    .help(
                        "framing, Host and hop-by-hop fields are lb's; set end-to-end fields only",
                    ),
                );
                continue;
            }
            if let Some(bad) = unknown_variable(v.get_ref()) {
                cx.push(
                    Diagnostic::error(format!("unknown variable ${{{bad}}}"))
                        .at(v.span())
                        .key(hkey)
                        .help(format!(
                            "variables: {}",
                            VARIABLES
                                .iter()
                                .map(|v| format!("${{{v}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                );
            } else {
                out.push((name.to_ascii_lowercase(), v.get_ref().clone()));
            }
        }
        out
    };
    let set = pairs(&ops.set, "set");
    let add = pairs(&ops.add, "add");
    let remove = strings(
        cx,
        &ops.remove,
        format!("{key}.remove"),
        is_token,
        "a header name",
    )
    .into_iter()
    .map(|h| h.to_ascii_lowercase())
    .collect();
    HeaderOps { set, add, remove }
}

/// What `${...}` may name in header values (and `jwt.CLAIM`).
pub const VARIABLES: &[&str] = &[
    "client_ip",
    "host",
    "method",
    "path",
    "consumer",
    "route",
    "jwt.CLAIM",
];

fn unknown_variable(v: &str) -> Option<String> {
    let mut rest = v;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Some(after.to_string());
        };
        let name = &after[..end];
        let claim = name.strip_prefix("jwt.").is_some_and(|c| !c.is_empty());
        if !claim && !VARIABLES.contains(&name) {
            return Some(name.to_string());
        }
        rest = &after[end + 1..];
    }
    None
}

fn cache(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
    let ttl = cx.duration(&p.ttl, format!("{key}.ttl"), Duration::from_secs(60));
    match &p.ttl {
        None => cx.push(
            Diagnostic::error("a cache policy needs `ttl`, e.g. \"10m\"")
                .at(p.kind.span())
                .key(format!("{key}.ttl")),
        ),
        Some(v) if ttl.is_zero() => {
            cx.err(v.span(), format!("{key}.ttl"), "ttl must be greater than 0")
        }
        Some(_) => {}
    }
    let redis_url = match p.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("local", _)) => {
            if let Some(u) = &p.redis_url {
                cx.err(
                    u.span(),
                    format!("{key}.redis_url"),
                    "`redis_url` applies to store = \"redis\" only",
                );
            }
            None
        }
        Some(("redis", span)) => redis_url(cx, p, key, span),
        Some((other, span)) => {
            cx.err(
                span,
                format!("{key}.store"),
                format!("expected \"local\" or \"redis\", found \"{other}\""),
            );
            None
        }
    };
    let size =
        |cx: &mut Ctx<'_>, v: &Option<S<super::super::raw::RawSize>>, name: &str, default: u64| {
            super::http::size(cx, v, format!("{key}.{name}")).unwrap_or(default)
        };
    let max_size = size(cx, &p.max_size, "max_size", 64 << 20);
    let max_object_size = size(cx, &p.max_object_size, "max_object_size", 1 << 20);
    if max_object_size > max_size {
        if let Some(v) = &p.max_object_size {
            cx.err(
                v.span(),
                format!("{key}.max_object_size"),
                "max_object_size is larger than max_size",
            );
        }
    }
    PolicyKind::Cache {
        ttl,
        vary: strings(
            cx,
            &p.vary,
            format!("{key}.vary"),
            is_token,
            "a header name",
        )
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect(),
        max_size,
        max_object_size,
        redis_url,
    }
}

fn transform(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
    let xml_to_json = p.xml_to_json.as_ref().is_some_and(|v| *v.get_ref());
    if !xml_to_json && p.json_schema_file.is_none() {
        cx.push(
            Diagnostic::error(
                "a transform does nothing without xml_to_json = true or a json_schema_file",
            )
            .at(p.kind.span())
            .key(key.to_string()),
        );
    }
    PolicyKind::Transform {
        xml_to_json,
        json_schema_file: p
            .json_schema_file
            .as_ref()
            .map(|f| super::file_ref(f, format!("{key}.json_schema_file"))),
        max_object_size: super::http::size(
            cx,
            &p.max_object_size,
            format!("{key}.max_object_size"),
        )
        .unwrap_or(1 << 20),
    }
}
