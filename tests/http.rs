//! HTTP mode through the real binary: routes from the config file, per-route metrics and the
//! access log, HTTPS with HTTP/2 by ALPN (and a real curl), slow clients counted as 408,
//! routes changed by reload, and a 1 GiB upload through lb with flat memory.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pki::{connect, Pki};
use common::web::{fetch, web};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An http listener "web" (default pool `site`) with `listener_extra`, pools `site` and `api`,
/// and `routes`.
fn http_config(
    site: std::net::SocketAddr,
    api: std::net::SocketAddr,
    listener_extra: &str,
    routes: &str,
) -> String {
    format!(
        "[global]\nworkers = 2\nshutdown_timeout = \"5s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"site\"\naccess_log = true\n{listener_extra}\n\n\
         [[pool]]\nname = \"site\"\nbackends = [{{ addr = \"{site}\" }}]\n\n\
         [[pool]]\nname = \"api\"\nbackends = [{{ addr = \"{api}\" }}]\n\n{routes}"
    )
}

const API_ROUTE: &str = "[[route]]\nlistener = \"web\"\nname = \"api\"\nmatch = { path_prefix = \"/api\" }\npool = \"api\"\nstrip_prefix = true\n";

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let a = fetch(addr, path, "").await;
    (a.status, a.body)
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_from_the_config_are_served_counted_and_logged() {
    let ((site, _), (api, api_hits)) = (web("site").await, web("api").await);
    let mut lb = Lb::start(
        "http-routes",
        &http_config(site.addr, api.addr, "", API_ROUTE),
    )
    .await;
    let addr = lb.listener("web").await;
    for i in 0..5 {
        let (s, body) = get(addr, &format!("/api/users/{i}")).await;
        assert_eq!((s, body), (200, format!("api GET /users/{i} proto=http")));
    }
    let (s, body) = get(addr, "/index.html").await;
    assert_eq!((s, body.as_str()), (200, "site GET /index.html proto=http"));
    assert_eq!(api_hits.load(std::sync::atomic::Ordering::SeqCst), 5);

    // The backend gets the normalised path; `..` never climbs above the root.
    let (s, body) = get(addr, "/a/%2e%2e/%2e%2e/api//x").await;
    assert_eq!((s, body.as_str()), (200, "api GET /x proto=http"));
    let (s, body) = get(addr, "/a%00").await;
    assert_eq!(s, 400, "an encoded NUL is refused: {body}");
    let labels = |route, status| [("listener", "web"), ("route", route), ("status", status)];
    assert_eq!(
        lb.metric_reaching("lb_http_requests_total", &labels("api", "200"), 6.0)
            .await,
        6.0
    );
    assert_eq!(
        lb.metric_reaching("lb_http_requests_total", &labels("default", "200"), 1.0)
            .await,
        1.0
    );
    assert_eq!(
        lb.metric_reaching("lb_http_requests_total", &labels("-", "400"), 1.0)
            .await,
        1.0
    );
    let m = lb.metrics().await;
    assert!(
        m.contains("lb_http_request_duration_seconds_bucket{listener=\"web\",route=\"api\""),
        "{m}"
    );
    let line = lb.wait_log("path=/api/users/4", Duration::from_secs(5));
    for field in [
        "route=api",
        "method=GET",
        "status=200",
        "upstream=",
        "upstream_ms=",
        "duration_ms=",
        "bytes_out=",
        "listener=web",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    let status = lb.status().await;
    let l = &status["listeners"][0];
    assert_eq!(l["protocol"], "http", "{status}");
    assert_eq!(l["pool"], "site");
    let r = &status["routes"][0];
    assert_eq!(
        (
            r["name"].as_str(),
            r["listener"].as_str(),
            r["pool"].as_str()
        ),
        (Some("api"), Some("web"), Some("api")),
        "{status}"
    );
    assert_eq!(r["path"], "path_prefix = \"/api\"");
}

/// lb terminating TLS (a certificate for "localhost" from a fresh CA) on its http listener.
async fn https_lb(tag: &str) -> (Pki, [common::backends::Backend; 2], Lb) {
    let pki = Pki::new(&scratch(tag));
    let leaf = pki.leaf("site", &["localhost"]);
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        leaf.cert.display(),
        leaf.key.display()
    );
    let ((site, _), (api, _)) = (web("site").await, web("api").await);
    let lb = Lb::start(tag, &http_config(site.addr, api.addr, &tls, API_ROUTE)).await;
    (pki, [site, api], lb)
}

