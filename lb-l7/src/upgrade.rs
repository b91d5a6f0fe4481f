//! Connection upgrades lb passes through: HTTP/1.1 `Upgrade` (WebSocket and the like), and
//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT), translated to an HTTP/1.1 upgrade when
//! the backend speaks HTTP/1.1. Pure but for the random WebSocket key.

use http::{header, HeaderMap, HeaderValue, Method, Request, Version};

/// What a request asks to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// HTTP/1.1 `Connection: upgrade` with this `Upgrade` protocol.
    H1(HeaderValue),
    /// HTTP/2 `CONNECT` with `:protocol = websocket` (RFC 8441).
    WebSocketOverH2,
}

/// The upgrade `req` asks for, if any.
pub fn of<B>(req: &Request<B>) -> Option<Upgrade> {
    match req.version() {
        Version::HTTP_11 => {
            let asks = req
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
            asks.then(|| req.headers().get(header::UPGRADE).cloned().map(Upgrade::H1))
                .flatten()
        }
        Version::HTTP_2 if req.method() == Method::CONNECT => req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .filter(|p| p.as_str().eq_ignore_ascii_case("websocket"))
            .map(|_| Upgrade::WebSocketOverH2),
        _ => None,
    }
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
    fn upgrades_are_recognised() {
        let h1 = Request::get("/chat")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .expect("request");
        assert_eq!(
            of(&h1),
            Some(Upgrade::H1(HeaderValue::from_static("websocket")))
        );
        let plain = Request::get("/")
            .header("upgrade", "websocket")
            .body(())
            .expect("request");
        assert_eq!(
            of(&plain),
            None,
            "Upgrade without Connection: upgrade is not a request to upgrade"
        );
        let mut h2 = Request::connect("http://h/chat")
            .version(Version::HTTP_2)
            .body(())
            .expect("request");
        assert_eq!(
            of(&h2),
            None,
            "a CONNECT without :protocol is a tunnel request, not WebSocket"
        );
        h2.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(of(&h2), Some(Upgrade::WebSocketOverH2));
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
