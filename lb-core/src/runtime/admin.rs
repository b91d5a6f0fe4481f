//! The admin HTTP API (SPEC §3) on `admin.bind`: metrics, status, and runtime backend
//! control. Small and dependency-light: hyper's HTTP/1 server with a hand-routed match.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{status, ReloadError, Shared};
use crate::backend::AdminState;

type Resp = Response<Full<Bytes>>;

/// How long an admin client has to send a whole request head (slowloris), and how long a
/// kept-alive admin connection may wait for its next one.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves until `stop`; connections are tracked so shutdown can let them finish.
pub async fn serve(
    sock: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    if let Ok(a) = sock.local_addr() {
        tracing::info!("admin API on http://{a}/ (metrics at /metrics, status at /api/status)");
    }
    loop {
        let (stream, peer) = tokio::select! {
            r = sock.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, peer, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn handle(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    let state = shared.state.load();
    let token = state
        .loaded
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.as_deref());
    let authorized = token.is_none_or(|t| {
        req.headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), t.as_bytes()))
    });
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
            let body = shared
                .prometheus
                .as_ref()
                .map(|h| h.render())
                .unwrap_or_default();
            with_type(
                Response::new(Full::new(Bytes::from(body))),
                "text/plain; version=0.0.4",
            )
        }
        (&Method::GET, ["api", "status"]) => json_response(StatusCode::OK, &status::status(shared)),
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
        (_, ["metrics"] | ["api", "status"] | []) | (_, ["api", "reload"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// The dashboard: one self-contained page (no CDN, no build step) polling `/api/status`.
const DASHBOARD: &str = include_str!("dashboard.html");

const INDEX: &str = "lb admin API\n\nGET  /                                            dashboard\nGET  /metrics                                     Prometheus metrics\nGET  /api/status                                  JSON status of listeners, pools, backends\nPOST /api/pools/{pool}/backends/{addr}/drain      no new connections; open ones finish\nPOST /api/pools/{pool}/backends/{addr}/disable    maintenance: no traffic, no health checks\nPOST /api/pools/{pool}/backends/{addr}/enable     back to normal\nPOST /api/reload                                  re-read the config file (same as SIGHUP)\nPOST /api/cache/purge                             empty every HTTP cache policy's store\n";

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

fn json_response(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = with_type(
        Response::new(Full::new(Bytes::from(v.to_string()))),
        "application/json",
    );
    *r.status_mut() = status;
    r
}

fn error(status: StatusCode, msg: &str) -> Resp {
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
