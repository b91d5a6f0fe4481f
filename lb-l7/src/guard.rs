//! Checks on a request head before anything is routed or forwarded: the request-smuggling
//! defences and size limits of HTTP mode. A request that fails is answered by lb (400, 414 or
//! 431) and never reaches a backend. Pure.
//!
//! The HTTP parser (hyper) already refuses what cannot be parsed (bare CR, obs-fold, spaces
//! before the colon, invalid header names); this module refuses what parses but is
//! ambiguous between lb and a backend, following RFC 9112 §6.1–6.3 and RFC 9113 §8.2.

use http::{header, HeaderMap, Uri, Version};

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

/// Why a request head is refused; [`Refusal::status`] is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
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
    #[error("missing or repeated Host")]
    BadHost,
    #[error("connection-specific header in an HTTP/2 request")]
    ConnectionHeaderOverH2,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Self::UriTooLong => 414,
            Self::HeadersTooLarge => 431,
            _ => 400,
        }
    }

    /// The `reason` label of the rejection counter.
    pub fn reason(self) -> &'static str {
        match self {
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::LengthAndChunked => "length_and_chunked",
            Self::BadContentLength => "bad_content_length",
            Self::BadTransferEncoding => "bad_transfer_encoding",
            Self::BadHost => "bad_host",
            Self::ConnectionHeaderOverH2 => "connection_header_h2",
        }
    }
}

/// Checks one request head.
pub fn check(
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<(), Refusal> {
    if uri_len(uri) > limits.max_uri_bytes {
        return Err(Refusal::UriTooLong);
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > limits.max_headers || header_bytes > limits.max_header_bytes {
        return Err(Refusal::HeadersTooLarge);
    }
    let h2 = version == Version::HTTP_2;
    if h2 {
        // RFC 9113 §8.2.2: these are HTTP/1 connection management; TE may only say trailers.
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "transfer-encoding",
        ] {
            if headers.contains_key(name) {
                return Err(Refusal::ConnectionHeaderOverH2);
            }
        }
        if headers
            .get_all(header::TE)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            return Err(Refusal::ConnectionHeaderOverH2);
        }
    }
    let te: Vec<&[u8]> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let has_cl = headers.contains_key(header::CONTENT_LENGTH);
    if !te.is_empty() {
        if has_cl {
            return Err(Refusal::LengthAndChunked);
        }
        if version == Version::HTTP_10 || !last_coding_is_chunked(&te) {
            return Err(Refusal::BadTransferEncoding);
        }
    }
    if has_cl {
        content_length(headers)?;
    }
    // HTTP/1.1 needs exactly one Host (RFC 9112 §3.2); h2 carries :authority instead, and a
    // Host there must not repeat either.
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (version == Version::HTTP_11 && hosts == 0 && uri.authority().is_none()) {
        return Err(Refusal::BadHost);
    }
    Ok(())
}

/// The request target's length as sent, without formatting it.
fn uri_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let rest = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + rest
}

/// The one value of every Content-Length field (repeats and lists must all agree).
fn content_length(headers: &HeaderMap) -> Result<u64, Refusal> {
    let mut value: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let text = v.to_str().map_err(|_| Refusal::BadContentLength)?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Refusal::BadContentLength);
            }
            let n: u64 = part.parse().map_err(|_| Refusal::BadContentLength)?;
            if value.is_some_and(|v| v != n) {
                return Err(Refusal::BadContentLength);
            }
            value = Some(n);
        }
    }
    value.ok_or(Refusal::BadContentLength)
}

