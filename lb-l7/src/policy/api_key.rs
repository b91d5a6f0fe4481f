//! `kind = "api_key"`: the request must present a known key in a header (default
//! `X-API-Key`) or, if configured, a query parameter. The config holds each key's SHA-256,
//! never the key; the presented key is hashed and compared with every digest in constant
//! time. The key's name becomes the request's consumer (for rate limits and logs), and the
//! key is removed before the request goes on: the header, and every spelling of the query
//! parameter (any case, percent-encoded), whichever presented it.

use http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use super::{auth_failure, refuse_with, Policy, Refusal, RequestInfo};

#[derive(Debug)]
pub struct ApiKey {
    name: String,
    keys: Vec<(String, [u8; 32])>,
    header: http::HeaderName,
    query: Option<String>,
    challenge: HeaderValue,
}

impl ApiKey {
    pub fn new(name: &str, keys: &[(String, [u8; 32])], header: &str, query: Option<&str>) -> Self {
        let header = http::HeaderName::from_bytes(header.as_bytes())
            .unwrap_or(http::HeaderName::from_static("x-api-key"));
        let challenge = HeaderValue::from_str(&format!("ApiKey header=\"{header}\""))
            .unwrap_or(HeaderValue::from_static("ApiKey"));
        Self {
            name: name.to_string(),
            keys: keys.to_vec(),
            header,
            query: query.map(str::to_string),
            challenge,
        }
    }

    /// The name of the key `presented`, if it is one of ours.
    pub fn consumer(&self, presented: &[u8]) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Look at every key whatever matches, so the time taken tells nothing.
        let mut found = None;
        for (name, d) in &self.keys {
            let diff = d.iter().zip(&digest).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The key the request presents: the header's, else the query parameter's. Every copy
    /// of the parameter leaves `info.query` whatever is found, so the key never reaches the
    /// backend (nor its logs). `Err` when the query holds differing keys, or a copy behind a
    /// `;`: which one a backend or another proxy would read is anyone's guess.
    fn presented(
        &self,
        info: &mut RequestInfo,
        headers: &HeaderMap,
    ) -> Result<Option<Vec<u8>>, ()> {
        let from_query = match (self.query.as_deref(), info.query.as_deref()) {
            (Some(param), Some(query)) => {
                let (keys, rest) = take_param(query, param);
                // A copy behind a `;` (a pair separator to Rack < 3, Python < 3.9.2, Go <
                // 1.17, Perl's CGI) cannot be taken out without changing the pair it sits in.
                if rest.as_deref().is_some_and(|r| hides_param(r, param)) {
                    return Err(());
                }
                info.query = rest;
                keys
            }
            _ => Vec::new(),
        };
        if let Some(v) = headers.get(&self.header) {
            return Ok(Some(v.as_bytes().to_vec()));
        }
        match from_query.split_first() {
            Some((first, others)) if others.iter().any(|k| k != first) => Err(()),
            Some((first, _)) => Ok(Some(first.clone())),
            None => Ok(None),
        }
    }
}

/// Splits `query` into the values of parameter `param` and the query without them (`None`
/// when nothing is left). A name counts as `param` once percent-decoded and regardless of
/// ASCII case (`API_KEY`, `api%5Fkey`), as a backend's framework may read it; the other
/// pairs go on byte for byte.
fn take_param(query: &str, param: &str) -> (Vec<Vec<u8>>, Option<String>) {
    let mut keys = Vec::new();
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k).eq_ignore_ascii_case(param.as_bytes()) {
            keys.push(percent_decode(v));
        } else {
            kept.push(pair);
        }
    }
    let rest = kept.join("&");
    (keys, (!rest.is_empty()).then_some(rest))
}

/// Whether a `;`-separated part of a pair of `query` is named `param` (as [`take_param`]
/// compares names).
fn hides_param(query: &str, param: &str) -> bool {
    query.split('&').any(|pair| {
        pair.split(';').skip(1).any(|part| {
            let k = part.split_once('=').map_or(part, |(k, _)| k);
            percent_decode(k).eq_ignore_ascii_case(param.as_bytes())
        })
    })
}

/// A consumer's name and its key's SHA-256.
pub type Named = (String, [u8; 32]);

