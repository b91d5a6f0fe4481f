//! Checks of where a route sends its requests: its `pool`, or its `aggregate` parts (SPEC §6)
//! with their names, pools, path templates and timeouts, and the route keys and policies an
//! aggregate route cannot honour. Pure; no I/O.

use std::collections::HashMap;
use std::time::Duration;

use super::super::diag::{did_you_mean, Diagnostic};
use super::super::duration::parse_duration;
use super::super::raw::{RawAggregatePart, RawRoute, S};
use super::{mark, Ctx, Uses};
use crate::config::model::*;
use crate::config::{AggregatePart, Template, Var, MAX_PARTS};

/// The longest part name: it is a JSON key and a metric label.
const MAX_NAME: usize = 64;

/// What one route resolved to.
pub(super) type Upstream = (Option<usize>, Vec<AggregatePart>);

/// Where the route at `key` sends: exactly one of `pool` and `aggregate`. Marks the pools
/// it uses as used by http (`tls`: on a TLS listener). `None` after an error.
#[allow(clippy::too_many_arguments)]
pub(super) fn upstream(
    cx: &mut Ctx<'_>,
    r: &RawRoute,
    key: &str,
    name: &str,
    pools: &HashMap<&str, usize>,
    tls: bool,
    used: &mut [Uses],
    timeout: Duration,
) -> Option<Upstream> {
    match (&r.pool, &r.aggregate) {
        (Some(p), None) => {
            let p = pool_ref(cx, p, format!("{key}.pool"), name, pools)?;
            mark(&mut used[p], Some(Protocol::Http), tls);
            Some((Some(p), Vec::new()))
        }
        (None, Some(list)) => {
            not_for_aggregate(cx, r, key);
            let parts = parts(cx, list, key, name, pools, timeout)?;
            for p in &parts {
                mark(&mut used[p.pool], Some(Protocol::Http), tls);
            }
            Some((None, parts))
        }
        (Some(_), Some(list)) => {
            cx.push(
                Diagnostic::error(format!(
                    "route \"{name}\" has both `pool` and `aggregate`"
                ))
                .at(list.span())
                .key(format!("{key}.aggregate"))
                .help("a route forwards to its pool or answers from its aggregate parts: keep one"),
            );
            None
        }
        (None, None) => {
            cx.push(
                Diagnostic::error(format!("route \"{name}\" has no `pool`"))
                    .at(r.listener.span())
                    .key(format!("{key}.pool"))
                    .help("add pool = \"NAME\", or aggregate = [{ name, pool, path }]"),
            );
            None
        }
    }
}

/// A pool named at `key`, reported with a hint when it does not exist.
fn pool_ref(
    cx: &mut Ctx<'_>,
    v: &S<String>,
    key: String,
    route: &str,
    pools: &HashMap<&str, usize>,
) -> Option<usize> {
    if let Some(&p) = pools.get(v.get_ref().as_str()) {
        return Some(p);
    }
    let known: Vec<&str> = pools.keys().copied().collect();
    let mut d = Diagnostic::error(format!(
        "route \"{route}\" points at pool \"{}\", which does not exist",
        v.get_ref()
    ))
    .at(v.span())
    .key(key);
    if let Some(s) = did_you_mean(v.get_ref(), &known) {
        d = d.help(format!("did you mean \"{s}\"?"));
    }
    cx.push(d);
    None
}

/// Route keys that shape a forwarded request, which an aggregate route never makes.
fn not_for_aggregate(cx: &mut Ctx<'_>, r: &RawRoute, key: &str) {
    let spans = [
        ("strip_prefix", r.strip_prefix.as_ref().map(|v| v.span())),
        ("rewrite", r.rewrite.as_ref().map(|v| v.span())),
        ("upgrades", r.upgrades.as_ref().map(|v| v.span())),
        // A part is lb's own GET: there is no GraphQL request to check or route.
        ("graphql", r.graphql.as_ref().map(|v| v.span())),
        // The route takes no body at all (413), so a size for one would limit nothing.
        ("max_body_size", r.max_body_size.as_ref().map(|v| v.span())),
    ];
    for (k, span) in spans {
        if let Some(span) = span {
            cx.push(
                Diagnostic::error(format!("`{k}` does not apply to an aggregate route"))
                    .at(span)
                    .key(format!("{key}.{k}"))
                    .help("each part's `path` says what its pool is asked for; remove it"),
            );
        }
    }
    let methods = r
        .matches
        .as_ref()
        .and_then(|m| m.get_ref().methods.as_ref());
    for (i, m) in methods.iter().flat_map(|m| m.get_ref().iter()).enumerate() {
        let upper = m.get_ref().to_ascii_uppercase();
        if upper != "GET" && upper != "HEAD" {
            cx.push(
                Diagnostic::error(format!(
                    "an aggregate route answers only GET and HEAD, not {}",
                    m.get_ref()
                ))
                .at(m.span())
                .key(format!("{key}.match.methods[{i}]"))
                .help("other methods get 405 from an aggregate route; remove it"),
            );
        }
    }
}

