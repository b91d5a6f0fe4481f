//! Request-path normalisation, done before routing so that a route cannot be bypassed by
//! spelling the same path another way (`/a/../admin`, `/%2e%2e/admin`, `//admin`), and the
//! path a route matches on. Pure.
//!
//! The rules (RFC 3986 §6.2.2 plus what HAProxy's `normalize-uri`, nginx's `merge_slashes`
//! and Envoy's `path_with_escaped_slashes_action` do):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
//!   percent-encoding is kept, with its hex digits uppercased;
//! - an encoded slash or backslash (`%2F`, `%5C`) and a raw backslash are read differently by
//!   origins (Java servlet containers and IIS decode them into separators, most others do
//!   not), so by default they are refused ([`Slashes::Reject`]); [`Slashes::Decode`] makes
//!   them separators before the dot segments are resolved, [`Slashes::Keep`] forwards them
//!   untouched for origins that treat them as data;
//! - runs of `/` become one `/`;
//! - `.` and `..` segments are removed (`..` above the root stays at the root);
//! - a malformed percent-encoding, an encoded NUL, or a path not starting with `/` is an
//!   error: the request gets a 400.
//!
//! Routes match the normalised path without its `;parameters` ([`routed`]): `/private;x=1`
//! is `/private` to a route, as it is to a servlet container. The query string is not part of
//! the path and is left alone by the caller.

use std::borrow::Cow;
use std::fmt::Write;

pub use lb_core::config::EscapedSlashes as Slashes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("malformed percent-encoding in the path")]
    BadPercent,
    #[error("an encoded NUL (%00) in the path")]
    Nul,
    #[error("an encoded slash or a backslash in the path (%2F, %5C, \\)")]
    EscapedSlash,
    #[error("a path segment that is only ';parameters' or a dot segment with them")]
    HiddenSegment,
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

/// The normalised form of `raw` (a path without its query string), escaped slashes refused.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    normalized(raw, Slashes::Reject).map(Cow::into_owned)
}

/// The normalised form of `raw` under `slashes`, borrowing `raw` when it is normal already
/// (most paths are).
pub fn normalized(raw: &str, slashes: Slashes) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_full(raw, slashes).map(Cow::Owned)
}

