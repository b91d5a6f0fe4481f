//! The validated model of `[pool.NAME]` sections: balancing, members (literal, named,
//! discovered), backend TLS and health checks (see [`super::model`] for the rest). Pure.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use super::model::FileRef;

/// Where Debian, Ubuntu and Alpine keep the system's CA bundle; `backend_tls` without `ca`
/// verifies against it.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS from lb to a pool's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTls {
    /// CA bundle to verify backends with ([`SYSTEM_CA_BUNDLE`] when verifying without `ca`);
    /// `None` only when not verifying.
    pub ca: Option<FileRef>,
    /// Name to send (SNI) and verify; `None` = the backend's IP address.
    pub server_name: Option<String>,
    /// Default true; false accepts any certificate (encryption without authentication).
    pub verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    Random,
    PowerOfTwo,
    ConsistentHash,
}

impl Algorithm {
    pub const NAMES: &'static [&'static str] = &[
        "round-robin",
        "weighted-round-robin",
        "least-connections",
        "random",
        "power-of-two",
        "consistent-hash",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "round-robin" => Self::RoundRobin,
            "weighted-round-robin" => Self::WeightedRoundRobin,
            "least-connections" => Self::LeastConnections,
            "random" => Self::Random,
            "power-of-two" => Self::PowerOfTwo,
            "consistent-hash" => Self::ConsistentHash,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::WeightedRoundRobin => "weighted-round-robin",
            Self::LeastConnections => "least-connections",
            Self::Random => "random",
            Self::PowerOfTwo => "power-of-two",
            Self::ConsistentHash => "consistent-hash",
        }
    }

    /// Whether backend weights change this algorithm's picks.
    pub fn uses_weights(self) -> bool {
        !matches!(self, Self::RoundRobin)
    }
}

/// What a consistent-hash pool hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address: every connection from one host sticks together.
    SourceIp,
    /// The client's IP and port: one connection (or UDP flow) at a time.
    SourceAddr,
    /// The TLS server name the client asked for (source IP when it sent none).
    Sni,
    /// http: a request header's value (lowercase name); source IP when absent.
    Header(String),
    /// http: a cookie's value; source IP when absent.
    Cookie(String),
    /// http: the request path (normalised).
    Path,
}

impl HashKey {
    /// The config spelling.
    pub fn describe(&self) -> String {
        match self {
            Self::SourceIp => "source-ip".into(),
            Self::SourceAddr => "source-addr".into(),
            Self::Sni => "sni".into(),
            Self::Header(h) => format!("header:{h}"),
            Self::Cookie(c) => format!("cookie:{c}"),
            Self::Path => "path".into(),
        }
    }

