//! Stage two of the config: the validated, typed model every other module uses. Values here
//! are already checked; references between sections are resolved to indices. Pure; no I/O.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

pub use super::graphql_model::*;
pub use super::policy_model::*;
pub use super::pool_model::*;
pub use crate::proxy_protocol::Version as ProxyVersion;

/// The whole validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: Global,
    pub admin: Option<Admin>,
    /// `[tracing]`: present, lb forwards W3C trace context of its own on http listeners.
    pub tracing: Option<Tracing>,
    pub listeners: Vec<Listener>,
    pub pools: Vec<Pool>,
    /// `[[route]]`s of http listeners, in config order.
    pub routes: Vec<HttpRoute>,
    /// `[policy.NAME]`s, in config order; routes name them by index.
    pub policies: Vec<Policy>,
}

/// `[tracing]` (lb addition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    /// `otlp_endpoint`: an OTLP/HTTP collector's base URL (`http://host:port`, maybe with a
    /// path prefix), to which one span per request is posted as JSON at `/v1/traces`.
    /// Default none: trace context is propagated, nothing is exported.
    pub otlp_endpoint: Option<OtlpEndpoint>,
    /// `service_name`: the spans' `service.name` resource attribute; default "lb".
    pub service_name: String,
}

/// Where spans are posted: `http://{authority}{path}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// Host (name or IP literal) and port, as written in the URL (port 80 when none).
    pub host: String,
    pub port: u16,
    /// `path prefix` + `/v1/traces`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Worker threads; 0 in the file means one per CPU core, resolved at start-up.
    pub workers: usize,
    /// Connections across all listeners; default 100000.
    pub max_connections: u64,
    /// How long open connections may finish on shutdown; default 30s.
    pub shutdown_timeout: Duration,
    /// On SIGTERM/SIGINT, how long lb goes on accepting and serving while `/api/ready` answers
    /// 503 ("stopping"), so health checkers (keepalived, a balancer in front, Kubernetes) move
    /// traffic away before the listeners close; then the drain of `shutdown_timeout`.
    /// Default 0s: drain at once.
    pub shutdown_delay: Duration,
    /// Relay bulk data with splice(2) where the platform has it; default true.
    pub splice: bool,
    /// On a binary upgrade, move open plain TCP connections and UDP flows to the new process
    /// instead of draining them here; default true. Both processes must have it on.
    pub upgrade_handover: bool,
    /// Host-name members are re-resolved after their TTL, clamped to [min, max]; 1s / 60s.
    pub resolve_interval_min: Duration,
    pub resolve_interval_max: Duration,
}

