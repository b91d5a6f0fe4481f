//! The decisions about one request, made once and by this code alone for both HTTP paths:
//! its path as routed, its route and pool, its size limit, the upgrade it may make, the
//! backend key and sticky backend, the path and `Host` it is forwarded with, and whether it
//! may be sent twice. The lean path and the general path differ only in how they move the
//! bytes of a plan. Pure but for reading the pools' live state for a sticky cookie.

use std::borrow::Cow;

use http::{HeaderMap, Method, Uri};

use crate::balance::{self, Keys};
use crate::gateway::{Gateway, PoolTarget, RouteTarget};
use crate::path;
use crate::request::{Body, Facts, Refusal};
use crate::router::RequestHead;

/// One request's plan.
#[derive(Debug, Clone)]
pub struct Plan<'g, 'a> {
    pub target: &'g RouteTarget,
    /// The route's pool; `None` for an aggregate route, whose parts have their own plans
    /// ([`Gateway::part_plan`]).
    pub pt: Option<&'g PoolTarget>,
    /// The normalised path, `;parameters` and all: what policies, caches and logs see.
    pub path: Cow<'a, str>,
    /// The path as the route rewrites it, when it does.
    pub rewritten: Option<String>,
    pub query: Option<&'a str>,
    /// What lb writes as `Host` (`None` only for an HTTP/2 request without an authority).
    pub authority: Option<&'a str>,
    pub body: Body,
    /// The client closes after this exchange.
    pub close: bool,
    /// The protocol the request switches to, if the route allows it; other upgrade asks go
    /// on as plain requests without their upgrade fields.
    pub upgrade: Option<&'a str>,
    /// Consistent-hash key (0 for other algorithms).
    pub key: u64,
    /// The backend a sticky cookie names, if it may serve.
    pub sticky: Option<usize>,
    /// Idempotent and without a body: may be sent again after it left.
    pub replayable: bool,
    /// The request is someone's: it carried `Authorization`, or a policy of its route admits
    /// requests only by a credential. Decided here, before policies run (they may remove the
    /// credential), so what one user was sent is never cached for another. Said only for a
    /// route with a cache, the one reader (`false` elsewhere): such routes take the general
    /// path, which plans with every field, never the lean path, which may plan without them.
    pub authenticated: bool,
    /// The `X-Request-Id` lb forwards, returns and logs (`None`: `request_id = "off"`).
    pub request_id: Option<crate::request_id::RequestId>,
    /// The trace context lb forwards (`None`: no `[tracing]`, the client's fields pass as
    /// they came).
    pub trace: Option<crate::trace::Hop>,
}

impl Plan<'_, '_> {
    /// The path the backend gets.
    pub fn forward_path(&self) -> &str {
        self.rewritten.as_deref().unwrap_or(&self.path)
    }
}

/// A request lb answers itself, with the route it matched when it got that far.
pub type Refused<'g> = (Option<&'g RouteTarget>, Refusal);

/// What the plan needs beyond the head's facts.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r, 'a> {
    pub method: &'r Method,
    pub uri: &'a Uri,
    /// The request's fields (after the hop-by-hop ones left), for header conditions and keys.
    pub headers: &'r HeaderMap,
    /// The client's address and port (after a PROXY header).
    pub client: std::net::SocketAddr,
    pub sni: Option<&'r str>,
    /// The GraphQL operation, on a listener with `graphql` routes ([`crate::request_body`]).
    pub graphql: Option<&'r crate::graphql::Parsed>,
}

