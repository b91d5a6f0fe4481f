//! What lb reads from a request head before routing it, the same for both HTTP paths (the
//! lean path's httparse fields and the general path's hyper request): its authority, how its
//! body is framed, what its `Connection` field asks, and whether it must be refused. Pure.
//!
//! Refused (400 unless said otherwise), following RFC 9112 §3.2, §6.1–6.3 and RFC 9113 §8.2:
//! a target over the limit (414) or too many header bytes or fields (431); both
//! `Content-Length` and `Transfer-Encoding`, disagreeing or malformed lengths, a
//! `Transfer-Encoding` whose last coding is not chunked or on HTTP/1.0; an HTTP/1.x request
//! without exactly one valid `Host`, or with userinfo in its authority; an HTTP/2 request with
//! connection-specific fields or whose `host` disagrees with `:authority`.
//!
//! Everything lb relies on or writes itself — framing, `Host`, the forwarding fields — is
//! lb's: the client's `Connection` field can name other fields to drop, never those.

use http::{Method, Uri, Version};

/// Bounds on a request head. The defaults follow nginx and HAProxy: 8 KiB request target
/// (nginx's `large_client_header_buffers` line), 100 header fields, 32 KiB of header bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_uri_bytes: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uri_bytes: 8 * 1024,
            max_headers: 100,
            max_header_bytes: 32 * 1024,
        }
    }
}

/// Why lb answers a request itself instead of forwarding it; [`Refusal::status`] is the
/// answer and [`Refusal::reason`] the counter's label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("request target longer than the limit")]
    UriTooLong,
    #[error("too many header fields, or too many header bytes")]
    HeadersTooLarge,
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("conflicting or malformed Content-Length")]
    BadContentLength,
    #[error("Transfer-Encoding whose last coding is not chunked, or on HTTP/1.0")]
    BadTransferEncoding,
    #[error("missing, repeated or invalid Host")]
    BadHost,
    #[error("connection-specific header in an HTTP/2 request")]
    ConnectionHeaderOverH2,
    #[error(":authority and host disagree")]
    AuthorityMismatch,
    #[error("more than one Authorization field")]
    RepeatedAuthorization,
    #[error("{0}")]
    BadPath(#[from] crate::path::PathError),
    #[error("no route matches this request")]
    NoRoute,
    #[error("no pool for this route")]
    NoPool,
    #[error("request body of {len} bytes is over the limit of {max}")]
    BodyTooLarge { len: u64, max: u64 },
    #[error("this route does not switch to the protocol asked for")]
    UpgradeRefused,
    #[error("this route answers only GET and HEAD")]
    MethodNotAllowed,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Self::UriTooLong => 414,
            Self::HeadersTooLarge => 431,
            Self::NoRoute => 404,
            Self::NoPool => 503,
            Self::BodyTooLarge { .. } => 413,
            Self::MethodNotAllowed => 405,
            _ => 400,
        }
    }

    /// The `reason` label of the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::LengthAndChunked => "length_and_chunked",
            Self::BadContentLength => "bad_content_length",
            Self::BadTransferEncoding => "bad_transfer_encoding",
            Self::BadHost => "bad_host",
            Self::ConnectionHeaderOverH2 => "connection_header_h2",
            Self::AuthorityMismatch => "authority_mismatch",
            Self::RepeatedAuthorization => "repeated_authorization",
            Self::BadPath(_) => "bad_path",
            Self::NoRoute => "no_route",
            Self::NoPool => "no_pool",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::UpgradeRefused => "upgrade_refused",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// Whether what follows this request on its connection can still be framed: a request
    /// refused for its framing or head leaves the connection unusable, one refused for where
    /// it goes (404, 413 with a known length) does not.
    pub fn keeps_connection(&self) -> bool {
        matches!(self, Self::NoRoute | Self::NoPool | Self::MethodNotAllowed)
    }
}

