//! One http listener's gateway, built from the config for each config generation: its
//! routes, the pools they use (with their HTTP clients), limits and metric handles; and the
//! serving of one client connection (HTTP/1.1 keep-alive, or HTTP/2 by prior knowledge or
//! ALPN), which drains gracefully when the listener stops accepting.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use lb_core::config::{self, Forwarded, Loaded};
use lb_core::pool::Pool;
use lb_core::proxy::handoff::{Conn, Handler};

pub use crate::factory::{load_str, Factory, Kept, KeptPolicy, Prepared};
pub use crate::targets::{PoolTarget, RouteMetrics, RouteTarget};
use lb_core::proxy::prefixed::Prefixed;

use crate::forward::Trust;
use crate::policy;
use crate::request::Limits;
use crate::router::Router;
use crate::sniff::Sniffed;
use crate::targets::{lean_pool, pool_target};
use crate::timed::{Activity, Timed};

/// One http listener's gateway for one config generation.
pub struct Gateway {
    pub listener: String,
    pub router: Router<usize>,
    pub routes: Vec<RouteTarget>,
    /// The listener's `pool`: takes what no route matches; without it, 404.
    pub default: Option<RouteTarget>,
    /// By config pool index; `None` for pools this listener does not use.
    pub pools: Vec<Option<PoolTarget>>,
    pub limits: Limits,
    pub trust: Trust,
    pub via: Option<String>,
    pub access_log: bool,
    pub idle_timeout: Duration,
    pub header_timeout: Duration,
    pub escaped_slashes: crate::path::Slashes,
    /// `request_id`: what lb does with `X-Request-Id`.
    pub request_id: config::RequestIdMode,
    /// Where generated request IDs take their bits (fixed in the differential tests).
    pub ids: fn() -> u128,
    /// `[tracing]` ([`crate::trace`]); `None`: the client's trace fields pass untouched.
    pub tracing: Option<crate::spans::Tracing>,
    /// `proxy_protocol`: each client connection gets its own backend connections.
    pub per_client: bool,
    /// Some route takes the lean path.
    pub lean: bool,
    /// The lean path must give routing or picking a request's fields (header conditions,
    /// `hash_key = header:|cookie:`, `sticky_cookie`).
    pub lean_needs_headers: bool,
    /// Some route is a `graphql` route: a request one of them may take is read as GraphQL
    /// before it is routed ([`crate::request_body`]).
    pub graphql: bool,
    /// Requests lb answered itself, by reason: `lb_http_refused_total{listener,reason}`.
    pub refused: RouteMetrics,
    /// Idle keep-alive connections parked ([`crate::parked`]):
    /// `lb_http_parked_connections{listener}`.
    pub parked: metrics::Gauge,
    server: auto::Builder<TokioExecutor>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listener", &self.listener)
            .field("routes", &self.routes.len())
            .field("default", &self.default.as_ref().map(|d| d.pool))
            .finish_non_exhaustive()
    }
}

/// What lb calls itself in `Via`.
const VIA: &str = "lb";

