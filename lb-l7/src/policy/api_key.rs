//! `kind = "api_key"`: the request must present a known key in a header (default
//! `X-API-Key`) or, if configured, a query parameter. The config holds each key's SHA-256,
//! never the key; the presented key is hashed and compared with every digest in constant
//! time. The key's name becomes the request's consumer (for rate limits and logs), and the
//! key is removed from the headers before the request goes on.

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

    fn presented(&self, info: &RequestInfo, headers: &HeaderMap) -> Option<Vec<u8>> {
        if let Some(v) = headers.get(&self.header) {
            return Some(v.as_bytes().to_vec());
        }
        let param = self.query.as_deref()?;
        info.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == param).then(|| percent_decode(v))
        })
    }
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
        let Some(key) = self.presented(info, headers) else {
            auth_failure(&self.name, "missing");
            return Err(refuse_with(401, "an API key is required", &challenge));
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
}
