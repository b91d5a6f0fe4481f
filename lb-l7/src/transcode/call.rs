//! A transcoded request on the general path, after its route's policies passed: the rule
//! picked, the JSON body read whole (bounded), the gRPC request sent over the pool's HTTP/2
//! client with the route's tries and timeout, and the unary answer and its status read
//! (bounded) and turned into JSON. The I/O shell around the pure parts of
//! [`crate::transcode`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::status::{self, Malformed, MAX_MESSAGE};
use super::{message, Transcoder, Unmatched};
use crate::body::{answer, full, refuse, Meter};
use crate::exchange::{Began, ConnInfo};
use crate::exchange_fault::{root_cause, within};
use crate::gateway::Gateway;
use crate::plan::Plan;
use crate::policy::{self, RequestInfo};
use crate::request::{Body as Framing, Facts};
use crate::tries::{Failure, Tries};
use crate::upstream::{Body, SendError};

/// `lb_http_upstream_errors_total` kinds, as indexes of `PoolTarget::errors` (as in `Tries`).
const TIMEOUT: usize = 1;
const RESPONSE: usize = 2;

/// The request body lb reads whole when the route sets no `max_body_size`: gRPC's default
/// message limit.
const DEFAULT_MAX_BODY: u64 = MAX_MESSAGE as u64;

/// What a transcoded request carries from the general path.
pub(crate) struct Call<'r, 'g, 'a> {
    pub parts: &'r Parts,
    pub plan: Plan<'g, 'a>,
    pub facts: &'r Facts<'a>,
    pub policy: Option<RequestInfo>,
    /// The client's fields as the policies left them.
    pub headers: HeaderMap,
    pub body: crate::request_body::Sent,
    pub info: &'r ConnInfo,
    pub began: &'r Began,
}

