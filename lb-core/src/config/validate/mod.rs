//! Stage three of the config: semantic checks on the raw structs, producing the typed model.
//! Every problem found is reported (never just the first); the model is returned only when
//! there are no errors. Pure; no I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::diag::{did_you_mean, Diagnostic};
use super::duration::parse_duration;
use super::model::*;
use super::parse::RawConfig;

/// Largest accepted backend weight; keeps weighted tables and sums small.
pub const MAX_WEIGHT: i64 = 10_000;

mod admin;
mod age;
mod aggregate;
mod global;
mod graphql;
mod http;
mod members;
mod policy;
mod policy_auth;
mod policy_oauth2;
mod tracing;

pub use policy_auth::parse_sha256;
mod policy_use;
mod policy_values;
mod pool;
mod priority;
mod proxy_header;
mod route_reach;
mod tls;
mod transcode;

use http::listener_http;
use pool::pool;
use tls::tls_settings;

/// Which kinds of listener use a pool: its keys must make sense for each.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Uses {
    pub tcp: bool,
    pub udp: bool,
    pub http: bool,
    /// An http listener without `tls` (no server name to hash on).
    pub plain_http: bool,
}

impl Uses {
    fn any(self) -> bool {
        self.tcp || self.udp || self.http
    }
}

/// Marks a pool as used by a listener of this kind.
fn mark(used: &mut Uses, protocol: Option<Protocol>, tls: bool) {
    match protocol {
        Some(Protocol::Http) => {
            used.http = true;
            used.plain_http |= !tls;
        }
        Some(Protocol::Udp) => used.udp = true,
        Some(Protocol::Tcp) | None => used.tcp = true,
    }
}

pub(super) struct Ctx<'a> {
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    pub(super) fn err(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.diags.push(Diagnostic::error(msg).at(span).key(key));
    }

    pub(super) fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub(super) fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        key: String,
        default: Duration,
    ) -> Duration {
        let Some(v) = v else { return default };
        match parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.err(v.span(), key, e);
                default
            }
        }
    }

    pub(super) fn int(
        &mut self,
        v: &Option<Spanned<i64>>,
        key: String,
        min: i64,
        max: i64,
        default: i64,
    ) -> i64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if n < min || n > max {
            self.err(
                v.span(),
                key,
                format!("expected an integer from {min} to {max}, found {n}"),
            );
            return default;
        }
        n
    }

    pub(super) fn addr(&mut self, v: &Spanned<String>, key: String) -> Option<SocketAddr> {
        let text = v.get_ref();
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let help = if text.parse::<std::net::IpAddr>().is_ok() {
                    format!("add a port, e.g. \"{text}:80\"")
                } else if text.contains(':')
                    && !text.starts_with('[')
                    && text.matches(':').count() > 1
                {
                    "write IPv6 addresses in brackets: \"[::1]:80\"".to_string()
                } else {
                    "this address takes an IP literal (only backend addresses may be host names)"
                        .to_string()
                };
                self.push(
                    Diagnostic::error(format!("expected IP:PORT or [IPv6]:PORT, found \"{text}\""))
                        .at(v.span())
                        .key(key)
                        .help(help),
                );
                None
            }
        }
    }
}

