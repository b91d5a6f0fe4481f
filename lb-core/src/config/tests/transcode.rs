//! `grpc_transcode` as lb-core checks it (the descriptor set itself is lb-l7's to read): its
//! keys, and the route and pool around it.

use super::*;

fn text(pool: &str, route: &str, transcode: &str) -> String {
    format!(
        r#"
[[listener]]
name = "api"
bind = "127.0.0.1:8080"
protocol = "http"

[[route]]
listener = "api"
name = "books"
match = {{ path_prefix = "/v1" }}
pool = "grpc"
{route}
grpc_transcode = {transcode}

[policy.cached]
kind = "cache"
ttl = "1m"

[[pool]]
name = "grpc"
backends = [{{ addr = "127.0.0.1:50051" }}]
{pool}
"#
    )
}

const OK: &str = r#"{ descriptor_set = "api.pb", services = ["pkg.Service"] }"#;

fn error(pool: &str, route: &str, transcode: &str) -> String {
    load_str("t.toml", &text(pool, route, transcode))
        .expect_err("refused")
        .to_string()
}

#[test]
fn a_transcoding_route_is_read() {
    let c = load_str("t.toml", &text("http2 = true", "policies = []", OK)).map(|l| l.config);
    // The unused cache policy is its own error; a route naming nothing is fine otherwise.
    let e = c.expect_err("unused policy").to_string();
    assert!(
        e.contains("policy \"cached\" is not named by any route"),
        "{e}"
    );
    let t = text("http2 = true", "", OK)
        .replace("[policy.cached]\nkind = \"cache\"\nttl = \"1m\"\n", "");
    let c = load_str("t.toml", &t).expect("valid").config;
    let g = c.routes[0].grpc_transcode.as_ref().expect("transcode");
    assert_eq!(g.services, vec!["pkg.Service".to_string()]);
    assert_eq!(g.descriptor_set.path, "api.pb");
    assert_eq!(
        g.descriptor_set.key,
        "route[0].grpc_transcode.descriptor_set"
    );
}

#[test]
fn what_cannot_act_is_an_error_at_its_key() {
    let e = error("", "policies = [\"cached\"]", OK);
    assert!(
        e.contains("pool \"grpc\" speaks HTTP/1.1") && e.contains("http2 = true"),
        "{e}"
    );
    assert!(
        e.contains("policy \"cached\" (cache) works on a proxied body"),
        "{e}"
    );
    let e = error(
        "http2 = true",
        "rewrite = \"/x\"\npolicies = [\"cached\"]",
        OK,
    );
    assert!(
        e.contains("`rewrite` does nothing on a grpc_transcode route"),
        "{e}"
    );
    let e = error(
        "http2 = true",
        "strip_prefix = true\nupgrades = []\npolicies = [\"cached\"]",
        OK,
    );
    assert!(e.contains("`strip_prefix` does nothing"), "{e}");
    assert!(e.contains("`upgrades` does nothing"), "{e}");
    // Another request shape on the same route: a GraphQL document, or aggregate parts.
    let e = error(
        "http2 = true",
        "graphql = { max_depth = 5 }\npolicies = [\"cached\"]",
        OK,
    );
    assert!(
        e.contains("`graphql` does nothing on a grpc_transcode route"),
        "{e}"
    );
    // (Without the route's `pool`: with it, the pair is refused as `pool` and `aggregate`.)
    let aggregate = text(
        "http2 = true",
        "aggregate = [{ name = \"a\", pool = \"grpc\", path = \"/a\" }]\npolicies = [\"cached\"]",
        OK,
    )
    .replacen("pool = \"grpc\"\n", "", 1);
    let e = load_str("t.toml", &aggregate)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("`aggregate` does nothing on a grpc_transcode route"),
        "{e}"
    );
    let cases = [
        (
            r#"{ descriptor_set = "", services = ["a.B"] }"#,
            "descriptor_set must name a file",
        ),
        (
            r#"{ descriptor_set = "a.pb", services = [] }"#,
            "at least one gRPC service",
        ),
        (
            r#"{ descriptor_set = "a.pb", services = ["a..B"] }"#,
            "not a fully-qualified service name",
        ),
        (
            r#"{ descriptor_set = "a.pb", services = ["a.B", "a.B"] }"#,
            "listed twice",
        ),
        (r#"{ descriptor_set = "a.pb" }"#, "services"),
        (
            r#"{ descriptor_set = "a.pb", services = ["a.B"], service = "x" }"#,
            "unknown key `service`",
        ),
    ];
    for (t, want) in cases {
        let e = error("http2 = true", "policies = [\"cached\"]", t);
        assert!(e.contains(want), "{t}: {e}");
    }
}
