//! Server-name matching shared by `sni_routes` and per-SNI certificates: exact names first,
//! then `*.suffix` wildcards, longest suffix first. A wildcard matches any depth below its
//! suffix (`*.b.example` takes `x.b.example` and `y.x.b.example`, not `b.example`), as nginx's
//! `server_name *.example.org` does. Names compare case-insensitively. Pure; no I/O.

use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct SniMap<T> {
    exact: HashMap<String, T>,
    /// (".suffix", value), longest suffix first.
    wildcards: Vec<(String, T)>,
}

impl<T> Default for SniMap<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcards: Vec::new(),
        }
    }
}

impl<T> SniMap<T> {
    /// Builds from (pattern, value) pairs; on a repeated pattern the first one stays.
    pub fn new(entries: impl IntoIterator<Item = (String, T)>) -> Self {
        let mut m = Self::default();
        for (pattern, value) in entries {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => {
                    if !m.wildcards.iter().any(|(s, _)| s == suffix) {
                        m.wildcards.push((suffix.to_string(), value));
                    }
                }
                _ => {
                    m.exact.entry(pattern).or_insert(value);
                }
            }
        }
        // Stable: equal lengths keep config order.
        m.wildcards.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        m
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }

    /// The value for `name`, if any pattern matches.
    pub fn get(&self, name: &str) -> Option<&T> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if let Some(v) = self.exact.get(name) {
            return Some(v);
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.get(&name.to_ascii_lowercase());
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> SniMap<&'static str> {
        SniMap::new([
            ("a.example".to_string(), "exact-a"),
            ("*.b.example".to_string(), "wild-b"),
            ("*.x.b.example".to_string(), "wild-xb"),
            ("*.example".to_string(), "wild-example"),
        ])
    }

    #[test]
    fn exact_then_longest_wildcard() {
        let m = map();
        assert_eq!(m.get("a.example"), Some(&"exact-a"));
        assert_eq!(m.get("A.Example."), Some(&"exact-a"));
        assert_eq!(m.get("y.b.example"), Some(&"wild-b"));
        assert_eq!(m.get("deep.y.b.example"), Some(&"wild-b"));
        assert_eq!(m.get("q.x.b.example"), Some(&"wild-xb"));
        assert_eq!(m.get("b.example"), Some(&"wild-example"));
        assert_eq!(m.get("example"), None);
        assert_eq!(m.get("other.test"), None);
    }

    #[test]
    fn the_bare_suffix_is_not_a_match() {
        let m = SniMap::new([("*.b.example".to_string(), 1)]);
        assert_eq!(m.get("b.example"), None);
        assert_eq!(m.get(".b.example"), None);
        assert_eq!(m.get("xb.example"), None);
    }
}
