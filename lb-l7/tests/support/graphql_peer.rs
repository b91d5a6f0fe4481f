//! A GraphQL backend stand-in that records every request it gets (method, target, body)
//! and answers `{"data":{"backend":NAME}}`, so tests can prove what lb forwarded, and that
//! what it refused never arrived.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// One request as the backend got it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub body: String,
}

pub struct Peer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Peer {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

pub async fn peer(name: &'static str) -> Peer {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        log.lock().expect("lock").push(Seen {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        let text = format!("{{\"data\":{{\"backend\":\"{name}\"}}}}");
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Peer { addr, seen }
}

/// A raw HTTP/1.1 POST of `body` with `Content-Type: ct`.
pub fn post(path: &str, ct: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A POST of the JSON body `{"query": doc}`.
pub fn post_query(path: &str, doc: &str) -> String {
    post(
        path,
        "application/json",
        &serde_json::json!({ "query": doc }).to_string(),
    )
}

/// A GET with `?query=doc`, form-encoded.
pub fn get_query(path: &str, doc: &str) -> String {
    let qs: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", doc)
        .finish();
    format!("GET {path}?{qs} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
}

/// The `extensions.code` of a GraphQL error body.
pub fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no GraphQL error in {body}"))
        .to_string()
}
