//! Per-request cost of a `graphql` route: reading the GraphQL request out of a POST body,
//! parsing the document, picking the operation and walking it against the route's limits,
//! for a small (~60 B), a typical (~800 B) and a large (~60 KiB) document, and the parser
//! alone on the same documents.
//! Run: `cargo bench -p lb-l7 --bench graphql`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lb_core::config::GraphqlLimits;
use lb_l7::graphql::inspect;
use lb_l7::graphql::request::Carrier;

const LIMITS: GraphqlLimits = GraphqlLimits {
    max_depth: 10,
    max_aliases: 10_000,
    max_complexity: 100_000,
    introspection: false,
};

/// A typical client query: variables, a fragment spread twice, aliases, nesting.
const TYPICAL: &str = r#"query UserPage($id: ID!, $first: Int = 10, $after: String) {
  viewer { id login avatarUrl(size: 64) }
  user(id: $id) {
    ...UserFields
    followers(first: $first, after: $after) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges { cursor node { ...UserFields } }
    }
    pinned: repositories(first: 6, orderBy: {field: STARGAZERS, direction: DESC}) {
      nodes { id name description stargazerCount forkCount primaryLanguage { name color } }
    }
    recent: repositories(first: 6, orderBy: {field: UPDATED_AT, direction: DESC}) {
      nodes { id name updatedAt isPrivate owner { login } }
    }
  }
}
fragment UserFields on User {
  id login name bio company location websiteUrl createdAt
  status { emoji message }
}"#;

/// A large generated document (~60 KiB): 700 aliased fields, each with a small selection.
fn large() -> String {
    let mut doc = String::from("query Big {\n");
    for i in 0..700 {
        doc += &format!("  f{i}: item(id: {i}, filter: {{tag: \"t{i}\"}}) {{ id name price {{ amount currency }} }}\n");
    }
    doc + "}\n"
}

fn body(doc: &str) -> Vec<u8> {
    serde_json::json!({ "query": doc, "variables": { "id": "1" } })
        .to_string()
        .into_bytes()
}

fn bench(c: &mut Criterion) {
    let docs = [
        ("small", body("{ user(id: 1) { name } }")),
        ("typical", body(TYPICAL)),
        ("large", body(&large())),
    ];
    let mut g = c.benchmark_group("graphql_inspect");
    for (name, b) in &docs {
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_with_input(BenchmarkId::new(*name, b.len()), b, |bench, b| {
            bench.iter(|| {
                let c = Carrier::Post {
                    query: None,
                    content_type: Some(b"application/json"),
                    content_encoding: None,
                    body: black_box(b),
                };
                inspect(c, &LIMITS).expect("within limits")
            })
        });
    }
    g.finish();
    // The parser alone, for how much of the above it is.
    let mut g = c.benchmark_group("graphql_parse_only");
    for (name, doc) in [
        ("small", "{ user(id: 1) { name } }".to_string()),
        ("typical", TYPICAL.to_string()),
        ("large", large()),
    ] {
        g.throughput(Throughput::Bytes(doc.len() as u64));
        g.bench_with_input(BenchmarkId::new(name, doc.len()), &doc, |bench, d| {
            bench.iter(|| async_graphql_parser::parse_query(black_box(d)).expect("parses"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