    /// Keys only an HTTP request has.
    pub fn is_http(&self) -> bool {
        matches!(self, Self::Header(_) | Self::Cookie(_) | Self::Path)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    pub hash_key: HashKey,
    /// Bounded-load factor (> 1.0) for consistent-hash.
    pub hash_balance_factor: Option<f64>,
    /// `overprovisioning` in hundredths (140 = 1.4, the default): a priority level takes
    /// all the traffic while this × its available share of weight is ≥ 100 %, and spills the
    /// rest to the next level ([`crate::balance::priority`]).
    pub overprovisioning_pct: u32,
    /// Members with an IP address: the config's literal ones, and at run time (the pool the
    /// runtime builds) those resolved from names and discovery and added through the API.
    pub backends: Vec<Backend>,
    /// Members given by host name, resolved at load and re-resolved by TTL.
    pub names: Vec<NamedBackend>,
    /// The DNS server for `names` (and `discovery` without its own); `None` = resolv.conf.
    pub resolver: Option<SocketAddr>,
    /// Members from DNS SRV records.
    pub discovery: Option<Discovery>,
    pub health: Option<Health>,
    pub passive: Option<Passive>,
    pub slow_start: Option<Duration>,
    pub backend_tls: Option<BackendTls>,
    /// http: speak HTTP/2 (prior knowledge, or ALPN h2 with backend_tls) to the backends.
    pub http2: bool,
    /// http: insert this cookie naming the backend; requests carrying it go back there.
    pub sticky_cookie: Option<String>,
}

impl Pool {
    /// The group of one priority as its selector is built: identities and weights of the
    /// members with an address. What `lb check --diff` compares tables with.
    pub fn members(&self, priority: u8) -> Vec<crate::balance::Member> {
        self.backends
            .iter()
            .filter(|b| b.priority == priority)
            .map(|b| crate::balance::Member {
                id: b.id(),
                weight: b.weight.get(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: NonZeroU32,
    /// 0 = preferred; a level spills traffic to the next as its members fail
    /// ([`crate::balance::priority`]). `backup = true` in the file is priority 1.
    pub priority: u8,
    /// Where the member came from (the dashboard's source column).
    pub origin: Origin,
    /// `zone = "..."`: a label only (the plan, `/api/status`, the `zone` label of
    /// `lb_backend_up`); balancing does not read it.
    pub zone: Option<String>,
}

/// The longest `zone` label (it becomes a metric label value).
pub const MAX_ZONE_LEN: usize = 64;

/// A valid `zone` label: 1 to [`MAX_ZONE_LEN`] letters, digits and `- _ . : /`.
pub fn is_zone_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ZONE_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
}

impl Backend {
    pub fn backup(&self) -> bool {
        self.priority > 0
    }
}

/// Priorities a member may have: 0 (preferred) to this. Each is a group that takes the
/// traffic its lower levels spill ([`crate::balance::priority`]).
pub const MAX_PRIORITY: u8 = 9;

/// Where a pool member came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// An IP address in the config file.
    Config,
    /// A host name of the config (`host:port`) or the pool's SRV name.
    Dns(String),
    /// Added through `POST /api/pools/{pool}/backends`.
    Api,
}

impl Origin {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Dns(_) => "dns",
            Self::Api => "api",
        }
    }
}

/// `addr = "name:port"`: a member per A/AAAA record of `host`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamedBackend {
    pub host: String,
    pub port: u16,
    pub weight: NonZeroU32,
    pub priority: u8,
    /// Given to each member the name resolves to.
    pub zone: Option<String>,
}

impl NamedBackend {
    /// `host:port`, as written in the file.
    pub fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// `discovery = { kind = "dns_srv", ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Discovery {
    /// The SRV name, e.g. `_web._tcp.service.consul`.
    pub name: String,
    /// Overrides the pool's `resolver`.
    pub resolver: Option<SocketAddr>,
    /// Fixed re-query period; `None` = the answer's TTL within the global bounds.
    pub interval: Option<Duration>,
}

impl Backend {
    /// The backend's identity: its address as text. Maglev hashes it (so every lb with the
    /// same config builds the same table) and metrics label by it.
    pub fn id(&self) -> String {
        self.addr.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    Tcp,
    Http {
        path: String,
        expect_status: u16,
    },
    /// Send a datagram, expect a reply that starts with `expect`.
    Udp {
        send: Vec<u8>,
        expect: Vec<u8>,
    },
    /// A DNS query for `query` must get a NOERROR answer.
    Dns {
        query: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub kind: HealthKind,
    /// Default 2s.
    pub interval: Duration,
    /// Default 1s.
    pub timeout: Duration,
    /// Successes in a row to come up; default 2.
    pub rise: u32,
    /// Failures in a row to go down; default 3.
    pub fall: u32,
}

impl HealthKind {
    /// One line for `lb check` and the status API.
    pub fn describe(&self) -> String {
        match self {
            Self::Tcp => "tcp connect".into(),
            Self::Http {
                path,
                expect_status,
            } => format!("http GET {path} expecting {expect_status}"),
            Self::Udp { send, expect } => format!(
                "udp send {} bytes, expect a reply starting with {} bytes",
                send.len(),
                expect.len()
            ),
            Self::Dns { query } => format!("dns query {query} expecting NOERROR"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passive {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
}
