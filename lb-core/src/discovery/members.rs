//! DNS answers turned into pool members, and the members a pool has at run time: the
//! config's literal ones plus those from names, SRV discovery and the admin API. Pure: no
//! I/O, no clock; the resolver task (`task.rs`) feeds it answers and times.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use crate::config::{self, Backend, NamedBackend, Origin};

/// The highest weight a member may have (the config's limit).
const MAX_WEIGHT: u32 = 10_000;

/// The most members one name (its A/AAAA answer, or an SRV answer) gives; an answer with
/// more keeps the first ones in a fixed order (lowest priority, then lowest address), so
/// the same oversized answer in any order gives the same members. Every changed answer
/// rebuilds the pool and every listener's route, so an answer the DNS server's owner can
/// make as big as they like must not make that work unbounded. 512 is past the replica count
/// of any one service we know of (HAProxy's `server-template` makes users state a count).
pub const MAX_DNS_MEMBERS: usize = 512;

/// Whether lb can connect to `addr` as a backend: a port, and an address naming one host.
/// The unspecified address would reach this host (Linux connects `0.0.0.0` to loopback),
/// multicast and broadcast no single backend. The one check for DNS answers and the admin
/// API alike.
pub fn connectable(addr: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// Splits `NAME:PORT` into a host name and a port; the error says why it is not one.
pub fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("add a port, e.g. \"app.internal:8080\"".into());
    };
    let host = host.trim_end_matches('.');
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(format!("\"{host}\" is not a host name"));
    }
    if host.parse::<IpAddr>().is_ok() || host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("not an IP address nor a host name".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_ascii_lowercase(), p)),
        _ => Err(format!("expected a port from 1 to 65535, found \"{port}\"")),
    }
}

/// The members one name's A/AAAA answer gives: one per distinct [`connectable`] address,
/// ordered by address so that the same records in another order give the same members; at
/// most [`MAX_DNS_MEMBERS`] (the lowest addresses).
pub fn from_addrs(named: &NamedBackend, ips: &[IpAddr]) -> Vec<Backend> {
    let set: BTreeSet<IpAddr> = ips
        .iter()
        .map(|ip| ip.to_canonical())
        .filter(|&ip| connectable(SocketAddr::new(ip, named.port)))
        .collect();
    set.into_iter()
        .take(MAX_DNS_MEMBERS)
        .map(|ip| Backend {
            addr: SocketAddr::new(ip, named.port),
            weight: named.weight,
            priority: named.priority,
            origin: Origin::Dns(named.label()),
            zone: named.zone.clone(),
        })
        .collect()
}

/// One SRV record with its target's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub ips: Vec<IpAddr>,
}

/// The members an SRV answer gives. The lowest SRV priority is lb's priority 0 (primary),
/// the next is 1 (backup), and so on (capped at `max_priority`); SRV weight is the member's
/// weight (0, "rarely", is 1; capped at lb's maximum). An address given twice keeps its
/// lowest priority and highest weight. Ordered by address; port 0 ("no service") and
/// addresses that are not [`connectable`] are skipped; at most [`MAX_DNS_MEMBERS`], the
/// lowest priorities first, then the lowest addresses.
pub fn from_srv(name: &str, records: &[SrvTarget], max_priority: u8) -> Vec<Backend> {
    let ranks: BTreeSet<u16> = records.iter().map(|r| r.priority).collect();
    let rank = |p: u16| {
        let r = ranks.iter().position(|&x| x == p).unwrap_or(0);
        u8::try_from(r).unwrap_or(u8::MAX).min(max_priority)
    };
    let mut by_addr: BTreeMap<SocketAddr, (u8, u32)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.port != 0) {
        let weight = u32::from(r.weight).clamp(1, MAX_WEIGHT);
        for ip in &r.ips {
            let addr = SocketAddr::new(ip.to_canonical(), r.port);
            if !connectable(addr) {
                continue;
            }
            let e = by_addr.entry(addr).or_insert((u8::MAX, 0));
            e.0 = e.0.min(rank(r.priority));
            e.1 = e.1.max(weight);
        }
    }
    let mut kept: Vec<(SocketAddr, (u8, u32))> = by_addr.into_iter().collect();
    if kept.len() > MAX_DNS_MEMBERS {
        kept.sort_by_key(|&(addr, (priority, _))| (priority, addr));
        kept.truncate(MAX_DNS_MEMBERS);
        kept.sort_by_key(|&(addr, _)| addr);
    }
    kept.into_iter()
        .map(|(addr, (priority, w))| Backend {
            addr,
            weight: NonZeroU32::new(w).unwrap_or(NonZeroU32::MIN),
            priority,
            origin: Origin::Dns(name.to_string()),
            zone: None,
        })
        .collect()
}

