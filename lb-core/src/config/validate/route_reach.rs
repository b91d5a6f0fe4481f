//! Where a route's rewritten paths land on its backends, against the paths other routes
//! guard there. A route that strips or rewrites its prefix can forward `/api/admin/x` as
//! `/admin/x`: if another route sends `/admin` to the same pool (or to another pool listing
//! the same backend) behind an auth policy the rewriting route lacks, the rewrite walks
//! around it. An aggregate part (a path template to its own pool) and a transcoding route (the
//! gRPC method paths of its services) are such rewrites too. lb cannot know what the backend
//! serves, so this is a warning, not an error. Pure; no I/O.

#[cfg(test)]
use super::super::aggregate_model::AggregatePart;
use super::super::aggregate_model::{Piece, Place, Template};
use super::super::diag::Diagnostic;
use super::super::model::*;
use super::super::raw::RawRoute;
use super::Ctx;

/// A set of backend paths, as far as the config says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Paths {
    /// Any path.
    All,
    /// This path and those below it by whole segments (`/admin`, `/admin/x`).
    Under(String),
    /// This path alone.
    Exact(String),
    /// Paths that begin with this text (what a regex pins down).
    StartsWith(String),
}

/// The paths a route forwards to its pool, if it rewrites them.
fn reach_of(r: &HttpRoute) -> Option<Paths> {
    match (&r.path, &r.rewrite) {
        (Some(RoutePath::Prefix(_)), _) if r.strip_prefix => Some(Paths::All),
        (Some(RoutePath::Prefix(_)), Some(with)) => Some(under(with)),
        (Some(RoutePath::Exact(_)), Some(with)) => Some(Paths::Exact(with.clone())),
        // `Regex::replace` swaps the match alone: unless it starts the path, the request's
        // own text before it goes on first (`/admin/old/x` as `/admin/new/x`).
        (Some(RoutePath::Regex(re)), Some(_)) if !anchored(re) => Some(Paths::All),
        // `$1`… can hold anything the request had: only the text before the first is fixed.
        (Some(RoutePath::Regex(_)), Some(with)) => {
            let fixed = with.split('$').next().unwrap_or("");
            Some(match fixed {
                "" | "/" => Paths::All,
                f => Paths::StartsWith(f.to_string()),
            })
        }
        _ => None,
    }
}

/// Every pool a route sends paths of its own making to, with those paths: its rewrite, each
/// aggregate part's template (fixed up to its first variable), each transcoded service's
/// method paths; and what makes them.
fn reaches(r: &HttpRoute) -> Vec<(usize, Paths, By)> {
    let mut out: Vec<_> = r
        .pool
        .zip(reach_of(r))
        .map(|(pool, paths)| (pool, paths, By::Rewrite))
        .into_iter()
        .collect();
    if let (Some(pool), Some(t)) = (r.pool, &r.grpc_transcode) {
        for svc in &t.services {
            out.push((pool, under(&format!("/{svc}")), By::Transcode));
        }
    }
    for (j, part) in r.aggregate.iter().enumerate() {
        out.push((part.pool, part_paths(&part.path), By::Part(j)));
    }
    out
}

/// What makes the paths of a [`reaches`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    /// The route's `rewrite` or `strip_prefix`.
    Rewrite,
    /// Aggregate part `j`'s path template.
    Part(usize),
    /// `grpc_transcode`'s method paths.
    Transcode,
}

/// The paths an aggregate part's template can ask for: its text up to the first variable
/// (exact if the path has none).
fn part_paths(t: &Template) -> Paths {
    let mut fixed = String::new();
    for piece in &t.pieces {
        match piece {
            Piece::Text(text) => match text.split_once('?') {
                Some((path, _)) => return Paths::Exact(format!("{fixed}{path}")),
                None => fixed.push_str(text),
            },
            Piece::Var(_, Place::Query) => return Paths::Exact(fixed),
            Piece::Var(_, Place::Path) => break,
        }
    }
    match fixed.as_str() {
        "" | "/" => Paths::All,
        _ if t.pieces.iter().all(|p| matches!(p, Piece::Text(_))) => Paths::Exact(fixed),
        _ => Paths::StartsWith(fixed),
    }
}

