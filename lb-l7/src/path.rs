//! Request-path normalisation, done before routing so that a route cannot be bypassed by
//! spelling the same path another way (`/a/../admin`, `/%2e%2e/admin`, `//admin`). Pure.
//!
//! The rules (RFC 3986 §6.2.2 plus what HAProxy's `normalize-uri` and nginx's
//! `merge_slashes` do):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
//!   percent-encoding is kept, with its hex digits uppercased (so `%2f` stays an encoded slash
//!   and never becomes a path separator);
//! - runs of `/` become one `/`;
//! - `.` and `..` segments are removed (`..` above the root stays at the root);
//! - a malformed percent-encoding, an encoded NUL, or a path not starting with `/` is an
//!   error: the request gets a 400.
//!
//! The query string is not part of the path and is left alone by the caller.

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("malformed percent-encoding in the path")]
    BadPercent,
    #[error("an encoded NUL (%00) in the path")]
    Nul,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The value of a hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The normalised form of `raw` (a path without its query string).
pub fn normalize(raw: &str) -> Result<String, PathError> {
    normalized(raw).map(std::borrow::Cow::into_owned)
}

/// [`normalize`], borrowing `raw` when it is normal already (most paths are).
pub fn normalized(raw: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    normalize_full(raw).map(std::borrow::Cow::Owned)
}

/// [`normalize`] without the shortcut for paths that are already normal.
fn normalize_full(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    // Pass 1: percent-decoding of unreserved characters, into segments split on '/'.
    let mut segments: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => {
                segments.push(std::mem::take(&mut current));
                i += 1;
            }
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadPercent);
                };
                let decoded = h << 4 | l;
                if decoded == 0 {
                    return Err(PathError::Nul);
                }
                if is_unreserved(decoded) {
                    current.push(decoded as char);
                } else {
                    let _ = write!(current, "%{decoded:02X}");
                }
                i += 3;
            }
            _ => {
                // Non-ASCII bytes cannot appear in a valid `&str` path from hyper (it is
                // ASCII), but keep whole UTF-8 characters intact if they do.
                let ch_len = utf8_len(b);
                let end = (i + ch_len).min(bytes.len());
                current.push_str(&raw[i..end]);
                i = end;
            }
        }
    }
    segments.push(current);
    // Pass 2: empty segments (from `//`) and dot segments.
    let ends_with_slash =
        matches!(segments.last().map(String::as_str), Some("" | "." | "..")) && segments.len() > 1;
    let mut out: Vec<String> = Vec::new();
    for s in segments.into_iter().skip(1) {
        match s.as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(s),
        }
    }
    let mut path = String::with_capacity(raw.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || (ends_with_slash && !out.is_empty()) {
        path.push('/');
    }
    Ok(path)
}

/// Most paths are already normal: no escapes, no empty segment, no dot segment. Then the
/// rules above change nothing, and the path is its own normal form.
fn is_normal(bytes: &[u8]) -> bool {
    !bytes.contains(&b'%')
        && bytes.is_ascii()
        && bytes
            .windows(2)
            .all(|w| w[0] != b'/' || (w[1] != b'/' && w[1] != b'.'))
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(p: &str) -> String {
        normalize(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn bypass_spellings_all_become_the_same_path() {
        for p in [
            "/admin",
            "//admin",
            "/./admin",
            "/a/../admin",
            "/%2e%2e/admin",
            "/%2E/admin",
            "/x/%2e%2e/admin",
            "/../../admin",
            "/%61dmin",
        ] {
            assert_eq!(n(p), "/admin", "{p}");
        }
    }

    #[test]
    fn trailing_slashes_and_root() {
        assert_eq!(n("/"), "/");
        assert_eq!(n("//"), "/");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a/"), "/a/");
        assert_eq!(n("/a//"), "/a/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/."), "/a/");
    }

    #[test]
    fn reserved_encodings_stay_encoded_and_uppercase() {
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a%3Fb%20c"), "/a%3Fb%20c");
        assert_eq!(n("/caf%C3%A9"), "/caf%C3%A9");
    }

    #[test]
    fn malformed_paths_are_errors() {
        assert_eq!(normalize("admin"), Err(PathError::NotAbsolute));
        assert_eq!(normalize(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize("/a%2"), Err(PathError::BadPercent));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadPercent));
        assert_eq!(normalize("/a%00b"), Err(PathError::Nul));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = normalize(&s);
        }

        #[test]
        fn the_shortcut_only_takes_paths_the_rules_leave_alone(s in "/[a-z/.%0-9]{0,30}") {
            if is_normal(s.as_bytes()) {
                prop_assert_eq!(normalize_full(&s), Ok(s.clone()));
            }
        }

        #[test]
        fn normal_forms_are_fixed_points(s in "/[a-zA-Z0-9%./_~-]{0,40}") {
            if let Ok(once) = normalize(&s) {
                prop_assert_eq!(normalize(&once), Ok(once.clone()));
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"));
                prop_assert!(!once.split('/').any(|seg| seg == "." || seg == ".."));
            }
        }
    }
}