/// Reads a keys file: `NAME SHA256-HEX` lines, `#` comments; a bad line names file and line.
pub fn read_keys_file(
    f: &lb_core::config::FileRef,
    diags: &mut Vec<lb_core::config::Diagnostic>,
) -> Vec<Named> {
    let error = |diags: &mut Vec<lb_core::config::Diagnostic>, m: String| {
        diags.push(
            lb_core::config::Diagnostic::error(m)
                .at(f.span.clone())
                .key(f.key.clone()),
        );
    };
    let text = match std::fs::read_to_string(&f.path) {
        Ok(t) => t,
        Err(e) => {
            error(diags, format!("{}: cannot read: {e}", f.path));
            return Vec::new();
        }
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (
            parts.next(),
            parts.next().and_then(lb_core::config::parse_sha256),
            parts.next(),
        ) {
            (Some(name), Some(digest), None) => keys.push((name.to_string(), digest)),
            _ => error(
                diags,
                format!(
                    "{}:{}: expected NAME SHA256-HEX (the key's digest, never the key)",
                    f.path,
                    n + 1
                ),
            ),
        }
    }
    keys
}

fn percent_decode(v: &str) -> Vec<u8> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

impl Policy for ApiKey {
    fn request(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        let challenge = [(header::WWW_AUTHENTICATE, self.challenge.clone())];
        let key = match self.presented(info, headers) {
            Ok(Some(key)) => key,
            Ok(None) => {
                auth_failure(&self.name, "missing");
                return Err(refuse_with(401, "an API key is required", &challenge));
            }
            Err(()) => {
                auth_failure(&self.name, "ambiguous");
                return Err(refuse_with(401, "more than one API key", &challenge));
            }
        };
        match self.consumer(&key) {
            Some(consumer) => {
                info.consumer = Some(consumer.to_string());
                headers.remove(&self.header);
                Ok(())
            }
            None => {
                auth_failure(&self.name, "invalid");
                Err(refuse_with(401, "invalid API key", &challenge))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }

    #[test]
    fn keys_are_matched_by_digest_and_name_the_consumer() {
        let p = ApiKey::new(
            "k",
            &[
                ("web".into(), digest("s3cret")),
                ("cli".into(), digest("other")),
            ],
            "x-api-key",
            Some("api_key"),
        );
        assert_eq!(p.consumer(b"s3cret"), Some("web"));
        assert_eq!(p.consumer(b"other"), Some("cli"));
        assert_eq!(p.consumer(b"s3cre"), None);
        assert_eq!(percent_decode("a%20b+c%2"), b"a b c%2");
    }

    #[test]
    fn a_key_behind_a_semicolon_is_seen() {
        for q in [
            "x=1;api_key=s3cret",
            "a=1&x=1;API%5FKEY=s3cret",
            "x;api_key",
        ] {
            assert!(hides_param(q, "api_key"), "{q}");
        }
        for q in ["x=1;y=2", "api_key=1;x=2", "x=api_key;y", "x=1;api_keys=2"] {
            assert!(!hides_param(q, "api_key"), "{q}");
        }
    }

    #[test]
    fn the_key_parameter_leaves_the_query_in_every_spelling() {
        let take = |q: &str| take_param(q, "api_key");
        assert_eq!(take("api_key=s3cret"), (vec![b"s3cret".to_vec()], None));
        assert_eq!(
            take("a=1&api_key=s3cret&b=%20"),
            (vec![b"s3cret".to_vec()], Some("a=1&b=%20".into()))
        );
        for spelling in ["API_KEY", "Api_Key", "api%5Fkey", "api%5fKEY", "api_k%65y"] {
            let (keys, rest) = take(&format!("x=1&{spelling}=s3cret"));
            assert_eq!(keys, vec![b"s3cret".to_vec()], "{spelling}");
            assert_eq!(rest.as_deref(), Some("x=1"), "{spelling}");
        }
        assert_eq!(
            take("api_key=a&x&api_key=b&api_key"),
            (vec![b"a".to_vec(), b"b".to_vec(), vec![]], Some("x".into()))
        );
        assert_eq!(take("api_keys=1&xapi_key=2").0, Vec::<Vec<u8>>::new());
        assert_eq!(
            take("s%33cret=api_key").0,
            Vec::<Vec<u8>>::new(),
            "a value is no name"
        );
    }
}