/// Whether every match of `re` starts the path: it begins with `^` and has no top-level
/// alternative that could do without it (`^/a|/b`; `^/(a|b)` is anchored).
fn anchored(re: &str) -> bool {
    if !re.starts_with('^') {
        return false;
    }
    let (mut depth, mut class, mut escaped) = (0usize, false, false);
    for c in re.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' if !class => class = true,
            ']' if class => class = false,
            _ if class => {}
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '|' if depth == 0 => return false,
            _ => {}
        }
    }
    true
}

fn under(prefix: &str) -> Paths {
    match prefix.trim_end_matches('/') {
        "" => Paths::All,
        p => Paths::Under(p.to_string()),
    }
}

/// The paths a route matches (what its policies guard on the backend).
fn guarded(r: &HttpRoute) -> Paths {
    match &r.path {
        None => Paths::All,
        Some(RoutePath::Prefix(p)) => under(p),
        Some(RoutePath::Exact(p)) => Paths::Exact(p.clone()),
        Some(RoutePath::Regex(re)) => match re.strip_prefix('^').filter(|_| anchored(re)) {
            // The literal text up to the first thing a regex gives meaning to, less a last
            // character a quantifier makes optional (`^/admins?` matches `/admin`).
            Some(anchored) => {
                let mut fixed: String = anchored
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || "/-_~".contains(*c))
                    .collect();
                if anchored[fixed.len()..].starts_with(['?', '*', '{']) {
                    fixed.pop();
                }
                match fixed.as_str() {
                    "" | "/" => Paths::All,
                    _ => Paths::StartsWith(fixed),
                }
            }
            None => Paths::All,
        },
    }
}

