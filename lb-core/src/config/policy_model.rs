//! The validated model of `[policy.NAME]` sections (see [`super::model`] for the rest). Pure.

use std::ops::Range;
use std::time::Duration;

use super::model::FileRef;

/// One `[policy.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub kind: PolicyKind,
}

/// An IP network: address and prefix length (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `v6::/n`, or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse().ok()?, None),
        };
        let max = if matches!(addr, std::net::IpAddr::V4(_)) {
            32
        } else {
            128
        };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's address (after `trusted_proxies` of an `ip_filter`, PROXY protocol).
    Ip,
    /// A request header's value (lowercase name); requests without it share one bucket.
    Header(String),
    /// The consumer an `api_key` policy earlier on the route identified.
    ApiKey,
    /// A claim of the token a `jwt` policy earlier on the route verified.
    Jwt(String),
    /// One limit for the whole route.
    Route,
    /// `graphql:operation`: the GraphQL operation's type and name (routes with `graphql`).
    GraphqlOperation,
}

/// Where a rate limit's counts live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateStore {
    /// In this lb process.
    Local,
    /// In Redis, shared by every lb pointed at it: one limit for all of them.
    Redis { url: String, on_error: OnRedisError },
}

/// What a Redis-backed rate limit does while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Count in this process meanwhile (the default).
    Local,
    /// Let every request through.
    Allow,
    /// Refuse every request (503).
    Deny,
}

/// Header edits of a `headers` policy; values may hold `${client_ip}`, `${host}`,
/// `${method}`, `${path}`, `${consumer}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderOps {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyKind {
    /// Allow/deny by client address. The peer is the client unless it is one of
    /// `trusted_proxies`; then the right-most untrusted `X-Forwarded-For` entry is.
    IpFilter {
        allow: Vec<Cidr>,
        deny: Vec<Cidr>,
        trusted_proxies: Vec<Cidr>,
    },
    /// Requests must carry one of these keys (compared by SHA-256) in `header` (default
    /// `x-api-key`) or the `query` parameter; the key's name is the consumer. `keys_file`
    /// adds `NAME SHA256-HEX` lines, read when the config loads.
    ApiKey {
        keys: Vec<(String, [u8; 32])>,
        keys_file: Option<FileRef>,
        header: String,
        query: Option<String>,
    },
    /// `requests` per `per`, smoothly (GCRA), with bursts of up to `burst`.
    RateLimit {
        requests: u32,
        per: Duration,
        burst: u32,
        key: RateKey,
        /// Most keys tracked; the idlest are forgotten first. Each is kept as a fixed-size
        /// digest, so this bounds the bytes too: about 76 bytes a key at most, tables
        /// included, plus 4 KB (44 a key at the default 100k: 4.3 MB).
        max_keys: usize,
        /// Where the counts live.
        store: RateStore,
    },
    Cors {
        /// Exact origins, `https://*.example.com` wildcards, or `*`.
        allow_origins: Vec<String>,
        allow_methods: Vec<String>,
        allow_headers: Vec<String>,
        expose_headers: Vec<String>,
        allow_credentials: bool,
        max_age: Option<Duration>,
    },
    Headers {
        request: HeaderOps,
        response: HeaderOps,
    },
    /// Bearer tokens (RFC 7519), verified with the key of `key` by one of `algorithms`.
    Jwt {
        /// Upper-case JWS names: HS256, RS256, ES256, EdDSA…; never "none".
        algorithms: Vec<String>,
        key: JwtKey,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: Duration,
        /// The token's `roles_claim` must hold one of these (403 otherwise).
        require_roles: Vec<String>,
        roles_claim: String,
        /// Claim → request header to set from it (any such header a client sent is
        /// removed first).
        forward_claims: Vec<(String, String)>,
    },
    /// HTTP Basic authentication (RFC 7617) against bcrypt hashes: `users` in the config
    /// and/or an htpasswd file (read when the config is loaded).
    BasicAuth {
        users: Vec<(String, String)>,
        htpasswd_file: Option<FileRef>,
        realm: String,
    },
    /// Shared cache of GET/HEAD responses, keyed by method, host, path, query and the
    /// `vary` request headers; bounded in bytes.
    Cache {
        /// Longest life of an entry; `Cache-Control: max-age`/`s-maxage` may shorten it.
        ttl: Duration,
        /// Lowercase request header names that are part of the key.
        vary: Vec<String>,
        max_size: u64,
        max_object_size: u64,
        /// `store = "redis"`: entries are also kept in this Redis, shared by every lb on it
        /// (each keeps its own local copy too).
        redis_url: Option<String>,
    },
    /// Protocol translation and validation: backend XML answers turned into JSON
    /// (`xml_to_json`), JSON request bodies checked against a schema (`json_schema_file`,
    /// read when the config loads); bodies up to `max_object_size` are read whole for it.
    Transform {
        xml_to_json: bool,
        json_schema_file: Option<FileRef>,
        max_object_size: u64,
    },
    /// Opaque bearer tokens checked against an OAuth 2.0 authorization server's
    /// introspection endpoint (RFC 7662); see [`Introspection`].
    OAuth2Introspection(Box<Introspection>),
}