/// A request head as both paths present it.
#[derive(Debug, Clone)]
pub struct Head<'a, F> {
    pub method: &'a Method,
    pub version: Version,
    /// The request target as parsed (a fragment is never part of it).
    pub uri: &'a Uri,
    /// The fields in order: name (any case) and value.
    pub fields: F,
    /// HTTP/2's `:protocol` (RFC 8441 extended CONNECT).
    pub protocol: Option<&'a str>,
    /// HTTP/2: the request ended with its head (no body follows). HTTP/1 frames by fields.
    pub end_stream: bool,
    /// The authority an HTTP/1.0 request without `Host` is forwarded with: the address the
    /// client connected to (as nginx forwards such requests with a `Host` of its own).
    pub local: &'a str,
}

/// The fields of a head hyper parsed, as [`Head::fields`] takes them.
pub type PartsFields<'a> = std::iter::Map<
    http::header::Iter<'a, http::HeaderValue>,
    fn((&'a http::HeaderName, &'a http::HeaderValue)) -> (&'a str, &'a [u8]),
>;

impl<'a> Head<'a, PartsFields<'a>> {
    /// The head of a request hyper parsed (the general path and its differential twin read
    /// the same parts the same way).
    pub fn of_parts(
        parts: &'a http::request::Parts,
        protocol: Option<&'a str>,
        end_stream: bool,
        local: &'a str,
    ) -> Self {
        Head {
            method: &parts.method,
            version: parts.version,
            uri: &parts.uri,
            fields: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
            protocol,
            end_stream,
            local,
        }
    }
}

/// How a request's body is framed on the way in (and so on the way out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    /// HTTP/1.1 chunked.
    Chunked,
    /// HTTP/2 DATA frames without a `content-length`.
    Stream,
}

impl Body {
    /// The body's length when it is known up front.
    pub fn len(self) -> Option<u64> {
        match self {
            Self::None => Some(0),
            Self::Length(n) => Some(n),
            Self::Chunked | Self::Stream => None,
        }
    }

    /// No body, or an empty one.
    pub fn is_empty(self) -> bool {
        self.len() == Some(0)
    }
}

/// What a head says, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    /// The authority lb routes by and writes as `Host`: the target's own (absolute form,
    /// HTTP/2 `:authority`), which replaces `Host` (RFC 9112 §3.2.2), else the `Host` field.
    pub authority: Option<&'a str>,
    pub body: Body,
    /// The client closes after this exchange.
    pub close: bool,
    /// The protocol the client asks to switch to (HTTP/1.1 `Upgrade` with `Connection:
    /// upgrade`, or HTTP/2 `:protocol`), lowercased by the caller when compared.
    pub upgrade: Option<&'a str>,
    pub expect_continue: bool,
    /// `TE: trailers` (gRPC needs it end to end).
    pub te_trailers: bool,
    /// Fields the client's `Connection` field names: dropped on the way in, unless lb
    /// writes them itself ([`is_lbs`]), in which case the token means nothing.
    pub named: Vec<&'a str>,
    /// The `X-Request-Id` fields the client sent.
    pub request_id: crate::request_id::Claimed<'a>,
    /// The `traceparent` and `tracestate` fields the client sent (read only with tracing on).
    pub traceparent: crate::trace::Claimed<'a>,
    pub tracestate: crate::trace::Claimed<'a>,
}