/// `path` is `base` or below it by whole segments.
fn below(base: &str, path: &str) -> bool {
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether the two sets share a path. Compared without ASCII case: many backends ignore it.
fn overlap(a: &Paths, b: &Paths) -> bool {
    use Paths::*;
    let low = |p: &Paths| match p {
        All => All,
        Under(s) => Under(s.to_ascii_lowercase()),
        Exact(s) => Exact(s.to_ascii_lowercase()),
        StartsWith(s) => StartsWith(s.to_ascii_lowercase()),
    };
    match (low(a), low(b)) {
        (All, _) | (_, All) => true,
        (Under(x), Under(y)) => below(&x, &y) || below(&y, &x),
        (Under(x), Exact(e)) | (Exact(e), Under(x)) => below(&x, &e),
        (Exact(x), Exact(y)) => x == y,
        (StartsWith(s), Exact(e)) | (Exact(e), StartsWith(s)) => e.starts_with(&s),
        (StartsWith(s), Under(x) | StartsWith(x)) | (Under(x), StartsWith(s)) => {
            x.starts_with(&s) || s.starts_with(&x)
        }
    }
}

fn is_auth(kind: &PolicyKind) -> bool {
    matches!(
        kind,
        PolicyKind::Jwt { .. }
            | PolicyKind::BasicAuth { .. }
            | PolicyKind::ApiKey { .. }
            | PolicyKind::IpFilter { .. }
    )
}

/// Whether pools `a` and `b` (indexes into `pools`) can send a request to the same backend:
/// the same pool, or two that list a backend address in common.
fn share_backends(pools: &[Option<Pool>], a: usize, b: usize) -> bool {
    a == b
        || match (pools.get(a), pools.get(b)) {
            (Some(Some(a)), Some(Some(b))) => a
                .backends
                .iter()
                .any(|x| b.backends.iter().any(|y| x.addr == y.addr)),
            _ => false,
        }
}

/// Warns for each rewriting route whose forwarded paths can land on paths another route to
/// the same backends guards with an auth policy the rewriting route does not apply.
pub(super) fn rewrites(
    cx: &mut Ctx<'_>,
    raw_routes: &[(RawRoute, std::ops::Range<usize>)],
    policies: &[Policy],
    pools: &[Option<Pool>],
    routes: &[HttpRoute],
) {
    // Spans come from the raw routes, which line up only when every route was valid.
    if routes.len() != raw_routes.len() {
        return;
    }
    for (i, (r, (rr, span))) in routes.iter().zip(raw_routes).enumerate() {
        for (pool, reach, by) in reaches(r) {
            let others = routes.iter().enumerate().filter(|&(j, _)| j != i);
            let same = |g: &HttpRoute| g.pool.is_some_and(|gp| share_backends(pools, gp, pool));
            for (_, g) in others.filter(|(_, g)| same(g)) {
                let missing: Vec<&str> = g
                    .policies
                    .iter()
                    .filter(|&&p| is_auth(&policies[p].kind) && !r.policies.contains(&p))
                    .map(|&p| policies[p].name.as_str())
                    .collect();
                // What `g` guards on the backend is where it forwards: its rewrite's paths if
                // it rewrites (`/admin` forwarded as `/internal/admin`), else those it matches.
                let guards = reach_of(g).unwrap_or_else(|| guarded(g));
                if missing.is_empty() || !overlap(&reach, &guards) {
                    continue;
                }
                let (key, at, what) = match (by, &rr.strip_prefix, &rr.rewrite) {
                    (By::Part(j), _, _) => {
                        let at = rr.aggregate.as_ref().map(|l| {
                            l.get_ref()
                                .get(j)
                                .map_or(l.span(), |p| p.get_ref().path.span())
                        });
                        let name = &r.aggregate[j].name;
                        (
                            format!("aggregate[{j}].path"),
                            at.unwrap_or_else(|| span.clone()),
                            format!("asks, in aggregate part \"{name}\", for paths"),
                        )
                    }
                    (By::Transcode, _, _) => (
                        "grpc_transcode".to_string(),
                        rr.grpc_transcode
                            .as_ref()
                            .map_or(span.clone(), |t| t.span()),
                        "calls gRPC method paths".to_string(),
                    ),
                    (By::Rewrite, _, Some(w)) => (
                        "rewrite".into(),
                        w.span(),
                        "forwards rewritten paths".into(),
                    ),
                    (By::Rewrite, Some(s), _) => (
                        "strip_prefix".into(),
                        s.span(),
                        "forwards rewritten paths".into(),
                    ),
                    (By::Rewrite, None, None) => (
                        "match".into(),
                        span.clone(),
                        "forwards rewritten paths".into(),
                    ),
                };
                let guard = g
                    .path
                    .as_ref()
                    .map_or("every path".to_string(), RoutePath::text);
                cx.push(
                    Diagnostic::warning(format!(
                        "route \"{}\" {what} that can reach {guard} on pool backends that route \"{}\" guards with {}, which route \"{}\" does not apply",
                        r.name,
                        g.name,
                        missing.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", "),
                        r.name
                    ))
                    .at(at)
                    .key(format!("route[{i}].{key}"))
                    .help(format!(
                        "give route \"{}\" backends of its own, paths that cannot reach {guard}, or the same policies",
                        r.name
                    )),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Paths::*;

    fn u(s: &str) -> Paths {
        Under(s.into())
    }

    #[test]
    fn overlaps_follow_whole_segments() {
        assert!(overlap(&All, &Exact("/x".into())));
        assert!(overlap(&u("/admin"), &u("/admin/x")));
        assert!(overlap(&u("/admin/x"), &u("/admin")));
        assert!(!overlap(&u("/admin"), &u("/administrator")));
        assert!(overlap(&u("/ADMIN"), &u("/admin")), "case is ignored");
        assert!(overlap(&u("/admin"), &Exact("/admin/users".into())));
        assert!(!overlap(&u("/admin"), &Exact("/adminx".into())));
        assert!(overlap(&Exact("/a".into()), &Exact("/A".into())));
        assert!(!overlap(&Exact("/a".into()), &Exact("/b".into())));
        assert!(overlap(&StartsWith("/adm".into()), &u("/admin")));
        assert!(overlap(&StartsWith("/admin/v".into()), &u("/admin")));
        assert!(!overlap(&StartsWith("/public".into()), &u("/admin")));
        assert!(overlap(&StartsWith("/ad".into()), &Exact("/admin".into())));
    }

    /// A route to pool 0 matching `path`, rewritten by `rewrite` or `strip` (its prefix).
    fn route(path: RoutePath, rewrite: Option<&str>, strip: bool) -> HttpRoute {
        HttpRoute {
            path: Some(path),
            rewrite: rewrite.map(str::to_string),
            strip_prefix: strip,
            name: "r".into(),
            listener: 0,
            host: None,
            methods: vec![],
            headers: vec![],
            pool: Some(0),
            aggregate: vec![],
            timeout: std::time::Duration::from_secs(60),
            retries: 0,
            max_body_size: None,
            policies: vec![],
            case_insensitive: false,
            upgrades: vec![],
            graphql: None,
            graphql_operation: None,
            grpc_transcode: None,
        }
    }

    #[test]
    fn fixed_parts_of_rewrites_and_regexes() {
        let p = |s: &str| RoutePath::Prefix(s.into());
        assert_eq!(reach_of(&route(p("/api"), None, true)), Some(All));
        assert_eq!(reach_of(&route(p("/api"), None, false)), None, "no rewrite");
        assert_eq!(
            reach_of(&route(p("/api"), Some("/v1/"), false)),
            Some(u("/v1"))
        );
        assert_eq!(reach_of(&route(p("/api"), Some("/"), false)), Some(All));
        let re = |s: &str| RoutePath::Regex(s.into());
        assert_eq!(
            reach_of(&route(re("^/u/(.*)"), Some("/users/$1"), false)),
            Some(StartsWith("/users/".into()))
        );
        assert_eq!(
            reach_of(&route(re("^/u/(.*)"), Some("/$1"), false)),
            Some(All)
        );
        assert_eq!(
            guarded(&route(re("^/admin/(.*)"), None, false)),
            StartsWith("/admin/".into())
        );
        assert_eq!(guarded(&route(re("admin"), None, false)), All, "unanchored");
        assert_eq!(guarded(&route(re("^(/a|/b)"), None, false)), All);
    }

    #[test]
    fn a_regex_that_can_match_past_the_start_keeps_the_text_before_it() {
        let route = |path, rewrite| route(path, rewrite, false);
        let re = |s: &str| RoutePath::Regex(s.into());
        // `Regex::replace` swaps the match only: `/admin/old/x` goes on as `/admin/new/x`.
        assert_eq!(
            reach_of(&route(re("/old/(.*)"), Some("/new/$1"))),
            Some(All),
            "unanchored"
        );
        assert_eq!(
            reach_of(&route(re("^/x|/old/(.*)"), Some("/new/$1"))),
            Some(All),
            "an alternative without the anchor"
        );
        // A route guards every path its regex matches, `/admin` for `^/admins?` too.
        let admins = guarded(&route(re("^/admins?"), None));
        assert!(overlap(&admins, &Exact("/admin".into())), "{admins:?}");
        assert!(anchored("^/(a|b)/[|]\\|x") && !anchored("^/a|/b") && !anchored("/a"));
        let admin_or_secret = guarded(&route(re("^/admin|^/secret"), None));
        assert!(
            overlap(&admin_or_secret, &u("/secret")),
            "{admin_or_secret:?}"
        );
    }

    #[test]
    fn aggregate_parts_and_transcoded_services_are_paths_of_the_routes_own() {
        let t = |s: &str| Template::parse(s).expect("template");
        assert_eq!(part_paths(&t("/admin/users")), Exact("/admin/users".into()));
        assert_eq!(
            part_paths(&t("/admin/users?id=${query.id}")),
            Exact("/admin/users".into())
        );
        assert_eq!(
            part_paths(&t("/admin/${jwt.sub}/x")),
            StartsWith("/admin/".into())
        );
        assert_eq!(part_paths(&t("/${jwt.sub}")), All);
        let mut r = route(RoutePath::Prefix("/me".into()), None, false);
        r.pool = None;
        r.aggregate = vec![AggregatePart {
            name: "a".into(),
            pool: 3,
            path: t("/admin/${header.x-id}"),
            timeout: std::time::Duration::from_secs(1),
            required: false,
        }];
        assert_eq!(
            reaches(&r),
            vec![(3, StartsWith("/admin/".into()), By::Part(0))]
        );
        let mut g = route(RoutePath::Prefix("/v1".into()), None, false);
        g.grpc_transcode = Some(GrpcTranscode {
            descriptor_set: FileRef {
                path: "api.pb".into(),
                key: "k".into(),
                span: 0..0,
            },
            services: vec!["pkg.Admin".into()],
            services_span: 0..0,
        });
        assert_eq!(reaches(&g), vec![(0, u("/pkg.Admin"), By::Transcode)]);
    }

    /// The warnings of a config with a guarded `/admin` (and `/pkg.Admin`) on pool "p" and
    /// `route`, which applies `policies`.
    fn warnings(route: &str, policies: &str) -> Vec<String> {
        let text = format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\
             [[route]]\nlistener = \"web\"\nname = \"admin\"\nmatch = {{ path_prefix = \"/admin\" }}\npool = \"p\"\npolicies = [\"staff\"]\n\
             [[route]]\nlistener = \"web\"\nname = \"grpc-admin\"\nmatch = {{ path_prefix = \"/pkg.Admin\" }}\npool = \"p\"\npolicies = [\"staff\"]\n\
             [[route]]\nlistener = \"web\"\nname = \"me\"\nmatch = {{ path_prefix = \"/me\" }}\npolicies = [{policies}]\n{route}\n\
             [policy.staff]\nkind = \"api_key\"\nkeys = [{{ name = \"s\", sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\" }}]\n\
             [[pool]]\nname = \"p\"\nhttp2 = true\nbackends = [{{ addr = \"127.0.0.1:9000\" }}]\n"
        );
        let loaded = crate::config::load_str("reach.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        let key = |w: &Diagnostic| w.key_path.clone().unwrap_or_default();
        loaded
            .warnings
            .iter()
            .map(|w| format!("{} @ {}", w.message, key(w)))
            .collect()
    }

    #[test]
    fn a_part_or_a_transcoded_service_reaching_a_guarded_path_is_warned_about() {
        let part = "aggregate = [{ name = \"who\", pool = \"p\", path = \"/admin/users/${header.x-id}\" }]";
        let w = warnings(part, "");
        assert!(
            w.iter().any(|w| w.contains("route \"me\" asks, in aggregate part \"who\", for paths that can reach path_prefix = \"/admin\"")
                && w.contains("route[2].aggregate[0].path")),
            "{w:#?}"
        );
        assert!(warnings(part, "\"staff\"")
            .iter()
            .all(|w| !w.contains("can reach")));
        let calls = "pool = \"p\"\ngrpc_transcode = { descriptor_set = \"api.pb\", services = [\"pkg.Admin\"] }";
        let w = warnings(calls, "");
        assert!(
            w.iter().any(|w| w.contains(
                "route \"me\" calls gRPC method paths that can reach path_prefix = \"/pkg.Admin\""
            )),
            "{w:#?}"
        );
        let other = calls.replace("pkg.Admin", "pkg.Public");
        assert!(
            warnings(&other, "")
                .iter()
                .all(|w| !w.contains("can reach")),
            "another service"
        );
    }
}