/// Runs every semantic check; returns the model only if no error was found.
pub fn validate(raw: RawConfig, diags: &mut Vec<Diagnostic>) -> Option<Config> {
    let errors_before = diags.iter().filter(|d| d.is_error()).count();
    let mut cx = Ctx { diags };

    let (policies, policy_index) = policy::policies(&mut cx, &raw.policies);

    let global = global::global(&mut cx, raw.global.as_ref());

    let admin = raw
        .admin
        .as_ref()
        .and_then(|(a, _)| admin::admin(&mut cx, a));

    let tracing = raw.tracing.as_ref().map(|t| tracing::tracing(&mut cx, t));

    // Pools first, so listeners can resolve references.
    let mut pool_index: HashMap<&str, usize> = HashMap::new();
    let mut pools = Vec::new();
    for (i, (p, _)) in raw.pools.iter().enumerate() {
        let key = format!("pool[{i}]");
        if let Some(&first) = pool_index.get(p.name.get_ref().as_str()) {
            cx.push(
                Diagnostic::error(format!("duplicate pool name \"{}\"", p.name.get_ref()))
                    .at(p.name.span())
                    .key(format!("{key}.name"))
                    .help(format!(
                        "pool[{first}] already uses this name; pool names must be unique"
                    )),
            );
        } else {
            pool_index.insert(p.name.get_ref(), pools.len());
        }
        pools.push(pool(&mut cx, p, &key));
    }

    let mut listeners = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    // TCP and UDP ports are separate spaces: only the same protocol clashes.
    let mut binds: Vec<(SocketAddr, bool, String)> = Vec::new();
    if let (Some(a), Some((ra, _))) = (&admin, &raw.admin) {
        let _ = ra;
        binds.push((a.bind, false, "admin.bind".into()));
    }
    // Which kinds of listener use each pool.
    let mut used_pools = vec![Uses::default(); pools.len()];
    for (i, (l, _)) in raw.listeners.iter().enumerate() {
        let key = format!("listener[{i}]");
        let name = l.name.get_ref();
        if name.is_empty() {
            cx.err(
                l.name.span(),
                format!("{key}.name"),
                "listener name must not be empty",
            );
        }
        if let Some(&first) = names.get(name.as_str()) {
            cx.push(
                Diagnostic::error(format!("duplicate listener name \"{name}\""))
                    .at(l.name.span())
                    .key(format!("{key}.name"))
                    .help(format!("listener[{first}] already uses this name")),
            );
        } else {
            names.insert(name, i);
        }
        let protocol = match l.protocol.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("tcp") => Some(Protocol::Tcp),
            Some("udp") => Some(Protocol::Udp),
            Some("http") => Some(Protocol::Http),
            Some(other) => {
                cx.push(
                    Diagnostic::error(format!(
                        "expected one of \"tcp\", \"udp\", \"http\", found \"{other}\""
                    ))
                    .at(l.protocol.as_ref().map_or(0..0, |p| p.span()))
                    .key(format!("{key}.protocol")),
                );
                None
            }
        };
        let udp = protocol == Some(Protocol::Udp);
        let bind = cx.addr(&l.bind, format!("{key}.bind"));
        if let Some(b) = bind {
            if let Some((_, _, other)) = binds
                .iter()
                .find(|(o, u, _)| *u == udp && binds_clash(*o, b))
            {
                cx.push(
                    Diagnostic::error(format!("duplicate bind address {b}"))
                        .at(l.bind.span())
                        .key(format!("{key}.bind"))
                        .help(format!("{other} already binds it")),
                );
            }
            binds.push((b, udp, format!("{key}.bind")));
        }
        let http = protocol == Some(Protocol::Http);
        let pool = match &l.pool {
            None if http => None,
            None => {
                cx.push(
                    Diagnostic::error(format!("listener \"{name}\" has no pool"))
                        .at(l.name.span())
                        .key(format!("{key}.pool"))
                        .help("add pool = \"NAME\" naming a [[pool]]"),
                );
                None
            }
            Some(p) => match pool_index.get(p.get_ref().as_str()) {
                Some(&idx) => {
                    mark(&mut used_pools[idx], protocol, l.tls.is_some());
                    Some(idx)
                }
                None => {
                    let known: Vec<&str> = pool_index.keys().copied().collect();
                    let mut d = Diagnostic::error(format!(
                        "listener \"{name}\" points at pool \"{}\", which does not exist",
                        p.get_ref()
                    ))
                    .at(p.span())
                    .key(format!("{key}.pool"));
                    if let Some(s) = did_you_mean(p.get_ref(), &known) {
                        d = d.help(format!("did you mean \"{s}\"?"));
                    } else if !known.is_empty() {
                        d = d.help(format!("pools defined: {}", known.join(", ")));
                    }
                    cx.push(d);
                    None
                }
            },
        };
        let connect_timeout = cx.duration(
            &l.connect_timeout,
            format!("{key}.connect_timeout"),
            Duration::from_secs(3),
        );
        let idle_timeout = cx.duration(
            &l.idle_timeout,
            format!("{key}.idle_timeout"),
            Duration::from_secs(300),
        );
        if connect_timeout.is_zero() {
            if let Some(v) = &l.connect_timeout {
                cx.err(
                    v.span(),
                    format!("{key}.connect_timeout"),
                    "connect_timeout must be greater than 0",
                );
            }
        }
        if idle_timeout.is_zero() {
            if let Some(v) = &l.idle_timeout {
                cx.err(
                    v.span(),
                    format!("{key}.idle_timeout"),
                    "idle_timeout must be greater than 0",
                );
            }
        }
        let max_connections = cx.int(
            &l.max_connections,
            format!("{key}.max_connections"),
            1,
            i64::MAX,
            10_000,
        ) as u64;
        let udp_session_timeout = cx.duration(
            &l.udp_session_timeout,
            format!("{key}.udp_session_timeout"),
            Duration::from_secs(30),
        );
        if udp {
            for (v, name) in [
                (&l.idle_timeout, "idle_timeout"),
                (&l.connect_timeout, "connect_timeout"),
            ] {
                if let Some(v) = v {
                    cx.push(
                        Diagnostic::error(format!("`{name}` has no effect on a udp listener"))
                            .at(v.span())
                            .key(format!("{key}.{name}"))
                            .help("udp flows end after udp_session_timeout of silence"),
                    );
                }
            }
        } else if let Some(v) = &l.udp_session_timeout {
            cx.push(
                Diagnostic::error(
                    "`udp_session_timeout` applies only to protocol = \"udp\" listeners",
                )
                .at(v.span())
                .key(format!("{key}.udp_session_timeout"))
                .help("remove it; tcp and http listeners end quiet connections after idle_timeout"),
            );
        }
        let handshake_timeout = cx.duration(
            &l.handshake_timeout,
            format!("{key}.handshake_timeout"),
            Duration::from_secs(10),
        );
        let tcp_only = |cx: &mut Ctx<'_>, span: Option<Range<usize>>, k: &str| {
            if let (true, Some(span)) = (udp, span) {
                cx.push(
                    Diagnostic::error(format!("`{k}` applies only to tcp and http listeners"))
                        .at(span)
                        .key(format!("{key}.{k}"))
                        .help("remove it from this udp listener"),
                );
            }
        };
        tcp_only(&mut cx, l.tls.as_ref().map(|v| v.span()), "tls");
        tcp_only(
            &mut cx,
            l.handshake_timeout.as_ref().map(|v| v.span()),
            "handshake_timeout",
        );
        tcp_only(
            &mut cx,
            l.sni_routes.as_ref().map(|v| v.span()),
            "sni_routes",
        );
        tcp_only(
            &mut cx,
            l.proxy_protocol.as_ref().map(|v| v.span()),
            "proxy_protocol",
        );
        tcp_only(
            &mut cx,
            l.accept_proxy_protocol.as_ref().map(|v| v.span()),
            "accept_proxy_protocol",
        );
        tcp_only(
            &mut cx,
            l.trusted_proxies.as_ref().map(|v| v.span()),
            "trusted_proxies",
        );
        let trusted_proxies = proxy_header::trusted_proxies(&mut cx, l, &key, udp);
        let max_age = age::max_age(&mut cx, l, &key, udp);
        let mut tls = l
            .tls
            .as_ref()
            .map(|t| tls_settings(&mut cx, t.get_ref(), &format!("{key}.tls")));
        if let Some(t) = tls
            .as_mut()
            .filter(|t| protocol == Some(Protocol::Http) && t.alpn.is_empty())
        {
            // What HTTPS clients offer; h2 first, as nginx and HAProxy prefer it.
            t.alpn = vec!["h2".into(), "http/1.1".into()];
        }
        let mut sni_routes = Vec::new();
        for (pattern, target) in l.sni_routes.iter().flat_map(|m| m.get_ref().iter()) {
            let rkey = format!("{key}.sni_routes.\"{pattern}\"");
            let name = pattern.strip_prefix("*.").unwrap_or(pattern);
            if !valid_host_name(name) || name.contains('*') {
                cx.push(
                    Diagnostic::error(format!(
                        "expected a host name or \"*.domain\", found \"{pattern}\""
                    ))
                    .at(target.span())
                    .key(rkey.clone()),
                );
                continue;
            }
            match pool_index.get(target.get_ref().as_str()) {
                Some(&idx) => {
                    mark(&mut used_pools[idx], protocol, l.tls.is_some());
                    sni_routes.push(SniRoute {
                        pattern: pattern.to_ascii_lowercase(),
                        pool: idx,
                    });
                }
                None => {
                    let known: Vec<&str> = pool_index.keys().copied().collect();
                    let mut d = Diagnostic::error(format!(
                        "sni route \"{pattern}\" points at pool \"{}\", which does not exist",
                        target.get_ref()
                    ))
                    .at(target.span())
                    .key(rkey);
                    if let Some(s) = did_you_mean(target.get_ref(), &known) {
                        d = d.help(format!("did you mean \"{s}\"?"));
                    }
                    cx.push(d);
                }
            }
        }
        let proxy_protocol = l
            .proxy_protocol
            .as_ref()
            .and_then(|v| match v.get_ref().as_str() {
                "v1" => Some(ProxyVersion::V1),
                "v2" => Some(ProxyVersion::V2),
                other => {
                    cx.err(
                        v.span(),
                        format!("{key}.proxy_protocol"),
                        format!("expected \"v1\" or \"v2\", found \"{other}\""),
                    );
                    None
                }
            });
        let http_settings = listener_http(&mut cx, l, &key, http);
        if let Some(v) = &l.sni_routes {
            if http {
                cx.push(
                    Diagnostic::error("`sni_routes` applies only to tcp listeners")
                        .at(v.span())
                        .key(format!("{key}.sni_routes"))
                        .help("route http requests with [[route]] and match = { host = \"...\" }"),
                );
            }
        }
        let pool_ok = pool.is_some() || (http && l.pool.is_none());
        if let (Some(protocol), Some(bind), true) = (protocol, bind, pool_ok) {
            listeners.push(Listener {
                name: name.clone(),
                bind,
                protocol,
                pool,
                connect_timeout,
                idle_timeout,
                max_connections,
                access_log: l.access_log.unwrap_or(false),
                udp_session_timeout,
                tls,
                sni_routes,
                proxy_protocol,
                accept_proxy_protocol: l
                    .accept_proxy_protocol
                    .as_ref()
                    .is_some_and(|v| *v.get_ref()),
                trusted_proxies,
                handshake_timeout,
                max_age,
                http: http_settings,
            });
        }
    }

    let protocols: Vec<Option<Protocol>> = raw
        .listeners
        .iter()
        .map(
            |(l, _)| match l.protocol.as_ref().map(|p| p.get_ref().as_str()) {
                None | Some("tcp") => Some(Protocol::Tcp),
                Some("udp") => Some(Protocol::Udp),
                Some("http") => Some(Protocol::Http),
                Some(_) => None,
            },
        )
        .collect();
    let tls: Vec<bool> = raw.listeners.iter().map(|(l, _)| l.tls.is_some()).collect();
    let routes = http::routes(
        &mut cx,
        &raw.routes,
        &names,
        (&protocols, &tls),
        &pool_index,
        &policy_index,
        &mut used_pools,
    );
    policy_use::uses(&mut cx, &raw.policies, &raw.routes, &policies, &routes);
    aggregate::policies(&mut cx, &raw.routes, &policies, &routes);
    route_reach::rewrites(&mut cx, &raw.routes, &policies, &pools, &routes);
    transcode::uses(&mut cx, &raw.routes, &policies, &pools, &routes);
    for (i, (p, _)) in raw.pools.iter().enumerate() {
        http::pool_keys(&mut cx, p, &format!("pool[{i}]"), used_pools[i]);
        pool::kind_keys(&mut cx, p, &format!("pool[{i}]"), used_pools[i]);
    }
    for (i, used) in used_pools.iter().enumerate() {
        if !used.any() {
            let (p, _) = &raw.pools[i];
            cx.push(
                Diagnostic::warning(format!(
                    "pool \"{}\" is not used by any listener",
                    p.name.get_ref()
                ))
                .at(p.name.span())
                .key(format!("pool[{i}].name")),
            );
        }
    }
    if raw.listeners.is_empty() {
        cx.push(
            Diagnostic::error("the config has no [[listener]]")
                .help("add a [[listener]] with name, bind and pool"),
        );
    }

    let errors_after = cx.diags.iter().filter(|d| d.is_error()).count();
    if errors_after > errors_before {
        return None;
    }
    let pools: Option<Vec<Pool>> = pools.into_iter().collect();
    Some(Config {
        global,
        admin,
        tracing,
        listeners,
        pools: pools?,
        routes,
        policies,
    })
}

pub(super) fn file_ref(v: &Spanned<String>, key: String) -> FileRef {
    FileRef {
        path: v.get_ref().clone(),
        span: v.span(),
        key,
    }
}

/// A DNS name (letters, digits, hyphens, underscores, dots) or an IP address.
pub(super) fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && (name.parse::<std::net::IpAddr>().is_ok()
            || name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }))
}

/// Two binds clash if equal, or if one is a wildcard of the same family on the same port.
fn binds_clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || b.port() == 0 || a.port() != b.port() {
        return false;
    }
    a == b || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}
