//! W3C trace context and the OTLP exporter through the real binary, on both HTTP paths: the
//! backend sees one valid `traceparent` continuing the client's trace with lb's span as its
//! parent (or a fresh trace when the client's is absent or hostile); an in-test collector
//! gets exactly one span per request with the right ids; with tracing off, the client's
//! fields reach the backend byte for byte.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::origin::{Origin, Received};
use common::*;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CLIENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

/// An OTLP/HTTP JSON collector: every span of every POST /v1/traces, in arrival order.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Value>>>,
    _task: common::backends::Backend,
}

async fn collector() -> Collector {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let kept = kept.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let ok =
                            req.method() == hyper::Method::POST && req.uri().path() == "/v1/traces";
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let status = match (
                            ok,
                            body.ok()
                                .and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
                        ) {
                            (true, Some(v)) => {
                                let mut k = kept.lock().expect("lock");
                                for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                                    assert_eq!(
                                        rs["resource"]["attributes"][0]["value"]["stringValue"],
                                        "edge"
                                    );
                                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                                        k.extend(
                                            ss["spans"].as_array().into_iter().flatten().cloned(),
                                        );
                                    }
                                }
                                200
                            }
                            _ => 400,
                        };
                        let mut resp = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"{}"),
                        ));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Collector {
        addr,
        spans,
        _task: common::backends::Backend::from_task(addr, task),
    }
}

impl Collector {
    fn spans(&self) -> Vec<Value> {
        self.spans.lock().expect("lock").clone()
    }

