//! What a cached response is filed under and chosen by (RFC 9111 §2, §4.1), pure: the
//! primary key (route, authority, method, path, query and the policy's `vary` fields), and
//! the request fields a response's own `Vary` names, which a later request must present alike
//! to be answered with it.
//!
//! The route is in the key because two routes naming one cache policy may send a path to
//! different pools, or put an auth policy in front of one of them; the authority is kept
//! exactly as lb writes it as `Host`: the backend answered for that name, and one that tells
//! `H.Example`, `h.example.` or `h.example..` from `h.example` (a case-sensitive virtual host,
//! a name it refuses, links built from it) must not have that answer served for another. At
//! worst a second entry.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Method};

/// The request's values of the fields a stored response varies by, in the order of the
/// (sorted, deduplicated) names, each as the SHA-256 of its normalised value (a response may
/// vary by `Cookie` or `Authorization`: an entry, in memory or in Redis, keeps no credential,
/// and 32 bytes whatever was sent); `None` for a field the request lacks (RFC 9111 §4.1:
/// absent matches only absent).
pub type Varied = Vec<(HeaderName, Option<Bytes>)>;

/// What a request is filed under.
#[derive(Debug, Clone, Copy)]
pub struct Primary<'a> {
    pub route: &'a str,
    pub authority: Option<&'a str>,
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Who an `api_key` or `basic_auth` policy found the client to be: the credential has
    /// left the request by now, and a backend may answer each consumer its own way.
    pub consumer: Option<&'a str>,
}

/// The primary key: HEAD shares GET's entries; each part on its own line (none of them can
/// hold a line break), the query after a `?` only when the request had one (`/p?` is not
/// `/p` to a backend), then `name:` and the SHA-256 of each of the policy's `vary` fields
/// (`-` when absent): every byte a client sent counts (a value is not made text first, where
/// `\xff` and `\xfe` would both become U+FFFD), and the key is no longer for a 32 KiB value.
pub fn primary(p: &Primary<'_>, vary: &[String], headers: &HeaderMap) -> String {
    let method = if p.method == Method::HEAD {
        "GET"
    } else {
        p.method.as_str()
    };
    let mut key = format!(
        "{}\n{}\n{method}\n{}",
        p.route,
        p.authority.unwrap_or_default(),
        p.path,
    );
    if let Some(q) = p.query {
        key.push('?');
        key.push_str(q);
    }
    if let Some(c) = p.consumer {
        // On a line of its own; a configured name holds no line break.
        key.push_str("\nconsumer:");
        key.push_str(c);
    }
    for h in vary {
        key.push('\n');
        key.push_str(h);
        key.push(':');
        let name = HeaderName::from_bytes(h.as_bytes()).ok();
        match name.and_then(|n| value(headers, &n)) {
            Some(digest) => digest
                .iter()
                .for_each(|b| key.push_str(&format!("{b:02x}"))),
            None => key.push('-'),
        }
    }
    key
}

