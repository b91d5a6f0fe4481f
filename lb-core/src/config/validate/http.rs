//! Checks of the HTTP-mode parts of a config: `[[route]]`s, http listener keys, and the pool
//! keys only HTTP requests can use. Pure; no I/O.

use std::collections::HashMap;
use std::time::Duration;

use super::super::diag::{did_you_mean, Diagnostic};
use super::super::raw::{RawListener, RawMatch, RawPool, RawRoute, RawSize, S};
use super::super::size::parse_size;
use super::{valid_host_name, Ctx, Uses};
use crate::config::model::*;

/// Most retries a route may ask for: each is another backend tried for one request.
const MAX_RETRIES: i64 = 10;

/// Whether `name = value` can be a header field; reports why not at `key`.
pub(super) fn header_field(cx: &mut Ctx<'_>, name: &str, v: &S<String>, key: String) -> bool {
    if !is_token(name) {
        cx.err(
            v.span(),
            key,
            format!("\"{name}\" is not a valid header name"),
        );
        return false;
    }
    if !v
        .get_ref()
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        cx.err(
            v.span(),
            key,
            "header values are visible ASCII, spaces and tabs",
        );
        return false;
    }
    true
}

/// An RFC 9110 token: header and cookie names, methods.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(super) fn size(cx: &mut Ctx<'_>, v: &Option<S<RawSize>>, key: String) -> Option<u64> {
    let v = v.as_ref()?;
    let parsed = match v.get_ref() {
        RawSize::Bytes(n) => {
            u64::try_from(*n).map_err(|_| format!("expected a size of 0 or more bytes, found {n}"))
        }
        RawSize::Text(t) => parse_size(t),
    };
    match parsed {
        Ok(n) => Some(n),
        Err(e) => {
            cx.err(v.span(), key, e);
            None
        }
    }
}

/// The http settings of listener `l`; on other listeners, an error for each http key set.
pub(super) fn listener_http(
    cx: &mut Ctx<'_>,
    l: &RawListener,
    key: &str,
    http: bool,
) -> HttpSettings {
    if !http {
        let spans = [
            (
                "header_timeout",
                l.header_timeout.as_ref().map(|v| v.span()),
            ),
            ("max_body_size", l.max_body_size.as_ref().map(|v| v.span())),
            (
                "forwarded_headers",
                l.forwarded_headers.as_ref().map(|v| v.span()),
            ),
            ("via", l.via.as_ref().map(|v| v.span())),
            (
                "escaped_slashes",
                l.escaped_slashes.as_ref().map(|v| v.span()),
            ),
            ("request_id", l.request_id.as_ref().map(|v| v.span())),
        ];
        for (name, span) in spans {
            if let Some(span) = span {
                cx.push(
                    Diagnostic::error(format!(
                        "`{name}` applies only to protocol = \"http\" listeners"
                    ))
                    .at(span)
                    .key(format!("{key}.{name}"))
                    .help("remove it, or make this listener protocol = \"http\""),
                );
            }
        }
        return HttpSettings::default();
    }
    let d = HttpSettings::default();
    let header_timeout = cx.duration(
        &l.header_timeout,
        format!("{key}.header_timeout"),
        d.header_timeout,
    );
    if header_timeout.is_zero() {
        if let Some(v) = &l.header_timeout {
            cx.err(
                v.span(),
                format!("{key}.header_timeout"),
                "header_timeout must be greater than 0",
            );
        }
    }
    let forwarded = match l
        .forwarded_headers
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("replace", _)) => Forwarded::Replace,
        Some(("append", _)) => Forwarded::Append,
        Some((other, span)) => {
            cx.push(
                Diagnostic::error(format!(
                    "expected \"replace\" or \"append\", found \"{other}\""
                ))
                .at(span)
                .key(format!("{key}.forwarded_headers"))
                .help("\"append\" only behind a proxy you trust: clients can write these headers"),
            );
            Forwarded::Replace
        }
    };
    let escaped_slashes = match l
        .escaped_slashes
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("reject", _)) => EscapedSlashes::Reject,
        Some(("decode", _)) => EscapedSlashes::Decode,
        Some(("keep", _)) => EscapedSlashes::Keep,
        Some((other, span)) => {
            cx.push(
                Diagnostic::error(format!(
                    "expected \"reject\", \"decode\" or \"keep\", found \"{other}\""
                ))
                .at(span)
                .key(format!("{key}.escaped_slashes"))
                .help("\"reject\" (the default) answers 400 to paths with %2F, %5C or \\"),
            );
            EscapedSlashes::Reject
        }
    };
    let request_id = match l
        .request_id
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("keep", _)) => RequestIdMode::Keep,
        Some(("replace", _)) => RequestIdMode::Replace,
        Some(("off", _)) => RequestIdMode::Off,
        Some((other, span)) => {
            cx.push(
                Diagnostic::error(format!(
                    "expected \"keep\", \"replace\" or \"off\", found \"{other}\""
                ))
                .at(span)
                .key(format!("{key}.request_id"))
                .help("\"keep\" (the default) keeps a valid X-Request-Id a client sent and makes one otherwise"),
            );
            RequestIdMode::Keep
        }
    };
    HttpSettings {
        request_id,
        header_timeout,
        max_body_size: size(cx, &l.max_body_size, format!("{key}.max_body_size")),
        forwarded,
        via: l.via.as_ref().is_some_and(|v| *v.get_ref()),
        escaped_slashes,
    }
}

