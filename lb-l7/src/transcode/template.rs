//! `google.api.http` path templates: parsed when the config loads, matched against request
//! paths. Pure.
//!
//! The grammar (google/api/http.proto):
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//! A request path is split on its raw `/` *before* percent-decoding, so an encoded slash in a
//! single-segment variable (`%2F`) is data in that field and can never make the path reach
//! another template's segments. A multi-segment variable (`**`, or `=` with several
//! segments) keeps `%2F` encoded, as the spec says. A variable that decodes to `.` or `..`
//! is refused: it would name a parent to a backend that builds paths from it.

use std::fmt;

/// Longest template accepted: a template is config, not traffic, but the fuzzer and a
/// mistaken descriptor should not make the parser work without bound.
const MAX_TEMPLATE: usize = 4096;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the request's segment (after percent-decoding).
    Literal(String),
    /// `*`: any one segment.
    One,
    /// `**`: the rest of the path (zero or more segments); only last.
    Rest,
}

/// A `{field.path=segments}` variable: which template segments it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The dotted field path, split.
    pub field: Vec<String>,
    /// Index of its first segment in [`Template::segments`].
    pub start: usize,
    /// One past its last segment.
    pub end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    pub variables: Vec<Variable>,
    /// The `:verb` suffix, without the colon.
    pub verb: Option<String>,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(m.into()))
}

fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn literal(s: &str) -> Result<Segment, TemplateError> {
    match s {
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Rest),
        "" => err("an empty segment"),
        _ if s
            .bytes()
            .any(|b| b"{}=*:/".contains(&b) || !b.is_ascii_graphic()) =>
        {
            err(format!("\"{s}\" is not a valid literal segment"))
        }
        _ => Ok(Segment::Literal(crate::transcode::decode(s).ok_or_else(
            || TemplateError(format!("\"{s}\" has a malformed percent-encoding")),
        )?)),
    }
}

