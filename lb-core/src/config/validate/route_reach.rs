//! Where a route's rewritten paths land on its backends, against the paths other routes
//! guard there. A route that strips or rewrites its prefix can forward `/api/admin/x` as
//! `/admin/x`: if another route sends `/admin` to the same pool (or to another pool listing
//! the same backend) behind an auth policy the rewriting route lacks, the rewrite walks
//! around it. lb cannot know what the backend serves, so this is a warning, not an error.
//! Pure; no I/O.

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
        // An aggregate route rewrites nothing; one that guards is not compared here.
        let (Some(reach), Some(pool)) = (reach_of(r), r.pool) else {
            continue;
        };
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
            let (key, at) = match (&rr.strip_prefix, &rr.rewrite) {
                (_, Some(w)) => ("rewrite", w.span()),
                (Some(s), _) => ("strip_prefix", s.span()),
                _ => ("match", span.clone()),
            };
            let guard = g
                .path
                .as_ref()
                .map_or("every path".to_string(), RoutePath::text);
            cx.push(
                Diagnostic::warning(format!(
                    "route \"{}\" forwards rewritten paths that can reach {guard} on pool backends that route \"{}\" guards with {}, which route \"{}\" does not apply",
                    r.name,
                    g.name,
                    missing.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", "),
                    r.name
                ))
                .at(at)
                .key(format!("route[{i}].{key}"))
                .help(format!(
                    "give route \"{}\" backends of its own, a rewrite that cannot reach {guard}, or the same policies",
                    r.name
                )),
            );
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
}