/// A `kind = "oauth2_introspection"` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Introspection {
    pub endpoint: Endpoint,
    /// lb's client id at the authorization server (HTTP Basic client authentication).
    pub client_id: String,
    /// The environment variable holding the client secret (read when the config loads; a
    /// missing or empty one is a config error).
    pub client_secret_env: EnvVar,
    /// Longest time an answer is reused (default 60 s; 0 = ask for every request). An
    /// active token's answer is never kept past the token's `exp`.
    pub cache_ttl: Duration,
    /// Scopes the token must all hold (403 `insufficient_scope` otherwise).
    pub require_scopes: Vec<String>,
    /// Claim → request header to set from the answer (any such header a client sent is
    /// removed first), as the jwt policy's.
    pub forward_claims: Vec<(String, String)>,
    pub on_error: OnIntrospectionError,
    /// Longest wait for the endpoint: connect, request and answer (default 2 s).
    pub timeout: Duration,
    /// PEM CA certificates that verify an https endpoint (default: the system's roots).
    pub ca: Option<FileRef>,
}

/// An `http://` or `https://` URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as written.
    pub url: String,
    pub tls: bool,
    /// A host name or IP address (without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Endpoint {
    /// `http(s)://HOST[:PORT][/PATH][?QUERY]`; no user info (credentials are the policy's
    /// client_id and secret) and no fragment. `Err` says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("it does not start with http:// or https://".into());
        };
        if url.bytes().any(|b| !(b'!'..=b'~').contains(&b)) {
            return Err("it holds spaces, control characters or non-ASCII bytes".into());
        }
        if url.contains('#') {
            return Err("a fragment (#...) means nothing to a server".into());
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err("user info in the URL: use client_id and client_secret_env".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("an IPv6 host needs its closing ]")?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("\"{h}\" is not an IPv6 address"));
            }
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("it names no host".into());
        }
        let name_ok = host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
        if !name_ok && host.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("\"{host}\" is not a host name or address"));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("\"{p}\" is not a port (1-65535)")),
            },
        };
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Self {
            url: url.to_string(),
            tls,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `host[:port]` as the `Host` field carries it (the port only when not the default).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// An environment variable a policy reads when the config loads, with where it was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub var: String,
    pub span: Range<usize>,
    pub key: String,
}

/// What an `oauth2_introspection` policy does with a token it could not check (the
/// endpoint down, slow, answering 5xx or garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnIntrospectionError {
    /// 503 (the default): nothing is known about the token.
    Unavailable,
    /// 401 `invalid_token`, as for a token the server said is not active.
    Deny,
    /// The request goes on UNAUTHENTICATED: no claims forwarded (the client's copies still
    /// removed), no scopes checked. Answers already cached still apply.
    Allow,
}

/// Whether `hash` is a bcrypt hash (`$2a$`, `$2b$`, `$2y$`: what `htpasswd -B` writes).
pub fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60
}

/// Where a `jwt` policy's key comes from; read when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// An HMAC secret in this environment variable.
    SecretEnv {
        var: String,
        span: Range<usize>,
        key: String,
    },
    /// A PEM public key (RSA, EC or Ed25519).
    PublicKeyFile(FileRef),
    /// A JSON Web Key Set; tokens pick their key by `kid`.
    JwksFile(FileRef),
}

impl PolicyKind {
    pub const NAMES: &'static [&'static str] = &[
        "ip_filter",
        "api_key",
        "rate_limit",
        "cors",
        "headers",
        "jwt",
        "basic_auth",
        "cache",
        "transform",
        "oauth2_introspection",
    ];

    /// Whether a request this policy lets through was admitted by a credential it checked
    /// (what makes a response per-user for a cache, RFC 9111 §3.5). Every kind says, so a
    /// new kind must decide.
    pub fn authenticates(&self) -> bool {
        match self {
            Self::ApiKey { .. }
            | Self::Jwt { .. }
            | Self::BasicAuth { .. }
            | Self::OAuth2Introspection(_) => true,
            Self::IpFilter { .. }
            | Self::RateLimit { .. }
            | Self::Cors { .. }
            | Self::Headers { .. }
            | Self::Cache { .. }
            | Self::Transform { .. } => false,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::IpFilter { .. } => "ip_filter",
            Self::ApiKey { .. } => "api_key",
            Self::RateLimit { .. } => "rate_limit",
            Self::Cors { .. } => "cors",
            Self::Headers { .. } => "headers",
            Self::Jwt { .. } => "jwt",
            Self::BasicAuth { .. } => "basic_auth",
            Self::Cache { .. } => "cache",
            Self::Transform { .. } => "transform",
            Self::OAuth2Introspection(_) => "oauth2_introspection",
        }
    }
}
