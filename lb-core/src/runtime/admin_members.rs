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
use crate::config::{Backend, Origin, MAX_PRIORITY, MAX_WEIGHT};

/// The JSON body of `POST /api/pools/{pool}/backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    addr: String,
    weight: Option<u32>,
    backup: Option<bool>,
    priority: Option<u8>,
}

/// Parses and checks a new member (pure).
fn parse(body: &[u8]) -> Result<Backend, String> {
    let m: NewMember = serde_json::from_slice(body).map_err(|e| {
        format!("expected {{\"addr\": \"IP:PORT\", \"weight\", \"backup\", \"priority\"}}: {e}")
    })?;
    let addr: SocketAddr = m.addr.parse().map_err(|_| {
        format!(
            "\"addr\": expected IP:PORT or [IPv6]:PORT, found \"{}\"",
            m.addr
        )
    })?;
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(format!("\"addr\": {addr} cannot be connected to"));
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
    Ok(Backend {
        addr: SocketAddr::new(addr.ip().to_canonical(), addr.port()),
        weight: NonZeroU32::new(weight).unwrap_or(NonZeroU32::MIN),
        priority,
        origin: Origin::Api,
    })
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
    drop(running);
    let r = shared.set_members(pool, |d, _| {
        d.removed.remove(&addr);
        d.api.retain(|b| b.addr != addr);
        d.api.push(member);
        Ok(())
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
}
