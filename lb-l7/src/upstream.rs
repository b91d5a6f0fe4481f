//! lb's HTTP client to one pool's backends: keep-alive connections pooled per backend
//! (bounded, with an idle timeout), HTTP/1.1 or HTTP/2 (`http2 = true`), plain or TLS
//! (`backend_tls`).
//!
//! It is hyper's connection API rather than a ready-made pooled client because lb must know
//! whether a request left: a connect failure, or a pooled connection found closed before the
//! request was written, hands the request back untouched, so it can go to another backend
//! whatever its method and body. Once written, only the caller may decide to retry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::idle::Idle;
use crate::kept_conns::Conns;
use crate::wire::{Mark, Metered, Wire};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bodies lb sends either way: streamed from the other side, or its own small answers.
pub type Body = BoxBody<Bytes, BoxError>;

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made; the request is handed back, never sent.
    Connect(String, Box<Request<Body>>),
    /// The request was (at least partly) sent, then the exchange failed.
    Failed(hyper::Error),
    /// The request went out on a kept connection that broke before an answer: the usual race
    /// with the backend's keep-alive timer ([`crate::tries::Tries::may_resend_stale`]).
    Stale(hyper::Error),
    /// The request went out on a new connection that closed or reset before an answer.
    Unanswered(hyper::Error),
}

/// TLS to the backends: the client config (with ALPN h2 for http2 pools) and the name to send.
#[derive(Debug, Clone)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: Option<ServerName<'static>>,
}

/// One pool's client; `conns[i]` holds backend `i`'s connections (kept across gateway
/// rebuilds by [`crate::kept_conns::Kept`]).
#[derive(Debug)]
pub struct Upstream {
    http2: bool,
    tls: Option<Tls>,
    connect_timeout: Duration,
    /// `proxy_protocol`: the version to send; the listener's shared client sends none and
    /// lends no connection, each client connection gets its own ([`Upstream::for_client`]).
    proxy: Option<lb_core::config::ProxyVersion>,
    /// The PROXY header this client's connections start with.
    header: Option<Vec<u8>>,
    conns: Vec<Arc<Conns>>,
}

type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

impl Upstream {
    /// A client over `conns`, one per backend in pool order.
    pub fn new(
        conns: Vec<Arc<Conns>>,
        http2: bool,
        tls: Option<Tls>,
        connect_timeout: Duration,
        proxy: Option<lb_core::config::ProxyVersion>,
    ) -> Self {
        Self {
            http2,
            tls,
            connect_timeout,
            proxy,
            header: None,
            conns,
        }
    }

    /// Whether each client connection needs its own client ([`Upstream::for_client`]):
    /// connections that carry one client's PROXY header must never serve another client,
    /// as with HAProxy's `send-proxy` in HTTP mode.
    pub fn per_client(&self) -> bool {
        self.proxy.is_some()
    }

