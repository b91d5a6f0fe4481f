//! One request through the gateway: checked, normalised, routed, sent to a backend picked by
//! the pool's algorithm (retried where that is safe), and the response streamed back.
//!
//! The backend receives the normalised path (the one that was routed), never the spelling
//! the client used, so what a route allowed is exactly what the backend serves.
//!
//! Retries: a request that never left (no connection could be made, or a pooled connection
//! turned out closed before it was written) goes to the next backend whatever its method. A
//! request that left is sent again only when it is idempotent and has no body, on a timeout,
//! a failed exchange, or a 502/503 answer; a POST is never replayed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::{self, Keys};
use crate::body::{answer, empty, full, refuse, Counted, Meter, Side};
use crate::forward;
use crate::gateway::{Gateway, PoolTarget, RouteTarget};
use crate::guard;
use crate::path;
use crate::policy::cache::Lookup;
use crate::policy::{self, RequestInfo};
use crate::respond::LogFields;
use crate::router::RequestHead;
use crate::tries::{Failure, Tries};
use crate::upgrade::{self, Upgrade};
use crate::upstream::{Body, SendError};

/// What every request of one client connection shares.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub tls: bool,
    pub sni: Option<String>,
    /// Ends WebSocket tunnels when the shutdown grace period is over.
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    /// What the connection's request heads carried that the parser does not show.
    pub framing: Arc<std::sync::Mutex<crate::framing::Tracker>>,
}

