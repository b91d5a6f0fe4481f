//! How an attempt on the general path ended when it did not end well: which side was late,
//! whether a failed exchange was the client's fault (a body over the limit, malformed or cut
//! off: 4xx, never blamed on the backend), and the error at the root of a hyper failure for
//! the log.

use std::sync::atomic::Ordering::Relaxed;

use http::Response;

use crate::body::{refuse, Late, Meter};
use crate::upstream::Body;

/// An attempt's answer, or which side is late once [`Meter::late`] says one is.
pub(crate) async fn within<F: std::future::Future>(
    send: F,
    meter: &Meter,
    start: tokio::time::Instant,
    timeout: std::time::Duration,
    idle: std::time::Duration,
) -> Result<F::Output, Late> {
    tokio::pin!(send);
    loop {
        let at = meter.late(start, timeout, idle)?;
        tokio::select! {
            out = &mut send => return Ok(out),
            () = tokio::time::sleep_until(at) => {}
        }
    }
}

/// The client's share of a failed exchange: a request body over the route's limit (413), or
/// one that was malformed or cut off (400), which is no fault of the backend's.
pub(crate) fn client_fault(e: &hyper::Error, meter: &Meter) -> Option<Response<Body>> {
    if is_body_limit(e) {
        return Some(refuse(413, "request body over the limit"));
    }
    meter
        .client_failed
        .load(Relaxed)
        .then(|| refuse(400, "the request body was malformed or cut off"))
}

fn is_body_limit(e: &hyper::Error) -> bool {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(|e| e.is::<http_body_util::LengthLimitError>())
}

pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
