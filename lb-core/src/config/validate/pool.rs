//! Semantic checks of one `[[pool]]`: algorithm, hash keys, health, passive detection; its
//! members (`backends`, `discovery`) are checked in [`super::members`]. Pure; no I/O.

use std::time::Duration;

use super::super::diag::{did_you_mean, Diagnostic};
use super::super::model::*;
use super::super::raw::{RawHealth, RawPool};
use super::members::{discovery, members};
use super::{Ctx, Uses};

pub(super) fn pool(cx: &mut Ctx<'_>, p: &RawPool, key: &str) -> Option<Pool> {
    let algorithm = match &p.algorithm {
        None => Some(Algorithm::RoundRobin),
        Some(a) => Algorithm::parse(a.get_ref()).or_else(|| {
            let mut d = Diagnostic::error(format!(
                "expected one of {}, found \"{}\"",
                Algorithm::NAMES.join(" | "),
                a.get_ref()
            ))
            .at(a.span())
            .key(format!("{key}.algorithm"));
            if let Some(s) = did_you_mean(a.get_ref(), Algorithm::NAMES) {
                d = d.help(format!("did you mean \"{s}\"?"));
            }
            cx.push(d);
            None
        }),
    };
    let is_hash = algorithm == Some(Algorithm::ConsistentHash);
    let hash_key = match &p.hash_key {
        None => HashKey::SourceIp,
        Some(k) if !is_hash && algorithm.is_some() => {
            cx.push(
                Diagnostic::error(format!(
                    "`hash_key` applies only to algorithm = \"consistent-hash\", not \"{}\"",
                    algorithm.map_or("", Algorithm::name)
                ))
                .at(k.span())
                .key(format!("{key}.hash_key"))
                .help("remove hash_key, or set algorithm = \"consistent-hash\""),
            );
            HashKey::SourceIp
        }
        Some(k) => match k.get_ref().as_str() {
            "source-ip" => HashKey::SourceIp,
            "source-addr" => HashKey::SourceAddr,
            "sni" => HashKey::Sni,
            "path" => HashKey::Path,
            other if other.starts_with("header:") || other.starts_with("cookie:") => {
                let (kind, name) = other.split_once(':').unwrap_or((other, ""));
                if !super::http::is_token(name) {
                    cx.err(
                        k.span(),
                        format!("{key}.hash_key"),
                        format!("\"{other}\": expected a {kind} name after \"{kind}:\""),
                    );
                }
                if kind == "header" {
                    HashKey::Header(name.to_ascii_lowercase())
                } else {
                    HashKey::Cookie(name.to_string())
                }
            }
            other => {
                cx.err(k.span(), format!("{key}.hash_key"), format!("expected one of \"source-ip\", \"source-addr\", \"sni\", \"header:NAME\", \"cookie:NAME\", \"path\", found \"{other}\""));
                HashKey::SourceIp
            }
        },
    };
    let hash_balance_factor = p.hash_balance_factor.as_ref().and_then(|f| {
        let v = *f.get_ref();
        if !is_hash && algorithm.is_some() {
            cx.push(
                Diagnostic::error(
                    "`hash_balance_factor` applies only to algorithm = \"consistent-hash\"",
                )
                .at(f.span())
                .key(format!("{key}.hash_balance_factor")),
            );
            None
        } else if !(v.is_finite() && v > 1.0 && v <= 100.0) {
            cx.err(
                f.span(),
                format!("{key}.hash_balance_factor"),
                format!("expected a number above 1.0 (e.g. 1.25), found {v}"),
            );
            None
        } else {
            Some(v)
        }
    });

    let (backends, names) = members(cx, p, key, algorithm);
    let levels = {
        let mut l: Vec<u8> = backends.iter().map(|b| b.priority).collect();
        l.extend(names.iter().map(|n| n.priority));
        l.sort_unstable();
        l.dedup();
        l.len()
    };
    let overprovisioning_pct = super::priority::overprovisioning(cx, p, key, levels);
    let resolver = p
        .resolver
        .as_ref()
        .and_then(|r| cx.addr(r, format!("{key}.resolver")));
    let discovery = p
        .discovery
        .as_ref()
        .and_then(|d| discovery(cx, d.get_ref(), &format!("{key}.discovery")));
    if let Some(r) = &p.resolver {
        if names.is_empty() && discovery.is_none() {
            cx.push(
                Diagnostic::error("`resolver` is set but the pool has nothing to resolve")
                    .at(r.span())
                    .key(format!("{key}.resolver"))
                    .help("give a backend as \"name:port\", add `discovery`, or remove `resolver`"),
            );
        }
    }
    // Counted from the file, so a member already reported as invalid is not reported again.
    if p.backends.as_ref().is_none_or(|b| b.get_ref().is_empty()) && p.discovery.is_none() {
        let span = p.backends.as_ref().map_or(p.name.span(), |b| b.span());
        cx.push(
            Diagnostic::error(format!("pool \"{}\" has no backends", p.name.get_ref()))
                .at(span)
                .key(format!("{key}.backends"))
                .help("add at least one { addr = \"IP:PORT\" } or { addr = \"name:PORT\" }, or a `discovery`"),
        );
    }
    if discovery.is_none()
        && (!backends.is_empty() || !names.is_empty())
        && backends.iter().all(Backend::backup)
        && names.iter().all(|n| n.priority > 0)
    {
        cx.push(
            Diagnostic::warning(format!(
                "pool \"{}\" has only backup backends",
                p.name.get_ref()
            ))
            .at(p.backends.as_ref().map_or(p.name.span(), |b| b.span()))
            .key(format!("{key}.backends")),
        );
    }

    let health = p
        .health
        .as_ref()
        .and_then(|h| health(cx, h.get_ref(), &format!("{key}.health")));
    let passive = p.passive.as_ref().map(|ps| {
        let ps = ps.get_ref();
        let pkey = format!("{key}.passive");
        Passive {
            consecutive_failures: cx.int(
                &Some(ps.consecutive_failures.clone()),
                format!("{pkey}.consecutive_failures"),
                1,
                1_000_000,
                5,
            ) as u32,
            eject_for: cx.duration(
                &Some(ps.eject_for.clone()),
                format!("{pkey}.eject_for"),
                Duration::from_secs(30),
            ),
        }
    });
    let slow_start = p
        .slow_start
        .as_ref()
        .map(|_| cx.duration(&p.slow_start, format!("{key}.slow_start"), Duration::ZERO));
    let backend_tls = p.backend_tls.as_ref().map(|t| {
        let t = t.get_ref();
        let tkey = format!("{key}.backend_tls");
        if let Some(n) = &t.server_name {
            if !super::valid_host_name(n.get_ref()) {
                cx.err(
                    n.span(),
                    format!("{tkey}.server_name"),
                    format!(
                        "expected a DNS name or IP address, found \"{}\"",
                        n.get_ref()
                    ),
                );
            }
        }
        let verify = t.verify.unwrap_or(true);
        if let (Some(c), false) = (&t.ca, verify) {
            cx.push(
                Diagnostic::error("`ca` has no effect with verify = false")
                    .at(c.span())
                    .key(format!("{tkey}.ca"))
                    .help("remove `ca`, or verify the backends' certificates against it"),
            );
        }
        // Verifying needs roots: without `ca`, the system's bundle.
        let ca = match &t.ca {
            Some(c) => Some(super::file_ref(c, format!("{tkey}.ca"))),
            None if verify => Some(FileRef {
                path: SYSTEM_CA_BUNDLE.to_string(),
                span: p.backend_tls.as_ref().map_or(0..0, |b| b.span()),
                key: tkey.clone(),
            }),
            None => None,
        };
        BackendTls {
            ca,
            server_name: t.server_name.as_ref().map(|n| n.get_ref().clone()),
            verify,
        }
    });
    let sticky_cookie = p.sticky_cookie.as_ref().and_then(|c| {
        let name = c.get_ref();
        if super::http::is_token(name) {
            Some(name.clone())
        } else {
            cx.err(
                c.span(),
                format!("{key}.sticky_cookie"),
                format!("expected a cookie name (letters, digits, - _ . and the like), found \"{name}\""),
            );
            None
        }
    });
    Some(Pool {
        name: p.name.get_ref().clone(),
        algorithm: algorithm?,
        hash_key,
        hash_balance_factor,
        overprovisioning_pct,
        backends,
        names,
        resolver,
        discovery,
        health,
        passive,
        slow_start: slow_start.filter(|d| !d.is_zero()),
        backend_tls,
        http2: p.http2.as_ref().is_some_and(|v| *v.get_ref()),
        sticky_cookie,
    })
}