/// Checks every `[[route]]`; marks the pools they use as used by http.
pub(super) fn routes(
    cx: &mut Ctx<'_>,
    raw: &[(RawRoute, std::ops::Range<usize>)],
    listeners: &HashMap<&str, usize>,
    (protocols, tls): (&[Option<Protocol>], &[bool]),
    pools: &HashMap<&str, usize>,
    policies: &HashMap<String, usize>,
    used_pools: &mut [Uses],
) -> Vec<HttpRoute> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    // The names unnamed routes take by their place: a route named so would be another route
    // of that name (its cache entries, keyed by route name, and its metrics shared).
    let placed: HashMap<String, usize> = raw
        .iter()
        .enumerate()
        .filter(|(_, (r, _))| r.name.is_none())
        .map(|(i, _)| (format!("route[{i}]"), i))
        .collect();
    for (i, (r, _)) in raw.iter().enumerate() {
        let key = format!("route[{i}]");
        let name = r
            .name
            .as_ref()
            .map_or_else(|| key.clone(), |n| n.get_ref().clone());
        if let Some(n) = &r.name {
            if n.get_ref().is_empty() {
                cx.err(
                    n.span(),
                    format!("{key}.name"),
                    "route name must not be empty",
                );
            } else if let Some(first) = names
                .insert(name.clone(), i)
                .or_else(|| placed.get(&name).copied())
            {
                cx.push(
                    Diagnostic::error(format!("duplicate route name \"{name}\""))
                        .at(n.span())
                        .key(format!("{key}.name"))
                        .help(format!("route[{first}] already uses this name")),
                );
            }
        }
        let listener = match listeners.get(r.listener.get_ref().as_str()) {
            Some(&l) if protocols.get(l).copied().flatten() == Some(Protocol::Http) => Some(l),
            Some(&l) => {
                let p = protocols
                    .get(l)
                    .copied()
                    .flatten()
                    .map_or("tcp", Protocol::name);
                cx.push(
                    Diagnostic::error(format!(
                        "route \"{name}\" is on listener \"{}\", which is a {p} listener",
                        r.listener.get_ref()
                    ))
                    .at(r.listener.span())
                    .key(format!("{key}.listener"))
                    .help("routes apply only to protocol = \"http\" listeners"),
                );
                None
            }
            None => {
                let known: Vec<&str> = listeners.keys().copied().collect();
                let mut d = Diagnostic::error(format!(
                    "route \"{name}\" points at listener \"{}\", which does not exist",
                    r.listener.get_ref()
                ))
                .at(r.listener.span())
                .key(format!("{key}.listener"));
                if let Some(s) = did_you_mean(r.listener.get_ref(), &known) {
                    d = d.help(format!("did you mean \"{s}\"?"));
                }
                cx.push(d);
                None
            }
        };
        let m = r
            .matches
            .as_ref()
            .map(|m| conditions(cx, m.get_ref(), &format!("{key}.match")));
        let (host, path, methods, headers) = m.unwrap_or_default();
        let case_insensitive = r
            .matches
            .as_ref()
            .is_some_and(|m| case(cx, m.get_ref(), &format!("{key}.match"), path.is_some()));
        let upgrades = upgrades(cx, r, &key);
        let (graphql, graphql_operation) = super::graphql::route(cx, r, &key);
        let strip_prefix = r.strip_prefix.as_ref().is_some_and(|v| *v.get_ref());
        if let Some(v) = r.strip_prefix.as_ref().filter(|v| *v.get_ref()) {
            if !matches!(path, Some(RoutePath::Prefix(_))) {
                cx.err(
                    v.span(),
                    format!("{key}.strip_prefix"),
                    "strip_prefix needs a match.path_prefix to strip",
                );
            }
        }
        let rewrite = r.rewrite.as_ref().map(|v| {
            let text = v.get_ref();
            if path.is_none() {
                cx.push(
                    Diagnostic::error("`rewrite` replaces what the path condition matched, and this route has none")
                        .at(v.span())
                        .key(format!("{key}.rewrite"))
                        .help("add match.path_prefix, match.path or match.path_regex"),
                );
            } else if strip_prefix {
                cx.err(v.span(), format!("{key}.rewrite"), "use either strip_prefix or rewrite, not both");
            } else if !matches!(path, Some(RoutePath::Regex(_))) && !text.starts_with('/') {
                cx.err(v.span(), format!("{key}.rewrite"), format!("expected a path starting with '/', found \"{text}\""));
            }
            text.clone()
        });
        let timeout = cx.duration(
            &r.timeout,
            format!("{key}.timeout"),
            Duration::from_secs(60),
        );
        if timeout.is_zero() {
            if let Some(v) = &r.timeout {
                cx.err(
                    v.span(),
                    format!("{key}.timeout"),
                    "timeout must be greater than 0",
                );
            }
        }
        let on_tls = listener.is_some_and(|l| tls.get(l).copied().unwrap_or(false));
        let upstream =
            super::aggregate::upstream(cx, r, &key, &name, pools, on_tls, used_pools, timeout);
        let retries = cx.int(&r.retries, format!("{key}.retries"), 0, MAX_RETRIES, 0) as u32;
        let max_body_size = size(cx, &r.max_body_size, format!("{key}.max_body_size"));
        let mut route_policies = Vec::new();
        for (j, p) in r
            .policies
            .iter()
            .flat_map(|p| p.get_ref().iter())
            .enumerate()
        {
            match policies.get(p.get_ref()) {
                Some(&idx) => route_policies.push(idx),
                None => {
                    let known: Vec<&str> = policies.keys().map(String::as_str).collect();
                    let mut d = Diagnostic::error(format!(
                        "route \"{name}\" names policy \"{}\", which does not exist",
                        p.get_ref()
                    ))
                    .at(p.span())
                    .key(format!("{key}.policies[{j}]"));
                    if let Some(s) = did_you_mean(p.get_ref(), &known) {
                        d = d.help(format!("did you mean \"{s}\"?"));
                    } else {
                        d = d.help("define it as [policy.NAME] with a kind");
                    }
                    cx.push(d);
                }
            }
        }
        if let (Some(listener), Some((pool, aggregate))) = (listener, upstream) {
            out.push(HttpRoute {
                name,
                listener,
                host,
                path,
                methods,
                headers,
                pool,
                aggregate,
                strip_prefix,
                rewrite,
                timeout,
                retries,
                max_body_size,
                policies: route_policies,
                case_insensitive,
                upgrades,
                graphql,
                graphql_operation,
                grpc_transcode: super::transcode::route(cx, r, &key),
            });
        }
    }
    out
}

