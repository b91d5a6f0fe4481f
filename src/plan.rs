//! The short plan `lb check` prints: listeners → pools → backends, algorithms, health.

use std::fmt::Write;

use lb_core::config::{format_duration as d, Loaded, Protocol};

pub fn plan(l: &Loaded) -> String {
    let c = &l.config;
    let mut out = String::new();
    let g = &c.global;
    let workers = if g.workers == 0 {
        "auto (one per core)".to_string()
    } else {
        g.workers.to_string()
    };
    let _ = writeln!(out, "{}: OK ({})", l.source.name, l.hash);
    let _ = writeln!(
        out,
        "global: workers {workers}, max_connections {}, shutdown_timeout {}, relay {}",
        g.max_connections,
        d(g.shutdown_timeout),
        if g.splice { "splice" } else { "copy" }
    );
    if let Some(a) = &c.admin {
        let _ = writeln!(
            out,
            "admin: http://{} ({})",
            a.bind,
            if a.token.is_some() {
                "token required for POST"
            } else {
                "no token"
            }
        );
    }
    for li in &c.listeners {
        let p = &c.pools[li.pool];
        let timeouts = match li.protocol {
            Protocol::Tcp => format!(
                "connect_timeout {}, idle_timeout {}, max_connections {}",
                d(li.connect_timeout),
                d(li.idle_timeout),
                li.max_connections
            ),
            Protocol::Udp => format!(
                "udp_session_timeout {}, max flows {}",
                d(li.udp_session_timeout),
                li.max_connections
            ),
        };
        let _ = writeln!(
            out,
            "listener \"{}\" {} {} → pool \"{}\" ({timeouts}{})",
            li.name,
            li.bind,
            li.protocol.name(),
            p.name,
            if li.access_log { ", access log" } else { "" }
        );
    }
    for p in &c.pools {
        let _ = write!(out, "pool \"{}\": {}", p.name, p.algorithm.name());
        if p.algorithm == lb_core::config::Algorithm::ConsistentHash {
            let _ = write!(out, " on {:?}", p.hash_key);
            if let Some(f) = p.hash_balance_factor {
                let _ = write!(out, ", bounded load ×{f}");
            }
        }
        match &p.health {
            Some(h) => {
                let what = h.kind.describe();
                let _ = write!(
                    out,
                    "; health {what} every {} (timeout {}, rise {}, fall {})",
                    d(h.interval),
                    d(h.timeout),
                    h.rise,
                    h.fall
                );
            }
            None => {
                let _ = write!(out, "; no active health check");
            }
        }
        if let Some(ps) = &p.passive {
            let _ = write!(
                out,
                "; passive: eject for {} after {} failed connects",
                d(ps.eject_for),
                ps.consecutive_failures
            );
        }
        if let Some(s) = p.slow_start {
            let _ = write!(out, "; slow start {}", d(s));
        }
        out.push('\n');
        for b in &p.backends {
            let _ = writeln!(
                out,
                "  - {} weight {}{}",
                b.addr,
                b.weight,
                if b.backup { " (backup)" } else { "" }
            );
        }
    }
    out
}
