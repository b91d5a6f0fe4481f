//! Stage one of the config: serde structs that mirror the TOML file exactly, with spans kept on
//! every value that needs a semantic check. Unknown keys are rejected here. Pure; no I/O.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

/// Top-level keys, in file order of the SPEC. Used for "did you mean" hints.
pub const TOP_KEYS: &[&str] = &[
    "global", "admin", "tracing", "listener", "pool", "route", "policy",
];

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    pub workers: Option<S<i64>>,
    pub max_connections: Option<S<i64>>,
    pub shutdown_timeout: Option<S<String>>,
    /// lb addition: on SIGTERM/SIGINT, how long lb keeps serving while `/api/ready` says 503
    /// before it stops accepting (HAProxy's `grace`); default "0s".
    pub shutdown_delay: Option<S<String>>,
    /// lb addition: `true` (default on Linux) relays bulk data with splice(2).
    pub splice: Option<bool>,
    /// Hand open plain TCP connections and UDP flows to a new binary on upgrade (SPEC §6).
    pub upgrade_handover: Option<bool>,
    /// Host-name backends are re-resolved after their record's TTL, clamped to
    /// [`resolve_interval_min`, `resolve_interval_max`] (SPEC §6); defaults 1s and 60s.
    pub resolve_interval_min: Option<S<String>>,
    pub resolve_interval_max: Option<S<String>>,
}

/// lb addition: `[tracing]`, W3C trace context and an optional OTLP/HTTP exporter.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: Option<S<String>>,
    pub service_name: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: S<String>,
    pub token: Option<S<String>>,
    /// Host names the admin API answers besides IP literals and `localhost` (SPEC §6).
    pub hosts: Option<S<Vec<S<String>>>>,
    /// lb addition: open admin connections at most; default 64.
    pub max_connections: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: S<String>,
    pub bind: S<String>,
    pub protocol: Option<S<String>>,
    pub pool: Option<S<String>>,
    pub tls: Option<S<RawTls>>,
    pub sni_routes: Option<S<std::collections::BTreeMap<String, S<String>>>>,
    pub proxy_protocol: Option<S<String>>,
    pub accept_proxy_protocol: Option<S<bool>>,
    /// Who may send a PROXY header (SPEC §6): addresses or networks.
    pub trusted_proxies: Option<S<Vec<S<String>>>>,
    /// lb addition: how long a client has for the PROXY header, the ClientHello and the TLS
    /// handshake together; default 10s.
    pub handshake_timeout: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
    pub idle_timeout: Option<S<String>>,
    pub udp_session_timeout: Option<S<String>>,
    pub max_connections: Option<S<i64>>,
    pub access_log: Option<bool>,
    /// lb additions for http listeners.
    pub header_timeout: Option<S<String>>,
    pub max_body_size: Option<S<RawSize>>,
    pub forwarded_headers: Option<S<String>>,
    pub via: Option<S<bool>>,
    pub escaped_slashes: Option<S<String>>,
    /// lb addition (issue 21): `X-Request-Id` handling.
    pub request_id: Option<S<String>>,
    /// SPEC §6: close (tcp) or ask to reconnect (http) connections this old.
    pub max_connection_age: Option<S<String>>,
    pub max_connection_age_jitter: Option<S<String>>,
    pub age_grace: Option<S<String>>,
}

/// A size: bytes as an integer, or a string such as "10MiB", "512k", "1GB".
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub listener: S<String>,
    pub name: Option<S<String>>,
    #[serde(rename = "match")]
    pub matches: Option<S<RawMatch>>,
    /// The pool the route forwards to; a route has `pool` or `aggregate`, exactly one.
    pub pool: Option<S<String>>,
    pub strip_prefix: Option<S<bool>>,
    pub rewrite: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub retries: Option<S<i64>>,
    pub max_body_size: Option<S<RawSize>>,
    pub policies: Option<S<Vec<S<String>>>>,
    pub upgrades: Option<S<Vec<S<String>>>>,
    /// SPEC §6: answer one JSON object built from concurrent GETs to these parts.
    pub aggregate: Option<S<Vec<S<RawAggregatePart>>>>,
    pub graphql: Option<S<RawGraphql>>,
    /// SPEC §6: answer JSON/HTTP by calling the pool's gRPC methods.
    pub grpc_transcode: Option<S<RawGrpcTranscode>>,
}

