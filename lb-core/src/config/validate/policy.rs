//! Checks of `[policy.NAME]` sections: the kind, the keys that belong to it, and each value.
//! Pure; no I/O.

use std::collections::HashMap;
use std::time::Duration;

use toml::Spanned;

use super::super::diag::{did_you_mean, Diagnostic};
use super::super::raw::{RawHeaderOps, RawPolicy, POLICY_KEYS, S};
use super::http::{header_field, is_token};
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
        _ => PolicyKind::Headers {
            request: header_ops(cx, p.request.as_ref(), &format!("{key}.request")),
            response: header_ops(cx, p.response.as_ref(), &format!("{key}.response")),
        },
    };
    (!foreign).then_some(kind)
}

fn cidrs(cx: &mut Ctx<'_>, v: &Option<S<Vec<S<String>>>>, key: String) -> Vec<Cidr> {
    let mut out = Vec::new();
    for (i, c) in v.iter().flat_map(|l| l.get_ref().iter()).enumerate() {
        match Cidr::parse(c.get_ref()) {
            Some(n) => out.push(n),
            None => cx.err(
                c.span(),
                format!("{key}[{i}]"),
                format!("expected an address or network such as \"10.0.0.0/8\" or \"2001:db8::/32\", found \"{}\"", c.get_ref()),
            ),
        }
    }
    out
}

fn ip_filter(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
    let allow = cidrs(cx, &p.allow, format!("{key}.allow"));
    let deny = cidrs(cx, &p.deny, format!("{key}.deny"));
    if p.allow.is_none() && p.deny.is_none() {
        cx.push(
            Diagnostic::error("an ip_filter needs `allow`, `deny` or both")
                .at(p.kind.span())
                .key(key.to_string()),
        );
    }
    PolicyKind::IpFilter {
        allow,
        deny,
        trusted_proxies: cidrs(cx, &p.trusted_proxies, format!("{key}.trusted_proxies")),
    }
}

fn api_key(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
    let mut keys = Vec::new();
    for (i, k) in p.keys.iter().flat_map(|l| l.get_ref().iter()).enumerate() {
        let k = k.get_ref();
        let hex = k.sha256.get_ref();
        match parse_sha256(hex) {
            Some(d) => keys.push((k.name.get_ref().clone(), d)),
            None => cx.push(
                Diagnostic::error(format!(
                    "expected the 64 hex digits of a SHA-256, found \"{hex}\""
                ))
                .at(k.sha256.span())
                .key(format!("{key}.keys[{i}].sha256"))
                .help("store the key's digest, never the key: printf %s \"$KEY\" | sha256sum"),
            ),
        }
    }
    if keys.is_empty() && p.keys.is_none() && p.keys_file.is_none() {
        cx.push(
            Diagnostic::error("an api_key policy needs `keys`, a `keys_file`, or both")
                .at(p.kind.span())
                .key(key.to_string()),
        );
    }
    let header = p.header.as_ref().map_or_else(
        || "x-api-key".to_string(),
        |h| {
            if !is_token(h.get_ref()) {
                cx.err(
                    h.span(),
                    format!("{key}.header"),
                    format!("\"{}\" is not a valid header name", h.get_ref()),
                );
            }
            h.get_ref().to_ascii_lowercase()
        },
    );
    PolicyKind::ApiKey {
        keys,
        keys_file: p
            .keys_file
            .as_ref()
            .map(|f| super::file_ref(f, format!("{key}.keys_file"))),
        header,
        query: p.query.as_ref().map(|q| q.get_ref().clone()),
    }
}

/// The 32 bytes of a SHA-256 written as 64 hex digits.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
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
                Diagnostic::error(format!("expected \"ip\", \"header:NAME\", \"jwt:CLAIM\", \"api_key\" or \"route\", found \"{other}\""))
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
        max_age: p
            .max_age
            .as_ref()
            .map(|_| cx.duration(&p.max_age, format!("{key}.max_age"), Duration::ZERO)),
    }
}

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

/// JWS algorithms a `jwt` policy may accept, by key family.
const HMAC: &[&str] = &["HS256", "HS384", "HS512"];
const RSA: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
const EC: &[&str] = &["ES256", "ES384"];
const ED: &[&str] = &["EdDSA"];

