//! Who may use the admin API (issue 15): a non-loopback bind needs a token, state-changing
//! requests from another origin are refused, a DNS-rebound Host is refused, the page cannot be
//! framed, and the admin port has its own connection cap.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backends::named;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` (without the blank line) to the admin API; returns status, head and body.
async fn raw(addr: SocketAddr, head: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect admin");
    let req = format!("{head}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (code, head.to_ascii_lowercase(), body.to_string())
}

fn admin_config(backend: SocketAddr, admin_extra: &str) -> String {
    config("round-robin", &[(backend, "")], "", "").replace(
        "bind = \"127.0.0.1:0\"\n\n[[listener]]",
        &format!("bind = \"127.0.0.1:0\"\n{admin_extra}\n\n[[listener]]"),
    )
}

#[test]
fn a_non_loopback_admin_bind_without_a_token_is_refused() {
    let text = "[admin]\nbind = \"0.0.0.0:0\"\n\n[[listener]]\nname = \"m\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [{ addr = \"127.0.0.1:9\" }]\n";
    let path = write_config("admin-open", text);
    let path = path.to_str().expect("utf-8 path");
    for verb in ["check", "run"] {
        let (code, out, err) = run_lb(&[verb, "--config", path]);
        assert_eq!(code, 2, "lb {verb}: {out}{err}");
        let all = format!("{out}{err}");
        assert!(all.contains("admin.bind"), "{all}");
        assert!(all.contains("token = "), "the error names the fix: {all}");
    }
    let fixed = write_config(
        "admin-token",
        &text.replace(
            "bind = \"0.0.0.0:0\"",
            "bind = \"0.0.0.0:0\"\ntoken = \"s3cret\"",
        ),
    );
    let (code, out, err) = run_lb(&["check", "--config", fixed.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_from_another_origin_is_refused_and_changes_nothing() {
    let b = named("b0").await;
    let lb = Lb::start("admin-origin", &admin_config(b.addr, "")).await;
    let a = lb.admin;
    let path = format!("/api/pools/p/backends/{}/disable", b.addr);
    for foreign in [
        "Origin: http://evil.example".to_string(),
        "Origin: null".to_string(),
        format!("Origin: http://127.0.0.1:{}", a.port() + 1),
        format!("Origin: https://{a}"),
        format!("Origin: http://localhost:{}", a.port()),
        "Referer: http://evil.example/page.html".to_string(),
        "Sec-Fetch-Site: cross-site".to_string(),
    ] {
        let (code, _, body) = raw(
            a,
            &format!("POST {path} HTTP/1.1\r\nHost: {a}\r\n{foreign}"),
        )
        .await;
        assert_eq!(code, 403, "{foreign}: {body}");
        for other in ["/api/reload", "/api/cache/purge"] {
            let (code, _, _) = raw(
                a,
                &format!("POST {other} HTTP/1.1\r\nHost: {a}\r\n{foreign}"),
            )
            .await;
            assert_eq!(code, 403, "{other} {foreign}");
        }
        assert_eq!(lb.backend_state("p", b.addr).await, "up", "{foreign}");
    }
    // The API's own origin (the dashboard's buttons), and scripts without Origin, still work.
    let (code, _, body) = raw(
        a,
        &format!("POST {path} HTTP/1.1\r\nHost: {a}\r\nOrigin: http://{a}"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(lb.backend_state("p", b.addr).await, "disabled");
    let enable = format!("/api/pools/p/backends/{}/enable", b.addr);
    let (code, _, body) = raw(
        a,
        &format!(
            "POST {enable} HTTP/1.1\r\nHost: localhost:{}\r\nOrigin: http://localhost:{}",
            a.port(),
            a.port()
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(http(a, "POST", &path, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebound_host_is_refused_without_a_token() {
    let b = named("b0").await;
    let lb = Lb::start(
        "admin-host",
        &admin_config(b.addr, "hosts = [\"lb.example\"]"),
    )
    .await;
    let a = lb.admin;
    let port = a.port();
    for host in [
        format!("rebound.example:{port}"),
        "rebound.example".to_string(),
        format!("localhost.rebound.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        let (code, _, body) = raw(a, &format!("GET /api/status HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(code, 421, "{host}: {body}");
        assert!(!body.contains("\"pools\""), "{host}: no status leaks");
        let (code, _, _) = raw(a, &format!("GET / HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(code, 421, "{host}");
    }
    for host in [
        a.to_string(),
        format!("LOCALHOST:{port}"),
        format!("localhost.:{port}"),
        format!("[::1]:{port}"),
        format!("lb.example:{port}"),
        format!("LB.EXAMPLE.:{port}"),
    ] {
        let (code, _, body) = raw(a, &format!("GET /api/status HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(code, 200, "{host}: {body}");
    }
    // A rebound page posting to "its own" origin is refused too.
    let path = format!("/api/pools/p/backends/{}/disable", b.addr);
    let (code, _, _) = raw(a, &format!("POST {path} HTTP/1.1\r\nHost: rebound.example:{port}\r\nOrigin: http://rebound.example:{port}")).await;
    assert_eq!(code, 421);
    assert_eq!(lb.backend_state("p", b.addr).await, "up");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_any_host_may_ask_but_posts_still_need_it_and_the_origin() {
    let b = named("b0").await;
    let lb = Lb::start("admin-token", &admin_config(b.addr, "token = \"s3cret\"")).await;
    let a = lb.admin;
    let (code, _, _) = raw(
        a,
        "GET /api/status HTTP/1.1\r\nHost: lb.anywhere\r\nAuthorization: Bearer s3cret",
    )
    .await;
    assert_eq!(code, 200);
    let path = format!("/api/pools/p/backends/{}/drain", b.addr);
    let (code, _, _) = raw(a, &format!("POST {path} HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer s3cret\r\nOrigin: http://evil.example")).await;
    assert_eq!(code, 403);
    assert_eq!(http(a, "POST", &path, None).await.0, 401);
    assert_eq!(http(a, "POST", &path, Some("s3cret")).await.0, 200);
}

/// With a token, GETs from loopback still need none: a page on a rebound name, in a browser on
/// the lb host, would read them as its own origin unless the Host is checked for those too.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_a_rebound_host_still_cannot_read_without_it() {
    let b = named("b0").await;
    let lb = Lb::start(
        "admin-token-rebind",
        &admin_config(b.addr, "token = \"s3cret\""),
    )
    .await;
    let a = lb.admin;
    let port = a.port();
    for path in ["/api/status", "/metrics", "/"] {
        let (code, _, body) = raw(
            a,
            &format!("GET {path} HTTP/1.1\r\nHost: rebound.example:{port}"),
        )
        .await;
        assert_eq!(code, 421, "{path}: {body}");
        assert!(!body.contains("\"pools\""), "{path}: no status leaks");
    }
    // Loopback GETs by address or localhost still need no token.
    for host in [a.to_string(), format!("localhost:{port}")] {
        let (code, _, body) = raw(a, &format!("GET /api/status HTTP/1.1\r\nHost: {host}")).await;
        assert_eq!(code, 200, "{host}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_pages_cannot_be_framed() {
    let b = named("b0").await;
    let lb = Lb::start("admin-frame", &admin_config(b.addr, "")).await;
    for path in ["/", "/api/status"] {
        let (code, head, _) = raw(
            lb.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: {}", lb.admin),
        )
        .await;
        assert_eq!(code, 200);
        assert!(head.contains("x-frame-options: deny"), "{head}");
        assert!(
            head.contains("content-security-policy: frame-ancestors 'none'"),
            "{head}"
        );
    }
}

/// Reads until the peer closes; `true` if it closed without sending anything.
async fn closed_silently(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf).await, Ok(0) | Err(_))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_has_its_own_connection_cap() {
    let b = named("b0").await;
    let mut lb = Lb::start("admin-cap", &admin_config(b.addr, "max_connections = 4")).await;
    let main = lb.listener("main").await;
    // Four clients each hold a connection with half a request head.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(lb.admin).await.expect("connect");
        s.write_all(b"GET /api/status HTTP/1.1\r\nHo")
            .await
            .expect("write");
        held.push(s);
    }
    // The fifth is closed at once, with nothing said.
    let mut fifth = TcpStream::connect(lb.admin).await.expect("connect");
    fifth
        .write_all(format!("GET /api/status HTTP/1.1\r\nHost: {}\r\n\r\n", lb.admin).as_bytes())
        .await
        .expect("write");
    assert!(closed_silently(&mut fifth).await);
    lb.wait_log("admin.max_connections", Duration::from_secs(10));
    // The data plane does not notice.
    assert_eq!(fetch_name(main).await.expect("through lb"), "b0");
    // Once the holders go, the API answers again and counted the refusal.
    drop(held);
    let mut code = 0;
    while code != 200 {
        code = raw_status(lb.admin).await;
    }
    let refused = lb
        .metric_reaching(
            "lb_rejected_connections_total",
            &[("listener", "admin"), ("reason", "admin_limit")],
            1.0,
        )
        .await;
    assert!(refused >= 1.0);
}

/// Review of issue 15: refused clients cannot keep their slots by asking again and again on
/// kept-alive connections; each refusal closes its connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_request_gives_its_connection_slot_back() {
    let b = named("b0").await;
    let lb = Lb::start(
        "admin-refused-close",
        &admin_config(b.addr, "token = \"s3cret\"\nmax_connections = 2"),
    )
    .await;
    let a = lb.admin;
    let asks = [
        // No token (401), a foreign origin (403), a rebound Host (421).
        format!("POST /api/reload HTTP/1.1\r\nHost: {a}\r\nContent-Length: 0\r\n\r\n"),
        format!("POST /api/reload HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer s3cret\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\n\r\n"),
        format!("GET /api/status HTTP/1.1\r\nHost: rebound.example:{}\r\n\r\n", a.port()),
    ];
    for ask in &asks {
        let mut s = TcpStream::connect(a).await.expect("connect");
        s.write_all(ask.as_bytes()).await.expect("write");
        // Keep-alive was not asked to end; lb ends it after the refusal.
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
            .await
            .expect("the connection was kept open after a refusal")
            .expect("read");
        let text = String::from_utf8_lossy(&got);
        assert!(
            ["401", "403", "421"]
                .iter()
                .any(|c| text.starts_with(&format!("HTTP/1.1 {c}"))),
            "{text}"
        );
        assert!(
            text.to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{text}"
        );
    }
    // An answered request keeps its connection.
    let mut s = TcpStream::connect(a).await.expect("connect");
    let ok = format!("GET /api/status HTTP/1.1\r\nHost: {a}\r\n\r\n");
    s.write_all(ok.as_bytes()).await.expect("write");
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

/// The status code of GET /api/status, 0 when the connection was closed unanswered.
async fn raw_status(addr: SocketAddr) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return 0;
    };
    let req = format!("GET /api/status HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The token guards an admin socket that is not on loopback, and a reload cannot move the
/// socket (admin.bind changes take effect on restart): so a reload that drops the token, by
/// moving `bind` to loopback or removing `[admin]`, would leave that socket open to anyone.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_cannot_drop_the_token_of_a_non_loopback_admin_socket() {
    let b = named("b0").await;
    let open = config("round-robin", &[(b.addr, "")], "", "");
    let with_token = open.replace(
        "bind = \"127.0.0.1:0\"\n\n[[listener]]",
        "bind = \"0.0.0.0:0\"\ntoken = \"s3cret\"\n\n[[listener]]",
    );
    assert_ne!(open, with_token);
    let lb = Lb::start("admin-reload-token", &with_token).await;
    let a: SocketAddr = format!("127.0.0.1:{}", lb.admin.port())
        .parse()
        .expect("addr");
    let no_admin = open.replace("[admin]\nbind = \"127.0.0.1:0\"\n", "");
    assert_ne!(open, no_admin);
    for (what, text) in [("bind to loopback", &open), ("no [admin]", &no_admin)] {
        std::fs::write(&lb.config, text).expect("write config");
        let (code, body) = http(a, "POST", "/api/reload", Some("s3cret")).await;
        assert_eq!(code, 409, "{what}: {body}");
        let path = format!("/api/pools/p/backends/{}/disable", b.addr);
        assert_eq!(http(a, "POST", &path, None).await.0, 401, "{what}");
        assert_eq!(lb.backend_state("p", b.addr).await, "up", "{what}");
    }
    // Changing the token is fine.
    std::fs::write(&lb.config, with_token.replace("s3cret", "n3w-s3cret")).expect("write config");
    let (code, body) = http(a, "POST", "/api/reload", Some("s3cret")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        http(a, "POST", "/api/reload", Some("n3w-s3cret")).await.0,
        200
    );
}

/// The admin connection cap is read when the admin API starts: a reload says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_says_the_admin_cap_changes_on_restart() {
    let b = named("b0").await;
    let lb = Lb::start(
        "admin-cap-reload",
        &admin_config(b.addr, "max_connections = 4"),
    )
    .await;
    std::fs::write(&lb.config, admin_config(b.addr, "max_connections = 8")).expect("write");
    let (code, body) = http(lb.admin, "POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("admin.max_connections changes take effect on restart"),
        "{body}"
    );
}
