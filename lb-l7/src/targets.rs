//! What a gateway's routes and pools become for one config generation: each route's target
//! (pool, rewrite, policies, metric handles) and each pool's HTTP client, with whether its
//! requests may take the lean path.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lb_core::config::{self, Loaded};
use lb_core::pool::Pool;

use crate::balance;
use crate::compile::Rewrite;
use crate::policy;
use crate::upstream::{self, Upstream};

/// `lb_http_requests_total{listener,route,status}` handles, made on first use per status.
#[derive(Debug)]
pub struct RouteMetrics {
    listener: String,
    route: String,
    by_status: Box<[OnceLock<metrics::Counter>]>,
    pub duration: metrics::Histogram,
    /// What the dashboard shows of the route (kept across reloads).
    pub stats: Arc<lb_core::stats::RouteStats>,
}

impl RouteMetrics {
    pub fn new(listener: &str, route: &str, policies: &[String]) -> Self {
        Self {
            stats: lb_core::stats::Registry::global().route(listener, route, policies),
            listener: listener.to_string(),
            route: route.to_string(),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            duration: metrics::histogram!("lb_http_request_duration_seconds", "listener" => listener.to_string(), "route" => route.to_string()),
        }
    }

    /// Records how long an answered request took, from its head to its end.
    pub fn took(&self, d: Duration) {
        self.duration.record(d.as_secs_f64());
        self.stats.latency.record(d);
    }

    pub fn count(&self, status: u16) {
        self.stats.count(status);
        let Some(slot) = self.by_status.get(usize::from(status).wrapping_sub(100)) else {
            return;
        };
        slot.get_or_init(|| {
            metrics::counter!("lb_http_requests_total", "listener" => self.listener.clone(), "route" => self.route.clone(), "status" => status.to_string())
        })
        .increment(1);
    }
}

/// Where a route sends its requests, and how.
#[derive(Debug)]
pub struct RouteTarget {
    pub name: String,
    /// Index into the config's pools (and [`crate::gateway::Gateway::pools`]); `None` for
    /// an aggregate route.
    pub pool: Option<usize>,
    /// `aggregate`: the parts this route answers from instead of forwarding.
    pub aggregate: Option<Arc<crate::aggregate::Aggregate>>,
    pub rewrite: Option<Rewrite>,
    /// From forwarding the request to the backend's response head.
    pub timeout: Duration,
    pub retries: u32,
    pub max_body: Option<u64>,
    pub metrics: RouteMetrics,
    /// `policies`, in order.
    pub policies: policy::Chain,
    /// The route's `cache` policy, which works around the backend exchange.
    pub cache: Option<Arc<policy::cache::Cache>>,
    /// A policy of the route admits requests by a credential (jwt, basic_auth, api_key).
    pub authenticates: bool,
    /// The route's `transform` policy, which reads bodies around the exchange.
    pub transform: Option<Arc<crate::transform::Transform>>,
    /// `grpc_transcode`: lb answers by calling the pool's gRPC methods ([`crate::transcode`]).
    pub transcode: Option<Arc<crate::transcode::Transcoder>>,
    /// Its requests may take the lean path: a plain HTTP/1.1 pool, no policy that needs the
    /// bodies (cache, transform), not a transcoding or an aggregate route.
    pub lean: bool,
    /// Protocols a client may upgrade to here (lowercase).
    pub upgrades: Vec<String>,
    /// The path condition ignores ASCII case.
    pub case_insensitive: bool,
    /// `graphql = {..}`: requests are GraphQL operations held to these limits.
    pub graphql: Option<lb_core::config::GraphqlLimits>,
}

/// A pool as this listener's requests use it.
#[derive(Debug)]
pub struct PoolTarget {
    /// Index into the config's pools.
    pub index: usize,
    pub pool: Arc<Pool>,
    pub upstream: Upstream,
    /// `sticky_cookie`: the cookie's name and each backend's value.
    pub sticky: Option<(String, Vec<String>)>,
    /// `lb_http_upstream_errors_total{pool,backend,kind}` by backend: connect, timeout, response.
    pub errors: Vec<[metrics::Counter; 3]>,
}

/// Whether a pool's requests may take the lean path: plain HTTP/1.1 backends.
pub(crate) fn lean_pool(loaded: &Loaded, i: usize) -> bool {
    let plain = loaded.tls.pools.get(i).is_none_or(Option::is_none);
    plain && !loaded.config.pools[i].http2
}

pub(crate) fn pool_target(
    loaded: &Loaded,
    i: usize,
    pool: &Arc<Pool>,
    l: &config::Listener,
    kept: &crate::kept_conns::Kept,
) -> PoolTarget {
    let cfg = &pool.config;
    let material = loaded.tls.pools.get(i).cloned().flatten();
    let way = crate::kept_conns::Way {
        http2: cfg.http2,
        tls: material.clone(),
        proxy: l.proxy_protocol,
    };
    let conns = kept.conns(
        &l.name,
        &cfg.name,
        pool.backends.iter().map(|b| b.addr),
        &way,
    );
    let tls = material.map(|b| {
        let mut config = (*b.config).clone();
        config.alpn_protocols = vec![if cfg.http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        upstream::Tls {
            config: Arc::new(config),
            server_name: b.server_name.clone(),
        }
    });
    let errors = pool
        .backends
        .iter()
        .map(|b| {
            ["connect", "timeout", "response"].map(|kind| {
                metrics::counter!("lb_http_upstream_errors_total", "pool" => cfg.name.clone(), "backend" => b.id.clone(), "kind" => kind)
            })
        })
        .collect();
    PoolTarget {
        upstream: Upstream::new(conns, cfg.http2, tls, l.connect_timeout, l.proxy_protocol),
        sticky: cfg
            .sticky_cookie
            .clone()
            .map(|name| (name, balance::sticky_values(pool))),
        errors,
        index: i,
        pool: pool.clone(),
    }
}
