//! What an `oauth2_introspection` route costs a request once its token's answer is cached
//! (the common case: one call to the authorization server per token per `cache_ttl`), next to
//! a plain route to the same backend, through a gateway over loopback.
//! Run: `cargo bench -p lb-l7 --bench introspection`.

#[path = "../tests/support/auth_server.rs"]
mod auth_server;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use auth_server::{auth_server, Reply, CLIENT_ID, SECRET, SECRET_ENV};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::Full;

fn gateway(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (gw, auth, backend) = rt.block_on(async {
        std::env::set_var(SECRET_ENV, SECRET);
        let auth = auth_server().await;
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600;
        auth.reply(
            "good",
            Reply::Json(format!(
                r#"{{"active":true,"sub":"alice","scope":"read","exp":{exp}}}"#
            )),
        );
        let b = support::backend("b").await;
        let routes = format!(
            "[[route]]\nlistener = \"web\"\nname = \"plain\"\nmatch = {{ path_prefix = \"/plain\" }}\npool = \"p0\"\n\
             [[route]]\nlistener = \"web\"\nname = \"auth\"\nmatch = {{ path_prefix = \"/auth\" }}\npool = \"p0\"\npolicies = [\"auth\"]\n\
             [policy.auth]\nkind = \"oauth2_introspection\"\nendpoint = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret_env = \"{SECRET_ENV}\"\ncache_ttl = \"10m\"\nrequire_scopes = [\"read\"]\n\
             forward_claims = {{ sub = \"x-user\" }}\n",
            auth.url()
        );
        let (gw, _) = support::gateway(&support::config(&[(&[b.addr], "")], "", &routes)).await;
        (gw, auth, b)
    });
    let client = support::client();
    let ask = |path: &'static str| {
        let req = http::Request::get(format!("http://{gw}{path}"))
            .header("authorization", "Bearer good")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let client = client.clone();
        async move {
            let resp = client.request(req).await.expect("answer");
            assert_eq!(resp.status(), 200);
            support::body_text(resp).await
        }
    };
    c.bench_function("gateway/plain_route", |b| {
        b.iter(|| rt.block_on(ask("/plain")))
    });
    c.bench_function("gateway/introspection_cached", |b| {
        b.iter(|| rt.block_on(ask("/auth")))
    });
    // The answer was reused: one call for every request above.
    assert_eq!(auth.calls(), 1);
    let _ = backend;
}

criterion_group!(benches, gateway);
criterion_main!(benches);
