//! HTTP/1.1 request heads on the lean path: what a parsed request says about its framing and
//! connection, and the head lb writes on (hop-by-hop fields dropped, forwarding fields set as
//! [`crate::forward`] sets them on the full path); the field helpers responses share
//! ([`super::response`]). Pure.
//!
//! The lean path carries only requests whose meaning is plain; anything else is
//! [`Unusual`] and goes, with the rest of the connection, to the full path, which answers
//! or refuses it. So these checks never answer a client themselves.

use crate::forward::{self, Forwarding, Trust};
use crate::guard::Limits;

/// Header fields read per head; one more and the head goes to the full path (which refuses
/// it with 431, as [`crate::guard`] does).
pub const MAX_HEADERS: usize = 100;

/// Why a request is left to the full path (shown in debug logs and tests).
pub type Unusual = &'static str;

/// A request the lean path carries, as its head says.
#[derive(Debug)]
pub struct Request<'b> {
    pub method: &'b str,
    /// The path, before any `?`.
    pub path: &'b str,
    pub query: Option<&'b str>,
    /// The one `Host` field.
    pub host: &'b str,
    /// `Content-Length`, 0 without one.
    pub body: u64,
    /// The client asked to close after this exchange.
    pub close: bool,
    /// `Connection` names fields beyond `close` / `keep-alive`.
    names_fields: bool,
    pub headers: &'b [httparse::Header<'b>],
}

/// Reads a parsed request head; `Err` for anything but a plain HTTP/1.1 request with an
/// origin-form target, one Host and at most a `Content-Length` body.
pub fn request<'b>(
    req: &'b httparse::Request<'_, 'b>,
    limits: &Limits,
) -> Result<Request<'b>, Unusual> {
    if req.version != Some(1) {
        return Err("not HTTP/1.1");
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err("incomplete request line");
    };
    if !target.starts_with('/') {
        return Err("not an origin-form target");
    }
    if target.len() > limits.max_uri_bytes {
        return Err("target over the limit");
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut host = None;
    let mut hosts = 0;
    let mut body = None;
    let mut close = false;
    let mut names_fields = false;
    let mut header_bytes = 0;
    for h in req.headers.iter() {
        header_bytes += h.name.len() + h.value.len() + 4;
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| visible(v.as_bytes()));
        } else if name.eq_ignore_ascii_case("content-length") {
            if body.is_some() {
                return Err("repeated Content-Length");
            }
            body = Some(digits(h.value).ok_or("malformed Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("Transfer-Encoding");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Err("Connection: upgrade");
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    names_fields = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            return Err("Upgrade");
        } else if name.eq_ignore_ascii_case("expect") {
            return Err("Expect");
        }
    }
    if header_bytes > limits.max_header_bytes {
        return Err("header bytes over the limit");
    }
    let host = match (hosts, host) {
        (1, Some(h)) => h,
        _ => return Err("missing, repeated or unreadable Host"),
    };
    Ok(Request {
        method,
        path,
        query,
        host,
        body: body.unwrap_or(0),
        close,
        names_fields,
        headers: req.headers,
    })
}

