//! Aggregate routes (SPEC §6 `aggregate`): a route has `pool` or `aggregate`; parts' names,
//! pools, path templates and timeouts; the keys and policies an aggregate route cannot use.

use super::*;
use std::time::Duration;

const AGG: &str = r#"
[[listener]]
name = "api"
bind = "127.0.0.1:8080"
protocol = "http"

[[pool]]
name = "users"
backends = [{ addr = "127.0.0.1:9001" }]

[[pool]]
name = "orders"
backends = [{ addr = "127.0.0.1:9002" }]

[[route]]
listener = "api"
name = "me"
match = { path = "/me", methods = ["GET", "HEAD"] }
timeout = "3s"
policies = ["jwt"]
aggregate = [
  { name = "user", pool = "users", path = "/users/${jwt.sub}", required = true },
  { name = "orders", pool = "orders", path = "/orders?user=${jwt.sub}&page=${query.page}", timeout = "500ms" },
]

[policy.jwt]
kind = "jwt"
algorithms = ["HS256"]
secret_env = "AGG_TEST_SECRET"
"#;

fn agg_with(pattern: &str, replacement: &str) -> String {
    assert!(AGG.contains(pattern), "{pattern}");
    AGG.replacen(pattern, replacement, 1)
}

#[test]
fn parts_load_in_order_with_their_defaults() {
    let c = validated(AGG).expect("valid");
    let r = &c.routes[0];
    assert_eq!(r.pool, None);
    assert_eq!(r.pools().collect::<Vec<_>>(), vec![0, 1]);
    let [user, orders] = r.aggregate.as_slice() else {
        panic!("two parts: {:?}", r.aggregate)
    };
    assert_eq!(
        (user.name.as_str(), user.pool, user.required),
        ("user", 0, true)
    );
    assert_eq!(user.timeout, Duration::from_secs(3), "the route's timeout");
    assert_eq!(user.path.text, "/users/${jwt.sub}");
    assert_eq!(
        (orders.name.as_str(), orders.pool, orders.required),
        ("orders", 1, false)
    );
    assert_eq!(orders.timeout, Duration::from_millis(500));
    assert_eq!(orders.path.vars().count(), 2);
}

#[test]
fn pool_or_aggregate_exactly_one() {
    let both = agg_with("timeout = \"3s\"", "timeout = \"3s\"\npool = \"users\"");
    refused_at(&both, "route[0].aggregate", "both `pool` and `aggregate`");
    let start = AGG.find("aggregate = [").expect("aggregate");
    let end = AGG[start..].find("]\n\n").expect("end") + start + 2;
    let neither = format!("{}{}", &AGG[..start], &AGG[end..]);
    refused_at(&neither, "route[0].pool", "has no `pool`");
}

#[test]
fn part_errors_name_their_key() {
    for (from, to, key, needle) in [
        (
            "{ name = \"orders\"",
            "{ name = \"user\"",
            "route[0].aggregate[1].name",
            "duplicate part name",
        ),
        (
            "{ name = \"orders\"",
            "{ name = \"\"",
            "route[0].aggregate[1].name",
            "1 to 64",
        ),
        (
            "{ name = \"orders\"",
            "{ name = \"a\\\"b\"",
            "route[0].aggregate[1].name",
            "letters",
        ),
        (
            "pool = \"orders\",",
            "pool = \"order\",",
            "route[0].aggregate[1].pool",
            "does not exist",
        ),
        (
            "path = \"/users/${jwt.sub}\"",
            "path = \"users\"",
            "route[0].aggregate[0].path",
            "starting with '/'",
        ),
        (
            "path = \"/users/${jwt.sub}\"",
            "path = \"/users/${jwt.sub\"",
            "route[0].aggregate[0].path",
            "closing",
        ),
        (
            "path = \"/users/${jwt.sub}\"",
            "path = \"/users/${path.1}\"",
            "route[0].aggregate[0].path",
            "unknown variable",
        ),
        (
            "path = \"/users/${jwt.sub}\"",
            "path = \"/users/${jwt.sub}#x\"",
            "route[0].aggregate[0].path",
            "cannot stand",
        ),
        (
            "path = \"/users/${jwt.sub}\"",
            "path = \"/users/../admin\"",
            "route[0].aggregate[0].path",
            "segment",
        ),
        (
            "timeout = \"500ms\"",
            "timeout = \"fast\"",
            "route[0].aggregate[1].timeout",
            "",
        ),
        (
            "timeout = \"500ms\"",
            "timeout = \"0s\"",
            "route[0].aggregate[1].timeout",
            "greater than 0",
        ),
        (
            "required = true",
            "required = true, retry = 1",
            "route[0].aggregate[0]",
            "retry",
        ),
    ] {
        let text = agg_with(from, to);
        if key == "route[0].aggregate[0]" {
            // An unknown key of a part is a parse error, reported with its span.
            let errs = validated(&text).expect_err("unknown key");
            assert!(errs.iter().any(|d| d.message.contains(needle)), "{errs:#?}");
            continue;
        }
        refused_at(&text, key, needle);
    }
}

#[test]
fn part_count_is_bounded() {
    let parts: Vec<String> = (0..=MAX_PARTS)
        .map(|i| format!("{{ name = \"p{i}\", pool = \"users\", path = \"/x\" }}"))
        .collect();
    let start = AGG.find("aggregate = [").expect("aggregate");
    let end = AGG[start..].find("]\n\n").expect("end") + start + 1;
    let many = format!(
        "{}aggregate = [{}]{}",
        &AGG[..start],
        parts.join(", "),
        &AGG[end..]
    );
    refused_at(&many, "route[0].aggregate", "1 to 16 parts");
    let none = format!("{}aggregate = []{}", &AGG[..start], &AGG[end..]);
    refused_at(&none, "route[0].aggregate", "1 to 16 parts");
}

#[test]
fn jwt_variables_need_a_token_policy() {
    let text = agg_with("policies = [\"jwt\"]\n", "").replace(
        "[policy.jwt]\nkind = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret_env = \"AGG_TEST_SECRET\"\n",
        "",
    );
    refused_at(&text, "route[0].aggregate[0].path", "no jwt policy");
    // Query and header variables need none.
    let plain = text
        .replace("${jwt.sub}&page=", "x&page=")
        .replace("/users/${jwt.sub}", "/users/${header.x-user}");
    validated(&plain).expect("no jwt variable, no jwt policy needed");
}

#[test]
fn forwarding_keys_and_body_policies_do_not_apply() {
    for (key, add) in [
        ("strip_prefix", "strip_prefix = true"),
        ("rewrite", "rewrite = \"/x\""),
        ("upgrades", "upgrades = [\"websocket\"]"),
        ("graphql", "graphql = { max_depth = 5 }"),
        ("max_body_size", "max_body_size = \"1KiB\""),
    ] {
        let text = agg_with("timeout = \"3s\"", &format!("timeout = \"3s\"\n{add}"));
        refused_at(
            &text,
            &format!("route[0].{key}"),
            "does not apply to an aggregate route",
        );
    }
    let post = agg_with(
        "methods = [\"GET\", \"HEAD\"]",
        "methods = [\"GET\", \"POST\"]",
    );
    refused_at(&post, "route[0].match.methods[1]", "only GET and HEAD");
    let cached = agg_with("policies = [\"jwt\"]", "policies = [\"jwt\", \"c\"]")
        + "\n[policy.c]\nkind = \"cache\"\nttl = \"10s\"\n";
    refused_at(
        &cached,
        "route[0].policies[1]",
        "cache policy does not apply",
    );
}
