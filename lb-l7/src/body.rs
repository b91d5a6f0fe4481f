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

/// The bytes of one exchange's bodies: request (client → backend) and response.
#[derive(Debug, Default)]
pub struct Meter {
    pub request: AtomicU64,
    pub response: AtomicU64,
    /// The client's body broke (malformed chunking, cut off): the exchange's failure is the
    /// client's, not the backend's.
    pub client_failed: AtomicBool,
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
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    match self.side {
                        Side::Request => self.meter.request.fetch_add(n, Relaxed),
                        Side::Response => self.meter.response.fetch_add(n, Relaxed),
                    };
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if self.side == Side::Request {
                    self.meter.client_failed.store(true, Relaxed);
                }
                self.finish();
            }
            Poll::Ready(None) => self.finish(),
            Poll::Pending => {}
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

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}