    /// Waits (bounded) until `n` spans arrived.
    async fn reaching(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.spans();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One request on its own connection with `fields` (each a `Name: value` line); the status.
async fn get(addr: SocketAddr, path: &str, fields: &[String]) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: site\r\nConnection: close\r\n");
    for f in fields {
        req.push_str(f);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The one `traceparent` the backend got, split into trace id and parent id.
fn forwarded(r: &Received) -> (String, String) {
    let all = r.fields("traceparent");
    assert_eq!(all.len(), 1, "exactly one traceparent: {}", r.head);
    let parts: Vec<&str> = all[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{}", all[0]);
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len()),
        ("00", 32, 16),
        "{}",
        all[0]
    );
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert!(
        hex(parts[1]) && hex(parts[2]) && parts[1] != "0".repeat(32) && parts[2] != "0".repeat(16)
    );
    (parts[1].to_string(), parts[2].to_string())
}

fn attr<'v>(span: &'v Value, key: &str) -> &'v Value {
    span["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["key"] == key))
        .map_or(&Value::Null, |x| &x["value"])
}

fn site(origin: SocketAddr, tracing: &str) -> String {
    http_site(
        origin,
        "",
        &format!(
            "[[route]]\nlistener = \"web\"\nname = \"api\"\nmatch = {{ path_prefix = \"/api\" }}\npool = \"site\"\n\n{tracing}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_clients_trace_and_hostile_ones_start_anew() {
    let origin = Origin::start().await;
    let col = collector().await;
    let cfg = site(
        origin.addr,
        &format!(
            "[tracing]\notlp_endpoint = \"http://{}\"\nservice_name = \"edge\"\n",
            col.addr
        ),
    );
    let huge = format!("traceparent: 00-{}-{PARENT}-01", "a".repeat(4000));
    let hostile: Vec<Vec<String>> = vec![
        vec![
            format!("traceparent: {}", CLIENT.to_ascii_uppercase()),
            "tracestate: a=1".into(),
        ],
        vec![format!("traceparent: {}", &CLIENT[..54])],
        vec![format!("traceparent: {CLIENT}0")],
        vec![format!("traceparent: 00-{}-{PARENT}-01", "0".repeat(32))],
        vec![format!("traceparent: 00-{TRACE}-{}-01", "0".repeat(16))],
        vec![format!("traceparent: ff-{TRACE}-{PARENT}-01")],
        vec![
            format!("traceparent: {CLIENT}"),
            format!("traceparent: {CLIENT}"),
            "tracestate: a=1".into(),
        ],
        vec![huge],
        vec![],
    ];
    let mut sent = 0;
    for (path, lb) in both_paths("tracing-on", &cfg).await {
        let addr = lb.listener("web").await;
        let from = origin.count();
        // A valid trace with state: continued, state passed on.
        let fields = [
            format!("traceparent: {CLIENT}"),
            "tracestate: congo=t61rcWkgMzE".into(),
        ];
        assert_eq!(get(addr, "/api/a", &fields).await, 200, "{path}");
        for h in &hostile {
            assert_eq!(get(addr, "/other", h).await, 200, "{path} {h:?}");
        }
        // Not sampled by the client: continued with the flag as it came, and no span.
        let unsampled = format!("traceparent: 00-{TRACE}-{PARENT}-00");
        assert_eq!(get(addr, "/api/u", &[unsampled]).await, 200, "{path}");
        sent += 1 + hostile.len();
        let mut got = origin.since(from);
        assert_eq!(got.len(), 2 + hostile.len(), "{path}");
        let quiet = got.pop().expect("the unsampled request");
        let (trace, quiet_span) = forwarded(&quiet);
        assert_eq!(trace, TRACE, "{path}");
        assert!(quiet.fields("traceparent")[0].ends_with("-00"), "{path}");
        let spans = col.reaching(sent).await;
        assert_eq!(spans.len(), sent, "{path}: one span per request");
        let n = (1 + hostile.len()) as f64;
        let exported = lb
            .metric_reaching("lb_tracing_spans_exported_total", &[], n)
            .await;
        assert_eq!(exported, n, "{path}");
        assert!(
            !spans.iter().any(|s| s["spanId"] == quiet_span.as_str()),
            "{path}: unsampled"
        );
        let by_id = |id: &str| -> Value {
            let found: Vec<&Value> = spans.iter().filter(|s| s["spanId"] == id).collect();
            assert_eq!(found.len(), 1, "{path}: one span {id}");
            found[0].clone()
        };
        let (trace, span_id) = forwarded(&got[0]);
        assert_eq!(trace, TRACE, "{path}: the client's trace goes on");
        assert_ne!(span_id, PARENT, "{path}: with lb's span as parent");
        assert_eq!(
            got[0].fields("tracestate"),
            vec!["congo=t61rcWkgMzE".to_string()],
            "{path}"
        );
        let s = by_id(&span_id);
        assert_eq!(
            (&s["traceId"], &s["parentSpanId"]),
            (&Value::from(TRACE), &Value::from(PARENT)),
            "{path}"
        );
        assert_eq!(attr(&s, "http.route")["stringValue"], "api", "{path}");
        assert_eq!(
            attr(&s, "http.request.method")["stringValue"],
            "GET",
            "{path}"
        );
        assert_eq!(
            attr(&s, "http.response.status_code")["intValue"],
            "200",
            "{path}"
        );
        assert_eq!(
            attr(&s, "server.address")["stringValue"],
            origin.addr.to_string(),
            "{path}"
        );
        let id = got[0].field("x-request-id").expect("a request id");
        assert_eq!(
            attr(&s, "http.request.header.x-request-id")["stringValue"],
            id.as_str(),
            "{path}"
        );
        let (start, end): (u64, u64) = (
            s["startTimeUnixNano"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("start"),
            s["endTimeUnixNano"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("end"),
        );
        assert!(
            start > 1_600_000_000_000_000_000 && start <= end,
            "{path}: {start} {end}"
        );
        // Absent or hostile: a fresh trace, no parent, no state.
        let mut traces = std::collections::HashSet::new();
        for (r, h) in got[1..].iter().zip(&hostile) {
            let (trace, span_id) = forwarded(r);
            assert_ne!(trace, TRACE, "{path} {h:?}: the hostile trace went on");
            assert!(traces.insert(trace.clone()), "{path}: traces are fresh");
            assert!(r.fields("tracestate").is_empty(), "{path} {h:?}");
            let s = by_id(&span_id);
            assert_eq!(s["traceId"], trace.as_str(), "{path} {h:?}");
            assert!(s.get("parentSpanId").is_none(), "{path} {h:?}: {s}");
            assert_eq!(attr(&s, "http.route")["stringValue"], "default", "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_requests_nothing_and_is_counted() {
    let origin = Origin::start().await;
    // A port nothing listens on (bound, then let go).
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let cfg = site(
        origin.addr,
        &format!("[tracing]\notlp_endpoint = \"http://{dead}\"\n"),
    );
    for (path, lb) in both_paths("tracing-dead", &cfg).await {
        let addr = lb.listener("web").await;
        for _ in 0..20 {
            assert_eq!(get(addr, "/api/a", &[]).await, 200, "{path}");
        }
        let errors = lb
            .metric_reaching("lb_tracing_export_errors_total", &[], 1.0)
            .await;
        assert!(errors >= 1.0, "{path}: export failures are counted");
        let m = lb.metrics().await;
        assert_eq!(
            metric(&m, "lb_tracing_spans_exported_total", &[]),
            0.0,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_leaves_the_clients_fields_alone() {
    let origin = Origin::start().await;
    let cfg = site(origin.addr, "");
    let upper = format!("Traceparent: {}", CLIENT.to_ascii_uppercase());
    let cases: Vec<Vec<String>> = vec![
        vec![
            format!("traceparent: {CLIENT}"),
            "tracestate: congo=t61rcWkgMzE, rojo=1".into(),
        ],
        vec![upper],
        vec![
            format!("traceparent: {CLIENT}"),
            "traceparent: not-even-close".into(),
        ],
        vec![],
    ];
    for (path, lb) in both_paths("tracing-off", &cfg).await {
        let addr = lb.listener("web").await;
        for fields in &cases {
            let from = origin.count();
            assert_eq!(get(addr, "/api/x", fields).await, 200, "{path}");
            let got = origin.since(from);
            assert_eq!(got.len(), 1, "{path}");
            for name in ["traceparent", "tracestate"] {
                let sent: Vec<String> = fields
                    .iter()
                    .filter_map(|f| f.split_once(": "))
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_string())
                    .collect();
                assert_eq!(got[0].fields(name), sent, "{path}: {name} as sent");
            }
        }
    }
}

#[test]
fn tracing_keys_are_checked() {
    let base = "[[listener]]\nname = \"w\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"p\"\n[[pool]]\nname = \"p\"\nbackends = [{ addr = \"127.0.0.1:9\" }]\n";
    for (tracing, want) in [
        ("[tracing]\nsample = 1\n", "sample"),
        (
            "[tracing]\notlp_endpoint = \"https://x:4318\"\n",
            "otlp_endpoint",
        ),
        (
            "[tracing]\notlp_endpoint = \"127.0.0.1:4318\"\n",
            "otlp_endpoint",
        ),
        ("[tracing]\nservice_name = \"\"\n", "service_name"),
    ] {
        let path = write_config("tracing-keys", &format!("{base}{tracing}"));
        let (code, out, err) = run_lb(&["check", "--config", path.to_str().expect("utf-8")]);
        assert_ne!(code, 0, "{tracing}: {out}");
        assert!(
            format!("{out}{err}").contains(want),
            "{tracing}: {out}{err}"
        );
    }
    let path = write_config(
        "tracing-ok",
        &format!("{base}[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n"),
    );
    let (code, out, err) = run_lb(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("tracing: W3C traceparent of lb's own on http listeners; spans to http://127.0.0.1:4318/v1/traces (service.name \"lb\")"),
        "{out}"
    );
}
