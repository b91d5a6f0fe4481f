//! A request's `X-Request-Id`: which one a client may give (a bounded token), and the one lb
//! forwards, returns and logs ([`decide`]), made from 128 random bits when the client's is
//! absent, invalid, repeated, or not trusted (`request_id = "replace"`). Pure: the random bits
//! are an argument.

use lb_core::config::RequestIdMode;

/// The field's name.
pub const FIELD: &str = "x-request-id";

/// The longest ID lb keeps: a UUID is 36 characters, a W3C trace and span id 49; room for
/// prefixed forms, not for a payload.
pub const MAX_LEN: usize = 128;

/// What a client's head carried as `X-Request-Id`, as [`crate::request::inspect`] reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Claimed<'a> {
    #[default]
    None,
    One(&'a [u8]),
    /// More than one field: which would the backend read? None is kept.
    Many,
}

impl<'a> Claimed<'a> {
    /// With one more field of this name.
    pub fn and(self, value: &'a [u8]) -> Self {
        match self {
            Self::None => Self::One(value),
            _ => Self::Many,
        }
    }
}

/// A request ID: at most [`MAX_LEN`] token characters, kept inline (no allocation).
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    buf: [u8; MAX_LEN],
}

impl RequestId {
    /// lb's own: 32 lowercase hex digits of `bits`.
    pub fn generated(bits: u128) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; MAX_LEN];
        for (i, b) in buf[..32].iter_mut().enumerate() {
            *b = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
        }
        Self { len: 32, buf }
    }

    /// A client's, if [`valid`].
    pub fn kept(value: &[u8]) -> Option<Self> {
        if !valid(value) {
            return None;
        }
        let mut buf = [0u8; MAX_LEN];
        buf[..value.len()].copy_from_slice(value);
        Some(Self {
            len: value.len() as u8,
            buf,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only token characters (ASCII) are ever stored.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    /// As a header value (visible ASCII, so always one).
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_str(self.as_str())
            .unwrap_or_else(|_| http::HeaderValue::from_static("-"))
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a client's ID may be kept: 1 to [`MAX_LEN`] bytes, each an RFC 9110 `tchar`
/// (letters, digits and ``!#$%&'*+-.^_`|~``): nothing that could end a field, start another,
/// or be read differently by a log parser (no space, quote, comma, `;`, `=` or control).
pub fn valid(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_LEN && value.iter().all(|&b| tchar(b))
}

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The request's ID under `mode`: `None` when lb leaves the field alone (`off`); the client's
/// when it sent exactly one valid field and `mode` keeps it; else one made from `random()`.
pub fn decide(
    mode: RequestIdMode,
    claimed: Claimed<'_>,
    random: impl FnOnce() -> u128,
) -> Option<RequestId> {
    match (mode, claimed) {
        (RequestIdMode::Off, _) => None,
        (RequestIdMode::Keep, Claimed::One(v)) => {
            Some(RequestId::kept(v).unwrap_or_else(|| RequestId::generated(random())))
        }
        _ => Some(RequestId::generated(random())),
    }
}

/// The thread's fast generator's 128 bits (no system call per request).
pub fn random() -> u128 {
    fastrand::u128(..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BITS: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

    #[test]
    fn generated_ids_are_32_hex_digits_of_the_bits() {
        assert_eq!(
            RequestId::generated(BITS).as_str(),
            "0123456789abcdeffedcba9876543210"
        );
        assert_eq!(RequestId::generated(0).as_str(), "0".repeat(32));
    }

    #[test]
    fn a_valid_single_id_is_kept_only_in_keep_mode() {
        let one = Claimed::None.and(b"req-42.abc");
        let kept = decide(RequestIdMode::Keep, one, || BITS).expect("an id");
        assert_eq!(kept.as_str(), "req-42.abc");
        let replaced = decide(RequestIdMode::Replace, one, || BITS).expect("an id");
        assert_eq!(replaced.as_str(), "0123456789abcdeffedcba9876543210");
        assert!(decide(RequestIdMode::Off, one, || BITS).is_none());
        let made = decide(RequestIdMode::Keep, Claimed::None, || BITS).expect("an id");
        assert_eq!(made.as_str(), "0123456789abcdeffedcba9876543210");
    }

    #[test]
    fn hostile_ids_are_replaced() {
        let long = vec![b'a'; MAX_LEN + 1];
        let hostile: [&[u8]; 8] = [
            b"",
            &long,
            b"abc\r\nx-admin: 1",
            b"a b",
            b"a\0b",
            b"a\"b",
            b"id,other",
            "caf\u{e9}".as_bytes(),
        ];
        for h in hostile {
            let id = decide(RequestIdMode::Keep, Claimed::One(h), || BITS).expect("an id");
            assert_eq!(id.as_str().len(), 32, "{h:?} was kept");
        }
        let max = vec![b'z'; MAX_LEN];
        assert_eq!(
            decide(RequestIdMode::Keep, Claimed::One(&max), || BITS)
                .expect("an id")
                .as_str()
                .len(),
            MAX_LEN
        );
        // Two copies: neither is kept.
        let many = Claimed::None.and(b"a").and(b"b");
        assert_eq!(many, Claimed::Many);
        let id = decide(RequestIdMode::Keep, many, || BITS).expect("an id");
        assert_eq!(id.as_str(), "0123456789abcdeffedcba9876543210");
    }

    proptest! {
        #[test]
        fn whatever_a_client_sends_the_id_is_a_valid_token(
            value in proptest::collection::vec(any::<u8>(), 0..200),
            bits in any::<u128>(),
        ) {
            let id = decide(RequestIdMode::Keep, Claimed::One(&value), || bits).expect("an id");
            prop_assert!(valid(id.as_str().as_bytes()));
            prop_assert!(id.header_value().to_str().is_ok());
            if valid(&value) {
                prop_assert_eq!(id.as_str().as_bytes(), &value[..]);
            }
        }
    }
}