/// When to ask again: the answer's TTL clamped to [min, max]; `min` when there was none (a
/// failure: retry soon, the last good set serves meanwhile).
pub fn next_delay(ttl: Option<Duration>, min: Duration, max: Duration) -> Duration {
    ttl.unwrap_or(min).clamp(min, max.max(min))
}

/// What one resolution did to a name's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// A new set: apply it.
    Changed(Vec<Backend>),
    /// The same set as before.
    Unchanged,
    /// Failed or empty: the last good set stays. `first` is true for the first failure in a
    /// row (the one to log).
    Kept { first: bool, empty: bool },
}

impl Update {
    /// The `result` label of `lb_discovery_updates_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Changed(_) => "changed",
            Self::Unchanged => "unchanged",
            Self::Kept { empty: true, .. } => "empty",
            Self::Kept { empty: false, .. } => "failed",
        }
    }
}

/// A name's last good answer: never replaced by a failure or an empty answer, so a DNS
/// hiccup never empties a pool.
#[derive(Debug, Default, Clone)]
pub struct LastGood {
    members: Option<Vec<Backend>>,
    failing: bool,
}

impl LastGood {
    pub fn new(members: Vec<Backend>) -> Self {
        Self {
            members: (!members.is_empty()).then_some(members),
            failing: false,
        }
    }

    /// Whether the last resolution failed or was empty.
    pub fn failing(&self) -> bool {
        self.failing
    }

    pub fn members(&self) -> &[Backend] {
        self.members.as_deref().unwrap_or(&[])
    }

    /// Takes a resolution's outcome (`Err` = the query failed).
    pub fn update<E>(&mut self, answer: Result<Vec<Backend>, E>) -> Update {
        match answer {
            Ok(m) if !m.is_empty() => {
                self.failing = false;
                if self.members.as_ref() == Some(&m) {
                    Update::Unchanged
                } else {
                    self.members = Some(m.clone());
                    Update::Changed(m)
                }
            }
            other => {
                let first = !self.failing;
                self.failing = true;
                Update::Kept {
                    first,
                    empty: other.is_ok(),
                }
            }
        }
    }
}

/// What a pool has besides its config's literal members; kept by the runtime across
/// membership changes and reloads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dynamic {
    /// Last good members per name (`host:port` label, or the SRV name).
    pub dns: BTreeMap<String, Vec<Backend>>,
    /// Added through the admin API, in the order added.
    pub api: Vec<Backend>,
    /// Config members removed through the admin API.
    pub removed: BTreeSet<SocketAddr>,
}

impl Dynamic {
    /// Whether the admin API changed anything (reported by `/api/status`).
    pub fn api_changed(&self) -> bool {
        !self.api.is_empty() || !self.removed.is_empty()
    }
}

/// The pool as it runs: `cfg` with its members replaced by the config's literal ones, then
/// each name's members in config order, then SRV members, then API ones; an address given
/// twice keeps its first place, and addresses removed through the API are left out.
/// The same inputs in any DNS answer order give the same list (answers are sorted).
pub fn effective(cfg: &config::Pool, dynamic: &Dynamic) -> config::Pool {
    let mut seen: HashSet<SocketAddr> = HashSet::new();
    let from_names = cfg
        .names
        .iter()
        .filter_map(|n| dynamic.dns.get(&n.label()))
        .flatten();
    let from_srv = cfg
        .discovery
        .iter()
        .filter_map(|d| dynamic.dns.get(&d.name))
        .flatten();
    let backends = cfg
        .backends
        .iter()
        .chain(from_names)
        .chain(from_srv)
        .chain(&dynamic.api)
        .filter(|b| !dynamic.removed.contains(&b.addr) && seen.insert(b.addr))
        .cloned()
        .collect();
    config::Pool {
        backends,
        ..cfg.clone()
    }
}

#[cfg(test)]
#[path = "members_tests.rs"]
mod tests;
