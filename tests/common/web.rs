//! In-process HTTP backends (hyper, HTTP/1.1 and HTTP/2) for tests of http listeners.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::backends::Backend;

/// Answers `name METHOD URI proto=X-Forwarded-Proto`; `/count` answers how many body bytes
/// it read (streamed, never held); `/big/N` streams N MiB of zeros. Counts requests into the
/// returned counter.
pub async fn web(name: &'static str) -> (Backend, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = l.local_addr().expect("addr");
    let requests = Arc::new(AtomicU64::new(0));
    let r = requests.clone();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    r.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let proto = req
                            .headers()
                            .get("x-forwarded-proto")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        let text = format!("{name} {} {} proto={proto}", req.method(), req.uri());
                        if let Some(mib) = req.uri().path().strip_prefix("/big/") {
                            let chunks = mib.parse::<u64>().unwrap_or(0) * 16;
                            return Ok(Response::new(Repeat::new(chunks).boxed()));
                        }
                        let body = if req.uri().path() == "/count" {
                            let mut body = req.into_body();
                            let mut n = 0u64;
                            while let Some(Ok(f)) = body.frame().await {
                                n += f.data_ref().map_or(0, |d| d.len() as u64);
                            }
                            n.to_string()
                        } else {
                            text
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)).boxed()))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (Backend::from_task(addr, task), requests)
}

/// A body of `left` 64 KiB chunks of zeros, made as they are read.
pub struct Repeat {
    chunk: Bytes,
    left: u64,
}

impl Repeat {
    pub fn new(chunks: u64) -> Self {
        Repeat {
            chunk: Bytes::from(vec![0u8; 64 * 1024]),
            left: chunks,
        }
    }
}

impl hyper::body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.clone()))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left * self.chunk.len() as u64)
    }
}

/// What a one-request HTTP/1.1 client got back: status, head and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    /// The value of response header `name` (lowercase, as hyper writes it).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` with `extra` header lines on a fresh connection, read to the end (bounded).
pub async fn fetch(addr: SocketAddr, path: &str, extra: &str) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: h\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}
