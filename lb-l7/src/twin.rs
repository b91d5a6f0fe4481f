//! The head each path forwards a request with, computed by the paths' own code without
//! sockets: the lean path's [`crate::lean::planned`] and the general path's
//! inspect → plan → [`Gateway::upstream_parts`] over the request as hyper parses it. A
//! differential property test and a fuzz target check that whatever the lean path carries,
//! the general path carries the same way: same method, target, `Host`, framing and fields
//! (order and case of names aside). Pure.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::gateway::Gateway;
use crate::lean::{self, Peer};
use crate::request::{self, Head};

/// A forwarded request head, order-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Lowercase names with their values, sorted.
    pub fields: Vec<(String, Vec<u8>)>,
}

/// Who sends the requests compared.
const PEER: Peer<'static> = Peer {
    client: std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(192, 0, 2, 7),
        40_000,
    )),
    local: "127.0.0.1:8080",
    tls: false,
    sni: None,
};

/// What the lean path forwards for the head at the start of `raw`: `None` when it hands the
/// request to the general path (or its route's policies must see it first).
pub fn lean(gw: &Gateway, raw: &[u8]) -> Option<Forwarded> {
    let mut out = Vec::new();
    let mut cache = None;
    match lean::planned(gw, PEER, raw, &mut out, &mut cache) {
        Ok(Some(plan)) if plan.policed.is_none() => parse(&out),
        _ => None,
    }
}

/// What the general path forwards for the head at the start of `raw`, or the status lb
/// answers with (0: hyper's parser refuses the head).
pub fn general(gw: &Gateway, raw: &[u8]) -> Result<Forwarded, u16> {
    let req = as_hyper_parses(raw).ok_or(0u16)?;
    let (parts, ()) = req.into_parts();
    let head = Head::of_parts(&parts, None, true, PEER.local);
    let facts = request::inspect(head, &gw.limits).map_err(|r| r.status())?;
    let headers = crate::exchange::passing(&parts.headers, &facts);
    let plan = gw
        .plan(
            crate::plan::Request {
                method: &parts.method,
                uri: &parts.uri,
                headers: &headers,
                client: PEER.client,
                sni: PEER.sni,
                graphql: None,
            },
            &facts,
        )
        .map_err(|(_, r)| r.status())?;
    let up = gw
        .upstream_parts(
            &parts,
            &plan,
            plan.query,
            &facts,
            headers,
            PEER.client.ip(),
            PEER.tls,
        )
        .map_err(|r| r.status())?;
    let mut fields: Vec<(String, Vec<u8>)> = up
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    fields.sort();
    Ok(Forwarded {
        method: up.method.to_string(),
        target: up
            .uri
            .path_and_query()
            .map_or_else(String::new, |p| p.as_str().to_string()),
        fields,
    })
}

/// A request head as hyper's HTTP/1 server reads it: httparse, then http's URI, method and
/// field types (a repeated `Content-Length` of the same value is kept once, as hyper does).
fn as_hyper_parses(raw: &[u8]) -> Option<Request<()>> {
    let mut fields = [httparse::EMPTY_HEADER; 101];
    let mut req = httparse::Request::new(&mut fields);
    if !req.parse(raw).ok()?.is_complete() {
        return None;
    }
    let version = match req.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::new();
    let mut length: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == http::header::CONTENT_LENGTH {
            match length {
                Some(l) if l == h.value => continue,
                _ => length = Some(h.value),
            }
        }
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let mut out = Request::new(());
    *out.method_mut() = Method::from_bytes(req.method?.as_bytes()).ok()?;
    *out.uri_mut() = Uri::try_from(req.path?).ok()?;
    *out.version_mut() = version;
    *out.headers_mut() = headers;
    Some(out)
}

/// A head lb wrote, read back.
fn parse(head: &[u8]) -> Option<Forwarded> {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut fields);
    if !req.parse(head).ok()?.is_complete() {
        return None;
    }
    let mut fields: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    fields.sort();
    Some(Forwarded {
        method: req.method?.to_string(),
        target: req.path?.to_string(),
        fields,
    })
}

#[cfg(test)]
mod tests;