/// Speaks HTTP/2 over an established TLS session; answers the body of `GET /path`.
async fn h2_get<S>(io: S, path: &str) -> (http::Version, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let version = resp.version();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (version, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_offers_http2_by_alpn_and_http11_to_the_rest() {
    let (pki, _backends, lb) = https_lb("http-tls").await;
    let addr = lb.listener("web").await;
    let s = connect(addr, "localhost", pki.client(&["h2", "http/1.1"], None))
        .await
        .expect("tls");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, body) = h2_get(s, "/api/x").await;
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(body, "api GET /x proto=https");
    // A client offering only HTTP/1.1 gets it.
    let mut s = connect(addr, "localhost", pki.client(&["http/1.1"], None))
        .await
        .expect("tls");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    s.write_all(b"GET /page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("site GET /page proto=https"), "{text}");
}

/// A real client: curl negotiating HTTP/2 over TLS with ALPN.
#[cfg(feature = "external-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn curl_speaks_http2_over_tls_through_lb() {
    let (pki, _backends, lb) = https_lb("http-curl").await;
    let port = lb.listener("web").await.port();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(pki.ca_path())
        .args([
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "-w",
            "\\n%{http_version}",
        ])
        .arg(format!("https://localhost:{port}/api/curl"))
        .output()
        .await
        .expect("run curl (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text, "api GET /curl proto=https\n2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_too_slow_with_its_head_is_cut_and_counted_as_408() {
    let ((site, _), (api, _)) = (web("site").await, web("api").await);
    let lb = Lb::start(
        "http-slow",
        &http_config(site.addr, api.addr, "header_timeout = \"300ms\"", ""),
    )
    .await;
    let addr = lb.listener("web").await;
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "not cut");
    assert_eq!(get(addr, "/").await.0, 200, "others are served");
    let labels = [("listener", "web"), ("route", "-"), ("status", "408")];
    assert_eq!(
        lb.metric_reaching("lb_http_requests_total", &labels, 1.0)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changes_the_routes() {
    let ((site, _), (api, _)) = (web("site").await, web("api").await);
    let mut lb = Lb::start("http-reload", &http_config(site.addr, api.addr, "", "")).await;
    let addr = lb.listener("web").await;
    assert_eq!(get(addr, "/api/x").await.1, "site GET /api/x proto=http");
    std::fs::write(&lb.config, http_config(site.addr, api.addr, "", API_ROUTE)).expect("rewrite");
    lb.signal("HUP");
    lb.wait_log("config reloaded", Duration::from_secs(10));
    assert_eq!(get(addr, "/api/x").await.1, "api GET /x proto=http");
    // A bad route is refused and the running routes stay.
    let bad = API_ROUTE.replace("pool = \"api\"", "pool = \"nope\"");
    std::fs::write(&lb.config, http_config(site.addr, api.addr, "", &bad)).expect("rewrite");
    lb.signal("HUP");
    lb.wait_log("does not exist", Duration::from_secs(10));
    assert_eq!(get(addr, "/api/x").await.1, "api GET /x proto=http");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// lb in front of two backends, warmed up (buffers and pooled connections exist), with its
/// RSS then in KiB.
async fn warmed_up(
    tag: &str,
) -> (
    [common::backends::Backend; 2],
    Lb,
    std::net::SocketAddr,
    u64,
) {
    let ((site, _), (api, _)) = (web("site").await, web("api").await);
    let lb = Lb::start(tag, &http_config(site.addr, api.addr, "", "")).await;
    let addr = lb.listener("web").await;
    let (_, body) = get(addr, "/warm").await;
    assert!(body.starts_with("site"));
    let baseline = rss_kib(lb.pid());
    ([site, api], lb, addr, baseline)
}

/// Bodies stream: a 1 GiB upload costs lb no more memory than a small one.
#[tokio::test(flavor = "multi_thread")]
async fn a_one_gib_upload_passes_with_flat_memory() {
    const LEN: u64 = 1 << 30;
    let (_backends, lb, addr, baseline) = warmed_up("http-upload").await;
    let pid = lb.pid();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: {LEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![0x5au8; 256 * 1024];
    let mut peak = baseline;
    let mut sent = 0u64;
    while sent < LEN {
        s.write_all(&chunk).await.expect("body");
        sent += chunk.len() as u64;
        if sent % (32 << 20) == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.ends_with(&format!("\r\n\r\n{LEN}")), "{text}");
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 32 * 1024,
        "lb's RSS grew by {growth} KiB during a 1 GiB upload (baseline {baseline} KiB)"
    );
}

/// A 1 GiB download through lb, read slowly at first: backpressure holds the backend back
/// instead of lb buffering what the client has not taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_one_gib_download_passes_with_flat_memory() {
    const MIB: u64 = 1024;
    let (_backends, lb, addr, baseline) = warmed_up("http-download").await;
    let pid = lb.pid();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /big/{MIB} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("request");
    // A stalled reader first: lb must not read the backend's gigabyte into memory meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled = rss_kib(pid);
    let mut buf = vec![0u8; 256 * 1024];
    let (mut total, mut peak, mut next_sample) = (0u64, stalled, 32u64 << 20);
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("data in time")
            .expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
        if total >= next_sample {
            peak = peak.max(rss_kib(pid));
            next_sample += 32 << 20;
        }
    }
    let expected = (MIB << 20) as f64;
    assert!((total as f64) > expected, "got {total} bytes");
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 32 * 1024,
        "lb's RSS grew by {growth} KiB during a 1 GiB download (baseline {baseline} KiB, stalled {stalled} KiB)"
    );
}

/// Policies through the binary: refusals counted by policy and reason, listed in the status.
#[tokio::test(flavor = "multi_thread")]
async fn policy_refusals_are_counted() {
    let ((site, _), (api, _)) = (web("site").await, web("api").await);
    let routes = format!(
        "{}policies = [\"keys\", \"two\"]\n\n\
         [policy.keys]\nkind = \"api_key\"\nkeys = [{{ name = \"mobile\", sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\" }}]\n\n\
         [policy.two]\nkind = \"rate_limit\"\nrequests = 2\nper = \"1m\"\n",
        API_ROUTE
    );
    let lb = Lb::start(
        "http-policies",
        &http_config(site.addr, api.addr, "", &routes),
    )
    .await;
    let addr = lb.listener("web").await;
    assert_eq!(get(addr, "/api/x").await.0, 401);
    let keyed = |n: u32| async move {
        fetch(addr, &format!("/api/{n}"), "X-API-Key: secret\r\n")
            .await
            .status
    };
    assert_eq!(
        (keyed(1).await, keyed(2).await, keyed(3).await),
        (200, 200, 429)
    );
    assert_eq!(
        lb.metric_reaching(
            "lb_auth_failures_total",
            &[("policy", "keys"), ("reason", "missing")],
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        lb.metric_reaching("lb_ratelimited_total", &[("policy", "two")], 1.0)
            .await,
        1.0
    );
    let status = lb.status().await;
    assert_eq!(
        status["routes"][0]["policies"],
        serde_json::json!(["keys", "two"]),
        "{status}"
    );
    assert_eq!(status["policies"][1]["kind"], "rate_limit");
}

/// A cache policy through the binary: counted by result, and purged by the admin API.
#[tokio::test(flavor = "multi_thread")]
async fn caches_are_counted_and_purged_by_the_admin_api() {
    let ((site, _), (api, _)) = (web("site").await, web("api").await);
    let routes =
        format!("{API_ROUTE}policies = [\"c\"]\n[policy.c]\nkind = \"cache\"\nttl = \"10m\"\n");
    let lb = Lb::start("http-cache", &http_config(site.addr, api.addr, "", &routes)).await;
    let addr = lb.listener("web").await;
    let x_cache = |addr| async move {
        fetch(addr, "/api/doc", "")
            .await
            .header("x-cache")
            .map(str::to_string)
    };
    assert_eq!(x_cache(addr).await.as_deref(), Some("MISS"));
    assert_eq!(x_cache(addr).await.as_deref(), Some("HIT"));
    assert_eq!(
        lb.metric_reaching(
            "lb_cache_requests_total",
            &[("policy", "c"), ("result", "hit")],
            1.0
        )
        .await,
        1.0
    );
    let (code, body) = http(lb.admin, "POST", "/api/cache/purge", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"purged_caches\":1"), "{body}");
    assert_eq!(x_cache(addr).await.as_deref(), Some("MISS"), "purged");
}

/// A reload keeps a rate limit's buckets while its config is unchanged; a changed limit starts
/// afresh.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_survive_reloads_that_leave_them_alone() {
    let ((site, _), (api, _)) = (web("site").await, web("api").await);
    let limit = |n: u32| {
        format!("{API_ROUTE}policies = [\"two\"]\n[policy.two]\nkind = \"rate_limit\"\nrequests = {n}\nper = \"1m\"\n")
    };
    let mut lb = Lb::start(
        "http-limit-reload",
        &http_config(site.addr, api.addr, "", &limit(2)),
    )
    .await;
    let addr = lb.listener("web").await;
    assert_eq!(
        (get(addr, "/api/1").await.0, get(addr, "/api/2").await.0),
        (200, 200)
    );
    // The same policy, another listener setting changed: the spent allowance stays spent.
    std::fs::write(
        &lb.config,
        http_config(site.addr, api.addr, "header_timeout = \"9s\"", &limit(2)),
    )
    .expect("rewrite");
    lb.signal("HUP");
    lb.wait_log("config reloaded", Duration::from_secs(10));
    assert_eq!(
        get(addr, "/api/3").await.0,
        429,
        "a reload must not hand out a new allowance"
    );
    // A new limit is a new policy.
    std::fs::write(&lb.config, http_config(site.addr, api.addr, "", &limit(3))).expect("rewrite");
    lb.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lb.log_text().matches("config reloaded").count() < 2
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(addr, "/api/4").await.0, 200);
}
