//! The admin HTTP API (SPEC §3) on `admin.bind`: metrics, status, and runtime backend
//! control. Small and dependency-light: hyper's HTTP/1 server with a hand-routed match.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admin_access::{self, Refusal};
use super::admin_conn;
use super::{status, ReloadError, Shared};
use crate::backend::AdminState;
use crate::proxy::accept_backoff::{AcceptBackoff, LogEvery};

pub(super) type Resp = Response<Full<Bytes>>;

/// Serves until `stop`; connections are tracked so shutdown can let them finish. At most
/// `admin.max_connections` are open at once: the admin port must never take the file
/// descriptors the data plane needs.
pub async fn serve(
    sock: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    if let Ok(a) = sock.local_addr() {
        tracing::info!("admin API on http://{a}/ (metrics at /metrics, status at /api/status)");
    }
    let max = shared
        .state
        .load()
        .loaded
        .config
        .admin
        .as_ref()
        .map_or(crate::config::Admin::DEFAULT_MAX_CONNECTIONS, |a| {
            a.max_connections
        });
    let slots = Arc::new(Semaphore::new(max));
    let refused = metrics::counter!("lb_rejected_connections_total", "listener" => "admin", "reason" => "admin_limit");
    let mut refusals = LogEvery::new(std::time::Duration::from_secs(1));
    let mut backoff = AcceptBackoff::new("admin");
    loop {
        let (stream, peer) = tokio::select! {
            x = backoff.accept(&sock) => x,
            () = stop.cancelled() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: the client learns now, and the descriptor is free again.
            drop(stream);
            refused.increment(1);
            if let Some(n) = refusals.record(tokio::time::Instant::now()) {
                tracing::warn!(
                    "admin: {max} connections open (admin.max_connections); refused {n} more"
                );
            }
            continue;
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                // Answered on the blocking pool, not the runtime's thread: a reload builds
                // the whole new config (a second for a 10,000-backend pool) and a status or
                // metrics page of a big config takes a while too; neither may hold up health
                // checks or, with the work-stealing runtime, connections.
                async move {
                    // The body (only `POST /api/pools/{pool}/backends` has one) is read here,
                    // bounded; a bigger one is refused unread.
                    let (parts, body) = req.into_parts();
                    let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(
                        body, MAX_BODY,
                    ))
                    .await
                    {
                        Ok(b) => b.to_bytes(),
                        Err(_) => {
                            return Ok(error(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "request body too large or cut short",
                            ))
                        }
                    };
                    let req = Request::from_parts(parts, body);
                    let answer = tokio::task::spawn_blocking(move || handle(&shared, peer, req));
                    Ok::<_, Infallible>(answer.await.unwrap_or_else(|e| {
                        tracing::error!(error = %e, "admin request failed");
                        error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                    }))
                }
            });
            admin_conn::serve(stream, peer, svc).await;
        });
    }
}

/// The largest admin request body read.
const MAX_BODY: usize = 4096;

