//! A route's `graphql = {..}`, `match.graphql_operation` and the `graphql:operation`
//! rate-limit key.

use super::*;

const BASE: &str = r#"
[[listener]]
name = "api"
bind = "127.0.0.1:8080"
protocol = "http"

[[pool]]
name = "gql"
backends = [{ addr = "127.0.0.1:9001" }]

[[route]]
listener = "api"
name = "writes"
match = { path = "/graphql", graphql_operation = "mutation" }
graphql = { max_depth = 7, max_aliases = 0, max_complexity = 200, introspection = true }
pool = "gql"

[[route]]
listener = "api"
name = "reads"
match = { path = "/graphql" }
graphql = {}
pool = "gql"
policies = ["per-op"]

[policy.per-op]
kind = "rate_limit"
requests = 10
per = "1s"
key = "graphql:operation"
"#;

/// `BASE` with `from` replaced by `to` is refused at `key` with a message holding `needle`.
fn refused(from: &str, to: &str, key: &str, needle: &str) {
    assert!(BASE.contains(from), "{from}");
    refused_at(&BASE.replacen(from, to, 1), key, needle);
}

#[test]
fn graphql_settings_are_read_with_defaults() {
    let c = validated(BASE).expect("valid");
    let w = &c.routes[0];
    assert_eq!(
        w.graphql,
        Some(GraphqlLimits {
            max_depth: 7,
            max_aliases: 0,
            max_complexity: 200,
            introspection: true
        })
    );
    assert_eq!(w.graphql_operation, Some(GraphqlOperation::Mutation));
    assert_eq!(c.routes[1].graphql, Some(GraphqlLimits::DEFAULT));
    assert_eq!(c.routes[1].graphql_operation, None);
    assert!(matches!(
        c.policies[0].kind,
        PolicyKind::RateLimit {
            key: RateKey::GraphqlOperation,
            ..
        }
    ));
    let named = BASE.replacen("\"mutation\"", "\"CreateUser\"", 1);
    let c = validated(&named).expect("valid");
    assert_eq!(
        c.routes[0].graphql_operation,
        Some(GraphqlOperation::Named("CreateUser".into()))
    );
}

#[test]
fn limits_out_of_range_are_refused() {
    let k = "route[0].graphql";
    refused(
        "max_depth = 7",
        "max_depth = 0",
        &format!("{k}.max_depth"),
        "from 1 to 50",
    );
    refused(
        "max_depth = 7",
        "max_depth = 51",
        &format!("{k}.max_depth"),
        "from 1 to 50",
    );
    refused(
        "max_aliases = 0",
        "max_aliases = -1",
        &format!("{k}.max_aliases"),
        "from 0",
    );
    refused(
        "max_complexity = 200",
        "max_complexity = 0",
        &format!("{k}.max_complexity"),
        "from 1",
    );
    refused(
        "max_complexity = 200",
        "max_complexity = 1000001",
        &format!("{k}.max_complexity"),
        "1000000",
    );
}

#[test]
fn unknown_graphql_key_is_refused() {
    let errs = validated(&BASE.replacen("introspection = true", "introspect = true", 1))
        .expect_err("unknown key");
    assert!(
        errs.iter().any(|d| d.message.contains("introspect")),
        "{errs:#?}"
    );
}

#[test]
fn bad_operation_is_refused() {
    let k = "route[0].match.graphql_operation";
    refused("\"mutation\"", "\"Mutation!\"", k, "operation name");
    refused("\"mutation\"", "\"\"", k, "operation name");
    refused("\"mutation\"", "\"1st\"", k, "operation name");
}

#[test]
fn operation_needs_graphql_on_the_route() {
    refused(
        "graphql = { max_depth = 7, max_aliases = 0, max_complexity = 200, introspection = true }\n",
        "",
        "route[0].match.graphql_operation",
        "has no `graphql`",
    );
}

#[test]
fn operation_rate_key_needs_graphql_on_the_route() {
    refused(
        "graphql = {}\n",
        "",
        "route \"reads\".policies[0]",
        "per GraphQL operation",
    );
}
