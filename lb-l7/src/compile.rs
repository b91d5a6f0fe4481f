//! A route's config compiled for serving: its match conditions for the
//! [`Router`](crate::router::Router), and how
//! it rewrites the path it forwards. Pure.

use lb_core::config::{self, RoutePath};
use regex::Regex;

use crate::router::{Conditions, HostMatch, PathMatch};

/// How a route changes the path it forwards.
#[derive(Debug, Clone)]
pub enum Rewrite {
    /// Replace the matched prefix (`strip_prefix` replaces it with nothing).
    Prefix { prefix: String, with: String },
    /// Replace the whole (exactly matched) path.
    Exact(String),
    /// `Regex::replace` with the route's regex; `$1`… are its groups.
    Regex(Regex, String),
}

impl Rewrite {
    pub fn apply(&self, path: &str) -> String {
        let out = match self {
            Self::Prefix { prefix, with } => {
                let prefix = prefix.trim_end_matches('/');
                match path.strip_prefix(prefix) {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                        format!("{}{rest}", with.trim_end_matches('/'))
                    }
                    _ => path.to_string(),
                }
            }
            Self::Exact(p) => p.clone(),
            Self::Regex(r, with) => r.replace(path, with.as_str()).into_owned(),
        };
        if out.starts_with('/') {
            out
        } else {
            format!("/{out}")
        }
    }
}

/// A route's conditions and rewrite, from its validated config.
pub fn route(r: &config::HttpRoute) -> (Conditions, Option<Rewrite>) {
    // Validation compiled every pattern already; one failing here would be a bug, and the
    // route then matches nothing rather than everything.
    let never = || PathMatch::Exact(String::from("\u{0}never"));
    let (path, rewrite) = match &r.path {
        None => (None, None),
        Some(RoutePath::Exact(p)) => (
            Some(PathMatch::exact(p).unwrap_or_else(|_| never())),
            r.rewrite.clone().map(Rewrite::Exact),
        ),
        Some(RoutePath::Prefix(p)) => {
            let with = if r.strip_prefix {
                Some(String::new())
            } else {
                r.rewrite.clone()
            };
            (
                Some(PathMatch::prefix(p).unwrap_or_else(|_| never())),
                with.map(|with| Rewrite::Prefix {
                    prefix: p.clone(),
                    with,
                }),
            )
        }
        Some(RoutePath::Regex(p)) => match Regex::new(p) {
            Ok(re) => (
                Some(PathMatch::Regex(re.clone())),
                r.rewrite.clone().map(|w| Rewrite::Regex(re, w)),
            ),
            Err(_) => (Some(never()), None),
        },
    };
    let cond = Conditions {
        host: r.host.as_deref().and_then(|h| HostMatch::parse(h).ok()),
        path,
        methods: r
            .methods
            .iter()
            .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .collect(),
        headers: r
            .headers
            .iter()
            .filter_map(|(n, v)| {
                Some((http::HeaderName::from_bytes(n.as_bytes()).ok()?, v.clone()))
            })
            .collect(),
    };
    (cond, rewrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_keep_the_path_absolute() {
        let strip = Rewrite::Prefix {
            prefix: "/api".into(),
            with: String::new(),
        };
        assert_eq!(strip.apply("/api/users"), "/users");
        assert_eq!(strip.apply("/api"), "/");
        assert_eq!(strip.apply("/apix"), "/apix");
        let strip = Rewrite::Prefix {
            prefix: "/api/".into(),
            with: String::new(),
        };
        assert_eq!(strip.apply("/api/"), "/");
        let swap = Rewrite::Prefix {
            prefix: "/v1".into(),
            with: "/internal/v2/".into(),
        };
        assert_eq!(swap.apply("/v1/users/7"), "/internal/v2/users/7");
        assert_eq!(Rewrite::Exact("/new".into()).apply("/old"), "/new");
        let re = Regex::new("^/u/([0-9]+)$").expect("regex");
        assert_eq!(
            Rewrite::Regex(re.clone(), "/users/$1".into()).apply("/u/42"),
            "/users/42"
        );
        assert_eq!(Rewrite::Regex(re, "users".into()).apply("/u/1"), "/users");
    }
}
