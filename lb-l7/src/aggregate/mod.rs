//! Aggregate routes (SPEC §6 `aggregate`): one GET or HEAD answered with one JSON object
//! built from concurrent GETs to the route's parts. The route's policies run once, on the
//! incoming request (auth, rate limit, CORS…; their response phase on the answer); then
//! every part's template is filled ([`template`]) and its request planned by the same code
//! as any request ([`Gateway::part_plan`], [`Gateway::upstream_parts`]: forwarding fields,
//! `Host`, request ID, trace context), all parts are sent at once ([`part`]), and their
//! outcomes are put together ([`assemble`]).
//!
//! Aggregate routes take the general path only: the lean path relays one backend's bytes.
//!
//! Bounds: at most [`lb_core::config::MAX_PARTS`] parts a request, [`assemble::MAX_PART_BODY`]
//! bytes read of each part's body, and [`MAX_IN_FLIGHT`] parts a route: a request takes a slot
//! for each of its parts, all at once, before sending any, and holds them until its answer has
//! left (or is dropped with its client), so the part bodies a route holds, read or assembled,
//! are bounded too, however slowly clients read (a request that finds no slots within its
//! longest part timeout is answered 503).

pub mod assemble;
mod part;
pub mod template;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response};
use lb_core::config::{HttpRoute, Template};

use crate::body::{answer, full, refuse};
use crate::conn_info::ConnInfo;
use crate::exchange::Began;
use crate::gateway::Gateway;
use crate::plan::{self, Plan};
use crate::policy::{self, RequestInfo};
use crate::request::{Body as Framing, Facts};
use crate::upstream::Body;
use assemble::{Kind, Outcome, PartError};
use template::Source;

/// Parts of one route in flight at once, across all its requests: with
/// [`assemble::MAX_PART_BODY`], at most 1 GiB of part bodies held by one route (only if
/// every part answers the largest body lb reads).
pub const MAX_IN_FLIGHT: usize = 1024;

