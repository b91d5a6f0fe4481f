//! Policy values checked for what they can carry: durations a header counts in whole
//! seconds, and Redis URLs as the redis client reads them. Pure; no I/O.

use std::time::Duration;

use super::super::diag::Diagnostic;
use super::super::raw::{RawPolicy, S};
use super::Ctx;

/// `d` (read from `v`) if it is whole seconds, which is all `what` can carry; an error
/// otherwise, rather than a silently shorter value.
pub(super) fn whole_seconds(
    cx: &mut Ctx<'_>,
    v: &S<String>,
    d: Duration,
    key: &str,
    what: &str,
) -> Duration {
    if d.subsec_nanos() != 0 {
        cx.push(
            Diagnostic::error(format!("{what} is counted in whole seconds"))
                .at(v.span())
                .key(key.to_string())
                .help(format!(
                    "use \"{}s\" or \"{}s\"",
                    d.as_secs(),
                    d.as_secs() + 1
                )),
        );
    }
    d
}

/// What a `redis_url` must be: `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`, as the redis
/// client reads it; `Err` says what is wrong.
fn check_redis_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or("it does not start with redis://")?;
    let (authority, db) = match rest.split_once('/') {
        Some((a, d)) => (a, Some(d)),
        None => (rest, None),
    };
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("an IPv6 host needs its closing ]")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty()
        || !(super::valid_host_name(host) || host.parse::<std::net::IpAddr>().is_ok())
    {
        return Err(format!("\"{host}\" is not a host name or address"));
    }
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| format!("\"{p}\" is not a port"))?;
    }
    if let Some(d) = db.filter(|d| !d.is_empty()) {
        d.parse::<u32>()
            .map_err(|_| format!("\"{d}\" is not a database number"))?;
    }
    Ok(())
}

/// The `redis_url` of a policy with `store = "redis"` (set at `store_span`), if usable.
pub(super) fn redis_url(
    cx: &mut Ctx<'_>,
    p: &RawPolicy,
    key: &str,
    store_span: std::ops::Range<usize>,
) -> Option<String> {
    match &p.redis_url {
        Some(u) => match check_redis_url(u.get_ref()) {
            Ok(()) => Some(u.get_ref().clone()),
            Err(why) => {
                cx.err(
                    u.span(),
                    format!("{key}.redis_url"),
                    format!(
                        "expected redis://[USER:PASSWORD@]HOST[:PORT][/DB], found \"{}\": {why}",
                        u.get_ref()
                    ),
                );
                None
            }
        },
        None => {
            cx.push(
                Diagnostic::error(
                    "store = \"redis\" needs `redis_url`, e.g. \"redis://127.0.0.1:6379\"",
                )
                .at(store_span)
                .key(format!("{key}.redis_url")),
            );
            None
        }
    }
}