impl Gateway {
    /// Plans a request whose head passed [`crate::request::inspect`].
    pub fn plan<'g, 'a>(
        &'g self,
        req: Request<'_, 'a>,
        facts: &Facts<'a>,
    ) -> Result<Plan<'g, 'a>, Refused<'g>> {
        let path = path::normalized(req.uri.path(), self.escaped_slashes)
            .map_err(|e| (None, Refusal::BadPath(e)))?;
        let routed = path::routed(&path).map_err(|e| (None, Refusal::BadPath(e)))?;
        let target = self
            .router
            .route(&RequestHead {
                method: req.method,
                host: facts.authority,
                path: &routed,
                headers: req.headers,
                graphql: req.graphql,
            })
            .map(|&i| &self.routes[i])
            .or(self.default.as_ref())
            .ok_or((None, Refusal::NoRoute))?;
        let pt = match target.pool {
            Some(p) => match self.pools.get(p) {
                Some(Some(pt)) => Some(pt),
                _ => return Err((Some(target), Refusal::NoPool)),
            },
            None => None,
        };
        // A CORS preflight goes on to the route's policies, which answer it (else the
        // aggregate route refuses it as any other method).
        let preflight = *req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            && facts.body.is_empty();
        if target.aggregate.is_some()
            && !matches!(*req.method, Method::GET | Method::HEAD)
            && !preflight
        {
            return Err((Some(target), Refusal::MethodNotAllowed));
        }
        if let (Some(max), Some(len)) = (target.max_body, facts.body.len()) {
            if len > max {
                return Err((Some(target), Refusal::BodyTooLarge { len, max }));
            }
        }
        let upgrade = facts.upgrade.filter(|p| allowed(&target.upgrades, p));
        if upgrade.is_none() && facts.upgrade.is_some() && *req.method == Method::CONNECT {
            // An HTTP/2 extended CONNECT cannot go on as a plain request.
            return Err((Some(target), Refusal::UpgradeRefused));
        }
        let (key, sticky) = pt.map_or((0, None), |pt| pick_by(pt, &req, &routed));
        let rewritten = target
            .rewrite
            .as_ref()
            .map(|r| r.apply(&path, &routed, target.case_insensitive));
        Ok(Plan {
            target,
            pt,
            rewritten,
            query: req.uri.query(),
            authority: facts.authority,
            body: facts.body,
            close: facts.close,
            upgrade,
            key,
            sticky,
            replayable: req.method.is_idempotent() && facts.body.is_empty(),
            authenticated: target.cache.is_some()
                && (target.authenticates || req.headers.contains_key(http::header::AUTHORIZATION)),
            path,
            request_id: crate::request_id::decide(self.request_id, facts.request_id, self.ids),
            trace: self
                .tracing
                .is_some()
                .then(|| crate::trace::decide(facts.traceparent, facts.tracestate, self.ids)),
        })
    }
}

/// The consistent-hash key and the sticky backend of a request to `pt` whose routed path
/// is `path`.
fn pick_by(pt: &PoolTarget, req: &Request<'_, '_>, path: &str) -> (u64, Option<usize>) {
    let sticky = pt
        .sticky
        .as_ref()
        .and_then(|(name, values)| balance::sticky_backend(&pt.pool, values, req.headers, name));
    let key = balance::key(
        &pt.pool,
        &Keys {
            client: req.client,
            sni: req.sni,
            path,
            headers: req.headers,
        },
    );
    (key, sticky)
}

impl Gateway {
    /// The plan of one part of an aggregate request planned as `plan`: a GET of `path` and
    /// `query` (the part's rendered template) to `pt`, keyed and stuck as a request of that
    /// path would be, with the request's authority, request ID and trace context. No body,
    /// no upgrade; always replayable.
    pub fn part_plan<'g, 'p>(
        &self,
        plan: &Plan<'g, 'p>,
        pt: &'g PoolTarget,
        req: Request<'_, '_>,
        path: &'p str,
        query: Option<&'p str>,
    ) -> Plan<'g, 'p> {
        let (key, sticky) = pick_by(pt, &req, path);
        Plan {
            target: plan.target,
            pt: Some(pt),
            path: Cow::Borrowed(path),
            rewritten: None,
            query,
            authority: plan.authority,
            body: Body::None,
            close: false,
            upgrade: None,
            key,
            sticky,
            replayable: true,
            authenticated: false,
            request_id: plan.request_id,
            trace: plan.trace,
        }
    }
}

/// Whether a route that allows `upgrades` (lowercase) lets a client switch to `protocol`
/// (`websocket`, or a version of it such as `websocket/13`).
fn allowed(upgrades: &[String], protocol: &str) -> bool {
    let name = protocol.split('/').next().unwrap_or(protocol).trim();
    upgrades.iter().any(|u| u.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_protocols_may_upgrade() {
        let ws = vec!["websocket".to_string()];
        assert!(allowed(&ws, "websocket"));
        assert!(allowed(&ws, "WebSocket/13"));
        assert!(!allowed(&ws, "h2c"));
        assert!(!allowed(&[], "websocket"));
    }
}
