//! Checks of a route's GraphQL settings: `graphql = {..}` and `match.graphql_operation`.
//! Pure; no I/O.

use super::super::diag::Diagnostic;
use super::super::model::{GraphqlLimits, GraphqlOperation};
use super::super::raw::RawRoute;
use super::Ctx;

/// A route's `graphql` limits and `match.graphql_operation`, checked. The operation is known
/// only by parsing the request as GraphQL, which lb does for `graphql` routes alone, so a
/// `graphql_operation` condition needs `graphql` on its route.
pub(super) fn route(
    cx: &mut Ctx<'_>,
    r: &RawRoute,
    key: &str,
) -> (Option<GraphqlLimits>, Option<GraphqlOperation>) {
    let limits = r.graphql.as_ref().map(|g| {
        let g = g.get_ref();
        let d = GraphqlLimits::DEFAULT;
        let k = |name: &str| format!("{key}.graphql.{name}");
        GraphqlLimits {
            max_depth: cx.int(
                &g.max_depth,
                k("max_depth"),
                1,
                GraphqlLimits::MAX_DEPTH.into(),
                d.max_depth.into(),
            ) as u32,
            max_aliases: cx.int(
                &g.max_aliases,
                k("max_aliases"),
                0,
                GraphqlLimits::MAX_ALIASES.into(),
                d.max_aliases.into(),
            ) as u32,
            max_complexity: cx.int(
                &g.max_complexity,
                k("max_complexity"),
                1,
                GraphqlLimits::MAX_COMPLEXITY.into(),
                d.max_complexity.into(),
            ) as u32,
            introspection: g
                .introspection
                .as_ref()
                .map_or(d.introspection, |v| *v.get_ref()),
        }
    });
    let op = r
        .matches
        .as_ref()
        .and_then(|m| m.get_ref().graphql_operation.as_ref())
        .and_then(|v| {
            let k = format!("{key}.match.graphql_operation");
            let Some(op) = GraphqlOperation::parse(v.get_ref()) else {
                cx.push(
                    Diagnostic::error(format!(
                        "expected \"query\", \"mutation\", \"subscription\" or an operation name, found \"{}\"",
                        v.get_ref()
                    ))
                    .at(v.span())
                    .key(k)
                    .help("an operation name is a GraphQL name: letters, digits and '_', not starting with a digit"),
                );
                return None;
            };
            if limits.is_none() {
                cx.push(
                    Diagnostic::error(
                        "`graphql_operation` needs the route to parse GraphQL, and it has no `graphql`",
                    )
                    .at(v.span())
                    .key(k)
                    .help("add `graphql = {}` (default limits) or `graphql = { max_depth = .. }` to the route"),
                );
            }
            Some(op)
        });
    (limits, op)
}
