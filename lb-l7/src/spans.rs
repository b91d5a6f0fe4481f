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
    /// The span of a request with trace context `hop`, when spans are exported and the trace
    /// is sampled (parent-based, as OpenTelemetry's default sampler: a client's `traceparent`
    /// without the `sampled` flag asks for none; lb's own traces are sampled): `None` (and
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
        let hop = hop.filter(|h| h.flags & 1 == 1)?;
        Some(Pending {
            exporter: exporter.clone(),
            span: Span {
                hop,
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
        let body = otlp_json(&batch, &service);
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

/// A batch as an OTLP `ExportTraceServiceRequest` in its JSON encoding (ids as hex, 64-bit
/// integers as strings; kind 2 = SERVER; status code 2 = ERROR for a 5xx), written straight
/// into one buffer: no tree of values per span.
pub fn otlp_json(spans: &[Span], service: &str) -> Vec<u8> {
    use std::io::Write;
    let mut o = Vec::with_capacity(256 + spans.len() * 700);
    o.extend_from_slice(br#"{"resourceSpans":[{"resource":{"attributes":["#);
    str_attr(&mut o, "service.name", service);
    o.extend_from_slice(br#"]},"scopeSpans":[{"scope":{"name":"lb"},"spans":["#);
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        o.extend_from_slice(br#"{"traceId":""#);
        hex(&mut o, &s.hop.trace_id);
        o.extend_from_slice(br#"","spanId":""#);
        hex(&mut o, &s.hop.span_id);
        o.push(b'"');
        if let Some(p) = &s.hop.parent {
            o.extend_from_slice(br#","parentSpanId":""#);
            hex(&mut o, p);
            o.push(b'"');
        }
        o.extend_from_slice(br#","name":""#);
        escaped(&mut o, s.method.as_str());
        o.push(b' ');
        escaped(&mut o, &s.route);
        // Writing to a Vec cannot fail.
        let _ = write!(
            o,
            r#"","kind":2,"startTimeUnixNano":"{}","endTimeUnixNano":"{}","flags":{},"status":{{"code":{}}},"attributes":["#,
            s.start,
            s.end,
            s.hop.flags,
            if s.status >= 500 { 2 } else { 0 }
        );
        str_attr(&mut o, "http.request.method", s.method.as_str());
        o.push(b',');
        str_attr(&mut o, "http.route", &s.route);
        o.push(b',');
        int_attr(&mut o, "http.response.status_code", u64::from(s.status));
        o.push(b',');
        str_attr(&mut o, "server.address", &s.backend);
        o.push(b',');
        str_attr(&mut o, "lb.listener", &s.listener);
        o.push(b',');
        int_attr(&mut o, "lb.upstream_ms", s.upstream_ms);
        if let Some(id) = &s.request_id {
            o.push(b',');
            str_attr(&mut o, "http.request.header.x-request-id", id.as_str());
        }
        o.extend_from_slice(b"]}");
    }
    o.extend_from_slice(b"]}]}]}");
    o
}

fn hex(o: &mut Vec<u8>, id: &[u8]) {
    let at = o.len();
    o.resize(at + 2 * id.len(), 0);
    hex_into(id, &mut o[at..]);
}

fn str_attr(o: &mut Vec<u8>, key: &str, value: &str) {
    o.extend_from_slice(br#"{"key":""#);
    escaped(o, key);
    o.extend_from_slice(br#"","value":{"stringValue":""#);
    escaped(o, value);
    o.extend_from_slice(br#""}}"#);
}

fn int_attr(o: &mut Vec<u8>, key: &str, value: u64) {
    use std::io::Write;
    o.extend_from_slice(br#"{"key":""#);
    escaped(o, key);
    let _ = write!(o, r#"","value":{{"intValue":"{value}"}}}}"#);
}

/// A JSON string's contents: `"`, `\` and control characters escaped.
fn escaped(o: &mut Vec<u8>, s: &str) {
    use std::io::Write;
    for c in s.chars() {
        match c {
            '"' => o.extend_from_slice(b"\\\""),
            '\\' => o.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                o.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
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
        let v: serde_json::Value =
            serde_json::from_slice(&otlp_json(&[span.clone(), span], "l\"b\n")).expect("JSON");
        assert_eq!(
            v["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let attrs = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["attributes"];
        let attr = |k: &str| {
            attrs
                .as_array()
                .and_then(|a| a.iter().find(|x| x["key"] == k))
                .map(|x| x["value"].clone())
        };
        assert_eq!(
            attr("http.response.status_code"),
            Some(serde_json::json!({"intValue": "503"}))
        );
        assert_eq!(
            attr("http.request.header.x-request-id"),
            Some(serde_json::json!({"stringValue": "00000000000000000000000000000007"}))
        );
        assert_eq!(
            attr("server.address"),
            Some(serde_json::json!({"stringValue": "127.0.0.1:9"}))
        );
        let s = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(s["parentSpanId"], "b7ad6b7169203331");
        assert_eq!(s["spanId"], "000000000000abcd");
        assert_eq!(s["startTimeUnixNano"], "1");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["name"], "GET api");
        assert_eq!(
            v["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "l\"b\n"
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
