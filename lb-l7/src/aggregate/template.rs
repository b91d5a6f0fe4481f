//! A part's path template filled from the incoming request: each value is percent-encoded
//! for its place (one path segment, or one query value), so nothing a client controls — a
//! token's claim, a query parameter, a field — can add a path segment, climb out of one,
//! start a query or a fragment, or add a parameter. Pure; no I/O.

use std::borrow::Cow;

use http::HeaderMap;
use lb_core::config::{Piece, Place, Template, Var};
use serde_json::Value;

/// Longest rendered path and query, in bytes: what lb accepts as a request target.
pub const MAX_RENDERED: usize = 8192;

/// What a template's variables read.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The claims the route's token policy checked.
    pub claims: Option<&'a Value>,
    /// The incoming request's query (as the route's policies left it).
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Why a template could not be filled: the request lacks what it reads, or a value cannot
/// stand where the template puts it. The client's doing (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfilled {
    #[error("the request has no {0}")]
    Missing(String),
    #[error("{0} is not a string, number or boolean")]
    NotScalar(String),
    #[error("{0} is empty or only dots, which cannot fill a path segment")]
    DotSegment(String),
    #[error("the filled path is over {MAX_RENDERED} bytes")]
    TooLong,
}

/// The path (and query, after `?`) `t` asks for, filled from `src`.
pub fn render(t: &Template, src: &Source<'_>) -> Result<String, Unfilled> {
    let mut out = String::with_capacity(t.text.len() + 32);
    for piece in &t.pieces {
        match piece {
            Piece::Text(s) => out.push_str(s),
            Piece::Var(v, place) => {
                let value = lookup(v, src)?;
                if *place == Place::Path && value.bytes().all(|b| b == b'.') {
                    return Err(Unfilled::DotSegment(v.spelling()));
                }
                encode(&value, &mut out);
            }
        }
        if out.len() > MAX_RENDERED {
            return Err(Unfilled::TooLong);
        }
    }
    // A value next to literal dots (`/.${v}` with v = ".") could still make one.
    let path = out.split('?').next().unwrap_or_default();
    if let Some(v) = t.vars().next().filter(|_| has_dot_segment(path)) {
        return Err(Unfilled::DotSegment(v.spelling()));
    }
    Ok(out)
}

/// Whether a path has a `.` or `..` segment, which a backend would resolve away.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

fn lookup<'s>(v: &Var, src: &Source<'s>) -> Result<Cow<'s, str>, Unfilled> {
    let missing = || Unfilled::Missing(v.spelling());
    match v {
        Var::Jwt(claim) => match src.claims.and_then(|c| c.get(claim)) {
            Some(Value::String(s)) => Ok(Cow::Borrowed(s.as_str())),
            Some(n @ (Value::Number(_) | Value::Bool(_))) => Ok(Cow::Owned(n.to_string())),
            Some(_) => Err(Unfilled::NotScalar(v.spelling())),
            None => Err(missing()),
        },
        Var::Query(name) => src
            .query
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| Cow::Owned(v.into_owned()))
            })
            .ok_or_else(missing),
        Var::Header(name) => src
            .headers
            .get(name.as_str())
            .and_then(|h| h.to_str().ok())
            .map(Cow::Borrowed)
            .ok_or_else(missing),
    }
}

/// Appends `value` with every byte but RFC 3986's unreserved ones as `%XX`: safe in a path
/// segment and in a query value alike (`/`, `?`, `#`, `&`, `=`, `%`, `+` are all escaped).
pub fn encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(text: &str) -> Template {
        Template::parse(text).expect("valid template")
    }

    fn fill(text: &str, claims: Value, query: Option<&str>) -> Result<String, Unfilled> {
        let headers = HeaderMap::new();
        render(
            &t(text),
            &Source {
                claims: Some(&claims),
                query,
                headers: &headers,
            },
        )
    }

    #[test]
    fn claims_cannot_leave_their_place() {
        let tpl = "/users/${jwt.sub}?user=${jwt.sub}&x=1";
        for (sub, want) in [
            ("alice", "/users/alice?user=alice&x=1"),
            ("../admin", "/users/..%2Fadmin?user=..%2Fadmin&x=1"),
            ("x?y=1#", "/users/x%3Fy%3D1%23?user=x%3Fy%3D1%23&x=1"),
            ("a&x=2", "/users/a%26x%3D2?user=a%26x%3D2&x=1"),
            ("%2e%2e", "/users/%252e%252e?user=%252e%252e&x=1"),
            ("é /", "/users/%C3%A9%20%2F?user=%C3%A9%20%2F&x=1"),
        ] {
            let got = fill(tpl, serde_json::json!({ "sub": sub }), None);
            assert_eq!(got.as_deref(), Ok(want), "{sub}");
        }
        let n = fill("/u/${jwt.n}", serde_json::json!({ "n": 7 }), None);
        assert_eq!(n.as_deref(), Ok("/u/7"));
    }

    #[test]
    fn dot_segments_and_missing_values_fail() {
        for sub in ["..", ".", ""] {
            let got = fill("/users/${jwt.sub}", serde_json::json!({ "sub": sub }), None);
            assert!(
                matches!(got, Err(Unfilled::DotSegment(_))),
                "{sub}: {got:?}"
            );
        }
        let got = fill(
            "/users/.${jwt.sub}",
            serde_json::json!({ "sub": "." }),
            None,
        );
        assert!(matches!(got, Err(Unfilled::DotSegment(_))), "{got:?}");
        // In a query value, dots are only data.
        let q = fill("/o?u=${jwt.sub}", serde_json::json!({ "sub": ".." }), None);
        assert_eq!(q.as_deref(), Ok("/o?u=.."));
        let got = fill("/u/${jwt.sub}", serde_json::json!({}), None);
        assert_eq!(got, Err(Unfilled::Missing("${jwt.sub}".into())));
        let got = fill("/u/${jwt.sub}", serde_json::json!({ "sub": ["a"] }), None);
        assert!(matches!(got, Err(Unfilled::NotScalar(_))));
        let long = "a".repeat(MAX_RENDERED);
        let got = fill("/u/${jwt.sub}", serde_json::json!({ "sub": long }), None);
        assert_eq!(got, Err(Unfilled::TooLong));
    }

    #[test]
    fn query_and_header_values() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme corp".parse().expect("value"));
        let src = Source {
            claims: None,
            query: Some("page=2&q=a%26b&page=9"),
            headers: &headers,
        };
        let got = render(
            &t("/t/${header.X-Tenant}?p=${query.page}&q=${query.q}"),
            &src,
        );
        assert_eq!(got.as_deref(), Ok("/t/acme%20corp?p=2&q=a%26b"));
        let got = render(&t("/t?x=${query.none}"), &src);
        assert_eq!(got, Err(Unfilled::Missing("${query.none}".into())));
    }

    proptest! {
        /// Whatever the claim, the filled path has the template's segments and parameters:
        /// the value stays one segment and one query value.
        #[test]
        fn any_value_stays_in_its_place(sub in "\\PC{0,40}") {
            let got = fill("/a/${jwt.sub}/b?u=${jwt.sub}&z=1", serde_json::json!({ "sub": sub }), None);
            if let Ok(p) = got {
                let (path, query) = p.split_once('?').expect("query kept");
                prop_assert_eq!(path.split('/').count(), 4);
                prop_assert!(path.starts_with("/a/") && path.ends_with("/b"));
                prop_assert_eq!(query.split('&').count(), 2);
                prop_assert!(!p.contains('#'));
                prop_assert!(p.parse::<http::uri::PathAndQuery>().is_ok());
            }
        }
    }
}
