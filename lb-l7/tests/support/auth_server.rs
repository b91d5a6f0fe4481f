//! A small OAuth 2.0 introspection endpoint (RFC 7662) for the tests: it checks the client's
//! HTTP Basic credentials and the form body, counts the calls, and answers each token as
//! the test set it up (JSON, a status, garbage, a huge body, or never).
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The client the gateway is configured as.
pub const CLIENT_ID: &str = "lb-test";
pub const SECRET: &str = "s3cr3t: with spaces&more";
pub const SECRET_ENV: &str = "LB_TEST_INTROSPECTION_SECRET";

/// How the server answers one token.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body (`application/json`).
    Json(String),
    /// This status, empty body.
    Status(u16),
    /// After this long (tokio time), 200 with the body.
    Later(Duration, String),
    /// Never.
    Hang,
}

#[derive(Clone)]
pub struct AuthServer {
    pub addr: SocketAddr,
    calls: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
}

impl AuthServer {
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls with wrong client credentials or a wrong form.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn reply(&self, token: &str, r: Reply) {
        self.replies
            .lock()
            .expect("replies")
            .insert(token.to_string(), r);
    }

    /// `http://ADDR/introspect`.
    pub fn url(&self) -> String {
        format!("http://{}/introspect", self.addr)
    }
}

fn expected_authorization() -> String {
    use base64::Engine;
    // RFC 6749 §2.3.1: id and secret form-encoded, then Basic.
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(CLIENT_ID),
            enc(SECRET)
        ))
    )
}

type Reply200 = Response<Full<Bytes>>;

fn status(code: u16, body: &str) -> Reply200 {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(code).expect("status");
    r
}

async fn answer(s: AuthServer, req: Request<Incoming>) -> Result<Reply200, Infallible> {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let auth_ok = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == expected_authorization().as_bytes());
    let form_ok = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/x-www-form-urlencoded");
    let post = req.method() == http::Method::POST && req.uri().path() == "/introspect";
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let Ok(body) = body else {
        return Ok(status(400, ""));
    };
    let fields: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let hint_ok = fields.get("token_type_hint").map(String::as_str) == Some("access_token");
    let Some(token) = fields
        .get("token")
        .filter(|_| auth_ok && form_ok && post && hint_ok)
    else {
        s.refused.fetch_add(1, Ordering::SeqCst);
        return Ok(status(401, r#"{"error":"invalid_client"}"#));
    };
    let reply = s.replies.lock().expect("replies").get(token).cloned();
    Ok(match reply {
        None => status(200, r#"{"active":false}"#),
        Some(Reply::Json(b)) => status(200, &b),
        Some(Reply::Status(c)) => status(c, ""),
        Some(Reply::Later(d, b)) => {
            tokio::time::sleep(d).await;
            status(200, &b)
        }
        Some(Reply::Hang) => std::future::pending().await,
    })
}

/// A server on a loopback port.
pub async fn auth_server() -> AuthServer {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let s = AuthServer {
        addr: l.local_addr().expect("addr"),
        calls: Arc::default(),
        refused: Arc::default(),
        replies: Arc::default(),
    };
    let served = s.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            let s = served.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(s.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), svc)
                    .await;
            });
        }
    });
    s
}