impl Request<'_> {
    /// The client's own `X-Forwarded-For` and `Forwarded` chains, joined, as
    /// [`forward::request`] reads them under [`Trust::Append`].
    fn prior(&self, trust: Trust) -> (Option<String>, Option<String>) {
        match trust {
            Trust::Replace => (None, None),
            Trust::Append => (
                joined(self.headers, "x-forwarded-for"),
                joined(self.headers, "forwarded"),
            ),
        }
    }

    /// What lb says of the client in the forwarding fields.
    pub fn forwarding(&self, client: std::net::IpAddr, tls: bool, trust: Trust) -> Forwarding {
        let (xff, fwd) = self.prior(trust);
        let client = forward::Client {
            addr: client,
            tls,
            host: Some(self.host.to_string()),
        };
        forward::forwarding(&client, xff, fwd)
    }

    /// Writes the head the backend gets: `path` (normalised, maybe rewritten) with the
    /// original query, the client's end-to-end fields, then lb's forwarding fields (`lines`,
    /// from [`forwarding_lines`]).
    pub fn write(&self, out: &mut Vec<u8>, path: &str, lines: &[u8]) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        if let Some(q) = self.query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for h in self.headers {
            if forward::is_forwarding(h.name) {
                continue;
            }
            if forward::is_hop_by_hop(h.name) {
                // gRPC needs `TE: trailers` end to end.
                if h.name.eq_ignore_ascii_case("te") && h.value.eq_ignore_ascii_case(b"trailers") {
                    out.extend_from_slice(b"te: trailers\r\n");
                }
                continue;
            }
            if self.names_fields && named_by_connection(self.headers, h.name) {
                continue;
            }
            field(out, h.name.as_bytes(), h.value);
        }
        out.extend_from_slice(lines);
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes the backend's head of a request whose fields went through the route's policies
/// (as a map): like [`Request::write`], hop-by-hop and forwarding fields dropped.
pub fn write_mapped_request(
    out: &mut Vec<u8>,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    headers: &mut http::HeaderMap,
    lines: &[u8],
) {
    forward::strip_hop_by_hop(headers);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers.iter() {
        if !forward::is_forwarding(name.as_str()) {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    out.extend_from_slice(lines);
    out.extend_from_slice(b"\r\n");
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

/// `Content-Length` digits (at most 19, so no overflow).
pub(super) fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

pub(super) fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// The comma-separated tokens of a field value, trimmed, empty ones skipped.
pub(super) fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

pub(super) fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_request<T>(raw: &[u8], f: impl FnOnce(Result<Request<'_>, Unusual>) -> T) -> T {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(raw).expect("parses").is_complete());
        f(request(&req, &Limits::default()))
    }

    fn forwarded(raw: &[u8], trust: Trust, via: Option<&str>) -> String {
        with_request(raw, |r| {
            let r = r.expect("plain");
            let fwd = r.forwarding("192.0.2.7".parse().expect("ip"), false, trust);
            let mut out = Vec::new();
            r.write(&mut out, "/norm", &forwarding_lines(&fwd, via));
            String::from_utf8(out).expect("utf-8")
        })
    }

    #[test]
    fn a_plain_request_is_carried() {
        with_request(
            b"POST /a/b?x=1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 12\r\nConnection: close\r\n\r\n",
            |r| {
                let r = r.expect("plain");
                assert_eq!((r.method, r.path, r.query), ("POST", "/a/b", Some("x=1")));
                assert_eq!((r.host, r.body, r.close), ("api.example.com", 12, true));
            },
        );
    }

    #[test]
    fn anything_unusual_goes_to_the_full_path() {
        for raw in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n",
        ] {
            with_request(raw, |r| {
                assert!(r.is_err(), "{:?}", String::from_utf8_lossy(raw));
            });
        }
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        with_request(long.as_bytes(), |r| assert!(r.is_err()));
    }

    #[test]
    fn the_backend_gets_end_to_end_fields_and_lbs_forwarding() {
        let head = forwarded(
            b"GET /x?q=1 HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.9.9.9\r\nAccept: */*\r\n\r\n",
            Trust::Replace,
            Some("lb"),
        );
        assert_eq!(
            head,
            "GET /norm?q=1 HTTP/1.1\r\nHost: api.example.com\r\nte: trailers\r\nAccept: */*\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\nx-forwarded-host: api.example.com\r\n\
             forwarded: for=192.0.2.7;proto=http;host=\"api.example.com\"\r\nvia: 1.1 lb\r\n\r\n"
        );
        let chain = forwarded(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.1\r\nx-forwarded-for: 198.51.100.2\r\nForwarded: for=203.0.113.1\r\n\r\n",
            Trust::Append,
            None,
        );
        assert!(chain.contains("x-forwarded-for: 203.0.113.1, 198.51.100.2, 192.0.2.7\r\n"));
        assert!(
            chain.contains("forwarded: for=203.0.113.1, for=192.0.2.7;proto=http;host=\"a\"\r\n")
        );
    }

    proptest! {
        /// Whatever a request head holds, inspecting and rewriting it never panics, and a
        /// carried request keeps its Content-Length.
        #[test]
        fn any_parsed_request_is_safe(
            names in proptest::collection::vec("[a-zA-Z-]{1,12}", 0..8),
            values in proptest::collection::vec("[ -~]{0,20}", 8),
            len in proptest::option::of(0u64..1_000_000),
        ) {
            let mut raw = String::from("GET /p HTTP/1.1\r\nHost: h\r\n");
            for (n, v) in names.iter().zip(&values) {
                raw.push_str(&format!("{n}: {}\r\n", v.trim()));
            }
            if let Some(l) = len {
                raw.push_str(&format!("Content-Length: {l}\r\n"));
            }
            raw.push_str("\r\n");
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(_)) = req.parse(raw.as_bytes()) {
                if let Ok(r) = request(&req, &Limits::default()) {
                    let fwd = r.forwarding("::1".parse().expect("ip"), true, Trust::Append);
                    let mut out = Vec::new();
                    r.write(&mut out, "/p", &forwarding_lines(&fwd, None));
                    prop_assert!(out.ends_with(b"\r\n\r\n"));
                    if names.iter().all(|n| !n.eq_ignore_ascii_case("content-length")) {
                        prop_assert_eq!(r.body, len.unwrap_or(0));
                    }
                }
            }
        }
    }
}