/// One part of a route's `aggregate` (SPEC §6).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregatePart {
    pub name: S<String>,
    pub pool: S<String>,
    /// A path template such as `/users/${jwt.sub}`.
    pub path: S<String>,
    pub timeout: Option<S<String>>,
    pub required: Option<S<bool>>,
}

/// A route's `graphql = { max_depth, max_aliases, max_complexity, introspection }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGraphql {
    pub max_depth: Option<S<i64>>,
    pub max_aliases: Option<S<i64>>,
    pub max_complexity: Option<S<i64>>,
    pub introspection: Option<S<bool>>,
}

/// A route's `grpc_transcode = { descriptor_set, services }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpcTranscode {
    pub descriptor_set: S<String>,
    pub services: S<Vec<S<String>>>,
}

/// One `[policy.NAME]`: `kind` says which of the other keys apply (checked in validation,
/// so a key of another kind is reported as such rather than as unknown).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub kind: S<String>,
    // ip_filter
    pub allow: Option<S<Vec<S<String>>>>,
    pub deny: Option<S<Vec<S<String>>>>,
    pub trusted_proxies: Option<S<Vec<S<String>>>>,
    // api_key
    pub keys: Option<S<Vec<S<RawApiKey>>>>,
    pub keys_file: Option<S<String>>,
    pub header: Option<S<String>>,
    pub query: Option<S<String>>,
    // rate_limit
    pub requests: Option<S<i64>>,
    pub per: Option<S<String>>,
    pub burst: Option<S<i64>>,
    pub key: Option<S<String>>,
    pub store: Option<S<String>>,
    pub max_keys: Option<S<i64>>,
    pub redis_url: Option<S<String>>,
    pub on_redis_error: Option<S<String>>,
    // cors
    pub allow_origins: Option<S<Vec<S<String>>>>,
    pub allow_methods: Option<S<Vec<S<String>>>>,
    pub allow_headers: Option<S<Vec<S<String>>>>,
    pub expose_headers: Option<S<Vec<S<String>>>>,
    pub allow_credentials: Option<S<bool>>,
    pub max_age: Option<S<String>>,
    // headers
    pub request: Option<S<RawHeaderOps>>,
    pub response: Option<S<RawHeaderOps>>,
    // jwt
    pub algorithms: Option<S<Vec<S<String>>>>,
    pub secret_env: Option<S<String>>,
    pub public_key_file: Option<S<String>>,
    pub jwks_file: Option<S<String>>,
    pub issuer: Option<S<String>>,
    pub audience: Option<S<String>>,
    pub leeway: Option<S<String>>,
    pub require_roles: Option<S<Vec<S<String>>>>,
    pub roles_claim: Option<S<String>>,
    pub forward_claims: Option<S<std::collections::BTreeMap<String, S<String>>>>,
    // cache
    pub ttl: Option<S<String>>,
    pub vary: Option<S<Vec<S<String>>>>,
    pub max_size: Option<S<RawSize>>,
    pub max_object_size: Option<S<RawSize>>,
    // transform
    pub xml_to_json: Option<S<bool>>,
    pub json_schema_file: Option<S<String>>,
    // basic_auth
    pub users: Option<S<std::collections::BTreeMap<String, S<String>>>>,
    pub htpasswd_file: Option<S<String>>,
    pub realm: Option<S<String>>,
    // oauth2_introspection (also forward_claims)
    pub endpoint: Option<S<String>>,
    pub client_id: Option<S<String>>,
    pub client_secret_env: Option<S<String>>,
    pub cache_ttl: Option<S<String>>,
    pub require_scopes: Option<S<Vec<S<String>>>>,
    pub on_error: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub ca: Option<S<String>>,
}