/// Keys of a pool that only some kinds of listener can honour, checked against the kinds
/// that use it.
pub(super) fn kind_keys(cx: &mut Ctx<'_>, p: &RawPool, key: &str, used: Uses) {
    let name = p.name.get_ref();
    let refuse =
        |cx: &mut Ctx<'_>, span: std::ops::Range<usize>, k: &str, why: String, help: &str| {
            cx.push(
                Diagnostic::error(why)
                    .at(span)
                    .key(format!("{key}.{k}"))
                    .help(help.to_string()),
            );
        };
    if used.udp {
        if let Some(t) = &p.backend_tls {
            refuse(
                cx,
                t.span(),
                "backend_tls",
                format!("pool \"{name}\" serves a udp listener, and TLS to backends needs TCP"),
                "remove backend_tls, or use the pool from tcp and http listeners only",
            );
        }
    }
    if let Some(k) = p.hash_key.as_ref().filter(|k| k.get_ref() == "sni") {
        if used.udp {
            refuse(
                cx,
                k.span(),
                "hash_key",
                format!(
                    "pool \"{name}\" serves a udp listener, where there is no server name to hash"
                ),
                "use hash_key = \"source-ip\" or \"source-addr\"",
            );
        } else if used.plain_http {
            refuse(cx, k.span(), "hash_key",
                format!("pool \"{name}\" serves an http listener without tls, where there is no server name to hash"),
                "add tls to the listener, or hash on \"header:Host\"");
        }
    }
    if let Some(h) = &p.health {
        let kind = h.get_ref().kind.get_ref().as_str();
        let over_tcp = matches!(kind, "tcp" | "http");
        if (over_tcp && used.udp) || (!over_tcp && (used.tcp || used.http)) {
            let (serves, fits) = if over_tcp {
                ("a udp listener", "\"udp\" or \"dns\"")
            } else {
                ("a tcp or http listener", "\"tcp\" or \"http\"")
            };
            refuse(cx, h.get_ref().kind.span(), "health.kind",
                format!("a \"{kind}\" check probes over the wrong transport for pool \"{name}\", which serves {serves}"),
                &format!("use kind = {fits}"));
        }
    }
}

