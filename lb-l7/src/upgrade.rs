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

/// Whether a backend's `101 Switching Protocols` (its `headers`) accepts the upgrade asked
/// for: its `Upgrade` names the protocol, and for WebSocket its `Sec-WebSocket-Accept`
/// answers the request's `Sec-WebSocket-Key` (RFC 6455 §4.2.2). Anything else is not a
/// switch lb tunnels: a 101 a backend can be made to send (a status echoed from user input)
/// would otherwise open a raw tunnel past every route and policy.
pub fn accepted(protocol: &str, key: Option<&HeaderValue>, headers: &HeaderMap) -> bool {
    let name = |p: &str| p.split('/').next().unwrap_or(p).trim().to_ascii_lowercase();
    let switched = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| name(p) == name(protocol));
    if !switched {
        return false;
    }
    if name(protocol) != "websocket" {
        return true;
    }
    match (key, headers.get(header::SEC_WEBSOCKET_ACCEPT)) {
        (Some(k), Some(accept)) => accept.as_bytes() == accept_for(k.as_bytes()).as_bytes(),
        _ => false,
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_for(key: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&h.finalize())
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
    fn only_a_switch_to_what_was_asked_is_accepted() {
        // RFC 6455 §1.3's example.
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept_for(key.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut h = HeaderMap::new();
        assert!(!accepted("websocket", Some(&key), &h), "no Upgrade");
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(!accepted("websocket", Some(&key), &h), "no accept");
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        assert!(accepted("websocket", Some(&key), &h));
        assert!(!accepted("websocket", None, &h));
        assert!(!accepted("h2c", Some(&key), &h), "another protocol");
        let mut foo = HeaderMap::new();
        foo.insert(header::UPGRADE, HeaderValue::from_static("foo"));
        assert!(accepted("foo", None, &foo));
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
