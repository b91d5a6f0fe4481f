//! Checks of the access-control policy kinds: `ip_filter`, `api_key`, `jwt`, `basic_auth`.
//! Pure; no I/O (key files are read by the HTTP side when the config loads).

use std::time::Duration;

use super::super::diag::Diagnostic;
use super::super::raw::{RawPolicy, S};
use super::http::is_token;
use super::Ctx;
use crate::config::model::*;

pub(super) fn api_key(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
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

pub(super) fn jwt(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
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
    if let Some(v) = &p.leeway {
        super::policy_values::whole_seconds(cx, v, leeway, &format!("{key}.leeway"), "jwt leeway");
    }
    let forward_claims = forward_claims(cx, p, key);
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

/// `forward_claims = { CLAIM = "header-name" }` of the token-checking kinds (jwt,
/// oauth2_introspection): lowercase header names. lb's own connection fields (the list the
/// headers policy refuses too) and `Authorization` are refused: a claim must not decide a
/// request's framing or routing, nor pose as the credential itself.
pub(super) fn forward_claims(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (claim, h) in p.forward_claims.iter().flat_map(|m| m.get_ref().iter()) {
        let name = h.get_ref().to_ascii_lowercase();
        let hkey = format!("{key}.forward_claims.\"{claim}\"");
        if !is_token(&name) {
            cx.err(
                h.span(),
                hkey,
                format!("\"{}\" is not a valid header name", h.get_ref()),
            );
        } else if super::policy::CONNECTION_FIELDS.contains(&name.as_str())
            || name == "authorization"
        {
            cx.err(
                h.span(),
                hkey,
                format!(
                    "`{name}` is not a header a claim may set (framing, routing or credentials)"
                ),
            );
        } else if out.iter().any(|(_, n)| *n == name) {
            cx.err(h.span(), hkey, format!("two claims would set `{name}`"));
        } else {
            out.push((claim.clone(), name));
        }
    }
    out
}

pub(super) fn basic_auth(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
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

pub(super) fn cidrs(cx: &mut Ctx<'_>, v: &Option<S<Vec<S<String>>>>, key: String) -> Vec<Cidr> {
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

pub(super) fn ip_filter(cx: &mut Ctx<'_>, p: &RawPolicy, key: &str) -> PolicyKind {
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