fn family(alg: &str) -> Option<&'static str> {
    [(HMAC, "hmac"), (RSA, "rsa"), (EC, "ec"), (ED, "ed")]
        .iter()
        .find(|(algs, _)| algs.contains(&alg))
        .map(|(_, f)| *f)
}

fn jwt(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
    let mut algorithms = Vec::new();
    for (i, a) in p
        .algorithms
        .iter()
        .flat_map(|l| l.get_ref().iter())
        .enumerate()
    {
        let name = a.get_ref();
        let canonical = if name.eq_ignore_ascii_case("eddsa") {
            "EdDSA".to_string()
        } else {
            name.to_ascii_uppercase()
        };
        if canonical == "NONE" {
            cx.push(
                Diagnostic::error(
                    "algorithm \"none\" is never accepted: it means an unsigned token",
                )
                .at(a.span())
                .key(format!("{key}.algorithms[{i}]")),
            );
        } else if family(&canonical).is_none() {
            cx.err(
                a.span(),
                format!("{key}.algorithms[{i}]"),
                format!("expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA; found \"{name}\""),
            );
        } else {
            algorithms.push(canonical);
        }
    }
    if p.algorithms.is_none() {
        cx.push(
            Diagnostic::error("a jwt policy needs `algorithms`, e.g. [\"RS256\"]")
                .at(p.kind.span())
                .key(format!("{key}.algorithms")),
        );
    }
    let sources: Vec<(&str, &S<String>)> = [
        ("secret_env", p.secret_env.as_ref()),
        ("public_key_file", p.public_key_file.as_ref()),
        ("jwks_file", p.jwks_file.as_ref()),
    ]
    .into_iter()
    .filter_map(|(n, v)| v.map(|v| (n, v)))
    .collect();
    let jwt_key = match sources.as_slice() {
        [] => {
            cx.push(
                Diagnostic::error(
                    "a jwt policy needs its key: secret_env, public_key_file or jwks_file",
                )
                .at(p.kind.span())
                .key(key.to_string()),
            );
            None
        }
        [(n, v)] => Some(match *n {
            "secret_env" => JwtKey::SecretEnv {
                var: v.get_ref().clone(),
                span: v.span(),
                key: format!("{key}.secret_env"),
            },
            "public_key_file" => {
                JwtKey::PublicKeyFile(super::file_ref(v, format!("{key}.public_key_file")))
            }
            _ => JwtKey::JwksFile(super::file_ref(v, format!("{key}.jwks_file"))),
        }),
        [_, (n, v), ..] => {
            cx.push(
                Diagnostic::error(format!(
                    "a jwt policy has one key source; `{n}` is its second"
                ))
                .at(v.span())
                .key(format!("{key}.{n}")),
            );
            None
        }
    };
    // The key decides which algorithms can be honest: an HMAC secret signs HS* only, and a
    // public key must never verify HS* (anyone holding the public key could sign with it).
    let families: Vec<&str> = algorithms.iter().filter_map(|a| family(a)).collect();
    if let (Some(k), Some(algs)) = (&jwt_key, &p.algorithms) {
        let secret = matches!(k, JwtKey::SecretEnv { .. });
        if secret && families.iter().any(|f| *f != "hmac") {
            cx.push(
                Diagnostic::error("secret_env is an HMAC secret: it verifies HS256/384/512 only")
                    .at(algs.span())
                    .key(format!("{key}.algorithms"))
                    .help("use public_key_file or jwks_file for RS/PS/ES/EdDSA tokens"),
            );
        }
        if !secret && families.contains(&"hmac") {
            cx.push(
                Diagnostic::error(
                    "HS256/384/512 with a public key would accept tokens signed with that public key",
                )
                .at(algs.span())
                .key(format!("{key}.algorithms"))
                .help("HMAC algorithms need secret_env"),
            );
        }
        if let JwtKey::PublicKeyFile(f) = k {
            if families.windows(2).any(|w| w[0] != w[1]) {
                cx.push(
                    Diagnostic::error(
                        "one public key file holds one kind of key: these algorithms need several",
                    )
                    .at(f.span.clone())
                    .key(format!("{key}.public_key_file"))
                    .help("use a jwks_file for keys of several kinds"),
                );
            }
        }
    }
    let leeway = cx.duration(&p.leeway, format!("{key}.leeway"), Duration::ZERO);
    let mut forward_claims = Vec::new();
    for (claim, h) in p.forward_claims.iter().flat_map(|m| m.get_ref().iter()) {
        if is_token(h.get_ref()) {
            forward_claims.push((claim.clone(), h.get_ref().to_ascii_lowercase()));
        } else {
            cx.err(
                h.span(),
                format!("{key}.forward_claims.\"{claim}\""),
                format!("\"{}\" is not a valid header name", h.get_ref()),
            );
        }
    }
    PolicyKind::Jwt {
        algorithms,
        key: jwt_key.unwrap_or(JwtKey::SecretEnv {
            var: String::new(),
            span: 0..0,
            key: String::new(),
        }),
        issuer: p.issuer.as_ref().map(|v| v.get_ref().clone()),
        audience: p.audience.as_ref().map(|v| v.get_ref().clone()),
        leeway,
        require_roles: p
            .require_roles
            .iter()
            .flat_map(|l| l.get_ref().iter())
            .map(|r| r.get_ref().clone())
            .collect(),
        roles_claim: p
            .roles_claim
            .as_ref()
            .map_or_else(|| "roles".to_string(), |v| v.get_ref().clone()),
        forward_claims,
    }
}