fn last_coding_is_chunked(fields: &[&[u8]]) -> bool {
    let Some(last_field) = fields.last() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(last_field) else {
        return false;
    };
    text.rsplit(',')
        .next()
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    fn check11(pairs: &[(&str, &str)]) -> Result<(), Refusal> {
        check(
            &Uri::from_static("/x"),
            Version::HTTP_11,
            &head(pairs),
            &Limits::default(),
        )
    }

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(check11(&[("host", "a")]), Ok(()));
        assert_eq!(check11(&[("host", "a"), ("content-length", "5")]), Ok(()));
        assert_eq!(
            check11(&[("host", "a"), ("transfer-encoding", "gzip, chunked")]),
            Ok(())
        );
        assert_eq!(
            check11(&[
                ("host", "a"),
                ("content-length", "5"),
                ("content-length", "5")
            ]),
            Ok(())
        );
        assert_eq!(
            check11(&[("host", "a"), ("content-length", "5, 5")]),
            Ok(())
        );
    }

    #[test]
    fn smuggling_shapes_are_refused_with_400() {
        let cases: &[(&[(&str, &str)], Refusal)] = &[
            (
                &[
                    ("host", "a"),
                    ("content-length", "5"),
                    ("transfer-encoding", "chunked"),
                ],
                Refusal::LengthAndChunked,
            ),
            (
                &[
                    ("host", "a"),
                    ("content-length", "5"),
                    ("content-length", "6"),
                ],
                Refusal::BadContentLength,
            ),
            (
                &[("host", "a"), ("content-length", "5, 6")],
                Refusal::BadContentLength,
            ),
            (
                &[("host", "a"), ("content-length", "+5")],
                Refusal::BadContentLength,
            ),
            (
                &[("host", "a"), ("content-length", "")],
                Refusal::BadContentLength,
            ),
            (
                &[("host", "a"), ("transfer-encoding", "chunked, gzip")],
                Refusal::BadTransferEncoding,
            ),
            (
                &[("host", "a"), ("transfer-encoding", "xchunked")],
                Refusal::BadTransferEncoding,
            ),
            (&[("host", "a"), ("host", "b")], Refusal::BadHost),
            (&[], Refusal::BadHost),
        ];
        for (pairs, want) in cases {
            let got = check11(pairs);
            assert_eq!(got, Err(*want), "{pairs:?}");
            assert_eq!(want.status(), 400);
        }
        let h = head(&[("transfer-encoding", "chunked")]);
        assert_eq!(
            check(
                &Uri::from_static("/"),
                Version::HTTP_10,
                &h,
                &Limits::default()
            ),
            Err(Refusal::BadTransferEncoding)
        );
    }

    #[test]
    fn h2_refuses_connection_specific_headers() {
        let ok = head(&[("te", "trailers")]);
        let uri = Uri::from_static("https://a.example/x");
        assert_eq!(
            check(&uri, Version::HTTP_2, &ok, &Limits::default()),
            Ok(())
        );
        for (n, v) in [
            ("connection", "close"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
        ] {
            let h = head(&[(n, v)]);
            assert_eq!(
                check(&uri, Version::HTTP_2, &h, &Limits::default()),
                Err(Refusal::ConnectionHeaderOverH2),
                "{n}"
            );
        }
    }

    #[test]
    fn limits_answer_414_and_431() {
        let limits = Limits {
            max_uri_bytes: 16,
            max_headers: 2,
            max_header_bytes: 64,
        };
        let long = Uri::from_static("/0123456789abcdefg");
        let h = head(&[("host", "a")]);
        assert_eq!(
            check(&long, Version::HTTP_11, &h, &limits),
            Err(Refusal::UriTooLong)
        );
        assert_eq!(Refusal::UriTooLong.status(), 414);
        let absolute = Uri::from_static("http://a.example/x?y=1");
        assert_eq!(uri_len(&absolute), absolute.to_string().len());
        let many = head(&[("host", "a"), ("x-1", "1"), ("x-2", "2")]);
        assert_eq!(
            check(&Uri::from_static("/"), Version::HTTP_11, &many, &limits),
            Err(Refusal::HeadersTooLarge)
        );
        let big = head(&[("host", "a"), ("x", &"v".repeat(80))]);
        assert_eq!(
            check(&Uri::from_static("/"), Version::HTTP_11, &big, &limits),
            Err(Refusal::HeadersTooLarge)
        );
        assert_eq!(Refusal::HeadersTooLarge.status(), 431);
    }

    proptest! {
        /// Any set of agreeing Content-Length values passes; any disagreement is refused.
        #[test]
        fn content_length_agreement(values in proptest::collection::vec(0u64..1000, 1..4)) {
            let pairs: Vec<(String, String)> = values.iter().map(|v| ("content-length".to_string(), v.to_string())).collect();
            let mut h = head(&[("host", "a")]);
            for (n, v) in &pairs {
                h.append(http::HeaderName::from_bytes(n.as_bytes()).expect("name"), v.parse().expect("value"));
            }
            let agree = values.iter().all(|v| *v == values[0]);
            let got = check(&Uri::from_static("/"), Version::HTTP_11, &h, &Limits::default());
            prop_assert_eq!(got.is_ok(), agree);
        }
    }
}