/// [`normalized`] without the shortcut for paths that are already normal.
fn normalize_full(raw: &str, slashes: Slashes) -> Result<String, PathError> {
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
                match decoded {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' => match slashes {
                        Slashes::Reject => return Err(PathError::EscapedSlash),
                        Slashes::Decode => segments.push(std::mem::take(&mut current)),
                        Slashes::Keep => {
                            let _ = write!(current, "%{decoded:02X}");
                        }
                    },
                    d if is_unreserved(d) => current.push(d as char),
                    d => {
                        let _ = write!(current, "%{d:02X}");
                    }
                }
                i += 3;
            }
            b'\\' => {
                match slashes {
                    Slashes::Reject => return Err(PathError::EscapedSlash),
                    Slashes::Decode => segments.push(std::mem::take(&mut current)),
                    Slashes::Keep => current.push('\\'),
                }
                i += 1;
            }
            _ => {
                // Keep whole UTF-8 characters intact (http's URI parser lets them through).
                let ch_len = utf8_len(b);
                let end = (i + ch_len).min(bytes.len());
                current.push_str(raw.get(i..end).unwrap_or_default());
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

/// Most paths are already normal: no escapes, no backslash, no empty segment, no dot
/// segment. Then the rules above change nothing, and the path is its own normal form.
fn is_normal(bytes: &[u8]) -> bool {
    !bytes.contains(&b'%')
        && !bytes.contains(&b'\\')
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

/// The path routes match: a normalised path with every segment's `;parameters` removed
/// (`/a;v=1/b;x` → `/a/b`), so parameters cannot move a request off the route its path
/// names. A segment that is nothing but a dot segment or empty once its parameters are gone
/// (`/..;x/admin`, `/;x/admin`) is refused: a servlet container resolves it after dropping
/// the parameters, and the request would reach a path no route saw.
pub fn routed(normal: &str) -> Result<Cow<'_, str>, PathError> {
    if !normal.contains(';') {
        return Ok(Cow::Borrowed(normal));
    }
    let mut out = String::with_capacity(normal.len());
    for (n, seg) in normal.split('/').enumerate() {
        if n == 0 {
            continue;
        }
        let name = seg.split(';').next().unwrap_or_default();
        if name != seg && matches!(name, "" | "." | "..") {
            return Err(PathError::HiddenSegment);
        }
        out.push('/');
        out.push_str(name);
    }
    Ok(Cow::Owned(out))
}

/// Where `prefix` (a route's path prefix, without parameters) ends in `path` (a normalised
/// path that may carry `;parameters`), matched segment by segment as routes match: the
/// length of `path` up to the end of the last segment the prefix names, parameters
/// included; `None` when the prefix does not match. `ci`: ASCII case does not matter.
pub fn prefix_end(path: &str, prefix: &str, ci: bool) -> Option<usize> {
    let same = |a: &str, b: &str| {
        if ci {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let trailing = prefix.ends_with('/') && prefix.len() > 1;
    let want: Vec<&str> = prefix.trim_end_matches('/').split('/').skip(1).collect();
    if want.is_empty() || prefix == "/" {
        return Some(usize::from(trailing));
    }
    let mut at = 0;
    let mut segments = path.split('/').skip(1);
    for (k, w) in want.iter().enumerate() {
        let seg = segments.next()?;
        let name = seg.split(';').next().unwrap_or_default();
        let last = k + 1 == want.len();
        // A prefix's last segment matches a whole segment only; a prefix ending in '/'
        // takes what starts with it, which is the same on segment boundaries.
        if !same(name, w) {
            return None;
        }
        at += 1 + seg.len();
        if last && trailing {
            // `/api/` needs a '/' after `api`.
            return (path.as_bytes().get(at) == Some(&b'/')).then_some(at + 1);
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(p: &str) -> String {
        normalize(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn with(p: &str, s: Slashes) -> Result<String, PathError> {
        normalized(p, s).map(Cow::into_owned)
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
        assert_eq!(n("/a%3fb%20c"), "/a%3Fb%20c");
        assert_eq!(n("/caf%C3%A9"), "/caf%C3%A9");
    }

    #[test]
    fn escaped_slashes_are_refused_decoded_or_kept() {
        for p in [
            "/private%2Fadmin",
            "/private%2fadmin",
            "/x/..%2fprivate",
            "/public\\..\\private",
            "/a%5Cb",
        ] {
            assert_eq!(
                with(p, Slashes::Reject),
                Err(PathError::EscapedSlash),
                "{p}"
            );
        }
        assert_eq!(
            with("/private%2Fadmin", Slashes::Decode).as_deref(),
            Ok("/private/admin")
        );
        assert_eq!(
            with("/x/..%2fprivate", Slashes::Decode).as_deref(),
            Ok("/private")
        );
        assert_eq!(
            with("/public\\..\\private", Slashes::Decode).as_deref(),
            Ok("/private")
        );
        assert_eq!(with("/a%5cb", Slashes::Decode).as_deref(), Ok("/a/b"));
        assert_eq!(with("/a%2fb", Slashes::Keep).as_deref(), Ok("/a%2Fb"));
        assert_eq!(
            with("/x/..%2fprivate", Slashes::Keep).as_deref(),
            Ok("/x/..%2Fprivate")
        );
        assert_eq!(with("/p\\..\\q", Slashes::Keep).as_deref(), Ok("/p\\..\\q"));
    }

    #[test]
    fn malformed_paths_are_errors() {
        assert_eq!(normalize("admin"), Err(PathError::NotAbsolute));
        assert_eq!(normalize(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("/a%2"), Err(PathError::BadPercent));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadPercent));
        assert_eq!(normalize("/a%00b"), Err(PathError::Nul));
    }

    #[test]
    fn routes_see_paths_without_parameters() {
        let r = |p| routed(p).map(Cow::into_owned);
        assert_eq!(r("/private;jsessionid=x").as_deref(), Ok("/private"));
        assert_eq!(r("/a;v=1/b;x/c").as_deref(), Ok("/a/b/c"));
        assert_eq!(r("/a/b;/").as_deref(), Ok("/a/b/"));
        for hidden in ["/;x/admin", "/a/..;x/admin", "/.;/admin", "/a/;"] {
            assert_eq!(r(hidden), Err(PathError::HiddenSegment), "{hidden}");
        }
        assert!(matches!(routed("/plain/path"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn prefixes_end_after_the_parameters_of_their_last_segment() {
        assert_eq!(prefix_end("/api/users", "/api", false), Some(4));
        assert_eq!(prefix_end("/api;v=2/users", "/api", false), Some(8));
        assert_eq!(prefix_end("/api", "/api", false), Some(4));
        assert_eq!(prefix_end("/apix", "/api", false), None);
        assert_eq!(prefix_end("/API/x", "/api", false), None);
        assert_eq!(prefix_end("/API/x", "/api", true), Some(4));
        assert_eq!(prefix_end("/api/x", "/api/", false), Some(5));
        assert_eq!(prefix_end("/api", "/api/", false), None);
        assert_eq!(prefix_end("/anything", "/", false), Some(0));
        assert_eq!(prefix_end("/a;p/b;q/c", "/a/b", false), Some(8));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            for slashes in [Slashes::Reject, Slashes::Decode, Slashes::Keep] {
                let _ = normalized(&s, slashes);
            }
        }

        #[test]
        fn the_shortcut_only_takes_paths_the_rules_leave_alone(s in "/[a-z/.%0-9\\\\]{0,30}") {
            if is_normal(s.as_bytes()) {
                for slashes in [Slashes::Reject, Slashes::Decode, Slashes::Keep] {
                    prop_assert_eq!(normalize_full(&s, slashes), Ok(s.clone()));
                }
            }
        }

        #[test]
        fn normal_forms_are_fixed_points(s in "/[a-zA-Z0-9%./_~;\\\\-]{0,40}") {
            for slashes in [Slashes::Reject, Slashes::Decode, Slashes::Keep] {
                if let Ok(once) = normalized(&s, slashes) {
                    prop_assert_eq!(normalized(&once, slashes), Ok(once.clone()));
                    prop_assert!(once.starts_with('/'));
                    prop_assert!(!once.contains("//"));
                    prop_assert!(!once.split('/').any(|seg| seg == "." || seg == ".."));
                    if slashes != Slashes::Keep {
                        prop_assert!(!once.contains('\\') && !once.contains("%2F") && !once.contains("%5C"));
                    }
                }
            }
        }

        /// A prefix matches a path's routed form on segment boundaries exactly when its end
        /// is found in the path with parameters, and cutting there leaves the rest.
        #[test]
        fn prefix_ends_agree_with_routed_matching(
            segs in proptest::collection::vec("[a-c]{1,2}(;[a-z=]{0,3})?", 1..5),
            want in proptest::collection::vec("[a-c]{1,2}", 1..4),
            trailing in any::<bool>(),
        ) {
            let path = format!("/{}", segs.join("/"));
            let prefix = format!("/{}{}", want.join("/"), if trailing { "/" } else { "" });
            let r = routed(&path).expect("every segment has a name");
            let p = prefix.trim_end_matches('/');
            let matches = if trailing {
                r.starts_with(&prefix)
            } else {
                r.starts_with(p) && (r.len() == p.len() || r.as_bytes()[p.len()] == b'/')
            };
            let end = prefix_end(&path, &prefix, false);
            prop_assert_eq!(end.is_some(), matches, "{} {}", path, prefix);
            if let Some(e) = end {
                // What follows the prefix, from the '/' that ends it (or nothing).
                let from = if trailing { e - 1 } else { e };
                let rest = routed(&path[from..]).map(Cow::into_owned).unwrap_or_default();
                prop_assert_eq!(rest.as_str(), &r[p.len()..]);
            }
        }
    }
}
