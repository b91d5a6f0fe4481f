//! Semantic checks of a pool's members: the `backends` list (IP and host-name members,
//! weights, priorities, duplicates) and `discovery`. Pure; no I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use super::super::diag::Diagnostic;
use super::super::model::*;
use super::super::raw::RawPool;
use super::{Ctx, MAX_WEIGHT};

/// The pool's `backends`: IP members, and members given by host name (resolved later).
pub(super) fn members(
    cx: &mut Ctx<'_>,
    p: &RawPool,
    key: &str,
    algorithm: Option<Algorithm>,
) -> (Vec<Backend>, Vec<NamedBackend>) {
    let mut backends = Vec::new();
    let mut names: Vec<NamedBackend> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let Some(raw) = &p.backends else {
        return (backends, names);
    };
    for (j, b) in raw.get_ref().iter().enumerate() {
        let bkey = format!("{key}.backends[{j}]");
        let b = b.get_ref();
        let target = member_addr(cx, &b.addr, format!("{bkey}.addr"));
        if let Some(t) = &target {
            if let Some(first) = seen.insert(t.to_string(), j) {
                cx.push(
                    Diagnostic::error(format!(
                        "backend {t} appears twice in pool \"{}\"",
                        p.name.get_ref()
                    ))
                    .at(b.addr.span())
                    .key(format!("{bkey}.addr"))
                    .help(format!(
                        "{key}.backends[{first}] has the same address; raise its weight instead"
                    )),
                );
            }
        }
        let weight = match &b.weight {
            None => NonZeroU32::MIN,
            Some(w) => {
                let v = *w.get_ref();
                if !(1..=MAX_WEIGHT).contains(&v) {
                    cx.push(
                        Diagnostic::error(format!("expected a weight from 1 to {MAX_WEIGHT}, found {v}"))
                            .at(w.span())
                            .key(format!("{bkey}.weight"))
                            .help("to stop sending traffic to a backend, remove it or drain it through the admin API"),
                    );
                    NonZeroU32::MIN
                } else {
                    NonZeroU32::new(v as u32).unwrap_or(NonZeroU32::MIN)
                }
            }
        };
        if let (Some(w), Some(Algorithm::RoundRobin)) = (&b.weight, algorithm) {
            if (2..=MAX_WEIGHT).contains(w.get_ref()) {
                cx.push(
                    Diagnostic::error("round-robin ignores weights")
                        .at(w.span())
                        .key(format!("{bkey}.weight"))
                        .help("use algorithm = \"weighted-round-robin\", or remove the weight"),
                );
            }
        }
        let priority = match (&b.priority, b.backup) {
            (Some(pr), Some(_)) => {
                cx.push(
                    Diagnostic::error("`priority` and `backup` both set")
                        .at(pr.span())
                        .key(format!("{bkey}.priority"))
                        .help("`backup = true` means priority = 1; keep one of them"),
                );
                0
            }
            (Some(_), None) => cx.int(
                &b.priority,
                format!("{bkey}.priority"),
                0,
                i64::from(MAX_PRIORITY),
                0,
            ) as u8,
            (None, backup) => u8::from(backup.unwrap_or(false)),
        };
        let zone = super::priority::zone(cx, b.zone.as_ref(), &bkey);
        match target {
            Some(Target::Ip(addr)) => backends.push(Backend {
                addr,
                weight,
                priority,
                origin: Origin::Config,
                zone,
            }),
            Some(Target::Name(host, port)) => names.push(NamedBackend {
                host,
                port,
                weight,
                priority,
                zone,
            }),
            None => {}
        }
    }
    (backends, names)
}

enum Target {
    Ip(SocketAddr),
    Name(String, u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Name(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`.
fn member_addr(cx: &mut Ctx<'_>, v: &toml::Spanned<String>, key: String) -> Option<Target> {
    let text = v.get_ref();
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Some(Target::Ip(a));
    }
    match crate::discovery::parse_host_port(text) {
        Ok((host, port)) => Some(Target::Name(host, port)),
        // Not a name either: the IP address parser's message and hint.
        Err(_) if text.parse::<std::net::IpAddr>().is_ok() || text.matches(':').count() > 1 => {
            cx.addr(v, key).map(Target::Ip)
        }
        Err(why) => {
            cx.push(
                Diagnostic::error(format!(
                    "expected IP:PORT, [IPv6]:PORT or NAME:PORT, found \"{text}\""
                ))
                .at(v.span())
                .key(key)
                .help(why),
            );
            None
        }
    }
}

pub(super) fn discovery(
    cx: &mut Ctx<'_>,
    d: &super::super::raw::RawDiscovery,
    key: &str,
) -> Option<Discovery> {
    let kind_ok = d.kind.get_ref() == "dns_srv";
    if !kind_ok {
        cx.err(
            d.kind.span(),
            format!("{key}.kind"),
            format!("expected \"dns_srv\", found \"{}\"", d.kind.get_ref()),
        );
    }
    let name = d.name.get_ref().trim_end_matches('.');
    let name_ok = super::valid_host_name(name) && name.parse::<std::net::IpAddr>().is_err();
    if !name_ok {
        cx.push(
            Diagnostic::error(format!(
                "expected a DNS SRV name, found \"{}\"",
                d.name.get_ref()
            ))
            .at(d.name.span())
            .key(format!("{key}.name"))
            .help("e.g. \"_web._tcp.service.consul\""),
        );
    }
    let resolver = d
        .resolver
        .as_ref()
        .map(|r| cx.addr(r, format!("{key}.resolver")));
    let interval = d.interval.as_ref().map(|_| {
        let i = cx.duration(
            &d.interval,
            format!("{key}.interval"),
            Duration::from_secs(5),
        );
        if i < MIN_INTERVAL {
            cx.err(
                d.interval.as_ref().map_or(0..0, |s| s.span()),
                format!("{key}.interval"),
                format!("expected at least {MIN_INTERVAL:?}, found {i:?}"),
            );
        }
        i
    });
    (kind_ok && name_ok && resolver.is_none_or(|r| r.is_some())).then(|| Discovery {
        name: name.to_string(),
        resolver: resolver.flatten(),
        interval,
    })
}

/// The shortest re-resolution period accepted: DNS servers are not to be hammered.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