/// An aggregate route's parts, compiled.
#[derive(Debug)]
pub struct Aggregate {
    pub parts: Vec<Part>,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

/// One part, compiled.
#[derive(Debug)]
pub struct Part {
    pub name: String,
    /// Index into the config's pools.
    pub pool: usize,
    pub path: Template,
    pub timeout: Duration,
    pub required: bool,
    /// `lb_aggregate_parts_total{listener,route,part,outcome}` by [`Kind::LABELS`].
    outcomes: [metrics::Counter; 7],
}

impl Aggregate {
    /// The parts of route `r` on listener `listener`.
    pub fn new(listener: &str, r: &HttpRoute) -> Self {
        let parts = r
            .aggregate
            .iter()
            .map(|p| Part {
                name: p.name.clone(),
                pool: p.pool,
                path: p.path.clone(),
                timeout: p.timeout,
                required: p.required,
                outcomes: Kind::LABELS.map(|outcome| {
                    metrics::counter!("lb_aggregate_parts_total", "listener" => listener.to_string(), "route" => r.name.clone(), "part" => p.name.clone(), "outcome" => outcome)
                }),
            })
            .collect();
        Self {
            parts,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// A slot for each part, taken all at once (one by one, requests could each hold some
    /// and wait on each other), waiting at most the longest part timeout; tokio's semaphore
    /// serves waiters in order, so a request of many parts is not starved by smaller ones.
    async fn slots(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let wait = self
            .parts
            .iter()
            .map(|p| p.timeout)
            .max()
            .unwrap_or_default();
        let n = u32::try_from(self.parts.len()).unwrap_or(u32::MAX);
        let slots = self.slots.clone();
        match tokio::time::timeout(wait, slots.acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }
}

/// What an aggregate request brings from the general path, once its policies passed.
pub(crate) struct Incoming<'r, 'g, 'a> {
    pub(crate) plan: &'r Plan<'g, 'a>,
    pub(crate) parts: &'r Parts,
    pub(crate) facts: &'r Facts<'a>,
    /// The request's fields as its policies left them.
    pub(crate) headers: HeaderMap,
    pub(crate) policy: Option<RequestInfo>,
    /// The request has a body (an aggregate route takes none).
    pub(crate) with_body: bool,
}

impl<'r, 'g, 'a> Incoming<'r, 'g, 'a> {
    pub(crate) fn new(
        plan: &'r Plan<'g, 'a>,
        parts: &'r Parts,
        facts: &'r Facts<'a>,
        headers: HeaderMap,
        policy: Option<RequestInfo>,
        body: &crate::request_body::Sent,
    ) -> Self {
        Self {
            plan,
            parts,
            facts,
            headers,
            policy,
            with_body: body.has_body(),
        }
    }
}

impl Gateway {
    /// Answers an aggregate request from its parts.
    pub(crate) async fn aggregate(
        &self,
        agg: &Aggregate,
        req: Incoming<'_, '_, '_>,
        info: &ConnInfo,
        began: &Began,
    ) -> Response<Body> {
        let (plan, target) = (req.plan, req.plan.target);
        let method = req.parts.method.clone();
        let log_path = self.access_log.then(|| plan.path.to_string());
        if !matches!(method, Method::GET | Method::HEAD) {
            // A CORS preflight no policy of the route answered.
            let resp = crate::body::refusal(&crate::request::Refusal::MethodNotAllowed);
            return self.answered(Some(target), method, log_path, info, began, resp);
        }
        if req.with_body {
            let resp = refuse(413, "an aggregate route takes no request body");
            return self.answered(Some(target), method, log_path, info, began, resp);
        }
        let pi = req.policy.as_ref();
        let src = Source {
            claims: pi.and_then(|p| p.claims.as_deref()),
            // The query as the policies left it (an API key taken out of it).
            query: pi.map_or(plan.query, |p| p.query.as_deref()),
            headers: &req.headers,
        };
        let headers = part_fields(&req.headers);
        let facts = Facts {
            body: Framing::None,
            te_trailers: false,
            upgrade: None,
            ..req.facts.clone()
        };
        let Some(slots) = agg.slots().await else {
            for p in &agg.parts {
                p.outcomes[Kind::Busy.index()].increment(1);
            }
            let resp = answer(503, "too many aggregate requests in flight on this route");
            return self.answered(Some(target), method, log_path, info, began, resp);
        };
        let sent = agg
            .parts
            .iter()
            .map(|p| self.part(p, &req, &src, &headers, &facts, info));
        let outcomes = join_all(sent.collect()).await;
        for (p, o) in agg.parts.iter().zip(&outcomes) {
            let i = o.as_ref().map_or_else(|e| e.kind.index(), |_| 0);
            p.outcomes[i].increment(1);
        }
        let named = || agg.parts.iter().map(|p| p.name.as_str()).zip(&outcomes);
        let judged = named()
            .zip(&agg.parts)
            .map(|((n, o), p)| (n, p.required, o));
        let mut resp = match assemble::verdict(judged) {
            Ok(()) => {
                let mut r = Response::new(full(assemble::body(named())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err((status, msg)) => answer(status, &msg),
        };
        if let Some(pi) = pi {
            policy::on_response(&target.policies, pi, resp.headers_mut());
        }
        let resp = resp.map(|b| holding(b, slots));
        self.answered(Some(target), method, log_path, info, began, resp)
    }

    /// One part: its template filled, its request planned and written, then sent once a
    /// slot of the route's is free.
    async fn part(
        &self,
        p: &Part,
        req: &Incoming<'_, '_, '_>,
        src: &Source<'_>,
        headers: &HeaderMap,
        facts: &Facts<'_>,
        info: &ConnInfo,
    ) -> Outcome {
        let unfilled = |e: String| PartError::new(Kind::Unfilled, 400, e);
        let filled = template::render(&p.path, src).map_err(|e| unfilled(e.to_string()))?;
        let Some(Some(pt)) = self.pools.get(p.pool) else {
            return Err(PartError::new(
                Kind::Unreachable,
                503,
                "no pool for this part",
            ));
        };
        let (path, query) = match filled.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (filled.as_str(), None),
        };
        let asked = plan::Request {
            method: &Method::GET,
            uri: &req.parts.uri,
            headers,
            client: info.client,
            sni: info.sni.as_deref(),
            // A part is lb's own GET, no GraphQL request.
            graphql: None,
        };
        let sub = self.part_plan(req.plan, pt, asked, path, query);
        let bad = || unfilled("the filled path is not a valid request target".into());
        let synthetic = Request::get(filled.as_str()).body(()).map_err(|_| bad())?;
        let (head, ()) = synthetic.into_parts();
        let (client, tls) = (info.client.ip(), info.tls);
        let up = self
            .upstream_parts(&head, &sub, query, facts, headers.clone(), client, tls)
            .map_err(|_| bad())?;
        self.part_exchange(req.plan.target, pt, &sub, up, info, p.timeout)
            .await
    }
}

/// The fields a part's GET carries: the request's, as its policies left them, but for what
/// describes the request's own body or asks for a partial or conditional answer, which a
/// part's JSON must never be; and it asks for JSON without a content coding, which lb
/// could not read.
fn part_fields(fields: &HeaderMap) -> HeaderMap {
    const DROPPED: [&str; 11] = [
        "content-type",
        "content-encoding",
        "expect",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        "range",
        "accept",
        "accept-encoding",
    ];
    let mut out = fields.clone();
    for name in DROPPED {
        out.remove(name);
    }
    out.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    out
}

/// `body`, holding `slots` until it is sent or dropped: the answer is made of the part bodies
/// the slots bound, and a client that reads slowly must not make lb hold more of them.
fn holding(body: Body, slots: tokio::sync::OwnedSemaphorePermit) -> Body {
    use http_body_util::BodyExt;
    Holding {
        body,
        _slots: slots,
    }
    .boxed()
}

struct Holding {
    body: Body,
    _slots: tokio::sync::OwnedSemaphorePermit,
}

impl hyper::body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Runs every future at once on this task; their outputs in order. The parts of one request
/// are at most [`lb_core::config::MAX_PARTS`], so each wake polls the few unfinished ones.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("poll_fn ends only once every future is ready"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aggregate(parts: usize, slots: usize) -> Aggregate {
        let part = |i: usize| Part {
            name: format!("p{i}"),
            pool: 0,
            path: Template::parse("/x").expect("template"),
            timeout: Duration::from_secs(2),
            required: false,
            outcomes: Kind::LABELS.map(|_| metrics::Counter::noop()),
        };
        Aggregate {
            parts: (0..parts).map(part).collect(),
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(slots)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_takes_all_its_slots_or_none() {
        let agg = aggregate(3, 4);
        let first = agg.slots().await.expect("3 of 4 free");
        // One slot is left: a second request of 3 parts holds none while it waits, and gives
        // up after its longest part timeout.
        let start = tokio::time::Instant::now();
        assert!(agg.slots().await.is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(
            agg.slots.available_permits(),
            1,
            "nothing held by the loser"
        );
        drop(first);
        assert!(agg.slots().await.is_some());
    }

    #[tokio::test]
    async fn parts_are_polled_together() {
        // Each future waits for the other: run one after another, neither would finish.
        let (tx1, rx1) = tokio::sync::oneshot::channel::<u8>();
        let (tx2, rx2) = tokio::sync::oneshot::channel::<u8>();
        let a = async move {
            let _ = tx1.send(1);
            rx2.await.unwrap_or(0)
        };
        let b = async move {
            let _ = tx2.send(2);
            rx1.await.unwrap_or(0)
        };
        let both: Vec<Pin<Box<dyn Future<Output = u8> + Send>>> = vec![Box::pin(a), Box::pin(b)];
        let out = tokio::time::timeout(Duration::from_secs(10), join_all(both)).await;
        assert_eq!(out.expect("both finish"), vec![2, 1]);
    }
}
