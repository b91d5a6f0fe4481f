//! `[admin]`: where the admin API listens and who may use it. A non-loopback `bind` without a
//! `token` is refused: the API can disable backends, and its GETs would be open to everyone.
//! Pure; no I/O.

use std::net::SocketAddr;

use super::{valid_host_name, Ctx};
use crate::config::diag::Diagnostic;
use crate::config::model::Admin;
use crate::config::raw::RawAdmin;

pub(super) fn admin(cx: &mut Ctx<'_>, a: &RawAdmin) -> Option<Admin> {
    let bind = cx.addr(&a.bind, "admin.bind".into());
    let token = a.token.as_ref().and_then(|t| {
        if t.get_ref().trim().is_empty() {
            cx.push(
                Diagnostic::error("admin.token must not be empty")
                    .at(t.span())
                    .key("admin.token")
                    .help("set a long random string, e.g. the output of `openssl rand -hex 32`"),
            );
            return None;
        }
        Some(t.get_ref().clone())
    });
    if let (Some(b), None, None) = (bind, &token, &a.token) {
        if !is_loopback(b) {
            cx.push(
                Diagnostic::error(format!(
                    "admin.bind {b} is not a loopback address, and [admin] has no token"
                ))
                .at(a.bind.span())
                .key("admin.bind")
                .help(format!(
                    "anyone who reaches {b} could drain and disable backends: add token = \"<a long random string>\" under [admin], or bind to 127.0.0.1:{}",
                    b.port()
                )),
            );
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in a.hosts.iter().flat_map(|v| v.get_ref().iter()).enumerate() {
        let key = format!("admin.hosts[{i}]");
        let name = h.get_ref().strip_suffix('.').unwrap_or(h.get_ref());
        if name.parse::<std::net::IpAddr>().is_ok() {
            cx.push(
                Diagnostic::error(format!("\"{name}\" is an IP address"))
                    .at(h.span())
                    .key(key)
                    .help("IP literals are always accepted; list only host names here"),
            );
        } else if !valid_host_name(name) {
            cx.push(
                Diagnostic::error(format!(
                    "expected a host name (no port, no wildcard), found \"{}\"",
                    h.get_ref()
                ))
                .at(h.span())
                .key(key),
            );
        } else {
            hosts.push(name.to_ascii_lowercase());
        }
    }
    if let Some(v) = a.hosts.as_ref().filter(|v| v.get_ref().is_empty()) {
        cx.push(
            Diagnostic::error("admin.hosts is empty")
                .at(v.span())
                .key("admin.hosts")
                .help("list the names the admin API is reached by, or remove the key"),
        );
    }
    let max_connections = cx.int(
        &a.max_connections,
        "admin.max_connections".into(),
        1,
        100_000,
        Admin::DEFAULT_MAX_CONNECTIONS as i64,
    ) as usize;
    Some(Admin {
        bind: bind?,
        token,
        hosts,
        max_connections,
    })
}

/// Loopback, IPv4-mapped loopback included.
fn is_loopback(a: SocketAddr) -> bool {
    a.ip().to_canonical().is_loopback()
}