impl Template {
    /// Parses a template such as `/v1/{name=shelves/*}/books/{id}:get`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > MAX_TEMPLATE {
            return err(format!("longer than {MAX_TEMPLATE} bytes"));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return err("a path template starts with '/'");
        };
        // The verb is after the last ':' outside braces.
        let mut depth = 0i32;
        let mut colon = None;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => colon = Some(i),
                _ => {}
            }
        }
        let (path, verb) = match colon {
            Some(i) => {
                let v = &rest[i + 1..];
                if v.is_empty() || v.contains(['/', '{', '}', '*', '=']) {
                    return err(format!("\":{v}\" is not a valid verb"));
                }
                (&rest[..i], Some(v.to_string()))
            }
            None => (rest, None),
        };
        let mut segments = Vec::new();
        let mut variables: Vec<Variable> = Vec::new();
        let mut s = path;
        loop {
            if let Some(inner) = s.strip_prefix('{') {
                let Some(close) = inner.find('}') else {
                    return err("a '{' without its '}'");
                };
                let body = &inner[..close];
                if body.contains('{') {
                    return err("variables cannot nest");
                }
                let (field, sub) = body.split_once('=').unwrap_or((body, "*"));
                let field: Vec<String> = field.split('.').map(str::to_string).collect();
                if !field.iter().all(|f| is_ident(f)) {
                    return err(format!("\"{body}\" does not name a field"));
                }
                if variables.iter().any(|v| v.field == field) {
                    return err(format!("field \"{}\" is bound twice", field.join(".")));
                }
                let start = segments.len();
                for part in sub.split('/') {
                    segments.push(literal(part)?);
                }
                variables.push(Variable {
                    field,
                    start,
                    end: segments.len(),
                });
                s = &inner[close + 1..];
            } else {
                let end = s.find('/').unwrap_or(s.len());
                if s[..end].contains(['{', '}']) {
                    return err(format!("\"{}\" mixes a variable into a segment", &s[..end]));
                }
                segments.push(literal(&s[..end])?);
                s = &s[end..];
            }
            match s.strip_prefix('/') {
                Some(next) => s = next,
                None if s.is_empty() => break,
                None => return err(format!("unexpected \"{s}\" after a segment")),
            }
        }
        if let Some(i) = segments.iter().position(|g| *g == Segment::Rest) {
            if i + 1 != segments.len() {
                return err("'**' must be the last segment");
            }
        }
        Ok(Self {
            segments,
            variables,
            verb,
        })
    }

    /// Literal segments: more is more specific, for ordering rules.
    pub fn literals(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// The variables' values if `path` (a normalised request path, without its query and
    /// `;parameters`) matches: `(field path, decoded value)` in template order.
    pub fn matches(&self, path: &str) -> Option<super::Bindings<'_>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(v) => rest.strip_suffix(v.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let raw: Vec<&str> = rest.split('/').collect();
        let rest_at = self.segments.iter().position(|s| *s == Segment::Rest);
        match rest_at {
            Some(i) if raw.len() < i => return None,
            None if raw.len() != self.segments.len() => return None,
            _ => {}
        }
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Rest => break,
                Segment::One if raw[i].is_empty() => return None,
                Segment::One => {}
                Segment::Literal(l) => {
                    if crate::transcode::decode(raw[i]).as_deref() != Some(l.as_str()) {
                        return None;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let end = if rest_at.is_some_and(|r| r < v.end) {
                raw.len()
            } else {
                v.end
            };
            let value = if end - v.start == 1 && rest_at != Some(v.start) {
                crate::transcode::decode(raw[v.start])?
            } else {
                let mut parts = Vec::with_capacity(end - v.start);
                for r in &raw[v.start..end] {
                    parts.push(crate::transcode::decode_keeping_slash(r)?);
                }
                parts.join("/")
            };
            if value == "." || value == ".." || value.split('/').any(|p| p == "..") {
                return None;
            }
            out.push((v.field.as_slice(), value));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(t: &str, p: &str) -> Option<Vec<(String, String)>> {
        let t = Template::parse(t).expect("template");
        t.matches(p)
            .map(|v| v.into_iter().map(|(f, s)| (f.join("."), s)).collect())
    }

    fn pair(f: &str, v: &str) -> (String, String) {
        (f.to_string(), v.to_string())
    }

    #[test]
    fn parses_the_grammar() {
        let t = Template::parse("/v1/{name=shelves/*}/books/{book.id}:get").expect("parse");
        assert_eq!(t.verb.as_deref(), Some("get"));
        assert_eq!(t.segments.len(), 5);
        assert_eq!(t.variables[0].field, vec!["name"]);
        assert_eq!((t.variables[0].start, t.variables[0].end), (1, 3));
        assert_eq!(t.variables[1].field, vec!["book", "id"]);
        assert_eq!(t.literals(), 3);
        for bad in [
            "",
            "v1/x",
            "/v1//x",
            "/v1/{x",
            "/v1/{x{y}}",
            "/v1/{1x}",
            "/v1/**/x",
            "/v1/a{x}",
            "/v1/x:",
            "/v1/{x}/{x}",
            "/v1/x:a/b",
            "/v1/%zz",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matches_variables_and_wildcards() {
        let t = "/v1/{name=shelves/*}/books/{id}";
        assert_eq!(
            vars(t, "/v1/shelves/7/books/x%20y"),
            Some(vec![pair("name", "shelves/7"), pair("id", "x y")])
        );
        assert_eq!(vars(t, "/v1/shelves/7/books"), None);
        assert_eq!(vars(t, "/v1/shelves/7/books/1/2"), None);
        assert_eq!(vars(t, "/v1/racks/7/books/1"), None);
        assert_eq!(
            vars("/v1/{path=files/**}", "/v1/files/a/b%2Fc"),
            Some(vec![pair("path", "files/a/b%2Fc")])
        );
        assert_eq!(
            vars("/v1/files/**", "/v1/files"),
            Some(vec![]),
            "** takes zero segments"
        );
        assert_eq!(
            vars("/v1/{id}:cancel", "/v1/5:cancel"),
            Some(vec![pair("id", "5")])
        );
        assert_eq!(vars("/v1/{id}:cancel", "/v1/5"), None);
        assert_eq!(
            vars("/v1/{id}", "/v1/"),
            None,
            "an empty segment binds nothing"
        );
    }

    #[test]
    fn an_encoded_slash_stays_in_its_segment() {
        // `%2F` cannot split a single-segment variable and reach another template's shape.
        assert_eq!(
            vars("/v1/shelves/{shelf}", "/v1/shelves/1%2Fbooks%2F2"),
            Some(vec![pair("shelf", "1/books/2")])
        );
        assert_eq!(
            vars("/v1/shelves/{shelf}/books/{b}", "/v1/shelves/1%2Fbooks%2F2"),
            None
        );
        assert_eq!(vars("/v1/{id}", "/v1/%2E%2E"), None);
        assert_eq!(vars("/v1/{id}", "/v1/.."), None);
        assert_eq!(vars("/v1/{p=**}", "/v1/a/../b"), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_and_match_never_panic(t in "[/a-z{}=*:.%0-9]{0,40}", p in "[/a-z%0-9:.]{0,40}") {
            if let Ok(t) = Template::parse(&t) {
                let _ = t.matches(&p);
            }
        }

        #[test]
        fn a_single_segment_variable_round_trips(v in "[a-zA-Z0-9 /._~-]{1,20}") {
            let t = Template::parse("/v1/things/{id}").expect("parse");
            let enc: String = form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>().replace('+', "%20");
            let got = t.matches(&format!("/v1/things/{enc}"));
            if v == "." || v == ".." || v.split('/').any(|p| p == "..") {
                proptest::prop_assert!(got.is_none());
            } else {
                proptest::prop_assert_eq!(got.map(|g| g[0].1.clone()), Some(v));
            }
        }
    }
}
