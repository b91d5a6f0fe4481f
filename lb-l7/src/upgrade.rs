//! Connection upgrades lb passes through (which ones a route allows is [`crate::plan`]'s
//! decision): HTTP/1.1 `Upgrade`, and WebSocket over HTTP/2 (RFC 8441 extended CONNECT),
//! translated to an HTTP/1.1 upgrade when the backend speaks HTTP/1.1. Pure but for the random
//! WebSocket key.

use http::{header, HeaderMap, HeaderValue, Method};

/// What a request asks to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// HTTP/1.1 `Connection: upgrade` with this `Upgrade` protocol.
    H1(HeaderValue),
    /// HTTP/2 `CONNECT` with `:protocol = websocket` (RFC 8441).
    WebSocketOverH2,
}

/// Turns an RFC 8441 WebSocket CONNECT into the HTTP/1.1 handshake an HTTP/1.1 backend
/// expects (RFC 6455 §4.1): GET with `Upgrade: websocket` and a fresh `Sec-WebSocket-Key`.
/// The backend's `Sec-WebSocket-Accept` answers lb's key; the HTTP/2 client never sees it.
pub fn websocket_h2_to_h1(method: &mut Method, headers: &mut HeaderMap) {
    *method = Method::GET;
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(key) = HeaderValue::from_str(&base64(&fastrand_key())) {
        headers.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    headers
        .entry(header::SEC_WEBSOCKET_VERSION)
        .or_insert(HeaderValue::from_static("13"));
}

/// The headers of a backend's `101 Switching Protocols` that mean nothing to an HTTP/2
/// client, whose answer is a `200` (RFC 8441 §5).
pub fn h1_accept_to_h2(headers: &mut HeaderMap) {
    for h in [
        header::SEC_WEBSOCKET_ACCEPT,
        header::UPGRADE,
        header::CONNECTION,
    ] {
        headers.remove(h);
    }
}

fn fastrand_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    fastrand::fill(&mut key);
    key
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(
            base64(&fastrand_key()).len(),
            24,
            "a WebSocket key is 24 characters"
        );
    }

    #[test]
    fn h2_websocket_becomes_an_h1_handshake() {
        let (mut method, mut headers) = (Method::CONNECT, HeaderMap::new());
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat"),
        );
        websocket_h2_to_h1(&mut method, &mut headers);
        assert_eq!(method, Method::GET);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(headers[header::SEC_WEBSOCKET_KEY].len(), 24);
        assert_eq!(headers[header::SEC_WEBSOCKET_PROTOCOL], "chat");
    }
}