/// `keys = [{ name = "mobile-app", sha256 = "…" }]`: the SHA-256 (hex) of each key, never
/// the key itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub name: S<String>,
    pub sha256: S<String>,
}

/// Header edits: `set` replaces, `add` appends, `remove` deletes.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderOps {
    pub set: Option<S<std::collections::BTreeMap<String, S<String>>>>,
    pub add: Option<S<std::collections::BTreeMap<String, S<String>>>>,
    pub remove: Option<S<Vec<S<String>>>>,
}

/// Keys of `[policy.NAME]` by kind (`kind` itself aside).
pub const POLICY_KEYS: &[(&str, &[&str])] = &[
    ("ip_filter", &["allow", "deny", "trusted_proxies"]),
    ("api_key", &["keys", "keys_file", "header", "query"]),
    (
        "rate_limit",
        &[
            "requests",
            "per",
            "burst",
            "key",
            "store",
            "max_keys",
            "redis_url",
            "on_redis_error",
        ],
    ),
    (
        "cors",
        &[
            "allow_origins",
            "allow_methods",
            "allow_headers",
            "expose_headers",
            "allow_credentials",
            "max_age",
        ],
    ),
    ("headers", &["request", "response"]),
    (
        "jwt",
        &[
            "algorithms",
            "secret_env",
            "public_key_file",
            "jwks_file",
            "issuer",
            "audience",
            "leeway",
            "require_roles",
            "roles_claim",
            "forward_claims",
        ],
    ),
    ("basic_auth", &["users", "htpasswd_file", "realm"]),
    (
        "oauth2_introspection",
        &[
            "endpoint",
            "client_id",
            "client_secret_env",
            "cache_ttl",
            "require_scopes",
            "forward_claims",
            "on_error",
            "timeout",
            "ca",
        ],
    ),
    (
        "cache",
        &[
            "ttl",
            "vary",
            "max_size",
            "max_object_size",
            "store",
            "redis_url",
        ],
    ),
    (
        "transform",
        &["xml_to_json", "json_schema_file", "max_object_size"],
    ),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<S<String>>,
    pub path: Option<S<String>>,
    pub path_prefix: Option<S<String>>,
    pub path_regex: Option<S<String>>,
    pub methods: Option<S<Vec<S<String>>>>,
    pub headers: Option<S<std::collections::BTreeMap<String, S<String>>>>,
    pub case: Option<S<String>>,
    pub graphql_operation: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: S<String>,
    pub algorithm: Option<S<String>>,
    pub hash_key: Option<S<String>>,
    pub hash_balance_factor: Option<S<f64>>,
    /// Envoy's overprovisioning factor for priority levels (SPEC §6); default 1.4.
    pub overprovisioning: Option<S<f64>>,
    /// Optional when `discovery` gives the members.
    pub backends: Option<S<Vec<S<RawBackend>>>>,
    /// DNS server (`IP:PORT`) for this pool's host names; default `/etc/resolv.conf`.
    pub resolver: Option<S<String>>,
    pub discovery: Option<S<RawDiscovery>>,
    pub health: Option<S<RawHealth>>,
    pub passive: Option<S<RawPassive>>,
    pub slow_start: Option<S<String>>,
    pub backend_tls: Option<S<RawBackendTls>>,
    pub http2: Option<S<bool>>,
    pub sticky_cookie: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: S<String>,
    pub key: S<String>,
    pub sni: Option<Vec<S<RawSniCert>>>,
    pub alpn: Option<S<Vec<S<String>>>>,
    pub client_ca: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSniCert {
    pub server_name: S<String>,
    pub cert: S<String>,
    pub key: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    pub ca: Option<S<String>>,
    pub server_name: Option<S<String>>,
    pub verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub addr: S<String>,
    pub weight: Option<S<i64>>,
    pub backup: Option<bool>,
    /// 0 = preferred; `backup = true` is priority 1 (SPEC §6).
    pub priority: Option<S<i64>>,
    /// A label (region, zone): shown in the plan, the status API and metrics (SPEC §6).
    pub zone: Option<S<String>>,
}

/// `discovery = { kind = "dns_srv", name, resolver, interval }` on a pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub kind: S<String>,
    pub name: S<String>,
    pub resolver: Option<S<String>>,
    pub interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub kind: S<String>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub path: Option<S<String>>,
    pub expect_status: Option<S<i64>>,
    pub send: Option<S<String>>,
    pub expect: Option<S<String>>,
    pub query: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    pub consecutive_failures: S<i64>,
    pub eject_for: S<String>,
}

