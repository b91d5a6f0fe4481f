//! `[tracing]` at run time: whether lb forwards trace context of its own ([`Tracing`]) and the
//! optional OTLP/HTTP exporter of one span per request ([`Exporter`]). Recording a span never
//! waits: it goes into a bounded queue ([`QUEUE`]) or is dropped and counted
//! (`lb_tracing_spans_dropped_total`). A background task takes spans in batches of at most
//! [`BATCH`], or whatever came within [`LINGER`] of a batch's first span, and posts each as
//! OTLP JSON to `/v1/traces` with a [`TIMEOUT`]; a failed post drops its batch (counted in
//! `lb_tracing_export_errors_total`). Does I/O (the task's).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lb_core::config;
use tokio::sync::mpsc;

use crate::trace::{hex_into, Hop};

/// Spans waiting for export at most: about 1 MB at worst, then new ones are dropped.
pub const QUEUE: usize = 4096;
/// Spans per export request at most (OTLP collectors take 512 by default per batch).
pub const BATCH: usize = 512;
/// How long a batch waits for more spans after its first.
pub const LINGER: Duration = Duration::from_secs(1);
/// An export request's whole time: connect, send, answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `[tracing]` as the gateways use it.
#[derive(Debug, Clone)]
pub struct Tracing {
    pub exporter: Option<Arc<Exporter>>,
}

/// One request's span.
#[derive(Debug, Clone)]
pub struct Span {
    pub hop: Hop,
    pub method: http::Method,
    pub route: String,
    /// The backend that answered, `-` for lb's own answers.
    pub backend: String,
    pub status: u16,
    /// Unix nanoseconds.
    pub start: u64,
    pub end: u64,
    pub upstream_ms: u64,
    pub request_id: Option<crate::request_id::RequestId>,
    pub listener: String,
}

impl Span {
    /// The span of a request that began `took` ago and ends now.
    pub fn ending_now(took: Duration) -> (u64, u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let start = now.saturating_sub(took);
        (start.as_nanos() as u64, now.as_nanos() as u64)
    }
}

/// A span waiting for its request's end.
#[derive(Debug)]
pub struct Pending {
    exporter: Arc<Exporter>,
    span: Span,
}

impl Pending {
    /// Ends the span of a request that began at `start` and queues it.
    pub fn finish(mut self, start: std::time::Instant) {
        (self.span.start, self.span.end) = Span::ending_now(start.elapsed());
        self.exporter.record(self.span);
    }
}

impl crate::gateway::Gateway {
    /// The span of a request with trace context `hop`, when spans are exported: `None` (and
    /// nothing allocated) otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn span(
        &self,
        hop: Option<Hop>,
        route: Option<&crate::gateway::RouteTarget>,
        method: &http::Method,
        backend: &str,
        status: u16,
        upstream_ms: u64,
        request_id: Option<crate::request_id::RequestId>,
    ) -> Option<Pending> {
        let exporter = self.tracing.as_ref()?.exporter.as_ref()?;
        Some(Pending {
            exporter: exporter.clone(),
            span: Span {
                hop: hop?,
                method: method.clone(),
                route: route.map_or("-", |r| r.name.as_str()).to_string(),
                backend: backend.to_string(),
                status,
                start: 0,
                end: 0,
                upstream_ms,
                request_id,
                listener: self.listener.clone(),
            },
        })
    }
}

/// The exporter: the queue's sending side; its task starts with the first span (so a config
/// only checked, outside a runtime, starts none).
#[derive(Debug)]
pub struct Exporter {
    tx: mpsc::Sender<Span>,
    rx: Mutex<Option<mpsc::Receiver<Span>>>,
    started: AtomicBool,
    endpoint: config::OtlpEndpoint,
    service: String,
    pub dropped: AtomicU64,
}

impl Exporter {
    pub fn new(endpoint: config::OtlpEndpoint, service: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            started: AtomicBool::new(false),
            endpoint,
            service,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a span, or drops and counts it when the queue is full. Never waits.
    pub fn record(&self, span: Span) {
        if !self.started.load(Relaxed) {
            self.start();
        }
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Relaxed);
            metrics::counter!("lb_tracing_spans_dropped_total").increment(1);
        }
    }

    fn start(&self) {
        let rx = crate::gateway::lock(&self.rx).take();
        self.started.store(true, Relaxed);
        let (Some(rx), Ok(rt)) = (rx, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let (endpoint, service) = (self.endpoint.clone(), self.service.clone());
        rt.spawn(run(rx, endpoint, service));
    }
}