/// `match.case`: whether the path condition ignores ASCII case.
fn case(cx: &mut Ctx<'_>, m: &RawMatch, key: &str, has_path: bool) -> bool {
    let Some(v) = &m.case else {
        return false;
    };
    let insensitive = match v.get_ref().as_str() {
        "sensitive" => false,
        "insensitive" => true,
        other => {
            cx.err(
                v.span(),
                format!("{key}.case"),
                format!("expected \"sensitive\" or \"insensitive\", found \"{other}\""),
            );
            return false;
        }
    };
    if !has_path {
        cx.push(
            Diagnostic::error("`case` applies to the path condition, and this route has none")
                .at(v.span())
                .key(format!("{key}.case"))
                .help("add match.path_prefix, match.path or match.path_regex, or remove `case`"),
        );
    }
    insensitive
}

/// A route's `upgrades`: protocol tokens, lowercased; `["websocket"]` when absent.
fn upgrades(cx: &mut Ctx<'_>, r: &RawRoute, key: &str) -> Vec<String> {
    let Some(list) = &r.upgrades else {
        return vec!["websocket".to_string()];
    };
    let mut out = Vec::new();
    for (i, v) in list.get_ref().iter().enumerate() {
        let text = v.get_ref();
        if is_token(text) {
            out.push(text.to_ascii_lowercase());
        } else {
            cx.err(
                v.span(),
                format!("{key}.upgrades[{i}]"),
                format!("expected a protocol name such as \"websocket\", found \"{text}\""),
            );
        }
    }
    out
}

