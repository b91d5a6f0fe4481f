//! What lb tells about the HTTP requests it carries, through the real binary on both HTTP
//! paths: the bytes a backend's counters take (heads and bodies, as the backend itself counts
//! them), request IDs (generated, kept, refused when hostile; seen by the backend, the client
//! and the access log).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers every request with `200` and a 37-byte body, counting every byte
/// it reads and writes on its sockets.
struct Counting {
    addr: SocketAddr,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    _task: common::backends::Backend,
}

async fn counting() -> Counting {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (read, written) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (r, w) = (read.clone(), written.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (r, w) = (r.clone(), w.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = find(&buf, b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                r.fetch_add(n as u64, SeqCst);
                                buf.extend_from_slice(&chunk[..n]);
                            }
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().expect("length"));
                    while buf.len() < end + 4 + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                r.fetch_add(n as u64, SeqCst);
                                buf.extend_from_slice(&chunk[..n]);
                            }
                        }
                    }
                    buf.drain(..end + 4 + len);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 37\r\nx-from: counting\r\n\r\nthirty-seven bytes of body, exactly.\n";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    w.fetch_add(answer.len() as u64, SeqCst);
                }
            });
        }
    });
    Counting {
        addr,
        read,
        written,
        _task: common::backends::Backend::from_task(addr, task),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response (framed by its Content-Length) from `s`; its head and body.
async fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("length"));
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return (head, body);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "lb closed before answering");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One backend's `(bytes_in, bytes_out)` in `/api/status`.
async fn backend_bytes(lb: &Lb, addr: SocketAddr) -> (u64, u64) {
    let s = lb.status().await;
    let b = s["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .flat_map(|p| p["backends"].as_array().expect("backends").iter())
        .find(|b| b["address"] == addr.to_string())
        .expect("backend listed")
        .clone();
    (
        b["bytes_in"].as_u64().expect("in"),
        b["bytes_out"].as_u64().expect("out"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backends_bytes_count_heads_and_bodies_as_the_backend_does() {
    for path in ["default", "general"] {
        // Each lb gets its own backend so the counts compare one to one.
        let backend = counting().await;
        let cfg = http_site(backend.addr, "", "");
        let env: &[(&str, &str)] = match path {
            "general" => &[("LB_HTTP_PATH", "general")],
            _ => &[],
        };
        let lb = Lb::start_env(&format!("observe-bytes-{path}"), &cfg, &[], env).await;
        let addr = lb.listener("web").await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut buf = Vec::new();
        for i in 0..30 {
            let req = if i % 3 == 2 {
                format!(
                    "POST /up/{i} HTTP/1.1\r\nHost: site\r\nContent-Length: 100\r\n\r\n{}",
                    "x".repeat(100)
                )
            } else {
                format!("GET /page/{i} HTTP/1.1\r\nHost: site\r\nUser-Agent: bytes-test\r\n\r\n")
            };
            s.write_all(req.as_bytes()).await.expect("write");
            let (head, body) = response(&mut s, &mut buf).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
            assert_eq!(body.len(), 37, "{path}");
        }
        let want = || (backend.read.load(SeqCst), backend.written.load(SeqCst));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = backend_bytes(&lb, backend.addr).await;
        while got != want() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            got = backend_bytes(&lb, backend.addr).await;
        }
        let (read, written) = want();
        assert_eq!(
            written,
            30 * 94,
            "{path}: the backend's own count of what it sent"
        );
        assert!(
            read > 30 * 60,
            "{path}: heads reached the backend ({read} bytes)"
        );
        assert_eq!(
            got,
            (read, written),
            "{path}: lb's count of bytes to and from the backend"
        );
    }
}

/// The `x-request-id` values of a response head.
fn ids_in(head: &str) -> Vec<String> {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-request-id"))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

fn generated(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_made_or_kept_and_seen_by_backend_client_and_log() {
    let huge = format!("X-Request-Id: {}\r\n", "a".repeat(20_000));
    let long = format!("X-Request-Id: {}\r\n", "b".repeat(129));
    let max = "c".repeat(128);
    let max_field = format!("X-Request-Id: {max}\r\n");
    // (what the client adds, the ID kept if any)
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("", None),
        ("X-Request-Id: client-42.a_b~\r\n", Some("client-42.a_b~")),
        ("x-request-id:   padded  \r\n", Some("padded")),
        (&max_field, Some(&max)),
        (&long, None),
        (&huge, None),
        ("X-Request-Id: a b\r\n", None),
        ("X-Request-Id: id,other\r\n", None),
        ("X-Request-Id: \"quoted\"\r\n", None),
        ("X-Request-Id: x;y=1\r\n", None),
        ("X-Request-Id: caf\u{e9}\r\n", None),
        ("X-Request-Id: one\r\nX-Request-Id: two\r\n", None),
        ("X-Request-Id: same\r\nX-Request-Id: same\r\n", None),
        ("X-Request-Id: \r\n", None),
        (
            "Connection: x-request-id\r\nX-Request-Id: hop\r\n",
            Some("hop"),
        ),
    ];
    for path in ["default", "general"] {
        let origin = Origin::start().await;
        let cfg = http_site(origin.addr, "access_log = true", "");
        let env: &[(&str, &str)] = match path {
            "general" => &[("LB_HTTP_PATH", "general")],
            _ => &[],
        };
        let mut lb = Lb::start_env(&format!("observe-ids-{path}"), &cfg, &[], env).await;
        let addr = lb.listener("web").await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        for (i, (extra, kept)) in cases.iter().enumerate() {
            let req = format!("GET /rid/{i} HTTP/1.1\r\nHost: site\r\n{extra}\r\n");
            s.write_all(req.as_bytes()).await.expect("write");
            let (head, _) = response(&mut s, &mut buf).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{path} case {i}: {head}");
            let ids = ids_in(&head);
            assert_eq!(
                ids.len(),
                1,
                "{path} case {i}: one id to the client: {head}"
            );
            let id = &ids[0];
            match kept {
                Some(k) => assert_eq!(id, k, "{path} case {i}: the client's id kept"),
                None => assert!(generated(id), "{path} case {i}: lb's own id, got {id:?}"),
            }
            let got = origin.since(i);
            assert_eq!(got[0].target(), format!("/rid/{i}"));
            assert_eq!(
                got[0].fields("x-request-id"),
                vec![id.clone()],
                "{path} case {i}: the backend got the same one, once"
            );
            let line = lb.wait_log(&format!("path=/rid/{i} "), Duration::from_secs(5));
            assert!(
                line.contains(id.as_str()),
                "{path} case {i}: logged: {line}"
            );
            seen.push(id.clone());
        }
        let made: Vec<&String> = seen.iter().filter(|id| generated(id)).collect();
        let mut unique = made.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            made.len(),
            "{path}: generated ids differ: {made:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_id_replace_ignores_the_clients_and_off_leaves_the_field_alone() {
    for path in ["default", "general"] {
        let env: &[(&str, &str)] = match path {
            "general" => &[("LB_HTTP_PATH", "general")],
            _ => &[],
        };
        for (mode, want_client) in [("replace", false), ("off", true)] {
            let origin = Origin::start().await;
            let cfg = http_site(origin.addr, &format!("request_id = \"{mode}\""), "");
            let lb = Lb::start_env(&format!("observe-idmode-{path}-{mode}"), &cfg, &[], env).await;
            let addr = lb.listener("web").await;
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let mut buf = Vec::new();
            s.write_all(b"GET /m HTTP/1.1\r\nHost: site\r\nX-Request-Id: mine-1\r\n\r\n")
                .await
                .expect("write");
            let (head, _) = response(&mut s, &mut buf).await;
            let got = origin.received();
            if want_client {
                assert_eq!(
                    got[0].fields("x-request-id"),
                    vec!["mine-1".to_string()],
                    "{path} {mode}"
                );
                assert!(
                    ids_in(&head).is_empty(),
                    "{path} {mode}: lb adds none: {head}"
                );
            } else {
                let ids = ids_in(&head);
                assert_eq!(ids.len(), 1, "{path} {mode}: {head}");
                assert!(generated(&ids[0]), "{path} {mode}: {head}");
                assert_eq!(got[0].fields("x-request-id"), ids, "{path} {mode}");
            }
        }
    }
}
