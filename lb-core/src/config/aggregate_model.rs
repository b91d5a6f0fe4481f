//! An aggregate route's parts (SPEC §6 `aggregate`) and their path templates: literal text
//! with `${jwt.CLAIM}`, `${query.NAME}` and `${header.NAME}` variables. Parsing only: lb-l7
//! puts the values in, percent-encoded for their place. Pure; no I/O.

use std::time::Duration;

/// Most parts one aggregate route may have: each request fans out to all of them at once,
/// so this bounds the sub-requests (and buffered part bodies) one client request can cause.
pub const MAX_PARTS: usize = 16;

/// Longest path template, in bytes (the longest request target lb accepts is 8 KiB; a
/// template leaves room for the values put into it).
pub const MAX_TEMPLATE: usize = 2048;

/// One part of an aggregate route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatePart {
    /// The part's key in the answer's JSON object: letters, digits, `_` and `-`.
    pub name: String,
    /// Index into `Config::pools`.
    pub pool: usize,
    pub path: Template,
    /// Each attempt of this part, from sending to its whole body read; default the route's
    /// `timeout`.
    pub timeout: Duration,
    /// A failed required part fails the whole answer (502); a failed optional one is
    /// `{"error": ..., "status": N}` in its place.
    pub required: bool,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// As written in the config.
    pub text: String,
    pub pieces: Vec<Piece>,
}

/// Literal text (copied as written) or a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(Var, Place),
}

/// Where a variable stands, which decides how its value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Before the `?`: the value must stay inside one path segment.
    Path,
    /// After the `?`: the value must stay inside one query value.
    Query,
}

/// What a variable reads from the incoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// A claim of the token the route's `jwt` (or `oauth2_introspection`) policy checked.
    Jwt(String),
    /// The first value of a query parameter of the incoming request, decoded.
    Query(String),
    /// The first value of a request field (lowercase name).
    Header(String),
}

impl Var {
    /// The variable as written, e.g. `${jwt.sub}`.
    pub fn spelling(&self) -> String {
        match self {
            Self::Jwt(c) => format!("${{jwt.{c}}}"),
            Self::Query(q) => format!("${{query.{q}}}"),
            Self::Header(h) => format!("${{header.{h}}}"),
        }
    }
}

impl Template {
    /// Parses a template: it starts with `/`, its literal text is what a request target may
    /// hold (no `#`, spaces or controls; `%` only before two hex digits), and every `${...}`
    /// is a known variable.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "expected a path starting with '/', found \"{text}\""
            ));
        }
        if text.len() > MAX_TEMPLATE {
            return Err(format!(
                "a path template is at most {MAX_TEMPLATE} bytes, this one is {}",
                text.len()
            ));
        }
        let mut pieces = Vec::new();
        let mut place = Place::Path;
        let mut rest = text;
        while !rest.is_empty() {
            let (lit, after) = match rest.find("${") {
                Some(i) => (&rest[..i], Some(&rest[i + 2..])),
                None => (rest, None),
            };
            literal(lit)?;
            if lit.contains('?') {
                place = Place::Query;
            }
            if !lit.is_empty() {
                pieces.push(Piece::Text(lit.to_string()));
            }
            let Some(after) = after else { break };
            let end = after
                .find('}')
                .ok_or_else(|| "`${` without its closing `}`".to_string())?;
            pieces.push(Piece::Var(variable(&after[..end])?, place));
            rest = &after[end + 1..];
        }
        let t = Self {
            text: text.to_string(),
            pieces,
        };
        // With every variable filled, the path must still mean itself: a `.` or `..`
        // segment would be resolved away by the backend.
        let sample: String = t
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Text(s) => s.as_str(),
                Piece::Var(..) => "x",
            })
            .collect();
        let path = sample.split('?').next().unwrap_or_default();
        if path.split('/').any(|s| s == "." || s == "..") {
            return Err("a path template has no `.` or `..` segment".into());
        }
        Ok(t)
    }

    /// The variables used.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v, _) => Some(v),
            Piece::Text(_) => None,
        })
    }
}

/// Checks literal template text: RFC 3986 path and query characters, `%XX` escapes.
fn literal(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err("`%` in a path template starts a %XX escape".into());
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&c)) {
            return Err(format!(
                "{:?} cannot stand in a request path or query; percent-encode it",
                char::from(c)
            ));
        }
        i += 1;
    }
    Ok(())
}

fn variable(s: &str) -> Result<Var, String> {
    let known = "expected ${jwt.CLAIM}, ${query.NAME} or ${header.NAME}";
    let (kind, name) = s
        .split_once('.')
        .ok_or_else(|| format!("unknown variable `${{{s}}}`: {known}"))?;
    let printable = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'{');
    match kind {
        "jwt" if printable => Ok(Var::Jwt(name.to_string())),
        "query" if printable && !name.contains(['&', '=', '#']) => Ok(Var::Query(name.to_string())),
        "header" if is_token(name) => Ok(Var::Header(name.to_ascii_lowercase())),
        "jwt" | "query" | "header" => {
            Err(format!("`${{{s}}}` needs a {kind} name after `{kind}.`"))
        }
        _ => Err(format!("unknown variable `${{{s}}}`: {known}")),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_take_their_place() {
        let t =
            Template::parse("/users/${jwt.sub}/x?user=${jwt.sub}&h=${header.X-Id}").expect("valid");
        assert_eq!(
            t.pieces,
            vec![
                Piece::Text("/users/".into()),
                Piece::Var(Var::Jwt("sub".into()), Place::Path),
                Piece::Text("/x?user=".into()),
                Piece::Var(Var::Jwt("sub".into()), Place::Query),
                Piece::Text("&h=".into()),
                Piece::Var(Var::Header("x-id".into()), Place::Query),
            ]
        );
        let t = Template::parse("/a?${query.q}").expect("valid");
        assert_eq!(t.vars().count(), 1);
        assert_eq!(Var::Query("q".into()).spelling(), "${query.q}");
    }

    #[test]
    fn bad_templates_say_why() {
        for (text, why) in [
            ("users", "starting with '/'"),
            ("/u/${jwt.sub", "closing"),
            ("/u/${path.1}", "unknown variable"),
            ("/u/${sub}", "unknown variable"),
            ("/u/${jwt.}", "needs a jwt name"),
            ("/u/${header.a b}", "needs a header name"),
            ("/u/a b", "cannot stand"),
            ("/u#frag", "cannot stand"),
            ("/u/%zz", "%XX"),
            ("/u/../admin", "segment"),
            ("/u/./${jwt.sub}", "segment"),
        ] {
            let e = Template::parse(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
        assert!(Template::parse(&format!("/{}", "a".repeat(MAX_TEMPLATE))).is_err());
        assert!(Template::parse("/a%2Fb/$x?y=%20").is_ok());
    }
}
