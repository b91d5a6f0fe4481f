//! Header rewriting when a request or response crosses lb (RFC 9110 §7.6): hop-by-hop fields
//! removed, `X-Forwarded-For`/`-Proto`/`-Host` and `Forwarded` (RFC 7239) added, `Via`
//! optional. Pure.

use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection`). `TE: trailers` is the one exception
/// kept: gRPC needs it end to end.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What lb knows about the client side of a request.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's address (after PROXY protocol, if any).
    pub addr: IpAddr,
    /// Whether the client spoke TLS to lb.
    pub tls: bool,
    /// The Host (or `:authority`) the client asked for.
    pub host: Option<String>,
}

/// What to do with forwarding headers a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// lb is the edge: anything a client claims is dropped and replaced by what lb saw.
    #[default]
    Replace,
    /// lb sits behind a trusted proxy: append to the chain it started.
    Append,
}

/// Removes hop-by-hop fields, including every field the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    let keep_te = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    if keep_te {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes every hop-by-hop field by name (not those `Connection` names: see
/// [`strip_hop_by_hop`]), `TE` included.
pub fn drop_hop_by_hop(headers: &mut HeaderMap) {
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// The forwarding fields lb sets on a request, whatever form its headers take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    pub xff: String,
    pub proto: &'static str,
    /// `X-Forwarded-Host`: the Host the client asked for.
    pub host: Option<String>,
    pub forwarded: String,
}

/// What lb says of `client`, after what the trusted chain said (`prior_*`: the client's own
/// `X-Forwarded-For` and `Forwarded` values joined, given only under [`Trust::Append`]).
pub fn forwarding(
    client: &Client,
    prior_xff: Option<String>,
    prior_forwarded: Option<String>,
) -> Forwarding {
    let proto = if client.tls { "https" } else { "http" };
    let ip = client.addr.to_string();
    let xff = match prior_xff {
        Some(p) => format!("{p}, {ip}"),
        None => ip,
    };
    let mut element = format!("for={};proto={proto}", forwarded_node(client.addr));
    if let Some(host) = &client.host {
        if host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            element.push_str(&format!(";host=\"{host}\""));
        }
    }
    let forwarded = match prior_forwarded {
        Some(p) => format!("{p}, {element}"),
        None => element,
    };
    Forwarding {
        xff,
        proto,
        host: client.host.clone(),
        forwarded,
    }
}

/// Whether a request field is one lb replaces with its own [`Forwarding`].
pub fn is_forwarding(name: &str) -> bool {
    FORWARDING.iter().any(|n| n.eq_ignore_ascii_case(name))
}

const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// Whether a field describes one connection (always hop-by-hop; fields that `Connection`
/// names are too, and the caller checks those).
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The `Via` value lb adds (RFC 9110 §7.6.3).
pub fn via_value(pseudonym: &str) -> String {
    format!("1.1 {pseudonym}")
}

/// Sets lb's forwarding fields (and `Via`) on a request's headers, whose hop-by-hop fields
/// left on the way in ([`crate::request::Facts::passes`]).
pub fn request(headers: &mut HeaderMap, client: &Client, trust: Trust, via: Option<&str>) {
    let (prior_xff, prior_forwarded) = match trust {
        Trust::Append => (
            joined(headers, &HeaderName::from_static(FORWARDING[0])),
            joined(headers, &header::FORWARDED),
        ),
        Trust::Replace => (None, None),
    };
    for n in FORWARDING {
        headers.remove(n);
    }
    let f = forwarding(client, prior_xff, prior_forwarded);
    set(headers, HeaderName::from_static(FORWARDING[0]), &f.xff);
    set(headers, HeaderName::from_static(FORWARDING[1]), f.proto);
    if let Some(host) = &f.host {
        set(headers, HeaderName::from_static(FORWARDING[2]), host);
    }
    set(headers, header::FORWARDED, &f.forwarded);
    if let Some(via) = via {
        append_via(headers, via);
    }
}

/// Prepares a response's headers for the client.
pub fn response(headers: &mut HeaderMap, via: Option<&str>) {
    strip_hop_by_hop(headers);
    if let Some(via) = via {
        append_via(headers, via);
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn append_via(headers: &mut HeaderMap, pseudonym: &str) {
    if let Ok(v) = HeaderValue::from_str(&via_value(pseudonym)) {
        headers.append(header::VIA, v);
    }
}

/// An RFC 7239 node: IPv6 addresses are quoted and bracketed.
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    fn client(ip: &str, tls: bool) -> Client {
        Client {
            addr: ip.parse().expect("ip"),
            tls,
            host: Some("api.example.com".into()),
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
        let mut grpc = headers(&[("te", "trailers")]);
        strip_hop_by_hop(&mut grpc);
        assert_eq!(grpc.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
    }

    #[test]
    fn an_edge_lb_replaces_what_the_client_claims() {
        let mut h = headers(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("forwarded", "for=10.9.9.9"),
            ("x-forwarded-proto", "https"),
        ]);
        request(&mut h, &client("192.0.2.7", false), Trust::Replace, None);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=http;host=\"api.example.com\""
        );
        assert!(h.get("via").is_none());
    }

    #[test]
    fn behind_a_trusted_proxy_the_chain_grows() {
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "198.51.100.2"),
            ("forwarded", "for=203.0.113.1"),
        ]);
        request(
            &mut h,
            &client("2001:db8::7", true),
            Trust::Append,
            Some("lb"),
        );
        assert_eq!(
            h["x-forwarded-for"],
            "203.0.113.1, 198.51.100.2, 2001:db8::7"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=203.0.113.1, for=\"[2001:db8::7]\";proto=https;host=\"api.example.com\""
        );
        assert_eq!(h["via"], "1.1 lb");
    }

    #[test]
    fn responses_lose_hop_by_hop_fields_and_gain_via() {
        let mut h = headers(&[("connection", "close"), ("content-type", "text/plain")]);
        response(&mut h, Some("lb"));
        assert!(h.get("connection").is_none());
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["via"], "1.1 lb");
    }
}
