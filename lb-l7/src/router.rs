//! The route table: which `[[route]]` of a listener a request belongs to. Pure.
//!
//! A route matches when every condition it has holds: host (exact, or `*.suffix` for any
//! name below the suffix), path (exact, prefix on segment boundaries, or regex), method, and
//! header values. Among the routes that match, the most specific wins, compared in this
//! order (nginx's `server_name` then `location` precedence, extended):
//! 1. host: exact name > longer wildcard suffix > shorter wildcard suffix > no host condition;
//! 2. path: exact > longer prefix > shorter prefix > regex > no path condition;
//! 3. more header conditions > fewer;
//! 4. GraphQL operation: a name > a type (`query`, `mutation`, `subscription`) > none;
//! 5. a method condition > none.
//!
//! Equally specific routes are tried in config order. Paths are matched in their normalised
//! form without `;parameters` ([`crate::path::routed`]), ignoring ASCII case where the route
//! says `case = "insensitive"`; hosts lowercased, without port or trailing dot.

use http::{HeaderMap, Method};
use lb_core::config::GraphqlOperation;
use regex::Regex;

use crate::graphql::Parsed;

/// A route's host condition.
#[derive(Debug, Clone)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: the suffix with its leading dot, `.example.com`.
    Suffix(String),
}

/// A route's path condition.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Matches the prefix itself and anything below it on a segment boundary: `/users`
    /// takes `/users` and `/users/7`, not `/usersettings` (a prefix ending in `/` takes what
    /// starts with it).
    Prefix(String),
    Regex(Regex),
}

/// One route's conditions, as compiled from the config.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    /// Empty = any method.
    pub methods: Vec<Method>,
    /// Header name (lowercase) and the exact value it must have.
    pub headers: Vec<(http::HeaderName, String)>,
    /// The path condition ignores ASCII case.
    pub case_insensitive: bool,
    /// `match.graphql_operation`: only a request parsed as GraphQL can match it.
    pub graphql_operation: Option<GraphqlOperation>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("host pattern \"{0}\": only a leading \"*.\" wildcard is allowed")]
    BadHost(String),
    #[error("path_regex \"{0}\": {1}")]
    BadRegex(String, String),
    #[error("path \"{0}\" must start with '/'")]
    BadPath(String),
}

impl HostMatch {
    /// `a.example.com` or `*.example.com`.
    pub fn parse(pattern: &str) -> Result<Self, RouteError> {
        let p = pattern.trim_end_matches('.').to_ascii_lowercase();
        match p.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 && !rest.contains('*') => {
                Ok(Self::Suffix(rest.to_string()))
            }
            Some(_) => Err(RouteError::BadHost(pattern.to_string())),
            None if p.is_empty() || p.contains('*') => {
                Err(RouteError::BadHost(pattern.to_string()))
            }
            None => Ok(Self::Exact(p)),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(h) => (2, h.len()),
            Self::Suffix(s) => (1, s.len()),
        }
    }
}

impl PathMatch {
    pub fn exact(path: &str) -> Result<Self, RouteError> {
        check_path(path).map(|p| Self::Exact(p.to_string()))
    }

    pub fn prefix(path: &str) -> Result<Self, RouteError> {
        check_path(path).map(|p| Self::Prefix(p.to_string()))
    }

    pub fn regex(pattern: &str) -> Result<Self, RouteError> {
        Regex::new(pattern)
            .map(Self::Regex)
            .map_err(|e| RouteError::BadRegex(pattern.to_string(), e.to_string()))
    }

    /// Whether `path` (normalised, without `;parameters`) matches; `ci`: ignoring ASCII
    /// case (a regex built for that already ignores it).
    fn matches(&self, path: &str, ci: bool) -> bool {
        let same = |a: &str, b: &str| {
            if ci {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match self {
            Self::Exact(p) => same(p, path),
            Self::Prefix(p) => {
                path.get(..p.len()).is_some_and(|head| same(head, p))
                    && (p.ends_with('/')
                        || path.len() == p.len()
                        || path.as_bytes().get(p.len()) == Some(&b'/'))
            }
            Self::Regex(r) => r.is_match(path),
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(p) => (3, p.len()),
            Self::Prefix(p) => (2, p.len()),
            Self::Regex(_) => (1, 0),
        }
    }
}

fn check_path(path: &str) -> Result<&str, RouteError> {
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err(RouteError::BadPath(path.to_string()))
    }
}

/// What routing looks at in a request.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// From `:authority` or `Host`, any case, port allowed.
    pub host: Option<&'a str>,
    /// Normalised, without `;parameters` ([`crate::path::routed`]).
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The GraphQL operation, when the request was parsed as one (see [`crate::graphql`]).
    pub graphql: Option<&'a Parsed>,
}