fn basic_auth(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
    let mut users = Vec::new();
    for (name, h) in p.users.iter().flat_map(|m| m.get_ref().iter()) {
        if name.is_empty() || name.contains(':') {
            cx.err(
                h.span(),
                format!("{key}.users.\"{name}\""),
                "a user name is not empty and has no ':'",
            );
        } else if !is_bcrypt(h.get_ref()) {
            cx.push(
                Diagnostic::error(format!(
                    "user \"{name}\": expected a bcrypt hash ($2y$…, 60 characters)"
                ))
                .at(h.span())
                .key(format!("{key}.users.\"{name}\""))
                .help("make one with: htpasswd -nbB USER PASSWORD (the part after the ':'); never a plain password"),
            );
        } else {
            users.push((name.clone(), h.get_ref().clone()));
        }
    }
    if p.users.is_none() && p.htpasswd_file.is_none() {
        cx.push(
            Diagnostic::error("a basic_auth policy needs `users`, an `htpasswd_file`, or both")
                .at(p.kind.span())
                .key(key.to_string()),
        );
    }
    let realm = p
        .realm
        .as_ref()
        .map_or_else(|| "lb".to_string(), |r| r.get_ref().clone());
    if realm.contains('"') || !realm.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        if let Some(r) = &p.realm {
            cx.err(
                r.span(),
                format!("{key}.realm"),
                "a realm is visible ASCII without '\"'",
            );
        }
    }
    PolicyKind::BasicAuth {
        users,
        htpasswd_file: p
            .htpasswd_file
            .as_ref()
            .map(|f| super::file_ref(f, format!("{key}.htpasswd_file"))),
        realm,
    }
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

/// The `redis_url` of a policy with `store = "redis"` (set at `store_span`), if usable.
fn redis_url(
    cx: &mut Ctx<'_>,
    p: &RawPolicy,
    key: &str,
    store_span: std::ops::Range<usize>,
) -> Option<String> {
    match &p.redis_url {
        Some(u) if u.get_ref().len() > "redis://".len() && u.get_ref().starts_with("redis://") => {
            Some(u.get_ref().clone())
        }
        Some(u) => {
            cx.err(
                u.span(),
                format!("{key}.redis_url"),
                format!("expected redis://HOST:PORT[/DB], found \"{}\"", u.get_ref()),
            );
            None
        }
        None => {
            cx.push(
                Diagnostic::error(
                    "store = \"redis\" needs `redis_url`, e.g. \"redis://127.0.0.1:6379\"",
                )
                .at(store_span)
                .key(format!("{key}.redis_url")),
            );
            None
        }
    }
}
