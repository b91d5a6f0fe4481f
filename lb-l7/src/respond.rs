//! The way back of an exchange: the backend's response (transformed, cached, counted)
//! streamed to the client, or the tunnel of an upgraded connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{answer, full, read_whole, Counted, Meter, Side};
use crate::conn_info::ConnInfo;
use crate::forward;
use crate::gateway::{Gateway, PoolTarget, RouteTarget};
use crate::policy::cache::{Fill, Filling};
use crate::policy::{self, RequestInfo};
use crate::tries::Try;
use crate::upgrade::{self, Upgrade};
use crate::upstream::{Body, Pooled};

/// What the access log says of a request, kept only when the listener logs.
pub(crate) struct LogLine {
    pub(crate) client: SocketAddr,
    pub(crate) listener: String,
    pub(crate) route: String,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) backend: String,
    pub(crate) upstream_ms: u64,
    pub(crate) request_id: Option<crate::request_id::RequestId>,
}

impl LogLine {
    /// Logs the exchange once its body is over: `rx` bytes sent to the backend, `tx` bytes it
    /// sent back, heads included (what the backend's counters took).
    pub(crate) fn emit(&self, rx: u64, tx: u64, start: Instant) {
        let l = self;
        let id = l.request_id.as_ref().map_or("-", |id| id.as_str());
        tracing::info!(target: "lb::access", client = %l.client, listener = %l.listener, route = %l.route, method = %l.method, path = %l.path, status = l.status, request_id = id, bytes_in = rx, bytes_out = tx, upstream = %l.backend, upstream_ms = l.upstream_ms, duration_ms = start.elapsed().as_millis() as u64);
    }
}

pub(crate) struct LogFields {
    pub(crate) method: Method,
    /// `Some` when the listener logs.
    pub(crate) path: Option<String>,
    pub(crate) upstream_ms: u64,
    /// What the route's policies learnt, for their response phase.
    pub(crate) policy: Option<RequestInfo>,
    /// The cache entry this response may fill.
    pub(crate) fill: Option<Fill>,
    /// The client speaks HTTP/1.x (its connection carries one exchange at a time).
    pub(crate) h1: bool,
    pub(crate) request_id: Option<crate::request_id::RequestId>,
    pub(crate) trace: Option<crate::trace::Hop>,
}

fn box_error(e: hyper::Error) -> crate::upstream::BoxError {
    Box::new(e)
}