impl Gateway {
    /// The gateway of listener `index` of `loaded`, over the running pools (`pools[i]` is
    /// the config's pool `i`), with what `prepared` read for the config.
    pub fn build(loaded: &Loaded, prepared: &Prepared, index: usize, pools: &[Arc<Pool>]) -> Self {
        let c = &loaded.config;
        let l = &c.listeners[index];
        let mut used = vec![false; c.pools.len()];
        // One instance of each policy per listener and config generation: a rate limit
        // counts every route of this listener that names it.
        let kept = &prepared.kept;
        let prepared_conns = prepared.conns.clone();
        let tracing = prepared.tracing.clone();
        let transcoders = &prepared.transcoders;
        let prepared = Some(&prepared.policies);
        let mut reused: Vec<Option<KeptPolicy>> = vec![None; c.policies.len()];
        {
            let mut map = lock(kept);
            for (i, p) in c.policies.iter().enumerate() {
                let stateful = matches!(
                    p.kind,
                    config::PolicyKind::RateLimit { .. } | config::PolicyKind::Cache { .. }
                );
                if !stateful {
                    continue;
                }
                let entry = match map.get(&p.name) {
                    Some(e) if e.config == *p => e.clone(),
                    _ => {
                        let cache = policy::build_cache(p);
                        let built = match &cache {
                            Some(c) => c.clone() as Arc<dyn policy::Policy>,
                            None => policy::build(p, i, None),
                        };
                        let e = KeptPolicy {
                            config: p.clone(),
                            policy: built,
                            cache,
                        };
                        map.insert(p.name.clone(), e.clone());
                        e
                    }
                };
                reused[i] = Some(entry);
            }
        }
        let caches: Vec<Option<Arc<policy::cache::Cache>>> = c
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| match &reused[i] {
                Some(k) => k.cache.clone(),
                None => policy::build_cache(p),
            })
            .collect();
        let transforms: Vec<Option<Arc<crate::transform::Transform>>> = c
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| policy::build_transform(p, i, prepared))
            .collect();
        let built: Vec<Arc<dyn policy::Policy>> = c
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| match (&caches[i], &transforms[i]) {
                _ if reused[i].is_some() => reused[i]
                    .as_ref()
                    .map(|k| k.policy.clone())
                    .unwrap_or_else(|| policy::build(p, i, prepared)),
                (Some(cache), _) => cache.clone() as Arc<dyn policy::Policy>,
                (None, Some(t)) => t.clone() as Arc<dyn policy::Policy>,
                (None, None) => policy::build(p, i, prepared),
            })
            .collect();
        let mut conditions = Vec::new();
        let mut routes = Vec::new();
        for (ri, r) in c
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.listener == index)
        {
            let (cond, rewrite) = crate::compile::route(r);
            for p in r.pools() {
                used[p] = true;
            }
            let aggregate = (!r.aggregate.is_empty())
                .then(|| Arc::new(crate::aggregate::Aggregate::new(&l.name, r)));
            conditions.push((cond, routes.len()));
            routes.push(RouteTarget {
                name: r.name.clone(),
                pool: r.pool,
                aggregate,
                rewrite,
                timeout: r.timeout,
                retries: r.retries,
                max_body: r.max_body_size.or(l.http.max_body_size),
                metrics: RouteMetrics::new(
                    &l.name,
                    &r.name,
                    &r.policies
                        .iter()
                        .map(|&i| c.policies[i].name.clone())
                        .collect::<Vec<_>>(),
                ),
                policies: r.policies.iter().map(|&i| built[i].clone()).collect(),
                cache: r.policies.iter().find_map(|&i| caches[i].clone()),
                authenticates: r
                    .policies
                    .iter()
                    .any(|&i| c.policies[i].kind.authenticates()),
                transform: r.policies.iter().find_map(|&i| transforms[i].clone()),
                transcode: transcoders.get(ri).cloned().flatten(),
                // Not a transcoding route (it rewrites bodies) nor an aggregate one (it
                // answers from several exchanges, and has no pool); `graphql` routes take
                // their whole listener off the lean path (below).
                lean: r
                    .policies
                    .iter()
                    .all(|&i| caches[i].is_none() && transforms[i].is_none())
                    && r.grpc_transcode.is_none()
                    && r.pool.is_some_and(|p| lean_pool(loaded, p)),
                upgrades: r.upgrades.clone(),
                case_insensitive: r.case_insensitive,
                graphql: r.graphql,
            });
        }
        let default = l.pool.map(|p| {
            used[p] = true;
            RouteTarget {
                name: "default".into(),
                pool: Some(p),
                aggregate: None,
                rewrite: None,
                timeout: Duration::from_secs(60),
                retries: 0,
                max_body: l.http.max_body_size,
                metrics: RouteMetrics::new(&l.name, "default", &[]),
                policies: Vec::new(),
                cache: None,
                authenticates: false,
                transform: None,
                transcode: None,
                lean: lean_pool(loaded, p),
                upgrades: vec!["websocket".to_string()],
                case_insensitive: false,
                graphql: None,
            }
        });
        let pools = used
            .iter()
            .enumerate()
            .map(|(i, &u)| u.then(|| pool_target(loaded, i, &pools[i], l, &prepared_conns)))
            .collect();
        // The lean path routes a request from its head alone; where a GraphQL operation may
        // choose the route (or a route's limits must see the document), every request of the
        // listener takes the general path, which reads it first.
        let graphql = routes.iter().any(|r| r.graphql.is_some());
        let lean = routes.iter().chain(default.as_ref()).any(|r| r.lean)
            && !graphql
            && !general_path_only();
        let lean_needs_headers = c
            .routes
            .iter()
            .any(|r| r.listener == index && !r.headers.is_empty())
            || used.iter().enumerate().any(|(i, &u)| {
                let p = &c.pools[i];
                u && (p.sticky_cookie.is_some()
                    || matches!(
                        p.hash_key,
                        config::HashKey::Header(_) | config::HashKey::Cookie(_)
                    ))
            });
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            // Timed from a head's first byte by `Sniffed`: hyper's timer would also run while
            // a keep-alive connection waits for its next request.
            .header_read_timeout(None)
            .max_headers(Limits::default().max_headers + 1);
        server
            .http2()
            .timer(TokioTimer::new())
            .enable_connect_protocol();
        Self {
            listener: l.name.clone(),
            router: Router::new(conditions),
            routes,
            default,
            pools,
            limits: Limits::default(),
            trust: match l.http.forwarded {
                Forwarded::Replace => Trust::Replace,
                Forwarded::Append => Trust::Append,
            },
            via: l.http.via.then(|| VIA.to_string()),
            access_log: l.access_log,
            idle_timeout: l.idle_timeout,
            header_timeout: l.http.header_timeout,
            escaped_slashes: l.http.escaped_slashes,
            request_id: l.http.request_id,
            ids: crate::request_id::random,
            tracing,
            per_client: l.proxy_protocol.is_some(),
            lean,
            lean_needs_headers,
            graphql,
            refused: RouteMetrics::new(&l.name, "-", &[]),
            parked: metrics::gauge!("lb_http_parked_connections", "listener" => l.name.clone()),
            server,
        }
    }

    /// Serves one client connection until it closes; on `drain`, finishes what is in flight
    /// and closes (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY); on `cancel`, closes now.
    /// HTTP/1.1 requests of lean routes take the lean path until one is not.
    ///
    /// A connection past the listener's `max_connection_age` is old (see
    /// [`crate::conn_info::ConnInfo::is_old`]): its next HTTP/1 answer says `Connection:
    /// close` and it closes after it, as nginx's `keepalive_time`; an HTTP/2 one is drained
    /// (GOAWAY, in-flight streams finish). An idle old connection is left to `idle_timeout`,
    /// so a client is never raced by a close between two of its requests.
    ///
    /// Not an `async fn`: its arguments would be kept in the connection's task for its whole
    /// life beside what is made of them. The future captures only what it uses, and holds no
    /// request's state while the connection idles (see [`crate::lean::Session`]).
    pub fn serve_conn(
        self: Arc<Self>,
        mut conn: Conn,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Its own drain token only where it may be drained alone (an old HTTP/2 one).
        let own_drain = conn.old_at.map(|_| {
            conn.drain = conn.drain.child_token();
            conn.drain.clone()
        });
        let lean = self.lean && conn.alpn.as_deref() != Some(b"h2");
        // Shared by the connection's requests: one reference count per request, no copies.
        let info = Arc::new(crate::conn_info::ConnInfo {
            client: conn.client,
            local: conn.local,
            local_authority: std::sync::OnceLock::new(),
            tls: conn.is_tls(),
            sni: conn.sni,
            cancel: conn.cancel.clone(),
            old_at: conn.old_at,
            own_drain,
            tracker: conn.tracker,
            framing: std::sync::OnceLock::new(),
            own: self
                .per_client
                .then(|| self.pools.iter().map(|_| OnceLock::new()).collect()),
            _slot: conn.slot,
        });
        let (drain, cancel) = (conn.drain, conn.cancel);
        let io = Timed::new(conn.io, self.idle_timeout);
        self.serve_session(io, info, drain, cancel, lean, None)
    }

    /// Serves a connection from its next request: a new one, or a parked one woken
    /// (`idle_from`: when its last exchange ended). Lean requests take the lean path until one
    /// is not; a plain connection that idles on is parked ([`crate::parked`]) and this task
    /// ends.
    pub(crate) async fn serve_session(
        self: Arc<Self>,
        mut io: Timed<lb_core::proxy::handoff::ClientStream>,
        info: Arc<crate::conn_info::ConnInfo>,
        drain: tokio_util::sync::CancellationToken,
        cancel: tokio_util::sync::CancellationToken,
        lean: bool,
        idle_from: Option<std::time::Instant>,
    ) {
        let mut pending = Vec::new();
        if lean {
            let park = crate::parked::may_park(&io);
            let mut session = crate::lean::Session::new(&self, &info, &drain, park, idle_from);
            loop {
                let end = tokio::select! {
                    end = session.run(&mut io) => end,
                    () = cancel.cancelled() => return,
                };
                match end {
                    crate::lean::End::Closed => return,
                    crate::lean::End::Linger => {
                        // Boxed: rare, and its read buffer should not size every connection's
                        // task.
                        tokio::select! {
                            () = Box::pin(crate::lean::linger(&mut io)) => {}
                            () = cancel.cancelled() => {}
                        }
                        return;
                    }
                    crate::lean::End::FullPath => break,
                    crate::lean::End::Park(from) => match crate::parked::parkable(io) {
                        Ok(stream) => {
                            drop(session);
                            crate::parked::park(self, stream, info, drain, from);
                            return;
                        }
                        // Bytes lb read ahead are still to be served: not idle after all.
                        Err(back) => {
                            io = back;
                            session.stop_parking();
                        }
                    },
                }
            }
            pending = session.pending();
        }
        // Boxed: most connections never come here, and an idle lean one should not carry
        // the general path's larger state.
        Box::pin(self.serve_full(io, pending, info, drain, cancel)).await;
    }

    /// The full path: hyper's HTTP/1.1 and HTTP/2 server, every request through
    /// [`Gateway::handle`]. A connection with no bytes either way for `idle_timeout` is shut
    /// down gracefully (what is in flight finishes; HTTP/2 gets a GOAWAY).
    async fn serve_full<IO>(
        self: Arc<Self>,
        mut io: Timed<IO>,
        pending: Vec<u8>,
        info: Arc<crate::conn_info::ConnInfo>,
        drain: tokio_util::sync::CancellationToken,
        cancel: tokio_util::sync::CancellationToken,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let client = info.client;
        let framing = info.framing().clone();
        let activity = Activity::new();
        io.track(activity.clone());
        let gw = self.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (gw, info) = (gw.clone(), info.clone());
            async move {
                let version = req.version();
                let mut resp = gw.handle(req, &info).await;
                info.retire_if_old(version, &mut resp);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let io = Sniffed::new(Prefixed::new(pending, io), framing, self.header_timeout);
        let serving = self
            .server
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(serving);
        let idle = activity.idle_for(self.idle_timeout);
        tokio::pin!(idle);
        let mut closing = false;
        let result = loop {
            tokio::select! {
                r = serving.as_mut() => break r,
                () = drain.cancelled(), if !closing => {
                    serving.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = idle.as_mut(), if !closing => {
                    tracing::debug!(listener = %self.listener, client = %client, "idle http connection closed");
                    serving.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = cancel.cancelled() => return,
            }
        };
        if let Err(e) = result {
            self.connection_error(client, e.as_ref());
        }
    }

    /// Counts what ended a connection before the gateway saw a request: a head too slow
    /// (408), or one the parser refused and answered itself (400, or 431 for a head over its
    /// buffer).
    /// Empties every cache of this listener's routes (admin purge); how many there were.
    pub fn purge_caches(&self) -> usize {
        let mut n = 0;
        for c in self.routes.iter().filter_map(|r| r.cache.as_ref()) {
            c.purge();
            n += 1;
        }
        n
    }

    /// `(accounted, bound)`: the bytes the routes' policies keep per key (rate-limit
    /// buckets), each policy counted once however many routes use it.
    pub fn policy_memory(&self) -> (usize, usize) {
        let mut seen: Vec<*const ()> = Vec::new();
        let (mut used, mut bound) = (0, 0);
        for p in self.routes.iter().flat_map(|r| &r.policies) {
            let ptr = Arc::as_ptr(p).cast::<()>();
            if seen.contains(&ptr) {
                continue;
            }
            seen.push(ptr);
            if let Some((u, b)) = p.memory() {
                used += u;
                bound += b;
            }
        }
        (used, bound)
    }

    fn connection_error(&self, client: SocketAddr, e: &(dyn std::error::Error + 'static)) {
        let hyper_error = std::iter::successors(Some(e), |e| e.source())
            .find_map(|e| e.downcast_ref::<hyper::Error>());
        let status = match hyper_error {
            // A client that did not finish a request head in time (slowloris): cut, and
            // counted as 408, as nginx logs it.
            _ if crate::sniff::is_head_timeout(e) => 408,
            Some(h) if h.is_parse_too_large() => 431,
            Some(h) if h.is_parse() => 400,
            _ => {
                tracing::debug!(listener = %self.listener, client = %client, "http connection ended: {e}");
                return;
            }
        };
        self.cut(client, status, e);
    }

    /// Counts (and logs) a connection cut before its request was answered.
    pub(crate) fn cut(&self, client: SocketAddr, status: u16, e: &dyn std::fmt::Display) {
        self.refused.count(status);
        if self.access_log {
            tracing::info!(target: "lb::access", client = %client, listener = %self.listener, route = "-", status, error = %e);
        }
    }
}

impl Handler for Gateway {
    fn serve(self: Arc<Self>, conn: Conn) {
        let tracker = conn.tracker.clone();
        tracker.spawn(self.serve_conn(conn));
    }

    fn purge_cache(&self) -> usize {
        self.purge_caches()
    }
}

/// `LB_HTTP_PATH=general` in the environment: every request takes the general path. A
/// switch for tests and for telling the paths apart when debugging: both must give the same
/// answers (the test suites run under it too), only the cost differs.
pub fn general_path_only() -> bool {
    static GENERAL: OnceLock<bool> = OnceLock::new();
    *GENERAL.get_or_init(|| std::env::var("LB_HTTP_PATH").is_ok_and(|v| v == "general"))
}

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves plain data: carry on with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
