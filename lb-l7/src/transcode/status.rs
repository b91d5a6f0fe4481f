//! The gRPC side of a transcoded call, as bytes: the 5-byte message framing, the status a
//! backend ends with (`grpc-status`, `grpc-message`) and its HTTP mapping with the JSON error
//! body. Pure.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;

/// Largest response message lb decodes: gRPC's own default receive limit
/// (`grpc.max_receive_message_length`, 4 MiB).
pub const MAX_MESSAGE: usize = 4 << 20;

/// `google.rpc.Code` → HTTP status, the standard mapping (google/rpc/code.proto, as
/// grpc-gateway and Envoy's transcoder apply it). Unknown codes are 500.
pub fn http_status(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        2 => 500,
        3 => 400,
        4 => 504,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        9 => 400,
        10 => 409,
        11 => 400,
        12 => 501,
        13 => 500,
        14 => 503,
        15 => 500,
        16 => 401,
        _ => 500,
    }
}

/// The gRPC code of an answer that is not gRPC, by its HTTP status: gRPC's own mapping for
/// clients (grpc/doc/http-grpc-status-mapping.md), so an intermediary's 503 stays
/// UNAVAILABLE. `None` for a 200, which must then be gRPC.
pub fn code_of_http(status: u16) -> Option<u32> {
    Some(match status {
        200 => return None,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    })
}

/// The JSON body of a call that ended with a non-OK status (google.rpc.Status in JSON).
pub fn error_body(code: u32, message: &str) -> String {
    serde_json::json!({ "code": code, "message": message, "details": [] }).to_string()
}

/// One gRPC message framed: uncompressed flag, big-endian length, the bytes.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    // A request message is bounded by the route's body limit, far below 4 GiB.
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// Why a backend's answer is not a gRPC answer lb can pass on (a 502).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("a gRPC message frame was cut off")]
    Truncated,
    #[error("a compressed gRPC message, though lb asked for none")]
    Compressed,
    #[error("a gRPC message over {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("more than one gRPC message in a unary answer")]
    Several,
    #[error("a successful gRPC answer without a message")]
    NoMessage,
    #[error("no grpc-status in the trailers or headers")]
    NoStatus,
    #[error("grpc-status is not a number")]
    BadStatus,
}

/// The single message of a unary answer's body (`None` when the body is empty, as a
/// failed call's is).
pub fn unframe(body: &[u8]) -> Result<Option<&[u8]>, Malformed> {
    if body.is_empty() {
        return Ok(None);
    }
    let [flag, a, b, c, d, rest @ ..] = body else {
        return Err(Malformed::Truncated);
    };
    if *flag == 1 {
        return Err(Malformed::Compressed);
    }
    if *flag != 0 {
        return Err(Malformed::Truncated);
    }
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    if len > MAX_MESSAGE {
        return Err(Malformed::TooLarge);
    }
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(Malformed::Truncated),
        std::cmp::Ordering::Greater => Err(Malformed::Several),
        std::cmp::Ordering::Equal => Ok(Some(rest)),
    }
}

/// The status a call ended with: from the trailers, or (a Trailers-Only answer) from the
/// response head. `(code, message)`, the message percent-decoded (gRPC over HTTP/2 §
/// "Responses": `grpc-message` is percent-encoded UTF-8).
pub fn status(head: &HeaderMap, trailers: Option<&HeaderMap>) -> Result<(u32, String), Malformed> {
    let fields = match trailers {
        Some(t) if t.contains_key("grpc-status") => t,
        _ => head,
    };
    let code = fields.get("grpc-status").ok_or(Malformed::NoStatus)?;
    let code = code
        .to_str()
        .ok()
        .and_then(|c| c.trim().parse::<u32>().ok())
        .ok_or(Malformed::BadStatus)?;
    let message = fields
        .get("grpc-message")
        .map(|m| {
            let bytes = percent_decode(m.as_bytes());
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .unwrap_or_default();
    Ok((code, message))
}

/// `%XX` sequences decoded; a malformed one is kept as it came.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (crate::path::hex(s[i + 1]), crate::path::hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_standard_statuses() {
        let want = [
            200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401,
        ];
        for (code, status) in want.iter().enumerate() {
            assert_eq!(http_status(code as u32), *status, "code {code}");
        }
        assert_eq!(http_status(99), 500);
        let through = |s| code_of_http(s).map(http_status);
        assert_eq!(through(200), None);
        assert_eq!(through(503), Some(503));
        assert_eq!(through(429), Some(503));
        assert_eq!(through(404), Some(501));
        assert_eq!(through(401), Some(401));
        assert_eq!(through(400), Some(500));
        assert_eq!(through(302), Some(500));
        assert_eq!(
            error_body(5, "no \"x\""),
            r#"{"code":5,"message":"no \"x\"","details":[]}"#
        );
    }

    #[test]
    fn frames_round_trip_and_bad_ones_are_named() {
        let f = frame(b"abc");
        assert_eq!(&f[..], b"\0\0\0\0\x03abc");
        assert_eq!(unframe(&f), Ok(Some(&b"abc"[..])));
        assert_eq!(unframe(b""), Ok(None));
        assert_eq!(unframe(b"\0\0\0"), Err(Malformed::Truncated));
        assert_eq!(unframe(b"\0\0\0\0\x05abc"), Err(Malformed::Truncated));
        assert_eq!(unframe(b"\x01\0\0\0\x01a"), Err(Malformed::Compressed));
        assert_eq!(unframe(b"\x07\0\0\0\x01a"), Err(Malformed::Truncated));
        assert_eq!(unframe(b"\0\xff\xff\xff\xffa"), Err(Malformed::TooLarge));
        assert_eq!(unframe(b"\0\0\0\0\x01ab"), Err(Malformed::Several));
    }

    #[test]
    fn the_status_comes_from_trailers_or_a_trailers_only_head() {
        let mut head = HeaderMap::new();
        assert_eq!(status(&head, None), Err(Malformed::NoStatus));
        head.insert("grpc-status", "5".parse().expect("value"));
        head.insert("grpc-message", "no%20such%20book%".parse().expect("value"));
        assert_eq!(status(&head, None), Ok((5, "no such book%".into())));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("value"));
        assert_eq!(status(&head, Some(&trailers)), Ok((0, String::new())));
        trailers.insert("grpc-status", "x".parse().expect("value"));
        assert_eq!(status(&head, Some(&trailers)), Err(Malformed::BadStatus));
    }
}