impl Gateway {
    /// Streams the backend's response back; the exchange ends (counters, log) when its body
    /// does. A 101 opens the tunnel of an upgraded (WebSocket) connection.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn respond(
        &self,
        mut resp: Response<Incoming>,
        target: &RouteTarget,
        pt: &PoolTarget,
        (t, pooled): (Try, Option<Pooled>),
        sticky: Option<usize>,
        info: &Arc<ConnInfo>,
        start: Instant,
        meter: Arc<Meter>,
        client_upgrade: Option<(Upgrade, hyper::upgrade::OnUpgrade)>,
        log: LogFields,
    ) -> Response<Body> {
        let i = t.index;
        let b = t.flight.backend().clone();
        let mut flight = Some(t.flight);
        let status = resp.status();
        // An HTTP/1.1 backend switches with 101; an HTTP/2 one accepts a CONNECT with 2xx.
        let switching = client_upgrade.is_some()
            && (status == StatusCode::SWITCHING_PROTOCOLS
                || (pt.pool.config.http2 && status.is_success()));
        let backend_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
        let (mut parts, body) = resp.into_parts();
        let mut body: Body = body.map_err(box_error).boxed();
        let upgrade_proto = parts.headers.get(header::UPGRADE).cloned();
        forward::response(&mut parts.headers, self.via.as_deref());
        if let Some(t) = target
            .transform
            .as_ref()
            .filter(|t| t.converts(&parts.headers))
        {
            let converted = match read_whole(body, t.max).await {
                Ok(b) => t.convert(&mut parts.headers, &b),
                Err(None) => Err(format!(
                    "the XML answer is over the {} bytes this route converts",
                    t.max
                )),
                Err(Some(e)) => Err(format!("reading the answer failed: {e}")),
            };
            body = match converted {
                Ok(json) => full(json),
                Err(why) => {
                    drop(flight.take());
                    let resp = answer(
                        502,
                        &format!("the backend's XML could not be turned into JSON: {why}"),
                    );
                    let began = crate::exchange::Began {
                        start,
                        id: log.request_id,
                        trace: log.trace,
                    };
                    return self.answered(Some(target), log.method, log.path, info, &began, resp);
                }
            };
        }
        // What is stored is the backend's response as lb forwards it, before the per-request
        // touches (policies' response phase, sticky cookie) that hits get anew.
        let missed = log.fill.is_some();
        let fill = log.fill.and_then(|f| {
            let plan = f.plan(status, &parts.headers)?;
            Some((f, plan, parts.headers.clone()))
        });
        if missed {
            parts
                .headers
                .insert("x-cache", HeaderValue::from_static("MISS"));
        }
        if let (Some(up_b), Some((kind, up_c))) = (backend_upgrade, client_upgrade) {
            match (kind, upgrade_proto) {
                (Upgrade::H1(_), Some(proto)) => {
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    parts.headers.insert(header::UPGRADE, proto);
                }
                (Upgrade::H1(_), None) => {}
                (Upgrade::WebSocketOverH2, _) => {
                    parts.status = StatusCode::OK;
                    upgrade::h1_accept_to_h2(&mut parts.headers);
                }
            }
            // What follows on the client connection is the new protocol, not HTTP.
            crate::sniff::lock(info.framing()).stop();
            // The backend is in use while the tunnel lasts (least-connections sees it).
            self.tunnel(up_c, up_b, info, flight.take());
        }
        if let Some(pi) = &log.policy {
            policy::on_response(&target.policies, pi, &mut parts.headers);
        }
        // The backend answered before the request's body was over (a 413 or 401, say): the
        // rest of that body is not wanted, and an HTTP/1 client connection that still carries
        // it cannot frame another request; it closes after this answer, as the lean path's.
        if log.h1 && !switching && !meter.request_ended.load(Relaxed) {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some((name, values)) = &pt.sticky {
            if sticky != Some(i) {
                let cookie = crate::balance::sticky_cookie(name, &values[i]);
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    parts.headers.append(header::SET_COOKIE, v);
                }
            }
        }
        if let Some(id) = &log.request_id {
            parts
                .headers
                .insert(crate::request_id::FIELD, id.header_value());
        }
        target.metrics.count(status.as_u16());
        let span = self.span(
            log.trace,
            Some(target),
            &log.method,
            &b.id,
            status.as_u16(),
            log.upstream_ms,
            log.request_id,
        );
        let line = log.path.map(|path| LogLine {
            client: info.client,
            listener: self.listener.clone(),
            route: target.name.clone(),
            method: log.method,
            path,
            status: status.as_u16(),
            backend: b.id.clone(),
            upstream_ms: log.upstream_ms,
            request_id: log.request_id,
        });
        let (duration, stats) = (
            target.metrics.duration.clone(),
            target.metrics.stats.clone(),
        );
        let m = meter.clone();
        // An upgraded connection is the tunnel's now, never the pool's.
        let pooled = pooled.filter(|_| !switching);
        let done = move || {
            // Back to the pool only once the request's body went out whole: a backend that
            // answered early must not be lent to another request while this one's body is
            // still on its way (that request would wait behind it, or worse).
            // An HTTP/1.1 connection's own count has the heads hyper wrote and read; an
            // HTTP/2 stream has only its bodies.
            let (rx, tx) = match &pooled {
                Some(p) => p.moved(),
                None => (m.request.load(Relaxed), m.response.load(Relaxed)),
            };
            match pooled {
                Some(p) if m.request_ended.load(Relaxed) => p.release(),
                Some(p) => p.abort(),
                None => {}
            }
            if let Some(mut f) = flight {
                f.add_bytes(rx, tx);
            }
            let took = start.elapsed();
            duration.record(took.as_secs_f64());
            stats.latency.record(took);
            if let Some(l) = line {
                l.emit(rx, tx, start);
            }
            if let Some(s) = span {
                s.finish(start);
            }
        };
        let body = Counted::new(body, meter, Side::Response, done);
        match fill {
            Some((f, plan, stored_headers)) => Response::from_parts(
                parts,
                Filling::new(body, f, status, stored_headers, plan).boxed(),
            ),
            None => Response::from_parts(parts, body.boxed()),
        }
    }

    /// Relays an upgraded connection both ways until either side closes, it idles for the
    /// listener's `idle_timeout`, or shutdown's grace period ends.
    fn tunnel(
        &self,
        client: hyper::upgrade::OnUpgrade,
        backend: hyper::upgrade::OnUpgrade,
        info: &Arc<ConnInfo>,
        mut flight: Option<lb_core::backend::InFlight>,
    ) {
        let (idle, cancel, listener) = (
            lb_core::proxy::relay::Deadlines {
                idle: self.idle_timeout,
                old_at: info.old_at,
            },
            info.cancel.clone(),
            self.listener.clone(),
        );
        // The tunnel is the client connection now: it keeps the connection's admission
        // (max_connections counts it) after the HTTP task has ended.
        let conn = Arc::clone(info);
        info.tracker.spawn(async move {
            let _conn = conn;
            match tokio::try_join!(client, backend) {
                Ok((c, b)) => {
                    let (mut c, mut b) = (hyper_util::rt::TokioIo::new(c), hyper_util::rt::TokioIo::new(b));
                    let out = lb_core::proxy::relay::relay_streams(&mut c, &mut b, idle, lb_core::proxy::relay::Delivering::default(), &cancel).await;
                    if let Some(f) = flight.as_mut() {
                        f.add_bytes(out.from_client, out.from_backend);
                    }
                    tracing::debug!(listener = %listener, from_client = out.from_client, from_backend = out.from_backend, end = out.end.as_str(), "upgraded connection closed");
                }
                Err(e) => tracing::debug!(listener = %listener, "upgrade failed: {e}"),
            }
        });
    }
}