impl Facts<'_> {
    /// Whether the client's field `name` goes on to the backend as the client sent it.
    /// Hop-by-hop fields and those `Connection` names stay here; framing is lb's.
    pub fn passes(&self, name: &str) -> bool {
        // A name with `_` reads as its `-` spelling to CGI-style backends (X_Forwarded_For
        // would pose as lb's own field): dropped, as nginx's `underscores_in_headers off`.
        !name.contains('_')
            && !crate::forward::is_hop_by_hop(name)
            && !name.eq_ignore_ascii_case("content-length")
            && !self.named.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Fields lb writes itself on every forwarded request, whatever the client's `Connection`
/// says: framing, `Host`, the forwarding fields.
pub fn is_lbs(name: &str) -> bool {
    ["content-length", "transfer-encoding", "host", "te"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
        || crate::forward::is_forwarding(name)
}

/// Checks a request head and reads what lb needs from it.
pub fn inspect<'a, F>(head: Head<'a, F>, limits: &Limits) -> Result<Facts<'a>, Refusal>
where
    F: Iterator<Item = (&'a str, &'a [u8])>,
{
    if uri_len(head.uri) > limits.max_uri_bytes {
        return Err(Refusal::UriTooLong);
    }
    let h2 = head.version == Version::HTTP_2;
    let h11 = head.version == Version::HTTP_11;
    let (mut count, mut bytes) = (0, 0);
    // The first problem with a field; a head too large is refused as such first.
    let mut bad: Option<Refusal> = None;
    // The first Host and how many there were (no allocation for the usual one).
    let (mut host, mut hosts) = (None::<&'a [u8]>, 0usize);
    let mut length: Option<u64> = None;
    let mut lengths = false;
    let mut codings: Option<&'a [u8]> = None;
    let mut connection: Vec<&'a str> = Vec::new();
    let mut upgrade_field: Option<&'a [u8]> = None;
    let mut expect_continue = false;
    let mut te_trailers = false;
    let mut authorizations = 0;
    let mut request_id = crate::request_id::Claimed::None;
    let mut traceparent = crate::trace::Claimed::None;
    let mut tracestate = crate::trace::Claimed::None;
    for (name, value) in head.fields {
        count += 1;
        bytes += name.len() + value.len() + 4;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if h2
            && [
                "connection",
                "keep-alive",
                "proxy-connection",
                "upgrade",
                "transfer-encoding",
            ]
            .iter()
            .any(|n| is(n))
        {
            bad.get_or_insert(Refusal::ConnectionHeaderOverH2);
        } else if is("host") {
            host = host.or(Some(value));
            hosts += 1;
        } else if is("content-length") {
            lengths = true;
            for part in value.split(|&b| b == b',') {
                match digits(part.trim_ascii()) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => {
                        bad.get_or_insert(Refusal::BadContentLength);
                    }
                }
            }
        } else if is("transfer-encoding") {
            // The last field's last coding decides (RFC 9112 §6.1).
            codings = Some(value);
        } else if is("connection") {
            // A token that is not text names no field.
            connection.extend(tokens(value).filter_map(|t| std::str::from_utf8(t).ok()));
        } else if is("upgrade") {
            upgrade_field = upgrade_field.or(Some(value));
        } else if is("expect") {
            expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if is("authorization") {
            // Which one would a policy check, and which one the backend read?
            authorizations += 1;
            if authorizations > 1 {
                bad.get_or_insert(Refusal::RepeatedAuthorization);
            }
        } else if is(crate::request_id::FIELD) {
            request_id = request_id.and(value);
        } else if is(crate::trace::TRACEPARENT) {
            traceparent = traceparent.and(value);
        } else if is(crate::trace::TRACESTATE) {
            tracestate = tracestate.and(value);
        } else if is("te") {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"trailers") {
                    te_trailers = true;
                } else if h2 {
                    bad.get_or_insert(Refusal::ConnectionHeaderOverH2);
                }
            }
        }
    }
    if count > limits.max_headers || bytes > limits.max_header_bytes {
        return Err(Refusal::HeadersTooLarge);
    }
    if let Some(r) = bad {
        return Err(r);
    }
    if lengths && length.is_none() {
        return Err(Refusal::BadContentLength);
    }
    let body = match codings {
        Some(_) if lengths => return Err(Refusal::LengthAndChunked),
        Some(_) if !h11 => return Err(Refusal::BadTransferEncoding),
        Some(c) => {
            let last = c.rsplit(|&b| b == b',').next().map(<[u8]>::trim_ascii);
            if !last.is_some_and(|l| l.eq_ignore_ascii_case(b"chunked")) {
                return Err(Refusal::BadTransferEncoding);
            }
            Body::Chunked
        }
        None => match length {
            Some(n) if !h2 || n > 0 || !head.end_stream => Body::Length(n),
            Some(_) => Body::None,
            None if h2 && !head.end_stream => Body::Stream,
            None => Body::None,
        },
    };
    let authority = authority(head.version, head.uri, host, hosts, head.local)?;
    let has = |t: &str| connection.iter().any(|c| c.eq_ignore_ascii_case(t));
    let close = match head.version {
        Version::HTTP_11 => has("close"),
        Version::HTTP_2 | Version::HTTP_3 => false,
        _ => has("close") || !has("keep-alive"),
    };
    let upgrade = if h2 {
        head.protocol
            .filter(|_| head.method == Method::CONNECT)
            .map(str::trim)
    } else if h11 && has("upgrade") {
        upgrade_field
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|p| !p.is_empty())
    } else {
        None
    };
    let named = connection
        .into_iter()
        .filter(|t| {
            !["close", "keep-alive", "upgrade"]
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k))
                && !is_lbs(t)
        })
        .collect();
    Ok(Facts {
        authority,
        body,
        close,
        upgrade,
        expect_continue,
        te_trailers,
        named,
        request_id,
        traceparent,
        tracestate,
    })
}