    /// A client of the same backends for one client connection, whose new connections start
    /// with a PROXY header naming `client` and `local`; its connections are its own.
    pub fn for_client(&self, client: SocketAddr, local: SocketAddr) -> Self {
        let mut own = Self::new(
            (0..self.conns.len()).map(|_| Arc::default()).collect(),
            self.http2,
            self.tls.clone(),
            self.connect_timeout,
            self.proxy,
        );
        own.header = self
            .proxy
            .map(|v| lb_core::proxy_protocol::encode(v, client, local));
        own
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sends `req` to backend `i` at `addr`, on a pooled connection or a new one (`fresh`:
    /// only a new one).
    pub async fn send(
        &self,
        i: usize,
        addr: SocketAddr,
        req: Request<Body>,
        fresh: bool,
    ) -> Result<(Response<Incoming>, Option<Pooled>), SendError> {
        let Some(conns) = self.conns.get(i) else {
            return Err(SendError::Connect(format!("no backend {i}"), Box::new(req)));
        };
        if self.http2 {
            self.send_h2(conns, addr, req).await.map(|r| (r, None))
        } else {
            self.send_h1(conns, addr, req, fresh).await
        }
    }

    async fn send_h1(
        &self,
        conns: &Arc<Conns>,
        addr: SocketAddr,
        mut req: Request<Body>,
        fresh_only: bool,
    ) -> Result<(Response<Incoming>, Option<Pooled>), SendError> {
        // A pooled connection the backend closed meanwhile hands the request back; then try
        // the next one, and at last a new connection.
        loop {
            let pooled = if fresh_only {
                None
            } else {
                conns.idle.take(|s| !s.sender.is_closed())
            };
            let (mut h1, fresh) = match pooled {
                Some(mut s) => {
                    // Ready once the previous exchange on it is over; an error means closed.
                    if s.sender.ready().await.is_err() {
                        continue;
                    }
                    (s, false)
                }
                None => match Box::pin(self.connect_h1(addr)).await {
                    Ok(s) => (s, true),
                    Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                },
            };
            let mark = h1.wire.mark();
            match h1.sender.try_send_request(req).await {
                Ok(resp) => {
                    let pooled = Pooled {
                        conns: conns.clone(),
                        h1,
                        mark,
                    };
                    return Ok((resp, Some(pooled)));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if !fresh => req = r,
                    Some(r) => {
                        return Err(SendError::Connect(e.into_error().to_string(), Box::new(r)))
                    }
                    None if broke_unanswered(e.error()) => {
                        let e = e.into_error();
                        return Err(if fresh {
                            SendError::Unanswered(e)
                        } else {
                            SendError::Stale(e)
                        });
                    }
                    None => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
    }

    async fn send_h2(
        &self,
        conns: &Conns,
        addr: SocketAddr,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut sender = {
            let mut shared = conns.h2.lock().await;
            match shared.as_ref().filter(|s| !s.is_closed()) {
                Some(s) => s.clone(),
                // Boxed: a connect (TLS and HTTP/2 handshakes included) is a large future,
                // and the common path, a request on an open connection, should not carry it.
                None => match Box::pin(self.connect_h2(addr)).await {
                    Ok(s) => {
                        *shared = Some(s.clone());
                        s
                    }
                    Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                },
            }
        };
        if let Err(e) = sender.ready().await {
            *conns.h2.lock().await = None;
            return Err(SendError::Connect(e.to_string(), Box::new(req)));
        }
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(resp),
            Err(mut e) => match e.take_message() {
                Some(r) => {
                    *conns.h2.lock().await = None;
                    Err(SendError::Connect(e.into_error().to_string(), Box::new(r)))
                }
                None => Err(SendError::Failed(e.into_error())),
            },
        }
    }

    async fn connect_h2(&self, addr: SocketAddr) -> Result<http2::SendRequest<Body>, String> {
        let io = self.connect(addr).await?;
        let (s, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(s)
    }

    /// A new HTTP/1.1 connection (boxed by the caller for the reason given in `send_h2`).
    async fn connect_h1(&self, addr: SocketAddr) -> Result<H1, String> {
        let io = self.connect(addr).await?;
        let wire = Arc::new(Wire::default());
        let io = Metered::new(io, wire.clone());
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn.with_upgrades()).abort_handle();
        Ok(H1 { sender, task, wire })
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Stream, String> {
        let connect = async {
            let tcp = self.tcp(addr).await?;
            match &self.tls {
                None => Ok(Either::Left(tcp)),
                Some(t) => {
                    let name = t
                        .server_name
                        .clone()
                        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
                    TlsConnector::from(t.config.clone())
                        .connect(name, tcp)
                        .await
                        .map(Either::Right)
                        .map_err(|e| format!("backend TLS: {e}"))
                }
            }
        };
        within(self.connect_timeout, connect).await
    }

    /// A plain TCP connection to a backend, for the lean path (which pools its own).
    pub(crate) async fn connect_tcp(&self, addr: SocketAddr) -> Result<TcpStream, String> {
        within(self.connect_timeout, self.tcp(addr)).await
    }

    /// A TCP connection to `addr`, its PROXY header sent.
    async fn tcp(&self, addr: SocketAddr) -> Result<TcpStream, String> {
        use tokio::io::AsyncWriteExt;
        if self.proxy.is_some() && self.header.is_none() {
            // The listener's shared client of a proxy_protocol listener: fail closed.
            return Err("no PROXY header for this connection".into());
        }
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        if let Some(h) = &self.header {
            tcp.write_all(h).await.map_err(|e| e.to_string())?;
        }
        Ok(tcp)
    }

    /// The lean path's idle connections to backend `i`.
    pub(crate) fn lean_idle(&self, i: usize) -> Option<&Idle<TcpStream>> {
        self.conns.get(i).map(|c| &c.lean)
    }
}

/// A kept connection that closed or reset instead of answering.
fn broke_unanswered(e: &hyper::Error) -> bool {
    e.is_incomplete_message()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

async fn within<T>(
    limit: Duration,
    connect: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, connect).await {
        Ok(r) => r,
        Err(_) => Err(format!("connect timeout after {limit:?}")),
    }
}

/// An HTTP/1.1 connection to a backend: the handle requests go through, and its task.
#[derive(Debug)]
pub(crate) struct H1 {
    sender: http1::SendRequest<Body>,
    task: tokio::task::AbortHandle,
    /// The connection's bytes, heads included.
    wire: Arc<Wire>,
}

/// An HTTP/1.1 connection lent to one exchange; [`Pooled::release`] it when the response
/// body has been read to the end (or dropped) and the connection goes back to the pool.
/// One exchange at a time per connection: the next user waits until it is ready.
#[derive(Debug)]
pub struct Pooled {
    conns: Arc<Conns>,
    h1: H1,
    /// The connection's counts when this exchange began.
    mark: Mark,
}

impl Pooled {
    /// The bytes this exchange moved on its connection, heads included:
    /// `(to_backend, from_backend)`.
    pub fn moved(&self) -> (u64, u64) {
        self.mark.moved()
    }

    pub fn release(self) {
        if !self.h1.sender.is_closed() {
            self.conns.idle.put(self.h1, |s| !s.sender.is_closed());
        }
    }

    /// Ends the connection now, with whatever it was still sending (the rest of a request
    /// body the backend answered without reading).
    pub fn abort(self) {
        self.h1.task.abort();
    }
}
