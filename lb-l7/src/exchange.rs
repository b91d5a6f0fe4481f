//! One request on the general path (hyper's HTTP/1.1 and HTTP/2 server): inspected and
//! planned by the same code as the lean path ([`crate::request`], [`crate::plan`]), its
//! route's policies and cache applied, sent to the backends the plan's tries pick
//! ([`crate::tries`]), and the response streamed back ([`crate::respond`]).
//!
//! The client's hop-by-hop fields, and those its `Connection` field names, are dropped on the
//! way in, before the route's policies run: what a policy adds cannot be removed by the
//! client. `Host`, framing and the forwarding fields are written by lb from the plan.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};

pub use crate::conn_info::ConnInfo;

use crate::body::{answer, empty, read_whole, refuse, Counted, Late, Meter, Side};
use crate::exchange_fault::{client_fault, root_cause, within};
use crate::forward;
use crate::gateway::{Gateway, RouteTarget};
use crate::plan::{self, Plan};
use crate::policy::cache::Lookup;
use crate::policy::{self, RequestInfo};
use crate::request::{self, Body as Framing, Facts, Head, Refusal};
use crate::respond::LogFields;
use crate::tries::{Failure, Tries};
use crate::upgrade::{self, Upgrade};
use crate::upstream::{Body, SendError, Upstream};