/// The name of a key in Redis: its SHA-256 in hex. A key holds the path and query as a
/// client sent them (up to the URI's limit); Redis gets 64 bytes whatever they are, the same
/// in every lb.
pub fn shared(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fields a response's `Vary` names, lowercase, sorted and once each; `None` when it may
/// not be stored: `Vary: *` (RFC 9111 §4.1) or a name that is no field name.
pub fn vary_names(response: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in response.get_all(header::VARY) {
        let value = value.to_str().ok()?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            names.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// The request's value of `name` as compared: the SHA-256 of its field lines joined, each
/// list member's surrounding whitespace dropped (RFC 9111 §4.1 allows this much
/// normalising).
fn value(request: &HeaderMap, name: &HeaderName) -> Option<Bytes> {
    use sha2::Digest;
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let mut out = Vec::new();
    for line in lines {
        for member in line.as_bytes().split(|&b| b == b',') {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(member.trim_ascii());
        }
    }
    Some(Bytes::copy_from_slice(&sha2::Sha256::digest(&out)))
}

/// What a response varying by `names` is chosen by, from the request it answered.
pub fn varied(names: &[HeaderName], request: &HeaderMap) -> Varied {
    names
        .iter()
        .map(|n| (n.clone(), value(request, n)))
        .collect()
}

/// Whether `request` presents the same values as the request a stored response answered.
pub fn matches(stored: &Varied, request: &HeaderMap) -> bool {
    stored.iter().all(|(n, v)| value(request, n) == *v)
}

/// Bytes an entry's selecting fields take (for the cache's weigher).
pub fn varied_len(v: &Varied) -> usize {
    v.iter()
        .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, Bytes::len))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn the_primary_key_holds_route_authority_method_path_and_query() {
        let (get, head) = (Method::GET, Method::HEAD);
        let p = |route, authority, method| Primary {
            route,
            authority,
            method,
            path: "/p",
            query: Some("q=1"),
            consumer: None,
        };
        let h = HeaderMap::new();
        let k = |x: Primary<'_>| primary(&x, &[], &h);
        assert_eq!(k(p("r", Some("h:1"), &get)), k(p("r", Some("h:1"), &head)));
        // The authority as the backend is sent it: case, trailing dots and port count.
        for other in ["H:1", "h.:1", "h..:1", "h:2", "h"] {
            assert_ne!(
                k(p("r", Some("h:1"), &get)),
                k(p("r", Some(other), &get)),
                "{other}"
            );
        }
        assert_ne!(k(p("r", Some("h:1"), &get)), k(p("s", Some("h:1"), &get)));
        assert_ne!(k(p("r", Some("h"), &get)), k(p("r", None, &get)));
        let mobile = Primary {
            consumer: Some("mobile"),
            ..p("r", Some("h:1"), &get)
        };
        assert_ne!(
            k(mobile),
            k(p("r", Some("h:1"), &get)),
            "a consumer's own entry"
        );
    }

    /// Review of issue 15: different requests, different keys.
    #[test]
    fn no_two_requests_share_a_key_by_what_the_key_drops() {
        let get = Method::GET;
        let p = |query| Primary {
            route: "r",
            authority: Some("h"),
            method: &get,
            path: "/p",
            query,
            consumer: None,
        };
        let none = HeaderMap::new();
        let vary = ["x-tenant".to_string()];
        assert_ne!(
            primary(&p(None), &vary, &none),
            primary(&p(Some("")), &vary, &none),
            "/p and /p?"
        );
        let with = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert("x-tenant", http::HeaderValue::from_bytes(v).expect("value"));
            primary(&p(None), &vary, &h)
        };
        assert_ne!(with(b"\xff"), with(b"\xfe"), "bytes past ASCII");
        assert_ne!(with(b"\xff"), with("\u{fffd}".as_bytes()));
        assert_ne!(
            with(b""),
            primary(&p(None), &vary, &none),
            "empty is not absent"
        );
        assert_eq!(with(b"a"), with(b"a"));
        assert!(
            with(&[b'a'; 32 * 1024]).len() < 200,
            "a digest, not the value"
        );
    }

    #[test]
    fn redis_names_are_fixed_size_and_alike_everywhere() {
        let huge = "a".repeat(32 * 1024);
        assert_eq!(shared(&huge).len(), 64);
        assert_eq!(shared("k"), shared("k"));
        assert_ne!(shared("k"), shared("k2"));
    }

    #[test]
    fn vary_names_are_lowercase_sorted_once_and_star_refuses() {
        let names = |v: &str| vary_names(&map(&[("vary", v)]));
        let ae = HeaderName::from_static("accept-encoding");
        let al = HeaderName::from_static("accept-language");
        assert_eq!(
            names("accept-encoding, ACCEPT-ENCODING ,Accept-Language"),
            Some(vec![ae.clone(), al.clone()])
        );
        assert_eq!(
            vary_names(&map(&[
                ("vary", "Accept-Language"),
                ("vary", "accept-encoding")
            ])),
            Some(vec![ae, al]),
            "over several field lines"
        );
        assert_eq!(names(""), Some(vec![]));
        assert_eq!(names(" , "), Some(vec![]));
        assert_eq!(names("*"), None);
        assert_eq!(names("accept, *"), None);
        assert_eq!(names("bad name"), None);
        assert_eq!(vary_names(&HeaderMap::new()), Some(vec![]));
    }

    #[test]
    fn a_request_matches_only_with_the_same_values() {
        let names = vec![HeaderName::from_static("accept-encoding")];
        let zstd = varied(&names, &map(&[("accept-encoding", "zstd")]));
        assert!(matches(&zstd, &map(&[("accept-encoding", "zstd")])));
        assert!(!matches(&zstd, &map(&[("accept-encoding", "gzip")])));
        assert!(!matches(&zstd, &HeaderMap::new()), "absent is not zstd");
        let absent = varied(&names, &HeaderMap::new());
        assert!(matches(&absent, &HeaderMap::new()));
        assert!(
            !matches(&absent, &map(&[("accept-encoding", "")])),
            "empty is not absent"
        );
        let empty = varied(&names, &map(&[("accept-encoding", "")]));
        assert!(matches(&empty, &map(&[("accept-encoding", "")])));
        // Whitespace around list members, and how they are split over lines, do not count.
        let two = varied(&names, &map(&[("accept-encoding", "gzip, br")]));
        assert!(matches(&two, &map(&[("accept-encoding", "gzip,br")])));
        assert!(matches(
            &two,
            &map(&[("accept-encoding", "gzip"), ("accept-encoding", " br")])
        ));
        assert!(!matches(&two, &map(&[("accept-encoding", "br, gzip")])));
        // No names: every request matches.
        assert!(matches(&Vec::new(), &map(&[("accept-encoding", "x")])));
    }

    /// Review of issue 15: a response may vary by `Cookie` or `Authorization`; what an entry
    /// keeps to choose by (in memory, and in Redis for every lb) must not be the credential.
    #[test]
    fn a_kept_value_is_not_the_credential_itself() {
        let names = vec![header::AUTHORIZATION, header::COOKIE];
        let request = map(&[
            ("authorization", "Bearer secret-token"),
            ("cookie", "session=secret-cookie"),
        ]);
        let kept = varied(&names, &request);
        for (n, v) in &kept {
            let v = v.as_ref().expect("present");
            let leaked = |needle: &[u8]| v.windows(needle.len()).any(|w| w == needle);
            assert!(!leaked(b"secret"), "{n}: {v:?}");
            assert_eq!(v.len(), 32, "{n}: a fixed size, whatever was sent");
        }
        assert!(matches(&kept, &request));
        assert!(!matches(
            &kept,
            &map(&[
                ("authorization", "Bearer other"),
                ("cookie", "session=secret-cookie")
            ])
        ));
    }

    proptest::proptest! {
        /// A request always matches what was kept from it, however its values are spread
        /// over lines and spaced; and one whose value differs in anything but that does not.
        #[test]
        fn a_request_matches_itself_and_only_its_values(
            members in proptest::collection::vec("[a-z0-9;=.]{1,8}", 1..5),
            spaces in proptest::collection::vec(0usize..3, 5),
            split in 0usize..5,
            other in "[a-z0-9]{1,8}",
        ) {
            let names = vec![HeaderName::from_static("accept-encoding")];
            let pad = |i: usize| " ".repeat(spaces[i % spaces.len()]);
            let spaced: Vec<String> = members.iter().enumerate().map(|(i, m)| format!("{}{m}{}", pad(i), pad(i + 1))).collect();
            let split = split.min(spaced.len());
            let mut request = HeaderMap::new();
            for line in [&spaced[..split], &spaced[split..]].iter().filter(|l| !l.is_empty()) {
                request.append("accept-encoding", HeaderValue::from_str(&line.join(",")).expect("value"));
            }
            let kept = varied(&names, &request);
            let plain = map(&[("accept-encoding", &members.join(","))]);
            proptest::prop_assert!(matches(&kept, &request));
            proptest::prop_assert!(matches(&kept, &plain));
            let mut changed = members.clone();
            changed[0] = format!("{}{other}", changed[0]);
            let changed = map(&[("accept-encoding", &changed.join(","))]);
            proptest::prop_assert!(!matches(&kept, &changed));
            proptest::prop_assert!(!matches(&kept, &HeaderMap::new()));
        }
    }
}
