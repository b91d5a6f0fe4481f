//! Checks of policies as routes use them: every policy guards some route, and a route's
//! policies come in an order that works. Pure; no I/O.

use super::super::diag::Diagnostic;
use super::super::model::*;
use super::super::raw::{RawPolicy, RawRoute};
use super::Ctx;

/// Checks of policies as routes use them: a policy no route names protects nothing (a
/// route the author meant to guard would go unguarded), and a rate limit keyed on the
/// consumer or a token claim needs the `api_key` or `jwt` policy that finds it earlier in the
/// route's list (otherwise every request would share one bucket).
pub(super) fn uses(
    cx: &mut Ctx<'_>,
    raw: &[(String, std::ops::Range<usize>, RawPolicy)],
    raw_routes: &[(RawRoute, std::ops::Range<usize>)],
    policies: &[Policy],
    routes: &[HttpRoute],
) {
    for (i, p) in policies.iter().enumerate() {
        if routes.iter().all(|r| !r.policies.contains(&i)) {
            if let Some((_, span, _)) = raw.iter().find(|(n, _, _)| *n == p.name) {
                cx.push(
                    Diagnostic::error(format!("policy \"{}\" is not named by any route", p.name))
                        .at(span.clone())
                        .key(format!("policy.{}", p.name))
                        .help(
                            "add it to the `policies` of the routes it should guard, or remove it",
                        ),
                );
            }
        }
    }
    // Spans come from the raw routes, which line up only when every route was valid.
    if routes.len() != raw_routes.len() {
        return;
    }
    for (r, (rr, _)) in routes.iter().zip(raw_routes) {
        let mut api_key = false;
        let mut jwt = false;
        for (j, &i) in r.policies.iter().enumerate() {
            match &policies[i].kind {
                PolicyKind::ApiKey { .. } => api_key = true,
                PolicyKind::Jwt { .. } | PolicyKind::OAuth2Introspection(_) => jwt = true,
                PolicyKind::RateLimit { key, .. } => {
                    let needs = match key {
                        RateKey::ApiKey if !api_key => Some("api_key"),
                        RateKey::Jwt(_) if !jwt => Some("jwt"),
                        _ => None,
                    };
                    let span = rr
                        .policies
                        .as_ref()
                        .and_then(|l| l.get_ref().get(j))
                        .map(|v| v.span());
                    // Only a `graphql` route parses the operation the key is made of.
                    if let (RateKey::GraphqlOperation, None, Some(span)) =
                        (key, &r.graphql, span.clone())
                    {
                        cx.push(
                            Diagnostic::error(format!(
                                "rate limit \"{}\" counts per GraphQL operation, but route \"{}\" has no `graphql`",
                                policies[i].name, r.name
                            ))
                            .at(span)
                            .key(format!("route \"{}\".policies[{j}]", r.name))
                            .help("add `graphql = {}` to the route, or key the limit on something else"),
                        );
                    }
                    if let (Some(kind), Some(span)) = (needs, span) {
                        cx.push(
                            Diagnostic::error(format!(
                                "rate limit \"{}\" counts per {kind} consumer, but no {kind} policy comes before it on route \"{}\"",
                                policies[i].name, r.name
                            ))
                            .at(span)
                            .key(format!("route \"{}\".policies[{j}]", r.name))
                            .help(format!("list a {kind} policy before it, or key the limit on \"ip\"")),
                        );
                    }
                }
                _ => {}
            }
        }
    }
}