/// Every key a `[policy.NAME]` may hold: `kind` and the keys of every kind.
fn policy_keys() -> &'static [&'static str] {
    static ALL: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = vec!["kind"];
        for (_, keys) in POLICY_KEYS {
            for k in *keys {
                if !all.contains(k) {
                    all.push(k);
                }
            }
        }
        all
    })
}

/// Known keys per table, for "did you mean" hints on unknown ones.
pub fn known_keys(table: &str) -> &'static [&'static str] {
    match table {
        "global" => &[
            "workers",
            "max_connections",
            "shutdown_timeout",
            "shutdown_delay",
            "splice",
            "upgrade_handover",
            "resolve_interval_min",
            "resolve_interval_max",
        ],
        "admin" => &["bind", "token", "hosts", "max_connections"],
        "listener" => &[
            "name",
            "bind",
            "protocol",
            "pool",
            "tls",
            "sni_routes",
            "proxy_protocol",
            "accept_proxy_protocol",
            "trusted_proxies",
            "handshake_timeout",
            "connect_timeout",
            "idle_timeout",
            "udp_session_timeout",
            "max_connections",
            "access_log",
            "header_timeout",
            "max_body_size",
            "forwarded_headers",
            "via",
            "escaped_slashes",
            "request_id",
            "max_connection_age",
            "max_connection_age_jitter",
            "age_grace",
        ],
        "route" => &[
            "listener",
            "name",
            "match",
            "pool",
            "strip_prefix",
            "rewrite",
            "timeout",
            "retries",
            "max_body_size",
            "policies",
            "upgrades",
            "graphql",
        ],
        "graphql" => &[
            "max_depth",
            "max_aliases",
            "max_complexity",
            "introspection",
        ],
        "policy" => policy_keys(),
        "keys" => &["name", "sha256"],
        "request" | "response" => &["set", "add", "remove"],
        "match" => &[
            "host",
            "path",
            "path_prefix",
            "path_regex",
            "methods",
            "headers",
            "case",
            "graphql_operation",
        ],
        "pool" => &[
            "name",
            "algorithm",
            "hash_key",
            "hash_balance_factor",
            "overprovisioning",
            "backends",
            "resolver",
            "discovery",
            "health",
            "passive",
            "slow_start",
            "backend_tls",
            "http2",
            "sticky_cookie",
        ],
        "backends" => &["addr", "weight", "backup", "priority", "zone"],
        "discovery" => &["kind", "name", "resolver", "interval"],
        "health" => &[
            "kind",
            "interval",
            "timeout",
            "rise",
            "fall",
            "path",
            "expect_status",
            "send",
            "expect",
            "query",
        ],
        "passive" => &["consecutive_failures", "eject_for"],
        "tls" => &["cert", "key", "sni", "alpn", "client_ca"],
        "sni" => &["server_name", "cert", "key"],
        "backend_tls" => &["ca", "server_name", "verify"],
        "" => TOP_KEYS,
        _ => &[],
    }
}
