//! A listener's `trusted_proxies`: who may send the PROXY header `accept_proxy_protocol`
//! asks for. Without it any client can claim any source address (and so pass `ip_filter`,
//! pick its hash bucket, forge logs); it is kept working for existing configs, with a
//! warning. Pure; no I/O.

use super::policy_auth::cidrs;
use super::Ctx;
use crate::config::diag::Diagnostic;
use crate::config::model::Cidr;
use crate::config::raw::RawListener;

pub(super) fn trusted_proxies(
    cx: &mut Ctx<'_>,
    l: &RawListener,
    key: &str,
    udp: bool,
) -> Option<Vec<Cidr>> {
    let accepts = l
        .accept_proxy_protocol
        .as_ref()
        .is_some_and(|v| *v.get_ref());
    let Some(v) = &l.trusted_proxies else {
        if let (true, Some(a)) = (accepts, &l.accept_proxy_protocol) {
            cx.push(
                Diagnostic::warning(
                    "any client may send a PROXY header and claim any source address",
                )
                .at(a.span())
                .key(format!("{key}.accept_proxy_protocol"))
                .help("add trusted_proxies = [\"10.0.0.0/8\", ...] naming the balancers in front; connections from elsewhere are then refused"),
            );
        }
        return None;
    };
    if udp {
        // Already reported as a tcp/http-only key.
        return None;
    }
    if !accepts {
        cx.push(
            Diagnostic::error(
                "`trusted_proxies` has no effect without accept_proxy_protocol = true",
            )
            .at(v.span())
            .key(format!("{key}.trusted_proxies"))
            .help("add accept_proxy_protocol = true, or remove trusted_proxies"),
        );
        return None;
    }
    if v.get_ref().is_empty() {
        cx.push(
            Diagnostic::error("`trusted_proxies` is empty: every connection would be refused")
                .at(v.span())
                .key(format!("{key}.trusted_proxies"))
                .help("list the addresses or networks of the balancers in front"),
        );
        return None;
    }
    for (i, c) in v.get_ref().iter().enumerate() {
        if let Some(n) = Cidr::parse(c.get_ref()) {
            if let Some(why) = doubtful(&n) {
                cx.push(
                    Diagnostic::warning(format!("`{}` {why}", c.get_ref()))
                        .at(c.span())
                        .key(format!("{key}.trusted_proxies[{i}]"))
                        .help("name the balancers in front: their addresses or their network"),
                );
            }
        }
    }
    Some(cidrs(
        cx,
        &l.trusted_proxies,
        format!("{key}.trusted_proxies"),
    ))
}

/// What is odd about a trusted network, if anything: one that holds every address trusts
/// every peer (the key then guards nothing), and one with host bits set (`10.0.0.1/8`) is
/// likely a typo for a single address or a different network.
fn doubtful(n: &Cidr) -> Option<String> {
    if n.prefix == 0 {
        return Some("trusts every peer: any client may claim any source address".into());
    }
    let (bits, width) = match n.addr {
        std::net::IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        std::net::IpAddr::V6(a) => (u128::from(a), 128),
    };
    let host = bits & ((1u128 << (width - u32::from(n.prefix))) - 1);
    (host != 0).then(|| {
        format!(
            "has host bits set: it means the whole /{} network, not that one address",
            n.prefix
        )
    })
}