type Conds = (
    Option<String>,
    Option<RoutePath>,
    Vec<String>,
    Vec<(String, String)>,
);

fn conditions(cx: &mut Ctx<'_>, m: &RawMatch, key: &str) -> Conds {
    let host = m.host.as_ref().and_then(|h| {
        let text = h.get_ref().trim_end_matches('.').to_ascii_lowercase();
        let bare = text.strip_prefix("*.").unwrap_or(&text);
        if valid_host_name(bare) {
            Some(text)
        } else {
            cx.err(
                h.span(),
                format!("{key}.host"),
                format!(
                    "expected a host name or \"*.domain\", found \"{}\"",
                    h.get_ref()
                ),
            );
            None
        }
    });
    let given: Vec<_> = [
        m.path.as_ref().map(|p| ("path", p)),
        m.path_prefix.as_ref().map(|p| ("path_prefix", p)),
        m.path_regex.as_ref().map(|p| ("path_regex", p)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let [_, (extra, v), ..] = given.as_slice() {
        cx.push(
            Diagnostic::error(format!(
                "a route has one path condition; `{}` is its second",
                extra
            ))
            .at(v.span())
            .key(format!("{key}.{extra}"))
            .help("keep one of path, path_prefix and path_regex"),
        );
    }
    let path = given.first().and_then(|(kind, v)| {
        let text = v.get_ref().clone();
        let k = format!("{key}.{kind}");
        match *kind {
            "path_regex" => match regex::Regex::new(&text) {
                Ok(_) => Some(RoutePath::Regex(text)),
                Err(e) => {
                    cx.err(
                        v.span(),
                        k,
                        format!(
                            "invalid regex: {}",
                            e.to_string().lines().last().unwrap_or("").trim()
                        ),
                    );
                    None
                }
            },
            _ if !text.starts_with('/') => {
                cx.err(
                    v.span(),
                    k,
                    format!("expected a path starting with '/', found \"{text}\""),
                );
                None
            }
            "path" => Some(RoutePath::Exact(text)),
            _ => Some(RoutePath::Prefix(text)),
        }
    });
    let mut methods = Vec::new();
    for (i, v) in m
        .methods
        .iter()
        .flat_map(|m| m.get_ref().iter())
        .enumerate()
    {
        let text = v.get_ref().to_ascii_uppercase();
        if is_token(&text) {
            methods.push(text);
        } else {
            cx.err(
                v.span(),
                format!("{key}.methods[{i}]"),
                format!(
                    "expected an HTTP method such as \"GET\", found \"{}\"",
                    v.get_ref()
                ),
            );
        }
    }
    let mut headers = Vec::new();
    for (name, v) in m.headers.iter().flat_map(|h| h.get_ref().iter()) {
        if header_field(cx, name, v, format!("{key}.headers.\"{name}\"")) {
            headers.push((name.to_ascii_lowercase(), v.get_ref().clone()));
        }
    }
    (host, path, methods, headers)
}

/// Pool keys only HTTP requests can honour are errors on a pool a tcp or udp listener uses.
pub(super) fn pool_keys(cx: &mut Ctx<'_>, p: &RawPool, key: &str, used: Uses) {
    if !(used.tcp || used.udp) {
        return;
    }
    let http_hash = p
        .hash_key
        .as_ref()
        .filter(|k| {
            let k = k.get_ref();
            k == "path" || k.starts_with("header:") || k.starts_with("cookie:")
        })
        .map(|k| k.span());
    let keys = [
        (
            "http2",
            p.http2.as_ref().filter(|v| *v.get_ref()).map(|v| v.span()),
        ),
        ("sticky_cookie", p.sticky_cookie.as_ref().map(|v| v.span())),
        ("hash_key", http_hash),
    ];
    for (name, span) in keys {
        if let Some(span) = span {
            cx.push(
                Diagnostic::error(format!(
                    "`{name}` here needs HTTP requests, but pool \"{}\" serves a tcp or udp listener",
                    p.name.get_ref()
                ))
                .at(span)
                .key(format!("{key}.{name}"))
                .help("use it on a pool that only http listeners and routes use"),
            );
        }
    }
}
