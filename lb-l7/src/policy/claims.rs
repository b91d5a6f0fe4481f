//! Claims of a checked token as request headers, shared by the token-checking policies
//! (`jwt`, `oauth2_introspection`): the configured headers a client sent are removed before
//! anything else (a client must not pass its own values off as checked ones), then set from
//! the claims that were checked. Pure; no I/O.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// A claim as a header value: strings as they are, other JSON as JSON.
pub fn claim_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `forward_claims` of one policy: claim → header.
#[derive(Debug, Clone, Default)]
pub struct Forward(Vec<(String, HeaderName)>);

impl Forward {
    /// From the validated config's pairs (lowercase header names; any that is not a header
    /// name is dropped, which validation already refused).
    pub fn new(pairs: &[(String, String)]) -> Self {
        Self(
            pairs
                .iter()
                .filter_map(|(c, h)| Some((c.clone(), HeaderName::from_bytes(h.as_bytes()).ok()?)))
                .collect(),
        )
    }

    /// The claims forwarded, by name.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(c, _)| c.as_str())
    }

    /// Removes every configured header the client sent (all its copies).
    pub fn strip(&self, headers: &mut HeaderMap) {
        for (_, h) in &self.0 {
            headers.remove(h);
        }
    }

    /// Sets each configured header from `claims`; a claim that is absent, or whose text is
    /// no header value, sets nothing. Call [`Forward::strip`] first.
    pub fn apply(&self, claims: &Value, headers: &mut HeaderMap) {
        for (claim, h) in &self.0 {
            if let Some(v) = claims
                .get(claim)
                .and_then(|v| HeaderValue::from_str(&claim_text(v)).ok())
            {
                headers.insert(h.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_copies_go_and_checked_claims_come() {
        let f = Forward::new(&[
            ("sub".into(), "x-user".into()),
            ("scope".into(), "x-scope".into()),
            ("n".into(), "x-n".into()),
            ("bad".into(), "x-bad".into()),
        ]);
        let mut h = HeaderMap::new();
        h.append("x-user", HeaderValue::from_static("mallory"));
        h.append("x-user", HeaderValue::from_static("root"));
        h.append("x-scope", HeaderValue::from_static("admin"));
        f.strip(&mut h);
        assert!(h.is_empty(), "{h:?}");
        let claims = serde_json::json!({ "sub": "alice", "n": 7, "bad": "a\nb" });
        f.apply(&claims, &mut h);
        assert_eq!(h.get_all("x-user").iter().count(), 1);
        assert_eq!(h["x-user"], "alice");
        assert_eq!(h["x-n"], "7");
        assert!(h.get("x-scope").is_none(), "absent claim, no header");
        assert!(h.get("x-bad").is_none(), "a newline is no header value");
    }
}