impl Gateway {
    /// Answers one request: refused by lb, or forwarded and streamed back.
    pub async fn handle(&self, req: Request<Incoming>, info: &Arc<ConnInfo>) -> Response<Body> {
        let start = Instant::now();
        let mut began = Began {
            start,
            id: None,
            trace: None,
        };
        let (mut parts, body) = req.into_parts();
        // One framing record per HTTP/1 request, in order (HTTP/2 has none).
        let both_lengths = parts.version < Version::HTTP_2
            && crate::sniff::lock(info.framing()).take() == Some(true);
        if both_lengths {
            return self.refused(None, &parts, info, &began, Refusal::LengthAndChunked);
        }
        let protocol = parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .map(|p| p.as_str().to_string());
        // Taken now so the head can borrow the parts; dropped unused unless the plan upgrades.
        let mut on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let head = Head::of_parts(
            &parts,
            protocol.as_deref(),
            body.is_end_stream(),
            info.local_authority(),
        );
        let facts = match request::inspect(head, &self.limits) {
            Ok(f) => f,
            Err(r) => return self.refused(None, &parts, info, &began, r),
        };
        // On the way in: what describes the client's connection stays here.
        let mut headers = passing(&parts.headers, &facts);
        let (body, gql) = match self.graphql_read(&parts, &facts, &headers, body).await {
            Ok(read) => read,
            Err(resp) => return self.own(None, &parts, info, &began, resp),
        };
        let planned = self.plan(
            plan::Request {
                method: &parts.method,
                uri: &parts.uri,
                headers: &headers,
                client: info.client,
                sni: info.sni.as_deref(),
                graphql: gql.as_ref(),
            },
            &facts,
        );
        let plan = match planned {
            Ok(p) => p,
            Err((target, r)) => return self.refused(target, &parts, info, &began, r),
        };
        let target = plan.target;
        if let Some(resp) = self.graphql_gate(target, &plan, &parts.method, gql.as_ref()) {
            return self.own(Some(target), &parts, info, &began, resp);
        }
        began.id = plan.request_id;
        began.trace = plan.trace;
        // Policies first: a request they refuse (401, 403, 429, a CORS preflight) costs no
        // backend anything.
        let mut policy_info = None;
        if !target.policies.is_empty() {
            let mut pi = RequestInfo::new(
                info.client.ip(),
                parts.method.clone(),
                plan.authority,
                &plan.path,
                plan.query,
                &target.name,
            );
            pi.graphql = gql.as_ref().map(crate::graphql::Parsed::key);
            if let Err((i, resp)) =
                policy::on_request(&target.policies, &mut pi, &mut headers).await
            {
                target.metrics.stats.refused(i, resp.status().as_u16());
                return self.own(Some(target), &parts, info, &began, *resp);
            }
            policy_info = Some(pi);
        }
        if let Some(agg) = &target.aggregate {
            let req =
                crate::aggregate::Incoming::new(&plan, &parts, &facts, headers, policy_info, &body);
            return self.aggregate(agg, req, info, &began).await;
        }
        if let Some(tc) = &target.transcode {
            let call = crate::transcode::call::Call {
                parts: &parts,
                plan,
                facts: &facts,
                policy: policy_info,
                headers,
                body,
                info,
                began: &began,
            };
            return self.transcode(tc, call).await;
        }
        // A route's cache answers before any backend is picked, and fills on the way back.
        let mut fill = None;
        if let (Some(cache), Some(pi)) = (&target.cache, &policy_info) {
            // The fields as the backend gets them: a response that varies by one lb writes
            // (`X-Forwarded-For`, `Forwarded`, `Host`…) varies by lb's value, never by what a
            // client claimed and lb replaced.
            let mut sent = headers.clone();
            let client = forward::Client {
                addr: info.client.ip(),
                tls: info.tls,
                host: plan.authority.map(str::to_string),
            };
            forward::request(&mut sent, &client, self.trust, self.via.as_deref());
            sent.remove(header::HOST);
            if let Some(v) = plan.authority.and_then(|a| HeaderValue::from_str(a).ok()) {
                sent.insert(header::HOST, v);
            }
            let with_body = !facts.body.is_empty();
            match cache
                .lookup(pi, plan.authority, &sent, plan.authenticated, with_body)
                .await
            {
                Lookup::Hit(mut resp) => {
                    target.metrics.stats.cache_hits.fetch_add(1, Relaxed);
                    policy::on_response(&target.policies, pi, resp.headers_mut());
                    return self.own(Some(target), &parts, info, &began, resp);
                }
                Lookup::Miss(f) => {
                    target.metrics.stats.cache_misses.fetch_add(1, Relaxed);
                    fill = Some(f);
                }
                Lookup::Bypass => {}
            }
        }
        let client_upgrade = plan.upgrade.and_then(|proto| {
            let on = on_upgrade.take()?;
            let kind = if parts.version == Version::HTTP_2 {
                Upgrade::WebSocketOverH2
            } else {
                Upgrade::H1(HeaderValue::from_str(proto).ok()?)
            };
            Some((kind, on))
        });
        let log_path = self.access_log.then(|| plan.path.to_string());
        let method = parts.method.clone();
        let h1 = parts.version < Version::HTTP_2;
        let (client, tls) = (info.client.ip(), info.tls);
        // The query as the policies left it (an API key taken out of it).
        let query = policy_info
            .as_ref()
            .map_or(plan.query, |pi| pi.query.as_deref());
        let up = match self.upstream_parts(&parts, &plan, query, &facts, headers, client, tls) {
            Ok(p) => p,
            Err(e) => return self.refused(Some(target), &parts, info, &began, e),
        };
        let (key, sticky, replayable) = (plan.key, plan.sticky, plan.replayable);
        let Some(pt) = plan.pt else {
            return self.refused(Some(target), &parts, info, &began, Refusal::NoPool);
        };
        let plan_id = plan.request_id;
        let plan_trace = plan.trace;
        // What a backend's 101 must answer, for the upgrade to be tunnelled.
        let switch = plan.upgrade.map(|p| {
            (
                p.to_string(),
                up.headers.get(header::SEC_WEBSOCKET_KEY).cloned(),
            )
        });
        // A replayable request may go again (a stale kept connection, `retries`): its head is
        // kept, its body is empty.
        let spare = replayable.then(|| up.clone());
        let meter = Arc::new(Meter::default());
        let body = match body.go_on(self, target, &up, &meter).await {
            Ok(b) => b,
            Err(resp) => return self.answered(Some(target), method, log_path, info, &began, resp),
        };
        let mut next = Some(Request::from_parts(up, body));
        let upstream = self.upstream(pt, info);
        let mut tries = Tries::new(
            pt,
            &self.listener,
            &target.name,
            key,
            sticky,
            replayable,
            target.retries,
            target.timeout,
        );
        while let Some(t) = tries.pick() {
            let b = &pt.pool.backends[t.index];
            // Only the access log wants the backend's own time.
            let sent_at = self.access_log.then(Instant::now);
            let mut fresh = false;
            let outcome = loop {
                let Some(req) = next
                    .take()
                    .or_else(|| spare.clone().map(|p| Request::from_parts(p, empty())))
                else {
                    break None;
                };
                let send = upstream.send(t.index, b.addr, req, fresh);
                match within(send, &meter, t.started, target.timeout, self.idle_timeout).await {
                    Ok(Err(SendError::Stale(_))) if !fresh && tries.may_resend_stale() => {
                        fresh = true;
                    }
                    other => break Some(other),
                }
            };
            let Some(outcome) = outcome else { break };
            let (resp, pooled) = match outcome {
                Ok(Ok(r)) => r,
                Ok(Err(SendError::Connect(e, req))) => {
                    next = Some(*req);
                    if tries.failed(t, Failure::Connect(e)) {
                        continue;
                    }
                    break;
                }
                Ok(Err(SendError::Unanswered(e)))
                    if replayable && !meter.client_failed.load(Relaxed) =>
                {
                    let why = format!("closed without answering: {}", root_cause(&e));
                    if tries.failed(t, Failure::Unanswered(why)) {
                        continue;
                    }
                    break;
                }
                Ok(Err(SendError::Failed(e) | SendError::Stale(e) | SendError::Unanswered(e))) => {
                    if let Some(resp) = client_fault(&e, &meter) {
                        drop(t);
                        return self.answered(Some(target), method, log_path, info, &began, resp);
                    }
                    if tries.failed(t, Failure::Exchange(format!("failed: {}", root_cause(&e)))) {
                        continue;
                    }
                    break;
                }
                Err(Late::Client) => {
                    // No verdict on the backend: the client stopped sending its body.
                    drop(t);
                    let resp = refuse(408, "the request body stopped arriving");
                    return self.answered(Some(target), method, log_path, info, &began, resp);
                }
                Err(Late::Backend) => {
                    let why = format!("no answer within {:?}", target.timeout);
                    if tries.failed(t, Failure::Timeout(why)) {
                        continue;
                    }
                    break;
                }
            };
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                let ok = match (&switch, &client_upgrade) {
                    (Some((proto, key)), Some(_)) => {
                        upgrade::accepted(proto, key.as_ref(), resp.headers())
                    }
                    _ => false,
                };
                if !ok {
                    let why = "switched protocols without accepting the upgrade asked for";
                    if tries.failed(t, Failure::Exchange(why.to_string())) {
                        continue;
                    }
                    break;
                }
            }
            if !tries.answered(&t, resp.status().as_u16()) {
                continue;
            }
            let upstream_ms = sent_at.map_or(0, |s| s.elapsed().as_millis() as u64);
            return self
                .respond(
                    resp,
                    target,
                    pt,
                    (t, pooled),
                    sticky,
                    info,
                    start,
                    meter,
                    client_upgrade,
                    LogFields {
                        method,
                        path: log_path,
                        upstream_ms,
                        policy: policy_info,
                        fill,
                        h1,
                        request_id: plan_id,
                        trace: plan_trace,
                    },
                )
                .await;
        }
        let (status, msg) = tries.answer();
        self.answered(
            Some(target),
            method,
            log_path,
            info,
            &began,
            answer(status, msg),
        )
    }

    /// The client this request's pool is reached with: the listener's shared one, or with
    /// `proxy_protocol` this client connection's own.
    pub(crate) fn upstream<'a>(
        &'a self,
        pt: &'a crate::gateway::PoolTarget,
        info: &'a ConnInfo,
    ) -> &'a Upstream {
        match info.own.as_ref().and_then(|own| own.get(pt.index)) {
            Some(cell) => cell.get_or_init(|| pt.upstream.for_client(info.client, info.local)),
            None => &pt.upstream,
        }
    }

    /// The request body as it goes on: read whole first when a transform checks it (it goes
    /// on only if it passes), otherwise streamed, counted and held to the route's limit.
    pub(crate) async fn request_body(
        &self,
        target: &RouteTarget,
        up: &Parts,
        body: Incoming,
        meter: &Arc<Meter>,
    ) -> Result<Body, Response<Body>> {
        if body.is_end_stream() {
            // hyper may never poll an empty body: it is sent whole from the start.
            meter.request_ended.store(true, Relaxed);
        }
        let checked = target
            .transform
            .as_ref()
            .filter(|t| t.checks(&up.method, !body.is_end_stream()));
        if let Some(t) = checked {
            let limit = t.max.min(target.max_body.unwrap_or(u64::MAX));
            let bytes = match read_whole(body, limit).await {
                Ok(b) => b,
                Err(None) => {
                    return Err(refuse(
                        413,
                        &format!("request body over the {limit} bytes this route checks"),
                    ))
                }
                Err(Some(_)) => return Err(refuse(400, "the request body could not be read")),
            };
            return crate::request_body::whole_checked(Some(t), up, bytes, meter)
                .map_err(|why| answer(400, &why));
        }
        Ok(match target.max_body {
            Some(max) => Counted::new(
                Limited::new(body, max as usize),
                meter.clone(),
                Side::Request,
                || {},
            )
            .boxed(),
            None => Counted::new(body, meter.clone(), Side::Request, || {}).boxed(),
        })
    }

    /// The request as the backend gets it: the plan's path and `query`, lb's `Host`, framing
    /// and forwarding fields over the fields that passed (and what policies made of them),
    /// in the protocol spoken to the backend. `query` is the plan's, or what the route's
    /// policies made of it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upstream_parts(
        &self,
        parts: &Parts,
        plan: &Plan<'_, '_>,
        query: Option<&str>,
        facts: &Facts<'_>,
        mut headers: HeaderMap,
        client: std::net::IpAddr,
        tls: bool,
    ) -> Result<Parts, Refusal> {
        let bad = |_| Refusal::BadPath(crate::path::PathError::NotAbsolute);
        let path = plan.forward_path();
        let path_and_query = match (parts.uri.path_and_query(), query) {
            // Most paths arrive normal and are not rewritten: the request's own (shared,
            // already validated) path-and-query goes on.
            (Some(pq), _) if pq.path() == path && pq.query() == query => pq.clone(),
            (_, Some(q)) => PathAndQuery::try_from(format!("{path}?{q}")).map_err(bad)?,
            (_, None) => PathAndQuery::try_from(path).map_err(bad)?,
        };
        let pt = plan.pt.ok_or(Refusal::NoPool)?;
        let h2 = pt.pool.config.http2;
        let uri = if h2 {
            let scheme = if pt.upstream.is_tls() {
                "https"
            } else {
                "http"
            };
            Uri::builder()
                .scheme(scheme)
                .authority(plan.authority.unwrap_or("localhost"))
                .path_and_query(path_and_query)
                .build()
        } else {
            Uri::builder().path_and_query(path_and_query).build()
        };
        let client = forward::Client {
            addr: client,
            tls,
            host: plan.authority.map(str::to_string),
        };
        forward::request(&mut headers, &client, self.trust, self.via.as_deref());
        // lb's own fields: written from the plan, whatever the client or a policy put there.
        forward::drop_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        if !h2 {
            if let Some(v) = plan.authority.and_then(|a| HeaderValue::from_str(a).ok()) {
                headers.insert(header::HOST, v);
            }
        }
        if let Framing::Length(n) = facts.body {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        if facts.te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(id) = &plan.request_id {
            headers.insert(crate::request_id::FIELD, id.header_value());
        }
        if let Some(t) = &plan.trace {
            t.write(&mut headers);
        }
        let mut method = parts.method.clone();
        let mut extensions = http::Extensions::new();
        match (plan.upgrade, parts.version) {
            (Some(_), Version::HTTP_2) if !h2 => {
                upgrade::websocket_h2_to_h1(&mut method, &mut headers);
            }
            (Some(proto), Version::HTTP_2) => {
                extensions.insert(hyper::ext::Protocol::from(proto));
            }
            (Some(proto), _) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                if let Ok(v) = HeaderValue::from_str(proto) {
                    headers.insert(header::UPGRADE, v);
                }
            }
            (None, _) => {}
        }
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri.map_err(|_| Refusal::BadPath(crate::path::PathError::NotAbsolute))?;
        *req.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *req.headers_mut() = headers;
        *req.extensions_mut() = extensions;
        Ok(req.into_parts().0)
    }

    /// Counts and logs an answer lb made itself for a request it still holds.
    fn own(
        &self,
        target: Option<&RouteTarget>,
        parts: &Parts,
        info: &ConnInfo,
        began: &Began,
        resp: Response<Body>,
    ) -> Response<Body> {
        let path = self.access_log.then(|| parts.uri.path().to_string());
        self.answered(target, parts.method.clone(), path, info, began, resp)
    }

    /// lb's answer to a request it refuses ([`crate::body::refusal`]).
    fn refused(
        &self,
        target: Option<&RouteTarget>,
        parts: &Parts,
        info: &ConnInfo,
        began: &Began,
        r: Refusal,
    ) -> Response<Body> {
        self.own(target, parts, info, began, crate::body::refusal(&r))
    }

    pub(crate) fn answered(
        &self,
        target: Option<&RouteTarget>,
        method: Method,
        path: Option<String>,
        info: &ConnInfo,
        began: &Began,
        mut resp: Response<Body>,
    ) -> Response<Body> {
        let status = resp.status().as_u16();
        self.note_answer(target, status, &method, path.as_deref(), info.client, began);
        if let Some(id) = &began.id {
            resp.headers_mut()
                .insert(crate::request_id::FIELD, id.header_value());
        }
        resp
    }

    /// Counts and logs an answer lb made itself (`path` is `Some` when the listener logs).
    pub(crate) fn note_answer(
        &self,
        target: Option<&RouteTarget>,
        status: u16,
        method: &Method,
        path: Option<&str>,
        client: SocketAddr,
        began: &Began,
    ) {
        let start = began.start;
        if let Some(s) = self.span(began.trace, target, method, "-", status, 0, began.id) {
            s.finish(start);
        }
        let metrics = target.map_or(&self.refused, |t| &t.metrics);
        metrics.count(status);
        metrics.took(start.elapsed());
        if let Some(path) = path {
            let id = began.id.as_ref().map_or("-", |id| id.as_str());
            tracing::info!(target: "lb::access", client = %client, listener = %self.listener, route = target.map_or("-", |t| t.name.as_str()), method = %method, path = %path, status, request_id = id, bytes_in = 0u64, bytes_out = 0u64, upstream = "-", upstream_ms = 0u64, duration_ms = start.elapsed().as_millis() as u64);
        }
    }
}

/// When a request began, and the `X-Request-Id` its plan gave it (none before the plan):
/// what lb's own answers are counted, logged and stamped with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Began {
    pub(crate) start: Instant,
    pub(crate) id: Option<crate::request_id::RequestId>,
    /// The plan's trace context, for the span of lb's own answer.
    pub(crate) trace: Option<crate::trace::Hop>,
}

/// The client's fields that go on (hyper's map, in its order): hop-by-hop ones, those its
/// `Connection` names, and framing stay here.
pub(crate) fn passing(fields: &HeaderMap, facts: &Facts<'_>) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        if facts.passes(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}