impl Default for Global {
    fn default() -> Self {
        Self {
            workers: 0,
            max_connections: 100_000,
            shutdown_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            splice: cfg!(target_os = "linux"),
            upgrade_handover: true,
            resolve_interval_min: Duration::from_secs(1),
            resolve_interval_max: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub bind: SocketAddr,
    /// Bearer token required on POST /api/*; None = POSTs open (only allowed on a loopback
    /// `bind`).
    pub token: Option<String>,
    /// `hosts`: lowercase names, without a trailing dot, the `Host` header may carry besides
    /// IP literals and `localhost`. Checked when there is no token or when this is set.
    pub hosts: Vec<String>,
    /// Open admin connections at most; past it new ones are closed at once. Default 64.
    pub max_connections: usize,
}

impl Admin {
    /// Default of `max_connections`: enough for a few dashboards and scrapers, far too few to
    /// take the file descriptors the data plane needs.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

    /// Whether requests must carry an allowed `Host` (DNS rebinding guard).
    pub fn checks_host(&self) -> bool {
        self.token.is_none() || !self.hosts.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    /// HTTP reverse proxy (lb-l7): requests are routed by `[[route]]`.
    Http,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Http => "http",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    pub protocol: Protocol,
    /// Index into `Config::pools`. Always set for tcp and udp; for http, the pool of requests
    /// no route matches (`None`: they get 404).
    pub pool: Option<usize>,
    /// Default 3s.
    pub connect_timeout: Duration,
    /// Default 5m.
    pub idle_timeout: Duration,
    /// Default 10000. For udp: concurrent flows.
    pub max_connections: u64,
    pub access_log: bool,
    /// udp: a client's flow is forgotten after this much silence; default 30s.
    pub udp_session_timeout: Duration,
    /// tcp: terminate TLS with these certificates.
    pub tls: Option<TlsSettings>,
    /// tcp: route by the client's SNI (from the ClientHello without `tls`, from the handshake
    /// with it); `pool` takes what matches none. Exact names before wildcards, longest first.
    pub sni_routes: Vec<SniRoute>,
    /// tcp: send a PROXY header to backends.
    pub proxy_protocol: Option<ProxyVersion>,
    /// tcp: every client connection must start with a PROXY v1/v2 header.
    pub accept_proxy_protocol: bool,
    /// With `accept_proxy_protocol`: the peers allowed to send the header; a connection from
    /// any other is closed before a byte is read. `None` (key absent): any peer, as before
    /// (`lb check` warns).
    pub trusted_proxies: Option<Vec<Cidr>>,
    /// Time for the PROXY header, the ClientHello and the TLS handshake; default 10s.
    pub handshake_timeout: Duration,
    /// `max_connection_age` and its jitter and grace; `None` = connections age freely.
    pub max_age: Option<MaxAge>,
    /// http only.
    pub http: HttpSettings,
}

/// Settings of an http listener (defaults elsewhere; they are unused there).
/// When a connection is old enough to go (SPEC §6, listener keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaxAge {
    pub age: Duration,
    /// Fraction (0.0–<1.0): each connection's age is drawn from age × (1 ± jitter), so
    /// connections opened together do not all reconnect together.
    pub jitter: f64,
    /// tcp: how long a connection past its age must be quiet (no bytes either way) before it
    /// is closed, so nothing is cut mid-transfer.
    pub grace: Duration,
}

impl MaxAge {
    /// The age of one connection: `age` scaled by `unit`, a uniform draw from [-1, 1].
    pub fn for_connection(&self, unit: f64) -> Duration {
        self.age.mul_f64(1.0 + self.jitter * unit.clamp(-1.0, 1.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// A client must send a whole request head within this time (slowloris); default 10s.
    pub header_timeout: Duration,
    /// Largest request body; routes may set their own. `None` = no limit (the default, as HAProxy; nginx's is 1 MiB).
    pub max_body_size: Option<u64>,
    /// What to do with X-Forwarded-*/Forwarded headers clients send.
    pub forwarded: Forwarded,
    /// Add a `Via` header naming lb.
    pub via: bool,
    /// What to do with `%2F`, `%5C` and `\\` in request paths; default refuse (400).
    pub escaped_slashes: EscapedSlashes,
    /// `request_id`: what lb does with `X-Request-Id`; default keep a valid one.
    pub request_id: RequestIdMode,
}

/// `request_id`: each request's `X-Request-Id`, forwarded to the backend, returned to the
/// client and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestIdMode {
    /// A valid one the client sent is kept; otherwise lb makes one (the default: clients and
    /// proxies in front usually stamp their own, as with Envoy and Kong).
    #[default]
    Keep,
    /// lb always makes one (an edge whose clients' IDs mean nothing).
    Replace,
    /// lb neither makes nor checks one; a client's passes as any other field.
    Off,
}

/// `escaped_slashes`: how request paths with an encoded slash or a backslash are treated
/// (as Envoy's `path_with_escaped_slashes_action`). Origins disagree on whether they
/// separate segments, so routing on either reading could be walked around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Refuse the request (400).
    #[default]
    Reject,
    /// Make them `/` before dot segments are resolved, then route and forward that.
    Decode,
    /// Leave them as they came (for origins that treat them as data).
    Keep,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_body_size: None,
            forwarded: Forwarded::Replace,
            via: false,
            escaped_slashes: EscapedSlashes::Reject,
            request_id: RequestIdMode::Keep,
        }
    }
}

/// `forwarded_headers`: trust the chain clients send, or replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// lb is the edge: what clients claim is dropped.
    Replace,
    /// lb is behind a trusted proxy: append to its chain.
    Append,
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    /// `name`, or `route[N]` when unnamed; used in logs and metrics.
    pub name: String,
    /// Index into `Config::listeners`.
    pub listener: usize,
    /// Lowercased `a.example` or `*.example`.
    pub host: Option<String>,
    pub path: Option<RoutePath>,
    /// Uppercase method names; empty = any.
    pub methods: Vec<String>,
    /// Lowercase header names and the exact values they must have.
    pub headers: Vec<(String, String)>,
    /// Index into `Config::pools`; `None` for an aggregate route, whose parts name theirs.
    pub pool: Option<usize>,
    /// `aggregate`: the parts an aggregate route fans out to, in config order (empty for
    /// a route with a `pool`).
    pub aggregate: Vec<super::AggregatePart>,
    /// Remove the matched `path_prefix` before forwarding.
    pub strip_prefix: bool,
    /// Replace what the path condition matched: the prefix, the exact path, or (regex) the
    /// match, where `$1`… name the regex's groups.
    pub rewrite: Option<String>,
    /// From forwarding the request to the backend's response head; default 60s.
    pub timeout: Duration,
    /// Further backends to try on connect failure, or 502/503 to an idempotent request
    /// without a body; default 0.
    pub retries: u32,
    /// Overrides the listener's `max_body_size`.
    pub max_body_size: Option<u64>,
    /// Indices into `Config::policies`, applied in this order.
    pub policies: Vec<usize>,
    /// `match.case = "insensitive"`: the path condition ignores ASCII case.
    pub case_insensitive: bool,
    /// Lowercase protocols a client may upgrade to (`Upgrade`, or HTTP/2's `:protocol`);
    /// default `["websocket"]`. Other upgrade requests go on as plain requests.
    pub upgrades: Vec<String>,
    /// `graphql = {..}`: each request is parsed as a GraphQL operation and held to these.
    pub graphql: Option<GraphqlLimits>,
    /// `match.graphql_operation`: the operation's type or name (only on `graphql` routes).
    pub graphql_operation: Option<GraphqlOperation>,
    /// `grpc_transcode`: JSON/HTTP requests become calls of these gRPC services.
    pub grpc_transcode: Option<GrpcTranscode>,
}

