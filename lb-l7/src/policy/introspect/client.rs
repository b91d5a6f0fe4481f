//! lb's client to one introspection endpoint (RFC 7662 §2.1): `POST` of
//! `token=…&token_type_hint=access_token`, form-encoded, with HTTP Basic client
//! authentication (RFC 6749 §2.3.1: id and secret form-encoded first), over HTTP/1.1, plain
//! or TLS (rustls, the endpoint's name verified). A few idle connections are kept; a kept
//! one that fails is retried once on a new one (introspection changes nothing, so asking
//! twice is safe). Connect, request and the whole answer fit in one timeout; answers past
//! [`MAX_ANSWER`] bytes are an error. I/O.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use lb_core::config::Endpoint;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::answer::MAX_ANSWER;

/// Idle connections kept, at most.
const IDLE: usize = 8;

/// Why the endpoint gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    Connect(String),
    Timeout(Duration),
    Status(u16),
    Exchange(String),
    TooLarge,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Timeout(t) => write!(f, "no answer within {t:?}"),
            Self::Status(s) => write!(f, "answered status {s}"),
            Self::Exchange(e) => write!(f, "exchange failed: {e}"),
            Self::TooLarge => write!(f, "answer larger than {MAX_ANSWER} bytes"),
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

pub struct Client {
    endpoint: Endpoint,
    host: HeaderValue,
    authorization: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    idle: Mutex<Vec<Sender>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.url)
            .finish_non_exhaustive()
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`.
pub fn basic(client_id: &str, secret: &str) -> String {
    use base64::Engine;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The form body asking about `token`.
pub fn form(token: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .append_pair("token_type_hint", "access_token")
        .finish()
}

impl Client {
    /// `None` when a value cannot be sent (the config checked them already) or an https
    /// endpoint has no TLS config.
    pub fn new(
        endpoint: &Endpoint,
        client_id: &str,
        secret: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Option<Self> {
        let tls = match (endpoint.tls, tls) {
            (false, _) => None,
            (true, Some(cfg)) => {
                let name = ServerName::try_from(endpoint.host.clone()).ok()?;
                Some((TlsConnector::from(cfg), name))
            }
            (true, None) => return None,
        };
        Some(Self {
            host: HeaderValue::from_str(&endpoint.authority()).ok()?,
            authorization: HeaderValue::from_str(&basic(client_id, secret)).ok()?,
            endpoint: endpoint.clone(),
            tls,
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The endpoint's URL, for logs.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    async fn connect(&self) -> Result<Sender, CallError> {
        let tcp = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(|e| CallError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let handshake = |e: hyper::Error| CallError::Connect(e.to_string());
        let sender = match &self.tls {
            None => {
                let (s, conn) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(handshake)?;
                tokio::spawn(conn);
                s
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| CallError::Connect(format!("TLS: {e}")))?;
                let (s, conn) = http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(handshake)?;
                tokio::spawn(conn);
                s
            }
        };
        Ok(sender)
    }

    fn kept(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn keep(&self, s: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE && s.is_ready() {
            idle.push(s);
        }
    }

    fn request(&self, token: &str) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::from(form(token))));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self
            .endpoint
            .path
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        h.insert(header::AUTHORIZATION, self.authorization.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        req
    }

    async fn exchange(&self, mut s: Sender, token: &str) -> Result<Bytes, (CallError, bool)> {
        let resp = s
            .send_request(self.request(token))
            .await
            // Nothing came back: a kept connection may have been closed under us.
            .map_err(|e| (CallError::Exchange(e.to_string()), true))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                let large = e.is::<http_body_util::LengthLimitError>();
                let err = if large {
                    CallError::TooLarge
                } else {
                    CallError::Exchange(e.to_string())
                };
                (err, false)
            })?
            .to_bytes();
        self.keep(s);
        if status != StatusCode::OK {
            return Err((CallError::Status(status.as_u16()), false));
        }
        Ok(body)
    }

    /// The body of the endpoint's `200 OK` answer about `token`.
    pub async fn call(&self, token: &str) -> Result<Bytes, CallError> {
        let work = async {
            if let Some(s) = self.kept() {
                match self.exchange(s, token).await {
                    Err((_, true)) => {}
                    done => return done.map_err(|(e, _)| e),
                }
            }
            let s = self.connect().await?;
            self.exchange(s, token).await.map_err(|(e, _)| e)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(CallError::Timeout(self.timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_form_are_encoded() {
        // RFC 6749 §2.3.1: each part form-encoded before base64.
        assert_eq!(basic("lb", "s3cret"), "Basic bGI6czNjcmV0");
        let decoded = |v: &str| {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD
                .decode(v.trim_start_matches("Basic "))
                .expect("base64");
            String::from_utf8(b).expect("utf8")
        };
        assert_eq!(decoded(&basic("a:b", "p w&")), "a%3Ab:p+w%26");
        assert_eq!(
            form("ab+/=="),
            "token=ab%2B%2F%3D%3D&token_type_hint=access_token"
        );
    }
}