fn health(cx: &mut Ctx<'_>, h: &RawHealth, key: &str) -> Option<Health> {
    let interval = cx.duration(
        &h.interval,
        format!("{key}.interval"),
        Duration::from_secs(2),
    );
    let timeout = cx.duration(&h.timeout, format!("{key}.timeout"), Duration::from_secs(1));
    for (v, name, d) in [
        (&h.interval, "interval", interval),
        (&h.timeout, "timeout", timeout),
    ] {
        if let (Some(v), true) = (v, d.is_zero()) {
            cx.err(
                v.span(),
                format!("{key}.{name}"),
                format!("{name} must be greater than 0"),
            );
        }
    }
    if timeout > interval {
        if let Some(t) = &h.timeout {
            cx.push(
                Diagnostic::warning("health check timeout is longer than its interval")
                    .at(t.span())
                    .key(format!("{key}.timeout")),
            );
        }
    }
    let rise = cx.int(&h.rise, format!("{key}.rise"), 1, 1000, 2) as u32;
    let fall = cx.int(&h.fall, format!("{key}.fall"), 1, 1000, 3) as u32;
    let http_only = |cx: &mut Ctx<'_>, kind: &str| {
        for (v, name) in [
            (h.path.as_ref().map(|p| p.span()), "path"),
            (h.expect_status.as_ref().map(|p| p.span()), "expect_status"),
        ] {
            if let Some(span) = v {
                cx.push(
                    Diagnostic::error(format!(
                        "`{name}` applies only to kind = \"http\", not \"{kind}\""
                    ))
                    .at(span)
                    .key(format!("{key}.{name}")),
                );
            }
        }
    };
    let kind = match h.kind.get_ref().as_str() {
        "tcp" => {
            http_only(cx, "tcp");
            Some(HealthKind::Tcp)
        }
        "http" => {
            let path = h
                .path
                .as_ref()
                .map_or_else(|| "/".to_string(), |p| p.get_ref().clone());
            if !path.starts_with('/') || path.chars().any(|c| c.is_ascii_control() || c == ' ') {
                if let Some(p) = &h.path {
                    cx.err(
                        p.span(),
                        format!("{key}.path"),
                        format!(
                            "expected a path starting with '/', without spaces, found \"{path}\""
                        ),
                    );
                }
            }
            let expect_status = cx.int(
                &h.expect_status,
                format!("{key}.expect_status"),
                100,
                599,
                200,
            ) as u16;
            Some(HealthKind::Http {
                path,
                expect_status,
            })
        }
        "udp" => {
            http_only(cx, "udp");
            let payload = |cx: &mut Ctx<'_>, v: &Option<toml::Spanned<String>>, name: &str| match v
            {
                None => {
                    cx.push(
                        Diagnostic::error(format!("a udp health check needs `{name}`"))
                            .at(h.kind.span())
                            .key(format!("{key}.{name}"))
                            .help("e.g. send = \"ping\", expect = \"pong\" (or \"hex:...\")"),
                    );
                    None
                }
                Some(v) => match crate::health::payload::parse_payload(v.get_ref()) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        cx.err(v.span(), format!("{key}.{name}"), e);
                        None
                    }
                },
            };
            let send = payload(cx, &h.send, "send");
            let expect = payload(cx, &h.expect, "expect");
            match (send, expect) {
                (Some(send), Some(expect)) => Some(HealthKind::Udp { send, expect }),
                _ => None,
            }
        }
        "dns" => {
            http_only(cx, "dns");
            match &h.query {
                None => {
                    cx.push(
                        Diagnostic::error("a dns health check needs `query`, the name to resolve")
                            .at(h.kind.span())
                            .key(format!("{key}.query")),
                    );
                    None
                }
                Some(q) => match crate::health::dns::query(0, q.get_ref()) {
                    Ok(_) => Some(HealthKind::Dns {
                        query: q.get_ref().clone(),
                    }),
                    Err(e) => {
                        cx.err(
                            q.span(),
                            format!("{key}.query"),
                            format!("not a DNS name: {e}"),
                        );
                        None
                    }
                },
            }
        }
        other => {
            cx.err(
                h.kind.span(),
                format!("{key}.kind"),
                format!("expected one of \"tcp\", \"http\", \"udp\", \"dns\", found \"{other}\""),
            );
            None
        }
    };
    let kind_name = h.kind.get_ref().as_str();
    for (v, name, ok_for) in [
        (h.send.as_ref().map(|v| v.span()), "send", "udp"),
        (h.expect.as_ref().map(|v| v.span()), "expect", "udp"),
        (h.query.as_ref().map(|v| v.span()), "query", "dns"),
    ] {
        if let Some(span) = v {
            if kind_name != ok_for {
                cx.push(
                    Diagnostic::error(format!("`{name}` applies only to kind = \"{ok_for}\""))
                        .at(span)
                        .key(format!("{key}.{name}")),
                );
            }
        }
    }
    Some(Health {
        kind: kind?,
        interval,
        timeout,
        rise,
        fall,
    })
}
