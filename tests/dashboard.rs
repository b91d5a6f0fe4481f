//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver).
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them), so it
//! runs with the `external-tests` feature. Leaves a screenshot at
//! target/test-artifacts/dashboard.png.
#![cfg(feature = "external-tests")]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::backends::named;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wd(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect chromedriver");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    // Read the head, then exactly Content-Length bytes: chromedriver may keep the socket open.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(30);
    let json = loop {
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk))
            .await
            .expect("WebDriver answer in time")
            .expect("read");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            });
            match len {
                Some(len) if body.len() >= len => break body[..len].to_string(),
                None if n == 0 => break body.to_string(),
                _ => {}
            }
        }
        assert!(n > 0, "WebDriver closed early: {text}");
    };
    let text = json.clone();
    let json = json.as_str();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("bad WebDriver answer ({e}): {text}"))
}

async fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium-driver)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Driver { child, addr }
}

/// Backend address → state as the page shows it.
async fn page_states(d: SocketAddr, session: &str) -> Vec<(String, String)> {
    let script = "return [...document.querySelectorAll('tr[data-backend]')].map(r => [r.dataset.backend, r.querySelector('.state').textContent]);";
    let v = wd(
        d,
        "POST",
        &format!("/session/{session}/execute/sync"),
        Some(json!({ "script": script, "args": [] })),
    )
    .await;
    v["value"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r[0].as_str().unwrap_or("").to_string(),
                        r[1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_backends_and_follows_a_drain_live() {
    let bs = [named("b0").await, named("b1").await, named("b2").await];
    let list: Vec<_> = bs.iter().map(|b| (b.addr, "")).collect();
    let lb = Lb::start(
        "dashboard",
        &config(
            "least-connections",
            &list,
            "health = { kind = \"tcp\", interval = \"500ms\" }",
            "",
        ),
    )
    .await;
    let main = lb.listener("main").await;
    for _ in 0..30 {
        fetch_name(main).await.expect("traffic");
    }
    let driver = start_driver().await;
    let d = driver.addr;
    let profile = scratch("chromium-profile");
    let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,720", format!("--user-data-dir={}", profile.display())]
    }}}});
    let session = wd(d, "POST", "/session", Some(caps)).await;
    let sid = session["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"))
        .to_string();
    wd(
        d,
        "POST",
        &format!("/session/{sid}/url"),
        Some(json!({ "url": format!("http://{}/", lb.admin) })),
    )
    .await;

    // Every backend appears, up.
    let start = Instant::now();
    loop {
        let rows = page_states(d, &sid).await;
        if rows.len() == 3 && rows.iter().all(|(_, s)| s == "up") {
            for b in &bs {
                assert!(
                    rows.iter().any(|(a, _)| *a == b.addr.to_string()),
                    "{rows:?}"
                );
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "page never showed 3 up backends: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Drain one through the API: the open page follows without a reload.
    let (code, _) = http(
        lb.admin,
        "POST",
        &format!("/api/pools/p/backends/{}/drain", bs[1].addr),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let start = Instant::now();
    loop {
        let rows = page_states(d, &sid).await;
        if rows
            .iter()
            .any(|(a, s)| *a == bs[1].addr.to_string() && s == "draining")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "page did not show the drain: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The page's own button works too: enable it again by clicking.
    let click = format!("document.querySelector('tr[data-backend=\"{}\"] button[data-action=\"enable\"]').click(); return true;", bs[1].addr);
    wd(
        d,
        "POST",
        &format!("/session/{sid}/execute/sync"),
        Some(json!({ "script": click, "args": [] })),
    )
    .await;
    lb.wait_state("p", bs[1].addr, "up", Duration::from_secs(5))
        .await;

    let shot = wd(d, "GET", &format!("/session/{sid}/screenshot"), None).await;
    let png = b64decode(shot["value"].as_str().expect("screenshot"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    std::fs::write(dir.join("dashboard.png"), &png).expect("write screenshot");
    wd(d, "DELETE", &format!("/session/{sid}"), None).await;
}

/// Serves one HTML page (on every path) from a plain HTTP server on loopback: another origin
/// than the admin API's.
async fn serve_page(html: String) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind page server");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_on_another_origin_cannot_disable_a_backend() {
    let bs = [named("b0").await, named("b1").await];
    let list: Vec<_> = bs.iter().map(|b| (b.addr, "")).collect();
    let lb = Lb::start("dashboard-csrf", &config("round-robin", &list, "", "")).await;
    let target = format!(
        "http://{}/api/pools/p/backends/{}/disable",
        lb.admin, bs[0].addr
    );
    // What any web page a developer opens can do: a "simple" no-cors POST, and a form.
    let html = format!(
        r#"<!doctype html><title>elsewhere</title>
<iframe name="sink" style="display:none"></iframe>
<form id="f" method="POST" action="{target}" target="sink"></form>
<script>
window.done = false;
fetch("{target}", {{ method: "POST", mode: "no-cors" }})
  .catch(() => {{}})
  .finally(() => {{ document.getElementById("f").submit(); window.done = true; }});
</script>"#
    );
    let (page, _server) = serve_page(html).await;
    let driver = start_driver().await;
    let d = driver.addr;
    let profile = scratch("chromium-profile-csrf");
    let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 format!("--user-data-dir={}", profile.display())]
    }}}});
    let session = wd(d, "POST", "/session", Some(caps)).await;
    let sid = session["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"))
        .to_string();
    wd(
        d,
        "POST",
        &format!("/session/{sid}/url"),
        Some(json!({ "url": format!("http://{page}/") })),
    )
    .await;
    // Both requests reached lb and were refused: the counter says so, the backend is up.
    let refused = lb
        .metric_reaching("lb_admin_refused_total", &[("reason", "origin")], 2.0)
        .await;
    assert!(refused >= 2.0, "lb saw {refused} cross-origin POSTs");
    let done = wd(
        d,
        "POST",
        &format!("/session/{sid}/execute/sync"),
        Some(json!({ "script": "return window.done;", "args": [] })),
    )
    .await;
    assert_eq!(done["value"], json!(true), "{done}");
    assert_eq!(lb.backend_state("p", bs[0].addr).await, "up");
    wd(d, "DELETE", &format!("/session/{sid}"), None).await;
}