fn json(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn is_json(headers: &HeaderMap) -> bool {
    crate::transform::media_type(headers)
        .is_none_or(|m| m == "application/json" || m.ends_with("+json"))
}

impl Gateway {
    /// Answers a request of a `grpc_transcode` route.
    pub(crate) async fn transcode(&self, tc: &Transcoder, c: Call<'_, '_, '_>) -> Response<Body> {
        let target = c.plan.target;
        let log_path = self.access_log.then(|| c.plan.path.to_string());
        let method = c.parts.method.clone();
        let mut resp = self
            .transcoded(
                tc,
                c.parts,
                &c.plan,
                c.facts,
                c.policy.as_ref(),
                c.headers,
                c.body,
                c.info,
            )
            .await;
        if let Some(pi) = &c.policy {
            policy::on_response(&target.policies, pi, resp.headers_mut());
        }
        self.answered(Some(target), method, log_path, c.info, c.began, resp)
    }

    #[allow(clippy::too_many_arguments)]
    async fn transcoded(
        &self,
        tc: &Transcoder,
        parts: &Parts,
        plan: &Plan<'_, '_>,
        facts: &Facts<'_>,
        pi: Option<&RequestInfo>,
        headers: HeaderMap,
        body: crate::request_body::Sent,
        info: &ConnInfo,
    ) -> Response<Body> {
        let target = plan.target;
        let Ok(routed) = crate::path::routed(&plan.path) else {
            return answer(400, "malformed path");
        };
        let (rule, vars) = match tc.select(&parts.method, &routed) {
            Ok(r) => r,
            Err(Unmatched::Path) => return answer(404, "no gRPC method is mapped to this path"),
            Err(Unmatched::Method) => {
                return answer(405, "no gRPC method is mapped to this method on this path")
            }
        };
        let limit = target.max_body.unwrap_or(DEFAULT_MAX_BODY);
        let bytes = match body.whole(limit).await {
            Ok(b) => b,
            // The rest of the body is unread or its framing broke: the connection closes.
            Err(None) => return refuse(413, &format!("request body over {limit} bytes")),
            Err(Some(_)) => return refuse(400, "the request body could not be read"),
        };
        if !bytes.is_empty() && !is_json(&headers) {
            return answer(415, "expected a JSON body (Content-Type: application/json)");
        }
        // The query as the policies left it (an API key taken out of it).
        let query = pi.map_or(plan.query, |pi| pi.query.as_deref());
        let msg = match message::request(rule, &vars, query, &bytes) {
            Ok(m) => m,
            Err(why) => return answer(400, &why),
        };
        let frame = status::frame(&message::encode(&msg));
        let up = match self.grpc_parts(
            parts,
            plan,
            facts,
            headers,
            &rule.grpc_path,
            frame.len(),
            info,
        ) {
            Ok(p) => p,
            Err(r) => return answer(r.status(), &r.to_string()),
        };
        // The whole body is held, so a resend costs nothing; whether the call may run twice
        // is the HTTP method's to say.
        let replayable = parts.method.is_idempotent();
        // Validation gives every transcoding route a pool (it refuses `aggregate` there).
        let Some(pt) = plan.pt else {
            return answer(502, "the route has no pool to call");
        };
        let upstream = self.upstream(pt, info);
        let meter = Arc::new(Meter::default());
        meter.request_ended.store(true, Relaxed);
        let mut tries = Tries::new(
            pt,
            &self.listener,
            &target.name,
            plan.key,
            plan.sticky,
            replayable,
            target.retries,
            target.timeout,
        );
        while let Some(t) = tries.pick() {
            let addr = pt.pool.backends[t.index].addr;
            let req = Request::from_parts(up.clone(), full(frame.clone()));
            let send = upstream.send(t.index, addr, req, false);
            let resp = match within(send, &meter, t.started, target.timeout, self.idle_timeout)
                .await
            {
                Ok(Ok((resp, _))) => resp,
                Ok(Err(SendError::Connect(e, _))) => {
                    if tries.failed(t, Failure::Connect(e)) {
                        continue;
                    }
                    break;
                }
                Ok(Err(SendError::Failed(e) | SendError::Stale(e) | SendError::Unanswered(e))) => {
                    if tries.failed(t, Failure::Exchange(format!("failed: {}", root_cause(&e)))) {
                        continue;
                    }
                    break;
                }
                Err(_) => {
                    let why = format!("no answer within {:?}", target.timeout);
                    if tries.failed(t, Failure::Timeout(why)) {
                        continue;
                    }
                    break;
                }
            };
            if !tries.answered(&t, resp.status().as_u16()) {
                continue;
            }
            let deadline = t.answer_by(tokio::time::Instant::now());
            let read = tokio::time::timeout_at(deadline, unary(resp)).await;
            let out = match read {
                Ok(Ok((0, _, payload))) => match payload {
                    Some(p) => message::response(rule, &p).map(|j| json(200, j)),
                    None => Err(Malformed::NoMessage.to_string()),
                },
                Ok(Ok((code, message, _))) => Ok(json(
                    status::http_status(code),
                    status::error_body(code, &message),
                )),
                Ok(Err(why)) => Err(why),
                Err(_) => {
                    pt.errors[t.index][TIMEOUT].increment(1);
                    return answer(504, "the backend did not finish its answer in time");
                }
            };
            return out.unwrap_or_else(|why| {
                // The backend answered, but not with a gRPC answer lb can read: its fault,
                // counted as `Tries` counts a failed exchange (a response error of that
                // backend, not a passive-health verdict, which connect failures alone give),
                // never a panic or a guess.
                let b = &pt.pool.backends[t.index];
                b.errors.fetch_add(1, Relaxed);
                pt.errors[t.index][RESPONSE].increment(1);
                tracing::debug!(listener = %self.listener, route = %target.name, "gRPC answer refused: {why}");
                answer(502, "the backend's gRPC answer was malformed")
            });
        }
        let (code, msg) = tries.answer();
        answer(code, msg)
    }

    /// The gRPC request head: the plan's forwarding fields (through the one writer of them,
    /// [`Gateway::upstream_parts`]), then gRPC's own: `POST /pkg.Service/Method`,
    /// `content-type: application/grpc`, `te: trailers`, the route's timeout as
    /// `grpc-timeout`. The client's `grpc-*` and content fields never pass: they would tell
    /// the backend how to read a message lb framed.
    #[allow(clippy::too_many_arguments)]
    fn grpc_parts(
        &self,
        parts: &Parts,
        plan: &Plan<'_, '_>,
        facts: &Facts<'_>,
        mut headers: HeaderMap,
        grpc_path: &str,
        len: usize,
        info: &ConnInfo,
    ) -> Result<Parts, crate::request::Refusal> {
        let names: Vec<_> = headers
            .keys()
            .filter(|n| n.as_str().starts_with("grpc-") || n.as_str().starts_with("content-"))
            .cloned()
            .collect();
        for n in names {
            headers.remove(n);
        }
        headers.remove(header::ACCEPT_ENCODING);
        let plan = Plan {
            rewritten: Some(grpc_path.to_string()),
            upgrade: None,
            ..plan.clone()
        };
        let facts = Facts {
            body: Framing::Length(len as u64),
            te_trailers: true,
            ..facts.clone()
        };
        let mut up = self.upstream_parts(
            parts,
            &plan,
            None,
            &facts,
            headers,
            info.client.ip(),
            info.tls,
        )?;
        up.method = Method::POST;
        up.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let ms = plan.target.timeout.as_millis().clamp(1, 99_999_999);
        if let Ok(v) = HeaderValue::from_str(&format!("{ms}m")) {
            up.headers.insert("grpc-timeout", v);
        }
        Ok(up)
    }
}

/// A unary gRPC answer read whole: `(code, message, the one message)`, or why it is not one.
/// The body is bounded by [`MAX_MESSAGE`]; the status comes from the trailers, or from the
/// head of a Trailers-Only answer.
async fn unary(resp: Response<Incoming>) -> Result<(u32, String, Option<Bytes>), String> {
    let (head, mut body) = resp.into_parts();
    if let Some(code) = status::code_of_http(head.status.as_u16()) {
        // Not a gRPC answer (an intermediary's, or a server's refusal): its status as gRPC
        // clients read it. The body is not read.
        let message = format!(
            "the backend answered HTTP {} instead of gRPC",
            head.status.as_u16()
        );
        return Ok((code, message, None));
    }
    let grpc = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        return Err("not application/grpc".into());
    }
    let mut buf = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the answer broke: {}", root_cause(&e)))?;
        match frame.into_data() {
            Ok(d) => {
                if buf.len() + d.len() > MAX_MESSAGE + 5 {
                    return Err(Malformed::TooLarge.to_string());
                }
                buf.extend_from_slice(&d);
            }
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let (code, message) =
        status::status(&head.headers, trailers.as_ref()).map_err(|e| e.to_string())?;
    let payload = status::unframe(&buf).map_err(|e| e.to_string())?;
    Ok((code, message, payload.map(Bytes::copy_from_slice)))
}