/// The authority of a request: the target's, else its one `Host`.
fn authority<'a>(
    version: Version,
    uri: &'a Uri,
    host: Option<&'a [u8]>,
    hosts: usize,
    local: &'a str,
) -> Result<Option<&'a str>, Refusal> {
    if hosts > 1 {
        return Err(Refusal::BadHost);
    }
    let host = match host {
        None => None,
        Some(one) => Some(
            std::str::from_utf8(one)
                .map_err(|_| Refusal::BadHost)?
                .trim(),
        ),
    };
    let target = uri.authority().map(http::uri::Authority::as_str);
    let authority = match (version, target, host) {
        // HTTP/2 carries :authority; a host field beside it must say the same.
        (Version::HTTP_2, Some(t), Some(h)) if !t.eq_ignore_ascii_case(h) => {
            return Err(Refusal::AuthorityMismatch)
        }
        (Version::HTTP_2, t, h) => t.or(h),
        // HTTP/1.1 needs its one Host (RFC 9112 §3.2), and the absolute form's authority
        // replaces it (§3.2.2); HTTP/1.0 may come without one.
        (Version::HTTP_10 | Version::HTTP_09, t, None) => t.or(Some(local)),
        (_, _, None) => return Err(Refusal::BadHost),
        (_, t, Some(h)) => t.or(Some(h)),
    };
    match authority {
        Some(a) if valid_authority(a) => Ok(Some(a)),
        // HTTP/2 too needs :authority or host (RFC 9113 §8.3.1).
        _ => Err(Refusal::BadHost),
    }
}

/// `host[:port]` as `Host` may carry it: a reg-name, IPv4 or bracketed IPv6 literal, no
/// userinfo (`user@`), no path, a port of digits that fits; what `http::uri::Authority`
/// accepts, and not empty.
fn valid_authority(a: &str) -> bool {
    let Ok(parsed) = http::uri::Authority::try_from(a) else {
        return false;
    };
    let port_ok = match a.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((h, p)) if !h.starts_with('[') || h.ends_with(']') => p.parse::<u16>().is_ok(),
        _ => true,
    };
    !a.is_empty() && !a.contains('@') && port_ok && parsed.as_str().len() == a.len()
}

/// The request target's length as sent, without formatting it.
fn uri_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let rest = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + rest
}

/// `Content-Length` digits (at most 19, so no overflow).
pub fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The comma-separated tokens of a field value, trimmed, empty ones skipped.
pub fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests;