fn parts(
    cx: &mut Ctx<'_>,
    list: &S<Vec<S<RawAggregatePart>>>,
    key: &str,
    route: &str,
    pools: &HashMap<&str, usize>,
    timeout: Duration,
) -> Option<Vec<AggregatePart>> {
    let raw = list.get_ref();
    let mut ok = true;
    if raw.is_empty() || raw.len() > MAX_PARTS {
        ok = false;
        cx.err(
            list.span(),
            format!("{key}.aggregate"),
            format!(
                "an aggregate route has 1 to {MAX_PARTS} parts, this one has {}",
                raw.len()
            ),
        );
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let p = p.get_ref();
        let k = format!("{key}.aggregate[{i}]");
        let name = p.name.get_ref();
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            ok = false;
            cx.err(
                p.name.span(),
                format!("{k}.name"),
                format!(
                    "a part name is 1 to {MAX_NAME} letters, digits, `_` or `-`, found \"{name}\""
                ),
            );
        } else if let Some(first) = seen.insert(name, i) {
            ok = false;
            cx.push(
                Diagnostic::error(format!("duplicate part name \"{name}\""))
                    .at(p.name.span())
                    .key(format!("{k}.name"))
                    .help(format!(
                        "aggregate[{first}] already uses it: each part is one key of the answer"
                    )),
            );
        }
        let pool = pool_ref(cx, &p.pool, format!("{k}.pool"), route, pools);
        let path = match Template::parse(p.path.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                cx.err(p.path.span(), format!("{k}.path"), e);
                None
            }
        };
        let bad_timeout = p
            .timeout
            .as_ref()
            .is_some_and(|v| parse_duration(v.get_ref()).is_err());
        ok &= !bad_timeout;
        let part_timeout = cx.duration(&p.timeout, format!("{k}.timeout"), timeout);
        if part_timeout.is_zero() {
            if let Some(v) = &p.timeout {
                ok = false;
                cx.err(
                    v.span(),
                    format!("{k}.timeout"),
                    "timeout must be greater than 0",
                );
            }
        }
        match (pool, path) {
            (Some(pool), Some(path)) => out.push(AggregatePart {
                name: name.clone(),
                pool,
                path,
                timeout: part_timeout,
                required: p.required.as_ref().is_some_and(|v| *v.get_ref()),
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// The policies of aggregate routes: a template reading `${jwt.CLAIM}` needs a `jwt` or
/// `oauth2_introspection` policy on the route (otherwise no request has claims, and every
/// part would fail); `cache` and `transform` work around one backend exchange, which an
/// aggregate route does not make.
pub(super) fn policies(
    cx: &mut Ctx<'_>,
    raw_routes: &[(RawRoute, std::ops::Range<usize>)],
    policies: &[Policy],
    routes: &[HttpRoute],
) {
    // Spans come from the raw routes, which line up only when every route was valid.
    if routes.len() != raw_routes.len() {
        return;
    }
    for (i, (r, (rr, _))) in routes.iter().zip(raw_routes).enumerate() {
        let Some(list) = rr.aggregate.as_ref() else {
            continue;
        };
        let kinds = || r.policies.iter().map(|&p| &policies[p].kind);
        let claims = kinds().any(|k| {
            matches!(
                k,
                PolicyKind::Jwt { .. } | PolicyKind::OAuth2Introspection(_)
            )
        });
        for (j, part) in r.aggregate.iter().enumerate() {
            let jwt = part.path.vars().find(|v| matches!(v, Var::Jwt(_)));
            if let (Some(v), false) = (jwt, claims) {
                let span = list.get_ref().get(j).map(|p| p.get_ref().path.span());
                cx.push(
                    Diagnostic::error(format!(
                        "part \"{}\" reads {}, but route \"{}\" has no jwt policy to check a token",
                        part.name,
                        v.spelling(),
                        r.name
                    ))
                    .at(span.unwrap_or_else(|| list.span()))
                    .key(format!("route[{i}].aggregate[{j}].path"))
                    .help("add a jwt (or oauth2_introspection) policy to the route's policies"),
                );
            }
        }
        for (j, &p) in r.policies.iter().enumerate() {
            let kind = match policies[p].kind {
                PolicyKind::Cache { .. } => "cache",
                PolicyKind::Transform { .. } => "transform",
                _ => continue,
            };
            let span = rr
                .policies
                .as_ref()
                .and_then(|l| l.get_ref().get(j))
                .map_or_else(|| list.span(), |v| v.span());
            cx.push(
                Diagnostic::error(format!(
                    "a {kind} policy does not apply to aggregate route \"{}\"",
                    r.name
                ))
                .at(span)
                .key(format!("route[{i}].policies[{j}]"))
                .help(
                    "it works on one backend exchange; put it on the routes the parts' pools serve",
                ),
            );
        }
    }
}