fn handle(shared: &Shared, peer: SocketAddr, req: Request<Bytes>) -> Resp {
    let mut r = route(shared, peer, req);
    // The page must never be framed by another site (clickjacking its buttons).
    let h = r.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // A refused client does not keep its slot (admin.max_connections): one that asks again
    // and again without the token or from a foreign origin or Host would otherwise hold it
    // for good and keep the operator out.
    if matches!(
        r.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::MISDIRECTED_REQUEST
    ) {
        r.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

fn route(shared: &Shared, peer: SocketAddr, req: Request<Bytes>) -> Resp {
    let state = shared.state.load();
    let admin = state.loaded.config.admin.as_ref();
    let token = admin.and_then(|a| a.token.as_deref());
    let authorized = token.is_none_or(|t| {
        req.headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), t.as_bytes()))
    });
    // A loopback GET needs no token, so a token guards nothing against a page on a rebound
    // name in a browser on this host: check its Host as if there were no token.
    let loopback_free = !authorized && peer.ip().is_loopback();
    let rules = admin_access::Rules {
        hosts: admin.map_or(&[][..], |a| &a.hosts),
        check_host: loopback_free || admin.is_none_or(|a| a.checks_host()),
    };
    if let Err(why) = admin_access::check(
        rules,
        req.method(),
        req.uri().authority().map(|a| a.as_str()),
        req.headers(),
    ) {
        tracing::debug!(client = %peer, "admin request refused: {why:?}");
        let reason = match why {
            Refusal::Host(_) => "host",
            Refusal::Origin(_) => "origin",
        };
        metrics::counter!("lb_admin_refused_total", "reason" => reason).increment(1);
        return match why {
            Refusal::Host(h) => error(
                StatusCode::MISDIRECTED_REQUEST,
                &format!("this admin API does not answer to Host \"{h}\"; use an IP address or localhost, or list the name in [admin] hosts"),
            ),
            Refusal::Origin(o) => error(
                StatusCode::FORBIDDEN,
                &format!("cross-origin request refused ({o})"),
            ),
        };
    }
    let path = req.uri().path().to_string();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method(), segs.as_slice()) {
        (&Method::GET, _) if !authorized && !peer.ip().is_loopback() => unauthorized(),
        (&Method::POST, _) if !authorized => unauthorized(),
        (&Method::GET, ["metrics"]) => {
            status::set_priority_loads(shared);
            let body = shared
                .metrics
                .as_ref()
                .map(crate::series::Exporter::render)
                .unwrap_or_default();
            with_type(
                Response::new(Full::new(Bytes::from(body))),
                "text/plain; version=0.0.4",
            )
        }
        (&Method::GET, ["api", "status"]) => json_response(StatusCode::OK, &status::status(shared)),
        (&Method::GET, ["api", "history"]) => {
            json_response(StatusCode::OK, &super::history::json())
        }
        (&Method::DELETE, _) if !authorized => unauthorized(),
        (&Method::POST, ["api", "pools", pool, "backends"]) => {
            super::admin_members::add(shared, pool, req.body())
        }
        (&Method::DELETE, ["api", "pools", pool, "backends", addr]) => {
            super::admin_members::delete(shared, pool, addr)
        }
        (&Method::GET | &Method::HEAD, ["api", "ready"]) => {
            let r = shared.readiness();
            let code = if r.ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(code, &r.to_json())
        }
        // Answered by the admin API's own task on the control runtime: a reply means the
        // process is alive and its control loop turns, whatever the backends do.
        (&Method::GET | &Method::HEAD, ["api", "live"]) => json_response(
            StatusCode::OK,
            &json!({ "live": true, "phase": shared.phase.borrow().as_str() }),
        ),
        (&Method::POST, ["api", "pools", pool, "backends", addr, action]) => {
            backend_action(shared, pool, addr, action)
        }
        (&Method::POST, ["api", "cache", "purge"]) => {
            let state = shared.state.load();
            let purged: usize = state
                .listeners
                .iter()
                .filter_map(|l| l.shared.route.load().app.clone())
                .map(|app| app.purge_cache())
                .sum();
            json_response(
                StatusCode::OK,
                &serde_json::json!({ "purged_caches": purged }),
            )
        }
        (&Method::POST, ["api", "reload"]) => match shared.reload() {
            Ok(changes) => json_response(StatusCode::OK, &changes),
            Err(ReloadError::Unavailable(why)) => error(StatusCode::CONFLICT, why),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        (&Method::GET, []) => with_type(
            Response::new(Full::new(Bytes::from_static(DASHBOARD.as_bytes()))),
            "text/html; charset=utf-8",
        ),
        (&Method::GET, ["api"]) => with_type(
            Response::new(Full::new(Bytes::from_static(INDEX.as_bytes()))),
            "text/plain; charset=utf-8",
        ),
        (_, ["metrics"] | ["api", "status" | "history" | "ready" | "live"] | [])
        | (_, ["api", "reload"]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// The dashboard: one self-contained page (no CDN, no build step) polling `/api/status`.
const DASHBOARD: &str = include_str!("dashboard.html");

const INDEX: &str = "lb admin API\n\nGET  /                                            dashboard\nGET  /metrics                                     Prometheus metrics\nGET  /api/status                                  JSON status of listeners, pools, backends\nGET  /api/ready                                   200 serving; 503 starting, stopping, draining or a used pool has no backend up\nGET  /api/live                                    200 while the process answers\nGET  /api/history                                 the last 5 minutes of rate, errors and p99 per listener and backend\nPOST /api/pools/{pool}/backends/{addr}/drain      no new connections; open ones finish\nPOST /api/pools/{pool}/backends/{addr}/disable    maintenance: no traffic, no health checks\nPOST /api/pools/{pool}/backends/{addr}/enable     back to normal\nPOST /api/pools/{pool}/backends                   add a member: {\"addr\", \"weight\", \"backup\", \"priority\", \"zone\"}\nDELETE /api/pools/{pool}/backends/{addr}          drain a member, then remove it\nPOST /api/reload                                  re-read the config file (same as SIGHUP)\nPOST /api/cache/purge                             empty every HTTP cache policy's store\n";

fn backend_action(shared: &Shared, pool: &str, addr: &str, action: &str) -> Resp {
    let state = match action {
        "drain" => AdminState::Draining,
        "disable" => AdminState::Disabled,
        "enable" => AdminState::Enabled,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("unknown action \"{other}\"; use drain, disable or enable"),
            )
        }
    };
    let snapshot = shared.state.load();
    let Some(p) = snapshot.pool(pool) else {
        return error(StatusCode::NOT_FOUND, &format!("no pool \"{pool}\""));
    };
    let Some(b) = p.find(addr) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("pool \"{pool}\" has no backend \"{addr}\""),
        );
    };
    b.set_admin_state(state);
    json_response(
        StatusCode::OK,
        &json!({ "pool": pool, "backend": b.id, "state": b.state().as_str() }),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn with_type(mut r: Resp, ct: &'static str) -> Resp {
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

pub(super) fn json_response(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = with_type(
        Response::new(Full::new(Bytes::from(v.to_string()))),
        "application/json",
    );
    *r.status_mut() = status;
    r
}

pub(super) fn error(status: StatusCode, msg: &str) -> Resp {
    json_response(status, &json!({ "error": msg, "status": status.as_u16() }))
}

fn unauthorized() -> Resp {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Bearer realm=\"lb-admin\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("%5B%3A%3A1%5D%3A80"), "[::1]:80");
        assert_eq!(percent_decode("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