/// Runs `script` in the page and returns its value.
async fn run(d: SocketAddr, sid: &str, script: &str) -> Value {
    wd(
        d,
        "POST",
        &format!("/session/{sid}/execute/sync"),
        Some(json!({ "script": script, "args": [] })),
    )
    .await["value"]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_page_shows_routes_refusals_and_plots() {
    let origin = common::origin::Origin::start().await;
    let routes = "[[route]]\nlistener = \"web\"\nname = \"open\"\nmatch = { path_prefix = \"/open\" }\npool = \"site\"\n\n\
                  [[route]]\nlistener = \"web\"\nname = \"limited\"\nmatch = { path_prefix = \"/limited\" }\npool = \"site\"\npolicies = [\"two\"]\n\n\
                  [policy.two]\nkind = \"rate_limit\"\nrequests = 2\nper = \"1m\"\n";
    let lb = Lb::start("dashboard-gateway", &http_site(origin.addr, "", routes)).await;
    let web = lb.listener("web").await;
    // Traffic on both routes while the page looks, bounded in time and count.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let load = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(40);
        let mut sent = 0u32;
        while !stopped.load(std::sync::atomic::Ordering::SeqCst)
            && Instant::now() < until
            && sent < 4000
        {
            for path in ["/open/a", "/limited/b"] {
                let mut s = TcpStream::connect(web).await.expect("connect");
                let req = format!("GET {path} HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n");
                s.write_all(req.as_bytes()).await.expect("write");
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let driver = start_driver().await;
    let d = driver.addr;
    let profile = scratch("chromium-profile-gateway");
    let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome",
        "goog:loggingPrefs": { "browser": "ALL" },
        "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", format!("--user-data-dir={}", profile.display())]
    }}}});
    let session = wd(d, "POST", "/session", Some(caps)).await;
    let sid = session["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"))
        .to_string();
    wd(
        d,
        "POST",
        &format!("/session/{sid}/url"),
        Some(json!({ "url": format!("http://{}/", lb.admin) })),
    )
    .await;
    let look = "return { routes: [...document.querySelectorAll('tr[data-route]')].map(r => [r.dataset.route, r.querySelector('.rps').textContent]), \
                refused: [...document.querySelectorAll('tr[data-route=\"limited\"] span[data-policy=\"two\"]')].map(s => Number(s.dataset.refused)), \
                plots: [...document.querySelectorAll('.plot[data-nonempty=\"true\"]')].map(p => p.dataset.plot) };";
    let start = Instant::now();
    let seen = loop {
        let v = run(d, &sid, look).await;
        let rates: Vec<(String, f64)> = v["routes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r[0].as_str().unwrap_or("").to_string(),
                            r[1].as_str().unwrap_or("").parse().unwrap_or(0.0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let both = ["open", "limited"]
            .iter()
            .all(|n| rates.iter().any(|(r, x)| r == n && *x > 0.0));
        let refused = v["refused"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let plotted = v["plots"].as_array().is_some_and(|a| !a.is_empty());
        if both && refused > 0 && plotted {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "page never showed both routes' rates, the refusals and a plot: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = load.await;
    assert!(
        seen["plots"]
            .as_array()
            .is_some_and(|p| p.iter().any(|n| n == "listener web")),
        "the listener's plot has points: {seen}"
    );

    let shot = wd(d, "GET", &format!("/session/{sid}/screenshot"), None).await;
    let png = b64decode(shot["value"].as_str().expect("screenshot"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    std::fs::write(dir.join("dashboard-gateway.png"), &png).expect("write screenshot");

    // A phone's width: the page itself never scrolls sideways (wide tables scroll in place).
    wd(
        d,
        "POST",
        &format!("/session/{sid}/window/rect"),
        Some(json!({ "width": 400, "height": 850 })),
    )
    .await;
    let wide = run(
        d,
        &sid,
        "return [document.documentElement.scrollWidth, window.innerWidth];",
    )
    .await;
    let (sw, iw) = (
        wide[0].as_f64().unwrap_or(0.0),
        wide[1].as_f64().unwrap_or(0.0),
    );
    assert!(iw > 0.0 && iw <= 500.0, "window narrowed: {wide}");
    assert!(sw <= iw + 1.0, "page wider than a phone: {wide}");
    let shot = wd(d, "GET", &format!("/session/{sid}/screenshot"), None).await;
    let png = b64decode(shot["value"].as_str().expect("screenshot"));
    std::fs::write(dir.join("dashboard-gateway-phone.png"), &png).expect("write screenshot");

    // No errors in the console.
    let log = wd(
        d,
        "POST",
        &format!("/session/{sid}/se/log"),
        Some(json!({ "type": "browser" })),
    )
    .await;
    let entries = log["value"].as_array().cloned().unwrap_or_default();
    let errors: Vec<&Value> = entries.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    assert!(log["value"].is_array(), "browser log readable: {log}");
    wd(d, "DELETE", &format!("/session/{sid}"), None).await;
}