impl Gateway {
    /// Answers one request: refused by lb, or forwarded and streamed back.
    pub async fn handle(&self, mut req: Request<Incoming>, info: &ConnInfo) -> Response<Body> {
        let start = Instant::now();
        // One framing record per HTTP/1 request, in order (HTTP/2 has none).
        let both_lengths = req.version() < Version::HTTP_2
            && crate::sniff::lock(&info.framing).take() == Some(true);
        if both_lengths {
            let r = guard::Refusal::LengthAndChunked;
            return self.own(None, &req, info, start, refuse(r.status(), &r.to_string()));
        }
        if let Err(r) = guard::check(req.uri(), req.version(), req.headers(), &self.limits) {
            return self.own(None, &req, info, start, refuse(r.status(), &r.to_string()));
        }
        let path = match path::normalize(req.uri().path()) {
            Ok(p) => p,
            Err(e) => return self.own(None, &req, info, start, refuse(400, &e.to_string())),
        };
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        let routed = self.router.route(&RequestHead {
            method: req.method(),
            host: host.as_deref(),
            path: &path,
            headers: req.headers(),
        });
        let target = match routed.map(|&i| &self.routes[i]).or(self.default.as_ref()) {
            Some(t) => t,
            None => {
                let resp = answer(404, "no route matches this request");
                return self.own(None, &req, info, start, resp);
            }
        };
        // Policies first: a request they refuse (401, 403, 429, a CORS preflight) costs no
        // backend anything.
        let mut policy_info = None;
        if !target.policies.is_empty() {
            let mut pi = RequestInfo::new(
                info.client.ip(),
                req.method().clone(),
                host.as_deref(),
                &path,
                req.uri().query(),
                &target.name,
            );
            if let Err(resp) =
                policy::on_request(&target.policies, &mut pi, req.headers_mut()).await
            {
                return self.own(Some(target), &req, info, start, *resp);
            }
            policy_info = Some(pi);
        }
        // A route's cache answers before any backend is picked, and fills on the way back.
        let mut fill = None;
        if let (Some(cache), Some(pi)) = (&target.cache, &policy_info) {
            match cache.lookup(pi, req.headers()).await {
                Lookup::Hit(mut resp) => {
                    policy::on_response(&target.policies, pi, resp.headers_mut());
                    return self.own(Some(target), &req, info, start, resp);
                }
                Lookup::Miss(f) => fill = Some(f),
                Lookup::Bypass => {}
            }
        }
        let Some(Some(pt)) = self.pools.get(target.pool) else {
            return self.own(
                Some(target),
                &req,
                info,
                start,
                answer(503, "no pool for this route"),
            );
        };
        if let (Some(max), Some(len)) = (target.max_body, content_length(&req)) {
            if len > max {
                let resp = refuse(
                    413,
                    &format!("request body of {len} bytes is over the limit of {max}"),
                );
                return self.own(Some(target), &req, info, start, resp);
            }
        }
        let upgrade = upgrade::of(&req);
        let client_upgrade = upgrade
            .clone()
            .map(|kind| (kind, hyper::upgrade::on(&mut req)));
        let log_path = self.access_log.then(|| path.clone());
        let sticky = pt.sticky.as_ref().and_then(|(name, values)| {
            balance::sticky_backend(&pt.pool, values, req.headers(), name)
        });
        let key = balance::key(
            &pt.pool,
            &Keys {
                client: info.client.ip(),
                sni: info.sni.as_deref(),
                path: &path,
                headers: req.headers(),
            },
        );
        let forwarded_path = match &target.rewrite {
            Some(r) => r.apply(&path),
            None => path,
        };
        let replayable = req.method().is_idempotent() && req.body().is_end_stream();
        let meter = Arc::new(Meter::default());
        let (parts, body) = req.into_parts();
        let method = parts.method.clone();
        let parts =
            match self.upstream_parts(parts, &forwarded_path, host, info, pt, upgrade.as_ref()) {
                Ok(p) => p,
                Err(e) => {
                    return self.answered(
                        Some(target),
                        method,
                        log_path,
                        info,
                        start,
                        refuse(400, &e),
                    )
                }
            };
        let spare = (replayable && target.retries > 0).then(|| parts.clone());
        // A body a transform checks is read whole first: it goes on only if it passes.
        let checked = target
            .transform
            .as_ref()
            .filter(|t| t.checks(&parts.method, !body.is_end_stream()));
        let body: Body = if let Some(t) = checked {
            let limit = t.max.min(target.max_body.unwrap_or(u64::MAX));
            let bytes = match read_whole(body, limit).await {
                Ok(b) => b,
                Err(None) => {
                    let resp = refuse(
                        413,
                        &format!("request body over the {limit} bytes this route checks"),
                    );
                    return self.answered(Some(target), method, log_path, info, start, resp);
                }
                Err(Some(_)) => {
                    let resp = refuse(400, "the request body could not be read");
                    return self.answered(Some(target), method, log_path, info, start, resp);
                }
            };
            if let Err(why) = t.check(&parts.headers, &bytes) {
                let resp = answer(400, &why);
                return self.answered(Some(target), method, log_path, info, start, resp);
            }
            meter.request.fetch_add(bytes.len() as u64, Relaxed);
            full(bytes)
        } else {
            match target.max_body {
                Some(max) => Counted::new(
                    Limited::new(body, max as usize),
                    meter.clone(),
                    Side::Request,
                    || {},
                )
                .boxed(),
                None => Counted::new(body, meter.clone(), Side::Request, || {}).boxed(),
            }
        };
        let mut next = Some(Request::from_parts(parts, body));
        let mut tries = Tries::new(
            pt,
            &self.listener,
            &target.name,
            key,
            sticky,
            replayable,
            target.retries,
        );
        loop {
            let Some(req) = next
                .take()
                .or_else(|| spare.clone().map(|p| Request::from_parts(p, empty())))
            else {
                break;
            };
            let Some(i) = tries.pick() else { break };
            let b = &pt.pool.backends[i];
            // Only the access log wants the backend's own time.
            let sent_at = self.access_log.then(Instant::now);
            let sent = tokio::time::timeout(target.timeout, pt.upstream.send(i, b.addr, req)).await;
            let (resp, pooled) = match sent {
                Ok(Ok(r)) => r,
                Ok(Err(SendError::Connect(e, req))) => {
                    next = Some(*req);
                    if tries.failed(i, Failure::Connect(e)) {
                        continue;
                    }
                    break;
                }
                Ok(Err(SendError::Failed(e))) => {
                    if is_body_limit(&e) {
                        tries.abandoned(i);
                        let resp = refuse(413, "request body over the limit");
                        return self.answered(Some(target), method, log_path, info, start, resp);
                    }
                    if tries.failed(i, Failure::Exchange(format!("failed: {}", root_cause(&e)))) {
                        continue;
                    }
                    break;
                }
                Err(_) => {
                    let why = format!("did not answer within {:?}", target.timeout);
                    if tries.failed(i, Failure::Timeout(why)) {
                        continue;
                    }
                    break;
                }
            };
            if !tries.answered(i, resp.status().as_u16()) {
                continue;
            }
            let upstream_ms = sent_at.map_or(0, |t| t.elapsed().as_millis() as u64);
            return self
                .respond(
                    resp,
                    target,
                    pt,
                    (i, pooled),
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
                    },
                )
                .await;
        }
        let (status, msg) = tries.answer();
        let resp = answer(status, &msg);
        self.answered(Some(target), method, log_path, info, start, resp)
    }

    /// The request as the backend gets it: normalised (and rewritten) path, forwarding
    /// headers, the framing of the protocol spoken to the backend.
    fn upstream_parts(
        &self,
        mut parts: Parts,
        path: &str,
        host: Option<String>,
        info: &ConnInfo,
        pt: &PoolTarget,
        upgrade: Option<&Upgrade>,
    ) -> Result<Parts, String> {
        // Most paths arrive normal and are not rewritten: then the request's own (shared,
        // already validated) path-and-query goes on.
        let path_and_query = match (parts.uri.path_and_query(), parts.uri.query()) {
            (Some(pq), _) if pq.path() == path => pq.clone(),
            (_, Some(q)) => PathAndQuery::try_from(format!("{path}?{q}"))
                .map_err(|e| format!("cannot forward this request target: {e}"))?,
            (_, None) => PathAndQuery::try_from(path)
                .map_err(|e| format!("cannot forward this request target: {e}"))?,
        };
        let h2 = pt.pool.config.http2;
        let uri = if h2 {
            let scheme = if pt.upstream.is_tls() {
                "https"
            } else {
                "http"
            };
            let authority = host.clone().unwrap_or_else(|| "localhost".to_string());
            Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
        } else {
            Uri::builder().path_and_query(path_and_query).build()
        };
        parts.uri = uri.map_err(|e| format!("cannot forward this request target: {e}"))?;
        parts.version = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let client = forward::Client {
            addr: info.client.ip(),
            tls: info.tls,
            host: host.clone(),
        };
        forward::request(&mut parts.headers, &client, self.trust, self.via.as_deref());
        if h2 {
            parts.headers.remove(header::HOST);
        } else if !parts.headers.contains_key(header::HOST) {
            // HTTP/2 clients send :authority, not Host; an HTTP/1.1 backend needs Host.
            if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
                parts.headers.insert(header::HOST, v);
            }
        }
        match upgrade {
            Some(Upgrade::H1(proto)) => {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, proto.clone());
            }
            Some(Upgrade::WebSocketOverH2) if !h2 => {
                upgrade::websocket_h2_to_h1(&mut parts.method, &mut parts.headers);
                parts.extensions.remove::<hyper::ext::Protocol>();
            }
            // An HTTP/2 backend takes the extended CONNECT as it is.
            Some(Upgrade::WebSocketOverH2) | None => {}
        }
        Ok(parts)
    }

    /// Counts and logs an answer lb made itself for a request it still holds.
    fn own(
        &self,
        target: Option<&RouteTarget>,
        req: &Request<Incoming>,
        info: &ConnInfo,
        start: Instant,
        resp: Response<Body>,
    ) -> Response<Body> {
        let path = self.access_log.then(|| req.uri().path().to_string());
        self.answered(target, req.method().clone(), path, info, start, resp)
    }

    pub(crate) fn answered(
        &self,
        target: Option<&RouteTarget>,
        method: Method,
        path: Option<String>,
        info: &ConnInfo,
        start: Instant,
        resp: Response<Body>,
    ) -> Response<Body> {
        let status = resp.status().as_u16();
        self.note_answer(target, status, &method, path.as_deref(), info.client, start);
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
        start: Instant,
    ) {
        let metrics = target.map_or(&self.refused, |t| &t.metrics);
        metrics.count(status);
        metrics.duration.record(start.elapsed().as_secs_f64());
        if let Some(path) = path {
            tracing::info!(target: "lb::access", client = %client, listener = %self.listener, route = target.map_or("-", |t| t.name.as_str()), method = %method, path = %path, status, bytes_in = 0u64, bytes_out = 0u64, upstream = "-", upstream_ms = 0u64, duration_ms = start.elapsed().as_millis() as u64);
        }
    }
}

/// A whole body, if it fits in `limit` bytes: `Err(None)` when it does not, `Err(Some(why))`
/// when it could not be read.
pub(crate) async fn read_whole<B>(mut body: B, limit: u64) -> Result<bytes::Bytes, Option<String>>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Some(e.to_string()))?;
        if let Some(d) = frame.data_ref() {
            if (buf.len() + d.len()) as u64 > limit {
                return Err(None);
            }
            buf.extend_from_slice(d);
        }
    }
    Ok(buf.freeze())
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn is_body_limit(e: &hyper::Error) -> bool {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(|e| e.is::<http_body_util::LengthLimitError>())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