/// Lowercase, without `:port` (IPv6 literals keep their brackets) or a trailing dot.
pub fn host_of(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        authority
            .split_once(']')
            .map_or(authority, |(h, _)| h)
            .to_string()
            + "]"
    } else {
        authority.split(':').next().unwrap_or(authority).to_string()
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Conditions {
    fn matches(&self, req: &RequestHead<'_>, host: Option<&str>) -> bool {
        self.graphql_operation
            .as_ref()
            .is_none_or(|want| req.graphql.is_some_and(|p| p.matches(want)))
            && self.matches_http(req, host)
    }

    /// The conditions on the HTTP head alone (all but the GraphQL operation).
    fn matches_http(&self, req: &RequestHead<'_>, host: Option<&str>) -> bool {
        if let Some(h) = &self.host {
            if !host.is_some_and(|host| h.matches(host)) {
                return false;
            }
        }
        if let Some(p) = &self.path {
            if !p.matches(req.path, self.case_insensitive) {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        self.headers.iter().all(|(name, want)| {
            req.headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v == want))
        })
    }

    /// Larger is more specific; see the module documentation for the order.
    fn specificity(&self) -> ((u8, usize), (u8, usize), usize, u8, bool) {
        (
            self.host.as_ref().map_or((0, 0), HostMatch::rank),
            self.path.as_ref().map_or((0, 0), PathMatch::rank),
            self.headers.len(),
            match &self.graphql_operation {
                None => 0,
                Some(GraphqlOperation::Named(_)) => 2,
                Some(_) => 1,
            },
            !self.methods.is_empty(),
        )
    }
}

/// A listener's routes, ordered most specific first (stable, so ties keep config order).
#[derive(Debug, Clone)]
pub struct Router<T> {
    routes: Vec<(Conditions, T)>,
    /// Some route has a host condition (else the host is not looked at).
    hosts: bool,
}

impl<T> Router<T> {
    pub fn new(routes: Vec<(Conditions, T)>) -> Self {
        let mut routes = routes;
        routes.sort_by_key(|(c, _)| std::cmp::Reverse(c.specificity()));
        let hosts = routes.iter().any(|(c, _)| c.host.is_some());
        Self { routes, hosts }
    }

    /// The most specific route matching `req`, if any.
    pub fn route(&self, req: &RequestHead<'_>) -> Option<&T> {
        let host = req.host.filter(|_| self.hosts).map(host_of);
        self.routes
            .iter()
            .find(|(c, _)| c.matches(req, host.as_deref()))
            .map(|(_, t)| t)
    }

    /// The most specific route that would match `req` as far as its conditions other than
    /// the GraphQL operation go, if `want` holds for it: then the request must be read as
    /// GraphQL before it can be routed. A more specific route for which `want` does not
    /// hold (so without an operation condition) takes the request whatever it carries.
    pub fn may_match(&self, req: &RequestHead<'_>, want: impl Fn(&T) -> bool) -> Option<&T> {
        let host = req.host.filter(|_| self.hosts).map(host_of);
        self.routes
            .iter()
            .find(|(c, _)| c.matches_http(req, host.as_deref()))
            .map(|(_, t)| t)
            .filter(|t| want(t))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cond(host: Option<&str>, path: Option<PathMatch>) -> Conditions {
        Conditions {
            host: host.map(|h| HostMatch::parse(h).expect("host")),
            path,
            ..Conditions::default()
        }
    }

    fn get<'a>(r: &'a Router<&'static str>, host: &str, path: &str) -> Option<&'a str> {
        get_with(r, &Method::GET, host, path, &HeaderMap::new())
    }

    fn get_with<'a>(
        r: &'a Router<&'static str>,
        method: &Method,
        host: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<&'a str> {
        r.route(&RequestHead {
            method,
            host: Some(host),
            path,
            headers,
            graphql: None,
        })
        .copied()
    }

    #[test]
    fn host_precedence_exact_then_longest_wildcard_then_none() {
        let r = Router::new(vec![
            (cond(None, None), "any"),
            (cond(Some("*.example.com"), None), "wild"),
            (cond(Some("*.api.example.com"), None), "wild-api"),
            (cond(Some("v1.api.example.com"), None), "exact"),
        ]);
        assert_eq!(get(&r, "V1.API.example.com:8443", "/"), Some("exact"));
        assert_eq!(get(&r, "v2.api.example.com", "/"), Some("wild-api"));
        assert_eq!(get(&r, "www.example.com.", "/"), Some("wild"));
        assert_eq!(get(&r, "example.com", "/"), Some("any"));
        assert_eq!(get(&r, "other.test", "/"), Some("any"));
    }

    #[test]
    fn path_precedence_exact_then_longest_prefix_then_regex() {
        let r = Router::new(vec![
            (
                cond(None, Some(PathMatch::regex("^/users/[0-9]+$").expect("re"))),
                "regex",
            ),
            (cond(None, Some(PathMatch::prefix("/").expect("p"))), "root"),
            (
                cond(None, Some(PathMatch::prefix("/users").expect("p"))),
                "users",
            ),
            (
                cond(None, Some(PathMatch::prefix("/users/admin").expect("p"))),
                "admin",
            ),
            (
                cond(None, Some(PathMatch::exact("/users/me").expect("p"))),
                "me",
            ),
        ]);
        assert_eq!(get(&r, "h", "/users/me"), Some("me"));
        assert_eq!(get(&r, "h", "/users/admin/x"), Some("admin"));
        assert_eq!(get(&r, "h", "/users/7"), Some("users"));
        assert_eq!(get(&r, "h", "/users"), Some("users"));
        // A prefix stops at segment boundaries.
        assert_eq!(get(&r, "h", "/usersettings"), Some("root"));
        assert_eq!(get(&r, "h", "/x"), Some("root"));
    }

    #[test]
    fn regex_beats_no_condition_and_ties_keep_config_order() {
        let r = Router::new(vec![
            (cond(None, None), "catch-all"),
            (
                cond(None, Some(PathMatch::regex("^/v[0-9]+/").expect("re"))),
                "first",
            ),
            (
                cond(None, Some(PathMatch::regex("^/v2/").expect("re"))),
                "second",
            ),
        ]);
        assert_eq!(get(&r, "h", "/v2/x"), Some("first"));
        assert_eq!(get(&r, "h", "/x"), Some("catch-all"));
    }

    #[test]
    fn host_outranks_path_and_headers_and_methods_break_ties() {
        let mut v2 = HeaderMap::new();
        v2.insert("x-api-version", "2".parse().expect("value"));
        let r = Router::new(vec![
            (
                cond(None, Some(PathMatch::exact("/users").expect("p"))),
                "path-only",
            ),
            (
                cond(
                    Some("api.example.com"),
                    Some(PathMatch::prefix("/").expect("p")),
                ),
                "host",
            ),
            (
                Conditions {
                    headers: vec![(http::HeaderName::from_static("x-api-version"), "2".into())],
                    ..cond(
                        Some("api.example.com"),
                        Some(PathMatch::prefix("/").expect("p")),
                    )
                },
                "host-v2",
            ),
            (
                Conditions {
                    methods: vec![Method::POST],
                    ..cond(
                        Some("api.example.com"),
                        Some(PathMatch::prefix("/").expect("p")),
                    )
                },
                "host-post",
            ),
        ]);
        let none = HeaderMap::new();
        assert_eq!(
            get_with(&r, &Method::GET, "api.example.com", "/users", &none),
            Some("host")
        );
        assert_eq!(
            get_with(&r, &Method::GET, "api.example.com", "/users", &v2),
            Some("host-v2")
        );
        assert_eq!(
            get_with(&r, &Method::POST, "api.example.com", "/users", &none),
            Some("host-post")
        );
        assert_eq!(
            get_with(&r, &Method::GET, "other", "/users", &none),
            Some("path-only")
        );
        assert_eq!(get_with(&r, &Method::GET, "other", "/nothing", &none), None);
    }

    #[test]
    fn case_insensitive_routes_take_any_spelling_of_their_path() {
        let ci = |path| Conditions {
            path: Some(path),
            case_insensitive: true,
            ..Conditions::default()
        };
        let r = Router::new(vec![
            (ci(PathMatch::prefix("/private").expect("p")), "private"),
            (ci(PathMatch::exact("/Login").expect("p")), "login"),
            (
                cond(None, Some(PathMatch::prefix("/Strict").expect("p"))),
                "strict",
            ),
            (cond(None, None), "rest"),
        ]);
        assert_eq!(get(&r, "h", "/PRIVATE/x"), Some("private"));
        assert_eq!(get(&r, "h", "/PrIvAtE"), Some("private"));
        assert_eq!(get(&r, "h", "/privatex"), Some("rest"));
        assert_eq!(get(&r, "h", "/login"), Some("login"));
        assert_eq!(get(&r, "h", "/strict"), Some("rest"));
        assert_eq!(get(&r, "h", "/Strict/a"), Some("strict"));
        // Non-ASCII at the prefix's end is not a char boundary: no match, no panic.
        assert_eq!(get(&r, "h", "/privat\u{e9}"), Some("rest"));
    }

    #[test]
    fn host_patterns_are_checked() {
        for bad in ["", "*", "*.", "a.*.com", "*example.com", "**.a.com"] {
            assert!(HostMatch::parse(bad).is_err(), "{bad}");
        }
        assert!(PathMatch::prefix("users").is_err());
        assert!(PathMatch::regex("(").is_err());
        assert_eq!(host_of("[::1]:8080"), "[::1]");
        assert_eq!(host_of("Example.COM."), "example.com");
    }

    #[test]
    fn graphql_operations_route_by_name_then_type_and_only_when_parsed() {
        let op = |o: GraphqlOperation| Conditions {
            graphql_operation: Some(o),
            ..cond(None, Some(PathMatch::exact("/g").expect("p")))
        };
        // Config order puts the plain route first; specificity still wins.
        let r = Router::new(vec![
            (cond(None, Some(PathMatch::exact("/g").expect("p"))), "any"),
            (op(GraphqlOperation::Mutation), "mutation"),
            (op(GraphqlOperation::Named("Report".into())), "report"),
        ]);
        let h = HeaderMap::new();
        let parse = |doc: &str| {
            let req = crate::graphql::request::GraphqlRequest {
                query: doc.into(),
                operation_name: None,
            };
            Parsed::parse(&req).expect("parses")
        };
        let at = |p: Option<&Parsed>| {
            let head = RequestHead {
                method: &Method::POST,
                host: None,
                path: "/g",
                headers: &h,
                graphql: p,
            };
            (
                r.route(&head).copied(),
                r.may_match(&head, |&t| t != "any").copied(),
            )
        };
        assert_eq!(
            at(Some(&parse("mutation { a }"))),
            (Some("mutation"), Some("report"))
        );
        assert_eq!(at(Some(&parse("mutation Report { a }"))).0, Some("report"));
        assert_eq!(at(Some(&parse("query Report { a }"))).0, Some("report"));
        assert_eq!(at(Some(&parse("{ a }"))).0, Some("any"));
        assert_eq!(
            at(None).0,
            Some("any"),
            "unparsed requests match no operation condition"
        );
    }

    proptest! {
        /// Whatever the config order, the route chosen is the same: only ties (which this
        /// table has none of) depend on order.
        #[test]
        fn choice_does_not_depend_on_config_order(
            order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(),
            seg in "[a-z]{1,6}",
            host in prop::sample::select(vec!["a.example.com", "b.example.com", "example.com", "x.y"]),
        ) {
            let all: Vec<(Conditions, usize)> = vec![
                (cond(None, None), 0),
                (cond(Some("*.example.com"), None), 1),
                (cond(Some("a.example.com"), None), 2),
                (cond(None, Some(PathMatch::prefix("/api").expect("p"))), 3),
                (cond(Some("*.example.com"), Some(PathMatch::prefix("/api").expect("p"))), 4),
                (cond(None, Some(PathMatch::exact("/api/x").expect("p"))), 5),
            ];
            let reference = Router::new(all.clone());
            let shuffled = Router::new(order.iter().map(|&i| all[i].clone()).collect());
            let h = HeaderMap::new();
            for path in [format!("/{seg}"), format!("/api/{seg}"), "/api/x".to_string()] {
                let req = RequestHead { method: &Method::GET, host: Some(host), path: &path, headers: &h, graphql: None };
                prop_assert_eq!(reference.route(&req), shuffled.route(&req));
            }
        }
    }
}