/// A route's `grpc_transcode`: the descriptor set (read by lb-l7 when the config loads) and
/// the services of it the route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTranscode {
    pub descriptor_set: FileRef,
    /// Fully-qualified service names, e.g. `pkg.Service`.
    pub services: Vec<String>,
    /// Where `services` is written, for errors about what the descriptor set has of them.
    pub services_span: Range<usize>,
}

impl PartialEq for HttpRoute {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.name,
            self.listener,
            &self.host,
            &self.methods,
            &self.headers,
            self.pool,
            self.strip_prefix,
            &self.rewrite,
            self.timeout,
            self.retries,
            self.max_body_size,
        ) == (
            &o.name,
            o.listener,
            &o.host,
            &o.methods,
            &o.headers,
            o.pool,
            o.strip_prefix,
            &o.rewrite,
            o.timeout,
            o.retries,
            o.max_body_size,
        ) && (self.case_insensitive, &self.upgrades) == (o.case_insensitive, &o.upgrades)
            && self.aggregate == o.aggregate
            && self.grpc_transcode == o.grpc_transcode
            && self.policies == o.policies
            && (&self.graphql, &self.graphql_operation) == (&o.graphql, &o.graphql_operation)
            && self.path.as_ref().map(RoutePath::text) == o.path.as_ref().map(RoutePath::text)
    }
}

impl HttpRoute {
    /// Every pool the route sends to: its `pool`, or its aggregate parts' pools (in part
    /// order, a pool named twice listed twice).
    pub fn pools(&self) -> impl Iterator<Item = usize> + '_ {
        self.pool
            .into_iter()
            .chain(self.aggregate.iter().map(|p| p.pool))
    }
}

/// A route's path condition. Regexes were compiled once to check them; lb-l7 compiles its own.
#[derive(Debug, Clone)]
pub enum RoutePath {
    Exact(String),
    Prefix(String),
    Regex(String),
}

impl RoutePath {
    /// The config spelling, e.g. `path_prefix = "/api"`.
    pub fn text(&self) -> String {
        match self {
            Self::Exact(p) => format!("path = \"{p}\""),
            Self::Prefix(p) => format!("path_prefix = \"{p}\""),
            Self::Regex(r) => format!("path_regex = \"{r}\""),
        }
    }
}

/// A file named in the config, with where it was named (for errors about its contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: String,
    pub span: Range<usize>,
    /// Key path, e.g. `listener[0].tls.cert`.
    pub key: String,
}

/// A certificate chain and its private key; `server_name` for per-SNI ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub server_name: Option<String>,
    pub cert: FileRef,
    pub key: FileRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Served to clients without SNI, or whose SNI matches no `sni` entry.
    pub default: CertPair,
    pub sni: Vec<CertPair>,
    pub alpn: Vec<String>,
    /// Require client certificates signed by these CAs.
    pub client_ca: Option<FileRef>,
}

/// One `sni_routes` entry: an exact name or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniRoute {
    pub pattern: String,
    /// Index into `Config::pools`.
    pub pool: usize,
}
