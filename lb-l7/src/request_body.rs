//! What the general path reads of a request before routing it: a request that a `graphql`
//! route may take is read as GraphQL (its POST body whole, bounded), since the operation can
//! choose the route and key its rate limits; the body read goes on to the backend unchanged.
//! After routing, [`Gateway::graphql_gate`] holds the operation to the chosen route's limits.
//! I/O (reads the body).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{header, Method, Response};
use hyper::body::Incoming;

use crate::body::{answer, full, refuse, Meter};
use crate::gateway::{Gateway, RouteTarget};
use crate::graphql::request::{self as gql, Carrier};
use crate::graphql::{gate, Parsed, Refusal};
use crate::plan::Plan;
use crate::request::Facts;
use crate::router::RequestHead;
use crate::transform::Transform;
use crate::upstream::Body;

/// A request body: still arriving, or read whole before routing.
#[derive(Debug)]
pub(crate) enum Sent {
    Stream(Incoming),
    Read(Bytes),
}

impl Sent {
    /// The whole body, at most `limit` bytes (`Err(None)`: over it, `Err(Some)`: broken off).
    pub(crate) async fn whole(self, limit: u64) -> Result<Bytes, Option<String>> {
        match self {
            Self::Stream(s) => crate::body::read_whole(s, limit).await,
            Self::Read(b) if b.len() as u64 > limit => Err(None),
            Self::Read(b) => Ok(b),
        }
    }

    /// Whether the request carries a body (or one read whole that is not empty).
    pub(crate) fn has_body(&self) -> bool {
        use hyper::body::Body as _;
        match self {
            Self::Stream(s) => !s.is_end_stream(),
            Self::Read(b) => !b.is_empty(),
        }
    }

    /// The body as it goes on to the backend. One read whole goes as it was read, held to
    /// the route's size limit and to its transform's check, as a streamed one would be.
    pub(crate) async fn go_on(
        self,
        gw: &Gateway,
        target: &RouteTarget,
        up: &Parts,
        meter: &Arc<Meter>,
    ) -> Result<Body, Response<Body>> {
        let b = match self {
            Self::Stream(s) => return gw.request_body(target, up, s, meter).await,
            Self::Read(b) => b,
        };
        if let Some(max) = target.max_body.filter(|&m| b.len() as u64 > m) {
            return Err(refuse(
                413,
                &format!("request body over the limit of {max}"),
            ));
        }
        let checked = target
            .transform
            .as_deref()
            .filter(|t| t.checks(&up.method, !b.is_empty()));
        if let Some(t) = checked {
            if b.len() as u64 > t.max {
                return Err(refuse(
                    413,
                    &format!("request body over the {} bytes this route checks", t.max),
                ));
            }
        }
        whole_checked(checked, up, b, meter).map_err(|why| answer(400, &why))
    }
}

/// A body read whole, within its limits, as it goes on: held to the transform's check when
/// `checked` (the route's transform, when it checks this request), and counted. `Err`: why
/// the transform refuses it (a 400).
pub(crate) fn whole_checked(
    checked: Option<&Transform>,
    up: &Parts,
    b: Bytes,
    meter: &Meter,
) -> Result<Body, String> {
    if let Some(t) = checked {
        t.check(&up.headers, &b)?;
    }
    meter.request.fetch_add(b.len() as u64, Relaxed);
    meter.request_ended.store(true, Relaxed);
    Ok(full(b))
}

/// What [`Gateway::graphql_read`] found: the body as it goes on, and the operation.
pub(crate) type Read = (Sent, Option<Parsed>);

