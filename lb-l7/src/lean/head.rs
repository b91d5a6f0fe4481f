//! HTTP/1.1 request heads on the lean path: a parsed head presented to
//! [`crate::request::inspect`] as the general path presents hyper's, whether the lean path can
//! carry it, and the head lb writes on (the fields that pass, then `Host`, framing and
//! forwarding fields from the plan, exactly as the general path sets them); and the field
//! helpers responses share ([`super::response`]). Pure.
//!
//! The lean path decides nothing of its own: a request it cannot carry is [`Unusual`] and
//! goes, with the rest of the connection, to the full path, which answers or refuses it with
//! the same decisions.

use std::io::Write;

use http::{HeaderMap, Method, Uri, Version};

use crate::forward::{self, Forwarding, Trust};
use crate::request::{Body, Facts, Head};

/// Header fields read per head; one more and the head goes to the full path (which refuses
/// it with 431, as [`crate::request`] does).
pub const MAX_HEADERS: usize = 100;

/// Why a request is left to the full path (shown in debug logs and tests).
pub type Unusual = &'static str;

/// A parsed HTTP/1.1 request with an origin-form target.
#[derive(Debug)]
pub struct Request<'b> {
    pub method: Method,
    /// The target as the general path's parser reads it (http's `Uri`: the same bytes are
    /// accepted or refused on both paths, and a fragment is cut the same way).
    pub uri: Uri,
    pub fields: &'b [httparse::Header<'b>],
}

/// Reads a parsed request head; `Err` for anything but HTTP/1.1 with an origin-form target.
pub fn request<'b>(req: &'b httparse::Request<'_, 'b>) -> Result<Request<'b>, Unusual> {
    if req.version != Some(1) {
        return Err("not HTTP/1.1");
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err("incomplete request line");
    };
    if !target.starts_with('/') {
        return Err("not an origin-form target");
    }
    let uri = Uri::try_from(target).map_err(|_| "target the parser refuses")?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| "method")?;
    Ok(Request {
        method,
        uri,
        fields: req.headers,
    })
}

/// Whether the lean path carries a request with these facts: a body framed by its length
/// (or none), no upgrade, no `Expect`.
pub fn carried(facts: &Facts<'_>) -> Result<(), Unusual> {
    if facts.body == Body::Chunked {
        return Err("chunked body");
    }
    if facts.upgrade.is_some() {
        return Err("upgrade");
    }
    if facts.expect_continue {
        return Err("Expect");
    }
    Ok(())
}

impl<'b> Request<'b> {
    /// The head as [`crate::request::inspect`] takes it.
    pub fn head<'r>(
        &'r self,
        local: &'r str,
    ) -> Head<'r, impl Iterator<Item = (&'r str, &'r [u8])>> {
        Head {
            method: &self.method,
            version: Version::HTTP_11,
            uri: &self.uri,
            fields: self.fields.iter().map(|h| (h.name, h.value)),
            protocol: None,
            end_stream: true,
            local,
        }
    }

    /// The client's own `X-Forwarded-For` and `Forwarded` chains, joined, as
    /// [`forward::request`] reads them under [`Trust::Append`].
    fn prior(&self, trust: Trust) -> (Option<String>, Option<String>) {
        match trust {
            Trust::Replace => (None, None),
            Trust::Append => (
                joined(self.fields, "x-forwarded-for"),
                joined(self.fields, "forwarded"),
            ),
        }
    }

    /// What lb says of the client in the forwarding fields.
    pub fn forwarding(
        &self,
        authority: &str,
        client: std::net::IpAddr,
        tls: bool,
        trust: Trust,
    ) -> Forwarding {
        let (xff, fwd) = self.prior(trust);
        let client = forward::Client {
            addr: client,
            tls,
            host: Some(authority.to_string()),
        };
        forward::forwarding(&client, xff, fwd)
    }
}

/// The head a backend gets, as the plan says.
#[derive(Debug, Clone, Copy)]
pub struct Out<'a> {
    pub method: &'a str,
    /// Normalised, maybe rewritten.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Written as `Host`.
    pub authority: &'a str,
    pub te_trailers: bool,
    /// `Content-Length`, when the request had one.
    pub length: Option<u64>,
    /// lb's forwarding fields, from [`forwarding_lines`].
    pub lines: &'a [u8],
    /// The plan's `X-Request-Id`, which replaces the client's.
    pub request_id: Option<&'a str>,
    /// The plan's trace context: lb's `traceparent` replaces the client's, whose
    /// `tracestate` goes on only if the plan keeps it.
    pub trace: Option<crate::trace::Hop>,
}

impl Out<'_> {
    /// Writes the head with the client's fields that pass, in their order and spelling.
    pub fn write(&self, out: &mut Vec<u8>, fields: &[httparse::Header<'_>], facts: &Facts<'_>) {
        self.start(out);
        for h in fields {
            if facts.passes(h.name) && !lbs_own(h.name) && !self.replaces(h.name) {
                field(out, h.name.as_bytes(), h.value);
            }
        }
        self.end(out);
    }

    /// Writes the head with the fields of `map` (those that passed, after the policies).
    pub fn write_mapped(&self, out: &mut Vec<u8>, map: &HeaderMap) {
        self.start(out);
        for (name, value) in map {
            if !lbs_own(name.as_str())
                && !forward::is_hop_by_hop(name.as_str())
                && !self.replaces(name.as_str())
            {
                field(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        self.end(out);
    }

    fn start(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path.as_bytes());
        if let Some(q) = self.query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Whether lb writes field `name` itself in place of the client's.
    fn replaces(&self, name: &str) -> bool {
        (self.request_id.is_some() && name.eq_ignore_ascii_case(crate::request_id::FIELD))
            || self.trace.is_some_and(|t| t.replaces(name))
    }

    fn end(&self, out: &mut Vec<u8>) {
        if self.te_trailers {
            out.extend_from_slice(b"te: trailers\r\n");
        }
        if let Some(id) = self.request_id {
            field(out, crate::request_id::FIELD.as_bytes(), id.as_bytes());
        }
        if let Some(t) = &self.trace {
            field(out, crate::trace::TRACEPARENT.as_bytes(), &t.traceparent());
        }
        out.extend_from_slice(self.lines);
        if let Some(n) = self.length {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Fields lb writes from the plan, never the client's copies: `Host`, framing, forwarding.
fn lbs_own(name: &str) -> bool {
    name.eq_ignore_ascii_case("host")
        || name.eq_ignore_ascii_case("content-length")
        || forward::is_forwarding(name)
}

/// lb's forwarding fields (and `Via`) as header lines. The same for every request of a
/// connection with the same Host when client claims are replaced, so they are kept.
pub fn forwarding_lines(fwd: &Forwarding, via: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    field(&mut out, b"x-forwarded-for", fwd.xff.as_bytes());
    field(&mut out, b"x-forwarded-proto", fwd.proto.as_bytes());
    if let Some(host) = &fwd.host {
        field(&mut out, b"x-forwarded-host", host.as_bytes());
    }
    field(&mut out, b"forwarded", fwd.forwarded.as_bytes());
    if let Some(via) = via {
        field(&mut out, b"via", forward::via_value(via).as_bytes());
    }
    out
}

pub(super) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| crate::request::tokens(h.value))
        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// What `HeaderValue::to_str` accepts: visible ASCII, space and tab.
fn visible(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
}

fn joined(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    let parts: Vec<&str> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name) && visible(h.value))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests;
