//! `POST /api/pools/{pool}/backends` and `DELETE /api/pools/{pool}/backends/{addr}`: members
//! added and removed at run time (as HAProxy's `add server` / `del server`), through the same
//! membership change as DNS ([`Shared::set_members`]). A deleted member drains first: no new
//! connections, and it leaves the pool when its last one ends (or `shutdown_timeout` passed).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::admin::{error, json_response, Resp};
use super::{MemberError, Shared};
use crate::backend::AdminState;
use crate::config::{is_zone_label, Backend, Origin, MAX_PRIORITY, MAX_WEIGHT, MAX_ZONE_LEN};
use crate::discovery::Dynamic;

/// The most members the admin API may add to one pool. Each change rebuilds the pool and
/// every listener's route (linear in the pool's size), so adding without end would make each
/// next change slower; past this, members belong in the config file or in DNS.
pub const MAX_API_MEMBERS: usize = 1024;

/// Whether `addr` is one of lb's own sockets (a listener or the admin API, as bound, where
/// an unspecified bind address stands for every local one): as a backend it would send
/// lb's traffic back into lb, each connection making another. HAProxy does not check this;
/// lb refuses it at the API, where the mistake is typed. Pure.
pub(crate) fn loops_back(addr: SocketAddr, own: &[SocketAddr]) -> bool {
    let ip = addr.ip().to_canonical();
    own.iter().any(|o| {
        let oip = o.ip().to_canonical();
        o.port() == addr.port()
            && (oip == ip || (oip.is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
    })
}

/// The JSON body of `POST /api/pools/{pool}/backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    addr: String,
    weight: Option<u32>,
    backup: Option<bool>,
    priority: Option<u8>,
    /// A label, as the config's `zone`.
    zone: Option<String>,
}

/// Parses and checks the JSON body of `POST /api/pools/{pool}/backends` (pure; untrusted
/// bytes, fuzzed by `fuzz/fuzz_targets/membership.rs`).
pub fn parse(body: &[u8]) -> Result<Backend, String> {
    let m: NewMember = serde_json::from_slice(body).map_err(|e| {
        format!("expected {{\"addr\": \"IP:PORT\", \"weight\", \"backup\", \"priority\", \"zone\"}}: {e}")
    })?;
    let addr: SocketAddr = m.addr.parse().map_err(|_| {
        format!(
            "\"addr\": expected IP:PORT or [IPv6]:PORT, found \"{}\"",
            m.addr
        )
    })?;
    if !crate::discovery::members::connectable(addr) {
        return Err(format!(
            "\"addr\": {addr} cannot be connected to (a port, and one host's address)"
        ));
    }
    let weight = m.weight.unwrap_or(1);
    if !(1..=MAX_WEIGHT as u32).contains(&weight) {
        return Err(format!(
            "\"weight\": expected 1 to {MAX_WEIGHT}, found {weight}"
        ));
    }
    let priority = match (m.priority, m.backup) {
        (Some(_), Some(_)) => return Err("give \"priority\" or \"backup\", not both".into()),
        (Some(p), None) if p > MAX_PRIORITY => {
            return Err(format!(
                "\"priority\": expected 0 to {MAX_PRIORITY}, found {p}"
            ))
        }
        (Some(p), None) => p,
        (None, b) => u8::from(b.unwrap_or(false)),
    };
    if let Some(z) = m.zone.as_deref().filter(|z| !is_zone_label(z)) {
        return Err(format!(
            "\"zone\": expected 1 to {MAX_ZONE_LEN} letters, digits and - _ . : /, found \"{z}\""
        ));
    }
    Ok(Backend {
        addr: SocketAddr::new(addr.ip().to_canonical(), addr.port()),
        weight: NonZeroU32::new(weight).unwrap_or(NonZeroU32::MIN),
        priority,
        origin: Origin::Api,
        zone: m.zone,
    })
}

/// Puts an API member into a pool's dynamic members, within [`MAX_API_MEMBERS`] (pure).
fn admit(d: &mut Dynamic, pool: &str, member: Backend) -> Result<(), MemberError> {
    if d.api.len() >= MAX_API_MEMBERS {
        return Err(MemberError::Refused(format!(
            "pool \"{pool}\" already has {MAX_API_MEMBERS} members added through the API; put more in the config file or DNS"
        )));
    }
    d.removed.remove(&member.addr);
    d.api.retain(|b| b.addr != member.addr);
    d.api.push(member);
    Ok(())
}

fn refused(e: MemberError) -> Resp {
    match e {
        MemberError::NoPool(_) => error(StatusCode::NOT_FOUND, &e.to_string()),
        MemberError::NotRunning => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        MemberError::Refused(_) => error(StatusCode::CONFLICT, &e.to_string()),
    }
}

pub(super) fn add(shared: &Shared, pool: &str, body: &[u8]) -> Resp {
    let member = match parse(body) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let addr = member.addr;
    let running = shared.state.load();
    if running
        .pool(pool)
        .is_some_and(|p| p.backends.iter().any(|b| b.addr == addr))
    {
        return error(
            StatusCode::CONFLICT,
            &format!("pool \"{pool}\" already has {addr}"),
        );
    }
    let mut own: Vec<SocketAddr> = running.listeners.iter().map(|l| l.addr).collect();
    drop(running);
    own.extend(
        shared
            .admin_fd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, _, actual)| *actual),
    );
    if loops_back(addr, &own) {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "{addr} is lb's own listener or admin address: lb would send traffic to itself"
            ),
        );
    }
    let r = shared.set_members(pool, |d, cfg| {
        // As the config refuses it: a weight this pool's algorithm would ignore.
        if member.weight.get() > 1 && !cfg.algorithm.uses_weights() {
            return Err(MemberError::Refused(format!(
                "pool \"{pool}\" uses {}, which ignores weights; leave \"weight\" out",
                cfg.algorithm.name()
            )));
        }
        admit(d, pool, member)
    });
    if let Err(e) = r {
        return refused(e);
    }
    tracing::info!(pool.name = %pool, backend.addr = %addr, "backend added through the admin API");
    let state = shared
        .state
        .load()
        .pool(pool)
        .and_then(|p| {
            p.backends
                .iter()
                .find(|b| b.addr == addr)
                .map(|b| b.state().as_str())
        })
        .unwrap_or("down");
    json_response(
        StatusCode::CREATED,
        &json!({ "pool": pool, "backend": addr.to_string(), "state": state, "source": "api" }),
    )
}