/// Takes batches until every sender is gone.
async fn run(mut rx: mpsc::Receiver<Span>, endpoint: config::OtlpEndpoint, service: String) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let body = serde_json::to_vec(&otlp_json(&batch, &service)).unwrap_or_default();
        let n = batch.len();
        batch.clear();
        match tokio::time::timeout(TIMEOUT, post(&endpoint, body)).await {
            Ok(Ok(())) => metrics::counter!("lb_tracing_spans_exported_total").increment(n as u64),
            Ok(Err(e)) => failed(n, &e),
            Err(_) => failed(n, "timed out"),
        }
    }
}

fn failed(n: usize, why: &str) {
    metrics::counter!("lb_tracing_export_errors_total").increment(1);
    tracing::warn!(spans = n, "OTLP export failed: {why}");
}

/// One POST on a new connection.
async fn post(e: &config::OtlpEndpoint, body: Vec<u8>) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect((e.host.as_str(), e.port))
        .await
        .map_err(|x| format!("connect: {x}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|x| x.to_string())?;
    tokio::spawn(conn);
    let authority = if e.host.contains(':') {
        format!("[{}]:{}", e.host, e.port)
    } else {
        format!("{}:{}", e.host, e.port)
    };
    let req = http::Request::post(e.path.as_str())
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|x| x.to_string())?;
    let resp = send.send_request(req).await.map_err(|x| x.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {}", resp.status()))
    }
}

fn hex<const N: usize>(id: &[u8]) -> String {
    let mut out = vec![0u8; 2 * id.len()];
    hex_into(id, &mut out);
    debug_assert_eq!(out.len(), N);
    String::from_utf8(out).unwrap_or_default()
}

/// A batch as an OTLP `ExportTraceServiceRequest` in its JSON encoding (ids as hex, 64-bit
/// integers as strings; kind 2 = SERVER; status code 2 = ERROR for a 5xx).
pub fn otlp_json(spans: &[Span], service: &str) -> serde_json::Value {
    use serde_json::json;
    let str_attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let int_attr = |k: &str, v: u64| json!({"key": k, "value": {"intValue": v.to_string()}});
    let spans: Vec<_> = spans
        .iter()
        .map(|s| {
            let mut attributes = vec![
                str_attr("http.request.method", s.method.as_str()),
                str_attr("http.route", &s.route),
                int_attr("http.response.status_code", u64::from(s.status)),
                str_attr("server.address", &s.backend),
                str_attr("lb.listener", &s.listener),
                int_attr("lb.upstream_ms", s.upstream_ms),
            ];
            if let Some(id) = &s.request_id {
                attributes.push(str_attr("http.request.header.x-request-id", id.as_str()));
            }
            let mut span = json!({
                "traceId": hex::<32>(&s.hop.trace_id),
                "spanId": hex::<16>(&s.hop.span_id),
                "name": format!("{} {}", s.method, s.route),
                "kind": 2,
                "startTimeUnixNano": s.start.to_string(),
                "endTimeUnixNano": s.end.to_string(),
                "attributes": attributes,
                "flags": u32::from(s.hop.flags),
                "status": {"code": if s.status >= 500 { 2 } else { 0 }},
            });
            if let Some(p) = &s.hop.parent {
                span["parentSpanId"] = json!(hex::<16>(p));
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [str_attr("service.name", service)]},
        "scopeSpans": [{"scope": {"name": "lb"}, "spans": spans}],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_written_as_otlp_json() {
        let hop = crate::trace::decide(
            crate::trace::Claimed::One(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            crate::trace::Claimed::None,
            || 0xabcd,
        );
        let span = Span {
            hop,
            method: http::Method::GET,
            route: "api".into(),
            backend: "127.0.0.1:9".into(),
            status: 503,
            start: 1,
            end: 2,
            upstream_ms: 3,
            request_id: Some(crate::request_id::RequestId::generated(7)),
            listener: "web".into(),
        };
        let v = otlp_json(&[span], "lb");
        let s = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(s["parentSpanId"], "b7ad6b7169203331");
        assert_eq!(s["spanId"], "000000000000abcd");
        assert_eq!(s["startTimeUnixNano"], "1");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["name"], "GET api");
        assert_eq!(
            v["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "lb"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let e = Exporter::new(
            lb_core::config::OtlpEndpoint {
                host: "127.0.0.1".into(),
                port: 9,
                path: "/v1/traces".into(),
            },
            "lb".into(),
        );
        // Not started: the queue only fills.
        e.started.store(true, Relaxed);
        let hop = crate::trace::decide(Default::default(), Default::default(), || 1);
        let span = Span {
            hop,
            method: http::Method::GET,
            route: "-".into(),
            backend: "-".into(),
            status: 200,
            start: 0,
            end: 0,
            upstream_ms: 0,
            request_id: None,
            listener: "web".into(),
        };
        for _ in 0..QUEUE + 10 {
            e.record(span.clone());
        }
        assert_eq!(e.dropped.load(Relaxed), 10);
    }
}