impl Gateway {
    /// Reads `body` as a GraphQL request when a `graphql` route may take the request: GET
    /// and POST (not upgrade asks, whose operations travel inside the socket). Refused
    /// (malformed, unsupported, too large) before routing: such a request is never
    /// forwarded, whichever route it would have taken.
    pub(crate) async fn graphql_read(
        &self,
        parts: &Parts,
        facts: &Facts<'_>,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<Read, Response<Body>> {
        let reads = self.graphql
            && facts.upgrade.is_none()
            && (parts.method == Method::GET || parts.method == Method::POST);
        let Some(candidate) = reads
            .then(|| self.graphql_candidate(parts, facts, headers))
            .flatten()
        else {
            return Ok((Sent::Stream(body), None));
        };
        let refused = |r: &Refusal| gate::refuse(&self.routes[candidate].name, r);
        let qs = parts.uri.query();
        // A field given twice could be read one way here and another way by the backend.
        let (ct, ce) = match (
            single(headers, header::CONTENT_TYPE),
            single(headers, header::CONTENT_ENCODING),
        ) {
            (Ok(ct), Ok(ce)) => (ct, ce),
            (Err(name), _) | (_, Err(name)) => {
                return Err(refused(&Refusal::Malformed(format!("{name} is repeated"))))
            }
        };
        let body = if parts.method == Method::POST {
            if facts.body.len().is_some_and(|n| n > gql::MAX_BODY as u64) {
                return Err(refused(&Refusal::TooLarge));
            }
            // Refused before a byte of the body is read.
            gql::post_head(qs, ct, ce).map_err(|r| refused(&r))?;
            let read = crate::body::read_whole(body, gql::MAX_BODY as u64);
            let b = match tokio::time::timeout(self.idle_timeout, read).await {
                Ok(Ok(b)) => b,
                Ok(Err(None)) => return Err(refused(&Refusal::TooLarge)),
                Ok(Err(Some(_))) => return Err(refuse(400, "the request body could not be read")),
                Err(_) => return Err(refuse(408, "the request body stopped arriving")),
            };
            Sent::Read(b)
        } else if !facts.body.is_empty() {
            // A server that reads a GET's body would run what lb did not look at.
            return Err(refused(&Refusal::Malformed(
                "a GET request has no body".into(),
            )));
        } else {
            Sent::Stream(body)
        };
        let carrier = match &body {
            Sent::Read(b) => Carrier::Post {
                query: qs,
                content_type: ct,
                content_encoding: ce,
                body: b,
            },
            Sent::Stream(_) => Carrier::Get { query: qs },
        };
        let parsed = gql::extract(carrier)
            .and_then(|r| Parsed::parse(&r))
            .map_err(|r| refused(&r))?;
        Ok((body, Some(parsed)))
    }

    /// The most specific route whose conditions on the head (all but the operation) hold
    /// for the request, by index into `routes`, if it is a `graphql` route (a plain,
    /// aggregate or transcoding route more specific than it takes the request unread).
    fn graphql_candidate(
        &self,
        parts: &Parts,
        facts: &Facts<'_>,
        headers: &http::HeaderMap,
    ) -> Option<usize> {
        // As the plan will route it; a path the plan refuses is refused there.
        let path = crate::path::normalized(parts.uri.path(), self.escaped_slashes).ok()?;
        let routed = crate::path::routed(&path).ok()?;
        let head = RequestHead {
            method: &parts.method,
            host: facts.authority,
            path: &routed,
            headers,
            graphql: None,
        };
        self.router
            .may_match(&head, |&i| self.routes[i].graphql.is_some())
            .copied()
    }

    /// Holds the request to its route's GraphQL limits: the answer to a request refused.
    /// Without an operation, a `graphql`
    /// route takes only what carries none: a WebSocket handshake it allows (subscriptions;
    /// lb does not look inside the socket) and a CORS preflight.
    pub(crate) fn graphql_gate(
        &self,
        target: &RouteTarget,
        plan: &Plan<'_, '_>,
        method: &Method,
        parsed: Option<&Parsed>,
    ) -> Option<Response<Body>> {
        let limits = target.graphql.as_ref()?;
        let verdict = match parsed {
            Some(p) => p.check(limits),
            None if plan.upgrade.is_some() && gql::names_operation(plan.query) => {
                Err(Refusal::Malformed(
                    "a WebSocket upgrade carries its operations in the socket".into(),
                ))
            }
            // A backend that declines the upgrade answers the request as a plain one: only
            // a handshake (an HTTP/1.1 GET without a body, or HTTP/2's extended CONNECT,
            // whose stream is the socket) carries nothing it could run.
            None if plan.upgrade.is_some()
                && (*method == Method::CONNECT
                    || *method == Method::GET && plan.body.is_empty()) =>
            {
                Ok(())
            }
            None if plan.upgrade.is_some() => Err(Refusal::Malformed(
                "a WebSocket upgrade is a GET without a body".into(),
            )),
            None if *method == Method::OPTIONS && plan.body.is_empty() => Ok(()),
            None if *method == Method::GET || *method == Method::POST => Err(Refusal::Malformed(
                "an upgrade this route does not allow".into(),
            )),
            None => Err(Refusal::Method),
        };
        verdict.err().map(|r| gate::refuse(&target.name, &r))
    }
}

/// The one value of field `name`, if any; `Err(name)` when it is given more than once.
fn single(
    headers: &http::HeaderMap,
    name: header::HeaderName,
) -> Result<Option<&[u8]>, header::HeaderName> {
    let mut all = headers.get_all(&name).iter();
    match (all.next(), all.next()) {
        (first, None) => Ok(first.map(|v| v.as_bytes())),
        _ => Err(name),
    }
}