pub(super) fn delete(shared: &Shared, pool: &str, addr: &str) -> Resp {
    let running = shared.state.load();
    let Some(p) = running.pool(pool) else {
        return refused(MemberError::NoPool(pool.to_string()));
    };
    let Some(b) = p.find(addr).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("pool \"{pool}\" has no backend \"{addr}\""),
        );
    };
    if let Origin::Dns(name) = &b.origin {
        return error(
            StatusCode::CONFLICT,
            &format!("{addr} comes from the DNS name {name}; change the DNS records instead"),
        );
    }
    let timeout = running.loaded.config.global.shutdown_timeout;
    drop(running);
    let (Some(engine), Some(me)) = (shared.engine.get(), shared.me.upgrade()) else {
        return refused(MemberError::NotRunning);
    };
    b.set_admin_state(AdminState::Draining);
    let pool_name = pool.to_string();
    engine.control.spawn(async move {
        // Leaves when its last connection ends, bounded like a shutdown.
        let deadline = Instant::now() + timeout;
        while b.active.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let addr = b.addr;
        let r = tokio::task::spawn_blocking(move || {
            me.set_members(&pool_name, |d, cfg| {
                d.api.retain(|m| m.addr != addr);
                if cfg.backends.iter().any(|m| m.addr == addr) {
                    d.removed.insert(addr);
                }
                Ok(())
            })
        })
        .await;
        match r {
            Ok(Ok(())) => tracing::info!(backend.addr = %addr, "backend drained and removed through the admin API"),
            Ok(Err(e)) => tracing::warn!(backend.addr = %addr, error = %e, "backend not removed"),
            Err(e) => tracing::warn!(backend.addr = %addr, error = %e, "backend not removed"),
        }
    });
    json_response(
        StatusCode::ACCEPTED,
        &json!({ "pool": pool, "backend": addr, "state": "draining" }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked() {
        let ok = parse(br#"{"addr":"127.0.0.1:80","weight":3,"backup":true}"#).expect("valid");
        assert_eq!(
            (ok.weight.get(), ok.priority, ok.origin),
            (3, 1, Origin::Api)
        );
        assert_eq!(
            parse(br#"{"addr":"[::1]:80","priority":2}"#)
                .expect("valid")
                .priority,
            2
        );
        for bad in [
            &br#"{"addr":"app:80"}"#[..],
            br#"{"addr":"127.0.0.1:0"}"#,
            br#"{"addr":"0.0.0.0:80"}"#,
            br#"{"addr":"[::]:80"}"#,
            br#"{"addr":"224.0.0.1:80"}"#,
            br#"{"addr":"255.255.255.255:80"}"#,
            br#"{"addr":"[fe80::1%eth0]:80"}"#,
            br#"{"addr":"localhost:80"}"#,
            br#"{"addr":80}"#,
            br#"{"addr":"127.0.0.1:80","weight":0}"#,
            br#"{"addr":"127.0.0.1:80","weight":10001}"#,
            br#"{"addr":"127.0.0.1:80","priority":10}"#,
            br#"{"addr":"127.0.0.1:80","priority":1,"backup":true}"#,
            br#"{"addr":"127.0.0.1:80","wieght":2}"#,
            br#"{"addr":"127.0.0.1:80""#,
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// The fuzz target's entry point as a property: any body, never a panic, and an
        /// accepted member is one lb can connect to.
        #[test]
        fn any_body_is_answered_and_accepted_members_connect(
            addr in "\\PC{0,30}|[0-9.]{7,15}:[0-9]{1,5}|\\[[0-9a-f:%a-z]{2,30}\\]:[0-9]{1,5}",
            weight in proptest::option::of(0u32..20_000),
        ) {
            let body = serde_json::json!({ "addr": addr, "weight": weight }).to_string();
            if let Ok(b) = parse(body.as_bytes()) {
                proptest::prop_assert!(crate::discovery::members::connectable(b.addr));
            }
        }
    }

    #[test]
    fn the_api_adds_a_bounded_number_of_members() {
        let mut d = Dynamic::default();
        let member = |i: u32| Backend {
            addr: SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 80)),
            weight: NonZeroU32::MIN,
            priority: 0,
            origin: Origin::Api,
            zone: None,
        };
        d.removed.insert(member(0).addr);
        for i in 0..MAX_API_MEMBERS as u32 {
            admit(&mut d, "p", member(i)).expect("within the bound");
        }
        assert!(d.removed.is_empty(), "a re-added config member is back");
        // One more is refused.
        assert!(matches!(
            admit(&mut d, "p", member(1_000_000)),
            Err(MemberError::Refused(_))
        ));
        assert_eq!(d.api.len(), MAX_API_MEMBERS);
    }

    #[test]
    fn lb_is_not_its_own_backend() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let own = [a("127.0.0.1:8080"), a("0.0.0.0:9000"), a("[::1]:9900")];
        for looped in [
            "127.0.0.1:8080",
            "127.0.0.1:9000",
            "127.0.0.5:9000",
            "[::1]:9900",
            "[::ffff:127.0.0.1]:8080",
        ] {
            assert!(loops_back(a(looped), &own), "{looped}");
        }
        for other in [
            "127.0.0.1:8081",
            "10.0.0.1:8080",
            "127.0.0.2:8080",
            "[::1]:8080",
        ] {
            assert!(!loops_back(a(other), &own), "{other}");
        }
    }
}
