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
    /// The path to forward, for a request whose normalised path is `path` and whose routed
    /// form (without `;parameters`) is `routed`. A prefix is replaced where the route matched
    /// it, its last segment's parameters with it (`ci`: the route ignores case); an exact or
    /// regex rewrite works on the routed form, as the route matched it.
    pub fn apply(&self, path: &str, routed: &str, ci: bool) -> String {
        let out = match self {
            Self::Prefix { prefix, with } => {
                let bare = prefix.trim_end_matches('/');
                match crate::path::prefix_end(path, bare, ci) {
                    Some(end) => format!("{}{}", with.trim_end_matches('/'), &path[end..]),
                    None => path.to_string(),
                }
            }
            Self::Exact(p) => p.clone(),
            Self::Regex(r, with) => r.replace(routed, with.as_str()).into_owned(),
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
        Some(RoutePath::Regex(p)) => match regex::RegexBuilder::new(p)
            .case_insensitive(r.case_insensitive)
            .build()
        {
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
        case_insensitive: r.case_insensitive,
        graphql_operation: r.graphql_operation.clone(),
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
        let plain = |r: &Rewrite, p: &str| r.apply(p, p, false);
        assert_eq!(plain(&strip, "/api/users"), "/users");
        assert_eq!(plain(&strip, "/api"), "/");
        assert_eq!(plain(&strip, "/apix"), "/apix");
        // Parameters of the stripped segment go with it; the rest keep theirs.
        assert_eq!(
            strip.apply("/api;v=2/users;x", "/api/users", false),
            "/users;x"
        );
        assert_eq!(strip.apply("/API/users", "/API/users", true), "/users");
        let strip = Rewrite::Prefix {
            prefix: "/api/".into(),
            with: String::new(),
        };
        assert_eq!(plain(&strip, "/api/"), "/");
        let swap = Rewrite::Prefix {
            prefix: "/v1".into(),
            with: "/internal/v2/".into(),
        };
        assert_eq!(plain(&swap, "/v1/users/7"), "/internal/v2/users/7");
        assert_eq!(plain(&Rewrite::Exact("/new".into()), "/old"), "/new");
        let re = Regex::new("^/u/([0-9]+)$").expect("regex");
        assert_eq!(
            Rewrite::Regex(re.clone(), "/users/$1".into()).apply("/u/42;p", "/u/42", false),
            "/users/42"
        );
        assert_eq!(plain(&Rewrite::Regex(re, "users".into()), "/u/1"), "/users");
    }
}
