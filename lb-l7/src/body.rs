//! Bodies crossing lb: streamed frame by frame (never buffered whole, so a 1 GiB upload costs
//! no more memory than a small one) and counted, with a hook run once the body is done or
//! dropped, which is when an exchange is over for the access log and the backend's
//! in-flight count. Also lb's own small JSON answers.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::upstream::{Body, BoxError};

/// The bytes of one exchange's bodies: request (client → backend) and response; and how the
/// request body is getting on, for the time limits of an attempt ([`Meter::late`]).
#[derive(Debug)]
pub struct Meter {
    pub request: AtomicU64,
    pub response: AtomicU64,
    /// The client's body broke (malformed chunking, cut off): the exchange's failure is the
    /// client's, not the backend's.
    pub client_failed: AtomicBool,
    /// The request body was sent whole (or there was none).
    pub request_ended: AtomicBool,
    /// The request body waits on the client (its last poll found nothing to read).
    waiting_for_client: AtomicBool,
    born: tokio::time::Instant,
    /// When the request body last moved (or ended), in ms since `born`.
    moved_ms: AtomicU64,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            request: AtomicU64::new(0),
            response: AtomicU64::new(0),
            client_failed: AtomicBool::new(false),
            request_ended: AtomicBool::new(false),
            waiting_for_client: AtomicBool::new(false),
            born: tokio::time::Instant::now(),
            moved_ms: AtomicU64::new(0),
        }
    }
}

/// Why an attempt ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// No answer within the route's timeout of the request being sent whole, or the
    /// backend took no byte of the body for that long (504).
    Backend,
    /// The client sent none of the rest of its body for the listener's idle timeout.
    Client,
}

impl Meter {
    fn moved(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.moved_ms.store(ms, Relaxed);
    }

    /// When the attempt started at `start` is late, as things stand: `timeout` after the
    /// request body last moved or ended (nginx's `proxy_send_timeout` while it is being sent,
    /// `proxy_read_timeout` after), or `idle` after it last moved while the client is the
    /// one not sending. `Err` once it is.
    pub fn late(
        &self,
        start: tokio::time::Instant,
        timeout: std::time::Duration,
        idle: std::time::Duration,
    ) -> Result<tokio::time::Instant, Late> {
        let moved = self.born + std::time::Duration::from_millis(self.moved_ms.load(Relaxed));
        let last = moved.max(start);
        let client = !self.request_ended.load(Relaxed) && self.waiting_for_client.load(Relaxed);
        let (at, who) = if client {
            (last + idle, Late::Client)
        } else {
            (last + timeout, Late::Backend)
        };
        if tokio::time::Instant::now() >= at {
            return Err(who);
        }
        Ok(at)
    }
}

/// Which body of an exchange a [`Counted`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// Counts the data bytes of `inner` into its side of `meter`; runs `done` when the body ends
/// or is dropped, whichever comes first.
pub struct Counted<B, F: FnOnce()> {
    inner: B,
    meter: Arc<Meter>,
    side: Side,
    done: Option<F>,
}

impl<B, F: FnOnce()> Counted<B, F> {
    pub fn new(inner: B, meter: Arc<Meter>, side: Side, done: F) -> Self {
        Self {
            inner,
            meter,
            side,
            done: Some(done),
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.done.take() {
            f();
        }
    }
}

impl<B, F: FnOnce()> Drop for Counted<B, F> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B, F> HttpBody for Counted<B, F>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    F: FnOnce() + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let request = self.side == Side::Request;
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    match self.side {
                        Side::Request => self.meter.request.fetch_add(n, Relaxed),
                        Side::Response => self.meter.response.fetch_add(n, Relaxed),
                    };
                }
                if request {
                    self.meter.waiting_for_client.store(false, Relaxed);
                    self.meter.moved();
                    // A sized body may never be polled to its end.
                    if self.inner.is_end_stream() {
                        self.meter.request_ended.store(true, Relaxed);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if request {
                    self.meter.client_failed.store(true, Relaxed);
                }
                self.finish();
            }
            Poll::Ready(None) => {
                if request {
                    self.meter.request_ended.store(true, Relaxed);
                    self.meter.moved();
                }
                self.finish();
            }
            Poll::Pending => {
                if request {
                    self.meter.waiting_for_client.store(true, Relaxed);
                }
            }
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A gateway answer: `{"error": "...", "status": N}` (SPEC §2).
pub fn answer(status: u16, message: &str) -> Response<Body> {
    let body = answer_json(status, message);
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The body of a gateway answer.
pub fn answer_json(status: u16, message: &str) -> String {
    serde_json::json!({ "error": message, "status": status }).to_string()
}

/// A gateway answer to a request whose framing cannot be trusted: the connection closes
/// after it, since what follows on it may not be framed as the client meant.
pub fn refuse(status: u16, message: &str) -> Response<Body> {
    let mut resp = answer(status, message);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// lb's answer to a request it refuses: the connection closes after it unless the refusal
/// leaves the request's framing intact; a 405 says which methods the route takes.
pub fn refusal(r: &crate::request::Refusal) -> Response<Body> {
    let mut resp = if r.keeps_connection() {
        answer(r.status(), &r.to_string())
    } else {
        refuse(r.status(), &r.to_string())
    };
    if matches!(r, crate::request::Refusal::MethodNotAllowed) {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    resp
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A whole body, if it fits in `limit` bytes: `Err(None)` when it does not, `Err(Some(why))`
/// when it could not be read.
pub(crate) async fn read_whole<B>(mut body: B, limit: u64) -> Result<bytes::Bytes, Option<String>>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Some(e.to_string()))?;
        if let Some(d) = frame.data_ref() {
            if (buf.len() + d.len()) as u64 > limit {
                return Err(None);
            }
            buf.extend_from_slice(d);
        }
    }
    Ok(buf.freeze())
}
