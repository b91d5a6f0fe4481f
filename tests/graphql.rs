//! GraphQL routes through the real binary: the config file's `graphql` limits gate requests
//! with GraphQL error bodies, routing by operation sends mutations elsewhere, and refusals
//! are counted in `lb_graphql_refused_total{route,reason}` on `/metrics`.

mod common;

use common::web::{fetch, web};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn graphql_routes_gate_route_and_count_through_the_binary() {
    let ((reads, read_hits), (writes, write_hits)) = (web("reads").await, web("writes").await);
    let config = format!(
        "[global]\nworkers = 2\nshutdown_timeout = \"5s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\n\n\
         [[pool]]\nname = \"reads\"\nbackends = [{{ addr = \"{}\" }}]\n\n\
         [[pool]]\nname = \"writes\"\nbackends = [{{ addr = \"{}\" }}]\n\n\
         [[route]]\nlistener = \"web\"\nname = \"gql-writes\"\nmatch = {{ path = \"/graphql\", graphql_operation = \"mutation\" }}\ngraphql = {{ max_depth = 2 }}\npool = \"writes\"\n\n\
         [[route]]\nlistener = \"web\"\nname = \"gql\"\nmatch = {{ path = \"/graphql\" }}\ngraphql = {{ max_depth = 2 }}\npool = \"reads\"\n",
        reads.addr, writes.addr
    );
    let lb = Lb::start("graphql", &config).await;
    let addr = lb.listener("web").await;
    let ask =
        |q: &'static str| async move { fetch(addr, &format!("/graphql?query={q}"), "").await };
    assert_eq!(ask("%7Ba%7Bb%7D%7D").await.status, 200, "depth 2");
    assert_eq!(ask("mutation%7Ba%7D").await.status, 200);
    let deep = ask("%7Ba%7Bb%7Bc%7D%7D%7D").await;
    assert_eq!(deep.status, 400, "{}", deep.body);
    let v: serde_json::Value = serde_json::from_str(&deep.body).expect("a JSON body");
    assert_eq!(v["errors"][0]["extensions"]["code"], "MAX_DEPTH_EXCEEDED");
    let intro = ask("%7B__schema%7Btypes%7D%7D").await;
    assert_eq!(intro.status, 400, "{}", intro.body);
    let ordering = std::sync::atomic::Ordering::SeqCst;
    assert_eq!(
        (read_hits.load(ordering), write_hits.load(ordering)),
        (1, 1)
    );
    assert_eq!(
        lb.metric_reaching(
            "lb_graphql_refused_total",
            &[("route", "gql"), ("reason", "MAX_DEPTH_EXCEEDED")],
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        lb.metric_reaching(
            "lb_graphql_refused_total",
            &[("route", "gql"), ("reason", "INTROSPECTION_DISABLED")],
            1.0
        )
        .await,
        1.0
    );
}
