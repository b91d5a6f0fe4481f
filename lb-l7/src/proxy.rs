//! The HTTP reverse proxy itself: serves HTTP/1.1 (keep-alive) and HTTP/2 (prior knowledge)
//! on one client connection, checks and routes each request, and forwards it to a backend of
//! the route's pool over a pooled keep-alive HTTP/1.1 connection, streaming both bodies.
//! Requests lb refuses get the gateway's JSON answer (SPEC §2): 400, 404, 414, 431, 502,
//! 503, 504.
//!
//! The backend receives the normalised path (the one that was routed), never the spelling
//! the client used, so what a route allowed is exactly what the backend serves.
//!
//! Which backend serves a pool is asked of an [`Upstreams`]: the runtime will plug lb-core's
//! pools and balancing algorithms in there; the tests use a fixed list.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::forward::{self, Trust};
use crate::guard::{self, Limits};
use crate::path;
use crate::router::{RequestHead, Router};

/// Bodies lb sends: streamed from the other side, or its own small answers.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Picks the backend for one request of a pool.
pub trait Upstreams: Send + Sync + 'static {
    /// A backend of pool `pool`, or `None` when none is available.
    fn pick(&self, pool: usize) -> Option<SocketAddr>;
}

/// Where a route sends its requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// The route's name, for logs and metrics.
    pub name: String,
    pub pool: usize,
    /// Removed from the front of the path before forwarding (`strip_prefix = true` on a
    /// `path_prefix` route).
    pub strip_prefix: Option<String>,
    /// From sending the request to the backend's response head.
    pub timeout: Duration,
}

/// One HTTP listener's proxy: routes, limits, and the pooled client to the backends.
pub struct Gateway<U> {
    router: Router<Target>,
    /// Takes what no route matches; without it, 404.
    default: Option<Target>,
    upstreams: U,
    limits: Limits,
    trust: Trust,
    via: Option<String>,
    client: Client<HttpConnector, Body>,
}

impl<U> std::fmt::Debug for Gateway<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.router.len())
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

/// Idle keep-alive connections kept per backend, and for how long.
const IDLE_PER_BACKEND: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl<U: Upstreams> Gateway<U> {
    pub fn new(
        router: Router<Target>,
        default: Option<Target>,
        upstreams: U,
        limits: Limits,
        trust: Trust,
        via: Option<String>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_PER_BACKEND)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        Self {
            router,
            default,
            upstreams,
            limits,
            trust,
            via,
            client,
        }
    }

    /// Serves one client connection (HTTP/1.1, or HTTP/2 when it opens with the preface)
    /// until it closes.
    pub async fn serve<IO>(self: Arc<Self>, io: IO, client: SocketAddr, tls: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |req| {
            let gw = self.clone();
            async move { Ok::<_, Infallible>(gw.handle(req, client, tls).await) }
        });
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .await;
    }

    /// Answers one request: refused, or forwarded and streamed back.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        tls: bool,
    ) -> Response<Body> {
        if let Err(r) = guard::check(req.uri(), req.version(), req.headers(), &self.limits) {
            return refuse(r.status(), &r.to_string());
        }
        let path = match path::normalize(req.uri().path()) {
            Ok(p) => p,
            Err(e) => return refuse(400, &e.to_string()),
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
        let Some(target) = routed.or(self.default.as_ref()) else {
            return answer(404, "no route matches this request");
        };
        let Some(backend) = self.upstreams.pick(target.pool) else {
            return answer(503, "no healthy backend");
        };
        let (mut parts, body) = req.into_parts();
        let forwarded_path = match &target.strip_prefix {
            Some(prefix) => strip(&path, prefix),
            None => path,
        };
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{forwarded_path}?{q}"),
            None => forwarded_path,
        };
        parts.uri = match Uri::builder()
            .scheme("http")
            .authority(backend.to_string())
            .path_and_query(path_and_query)
            .build()
        {
            Ok(u) => u,
            Err(e) => return answer(400, &format!("cannot forward this request target: {e}")),
        };
        parts.version = Version::HTTP_11;
        let info = forward::Client {
            addr: client.ip(),
            tls,
            host: host.clone(),
        };
        forward::request(&mut parts.headers, &info, self.trust, self.via.as_deref());
        // HTTP/2 clients send :authority, not Host; the backend speaks HTTP/1.1.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
                parts.headers.insert(header::HOST, v);
            }
        }
        let upstream = Request::from_parts(parts, body.boxed());
        match tokio::time::timeout(target.timeout, self.client.request(upstream)).await {
            Err(_) => answer(504, "the backend did not answer in time"),
            Ok(Err(e)) => answer(
                502,
                &format!("backend {backend} failed: {}", root_cause(&e)),
            ),
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                forward::response(&mut parts.headers, self.via.as_deref());
                Response::from_parts(parts, body.boxed())
            }
        }
    }
}

/// `path` without `prefix` (a prefix the route matched), keeping it absolute.
fn strip(path: &str, prefix: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some("") => "/".to_string(),
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => path.to_string(),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A gateway answer to a malformed request: the connection closes after it, since what
/// follows on it cannot be trusted to be framed as the client meant.
fn refuse(status: u16, message: &str) -> Response<Body> {
    let mut resp = answer(status, message);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A gateway answer: `{"error": "...", "status": N}`.
pub fn answer(status: u16, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message, "status": status }).to_string();
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_keeps_the_path_absolute() {
        assert_eq!(strip("/api/users", "/api"), "/users");
        assert_eq!(strip("/api", "/api"), "/");
        assert_eq!(strip("/api/", "/api/"), "/");
        assert_eq!(strip("/apix", "/api"), "/apix");
    }
}
