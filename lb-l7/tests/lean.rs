//! The lean path (plain HTTP/1.1 routes to plain HTTP/1.1 backends) against backends
//! scripted byte by byte: what reaches the backend, how response framings are relayed,
//! when a backend connection is reused or given up, and the hand-over of a connection to
//! the full path mid-way.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{config, gateway, gateway_draining};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted backend does with one request.
struct Reply {
    /// Written in this many separate writes, a pause between them.
    pieces: Vec<Vec<u8>>,
    /// Close the connection afterwards.
    close: bool,
    /// Wait this long before answering.
    wait: Duration,
}

fn reply(text: &str) -> Reply {
    Reply {
        pieces: vec![text.as_bytes().to_vec()],
        close: false,
        wait: Duration::ZERO,
    }
}

/// A backend that reads each request (head, and a Content-Length or chunked body), records
/// it as received, and answers what `script(connection, request on it, head)` says (`None`:
/// close without answering).
struct Scripted {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicU64>,
}

async fn scripted<F>(script: F) -> Scripted
where
    F: Fn(u64, u64, &str) -> Option<Reply> + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let received = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicU64::new(0));
    let script = Arc::new(script);
    let (rec, count) = (received.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let conn = count.fetch_add(1, Ordering::SeqCst);
            let (rec, script) = (rec.clone(), script.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0.. {
                    let Some(request) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    rec.lock().expect("lock").push(request.clone());
                    let Some(r) = script(conn, n, &request) else {
                        return;
                    };
                    tokio::time::sleep(r.wait).await;
                    for p in &r.pieces {
                        if s.write_all(p).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if r.close {
                        return;
                    }
                }
            });
        }
    });
    Scripted {
        addr,
        received,
        connections,
    }
}

/// One request off the connection, head and body as text.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let lower = head.to_ascii_lowercase();
    let body_end = if lower.contains("transfer-encoding: chunked") {
        loop {
            if let Some(i) = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                break head_end + i + 5;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        }
        head_end + len
    };
    let text = String::from_utf8_lossy(&buf[..body_end]).to_string();
    buf.drain(..body_end);
    Some(text)
}

/// Sends `requests` on one connection and reads `answers` responses (each framed by its
/// Content-Length or chunked body), or until lb closes.
async fn exchange(addr: SocketAddr, requests: &str, answers: usize) -> Vec<String> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(requests.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let read = async {
        while out.len() < answers {
            if let Some(n) = complete_response(&buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).to_string());
                buf.drain(..n);
                continue;
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    if !buf.is_empty() {
                        out.push(String::from_utf8_lossy(&buf).to_string());
                    }
                    break;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("answers in time");
    out
}

fn complete_response(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        let i = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some(head_end + i + 5);
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    (buf.len() >= head_end + len).then_some(head_end + len)
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn lb_for(backend: SocketAddr, extra: &str) -> SocketAddr {
    let text = config(&[(&[backend], "")], &format!("pool = \"p0\"\n{extra}"), "");
    gateway(&text).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn fields_go_on_as_sent_over_one_backend_connection() {
    if support::general_path_run("fields_go_on_as_sent_over_one_backend_connection") {
        return;
    }
    let be = scripted(|_, n, _| Some(reply(&ok(&format!("answer {n}"))))).await;
    let lb = lb_for(be.addr, "").await;
    let one = "GET /a/./b?q=1 HTTP/1.1\r\nHost: App.Example\r\nX-Mixed-Case: Value\r\n\
               Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    let two = "POST /upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\n\r\nhello";
    let three = "GET /last HTTP/1.1\r\nHost: app.example\r\n\r\n";
    let answers = exchange(lb, &format!("{one}{two}{three}"), 3).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    for (n, a) in answers.iter().enumerate() {
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "{a}");
        assert!(a.ends_with(&format!("answer {n}")), "{a}");
    }
    let got = be.received.lock().expect("lock").clone();
    // The client's spelling of a field is kept (the full path's parser would lowercase it),
    // the path is normalised, hop-by-hop fields and claims of forwarding are dropped, and
    // Host is lb's.
    assert!(
        got[0].starts_with("GET /a/b?q=1 HTTP/1.1\r\nhost: App.Example\r\nX-Mixed-Case: Value\r\n"),
        "{}",
        got[0]
    );
    assert!(
        !got[0].contains("X-Hop") && !got[0].contains("6.6.6.6"),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{}",
        got[0]
    );
    assert!(got[0].contains("\r\nforwarded: for=127.0.0.1;proto=http;host=\"App.Example\"\r\n"));
    assert!(got[1].ends_with("\r\n\r\nhello"), "{}", got[1]);
    assert_eq!(got.len(), 3);
    assert_eq!(be.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_responses_are_relayed_as_they_come_and_the_connection_reused() {
    if support::general_path_run(
        "chunked_responses_are_relayed_as_they_come_and_the_connection_reused",
    ) {
        return;
    }
    let be = scripted(|_, n, head| {
        Some(if head.starts_with("GET /chunked") {
            Reply {
                pieces: vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhel".to_vec(),
                    b"lo\r\n6;ext=1\r\n world\r\n".to_vec(),
                    b"0\r\nx-sum: 11\r\n\r\n".to_vec(),
                ],
                close: false,
                wait: Duration::ZERO,
            }
        } else if head.starts_with("HEAD") {
            reply("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        } else if head.starts_with("GET /early") {
            // Interim answers before the final one are read past.
            reply(&format!("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n{}", ok("late")))
        } else {
            reply(&ok(&format!("plain {n}")))
        })
    })
    .await;
    // The heads are compared byte for byte: no request ID added to them.
    let lb = lb_for(be.addr, "request_id = \"off\"").await;
    let reqs = "GET /chunked HTTP/1.1\r\nHost: a\r\n\r\nHEAD /h HTTP/1.1\r\nHost: a\r\n\r\n\
                GET /early HTTP/1.1\r\nHost: a\r\n\r\nGET /p HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut s = TcpStream::connect(lb).await.expect("connect");
    s.write_all(reqs.as_bytes()).await.expect("write");
    let mut all = Vec::new();
    let want = "plain 3";
    let read = async {
        while !String::from_utf8_lossy(&all).ends_with(want) {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&all));
            all.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("in time");
    let text = String::from_utf8_lossy(&all).to_string();
    assert!(text.starts_with(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 11\r\n\r\n"
    ), "{text}");
    assert!(text.contains("\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate"), "{text}");
    assert!(!text.contains("103"));
    assert_eq!(be.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_delimited_by_close_closes_the_client_too() {
    if support::general_path_run("a_body_delimited_by_close_closes_the_client_too") {
        return;
    }
    let be = scripted(|_, _, _| {
        Some(Reply {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\n\r\nuntil ".to_vec(),
                b"the end".to_vec(),
            ],
            close: true,
            wait: Duration::ZERO,
        })
    })
    .await;
    let lb = lb_for(be.addr, "").await;
    let answers = exchange(lb, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 2).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(
        answers[0].contains("connection: close\r\n"),
        "{}",
        answers[0]
    );
    assert!(
        answers[0].ends_with("\r\n\r\nuntil the end"),
        "{}",
        answers[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_closing_a_kept_connection_costs_a_get_nothing_and_a_post_a_502() {
    // Each connection answers its first request and drops the second unanswered: the race
    // of a request with the backend's keep-alive timer.
    let be = scripted(|_, n, _| (n == 0).then(|| reply(&ok("fine")))).await;
    let lb = lb_for(be.addr, "").await;
    let get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let answers = exchange(lb, &format!("{get}{get}{get}"), 3).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers.iter().all(|a| a.ends_with("fine")), "{answers:?}");
    let post = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
    let answers = exchange(lb, &format!("{get}{post}"), 2).await;
    assert!(answers[0].ends_with("fine"), "{answers:?}");
    assert!(
        answers[1].starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answers:?}"
    );
    assert!(answers[1].contains("\"status\":502"), "{answers:?}");
    // The POST reached the backend once, never twice.
    let posts = be
        .received
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.starts_with("POST"))
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_or_overlong_responses_are_not_trusted() {
    let be = scripted(|_, _, head| {
        Some(if head.starts_with("GET /two-lengths") {
            reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
        } else if head.starts_with("GET /extra") {
            // More bytes than the length said: delivered, and the connection not reused.
            reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSURPLUS")
        } else {
            reply(&ok("next"))
        })
    })
    .await;
    let lb = lb_for(be.addr, "").await;
    let answers = exchange(lb, "GET /two-lengths HTTP/1.1\r\nHost: a\r\n\r\n", 1).await;
    assert!(answers[0].starts_with("HTTP/1.1 502 "), "{answers:?}");
    let before = be.connections.load(Ordering::SeqCst);
    let answers = exchange(
        lb,
        "GET /extra HTTP/1.1\r\nHost: a\r\n\r\nGET /n HTTP/1.1\r\nHost: a\r\n\r\n",
        2,
    )
    .await;
    assert!(answers[0].ends_with("\r\n\r\nok"), "{answers:?}");
    assert!(answers[1].ends_with("next"), "{answers:?}");
    // One connection for /extra, given up after it; a new one for /n.
    assert_eq!(be.connections.load(Ordering::SeqCst), before + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_it_does_not_carry_hands_the_connection_to_the_full_path() {
    if support::general_path_run(
        "a_request_it_does_not_carry_hands_the_connection_to_the_full_path",
    ) {
        return;
    }
    let be = scripted(|_, n, _| Some(reply(&ok(&format!("answer {n}"))))).await;
    let lb = lb_for(be.addr, "").await;
    // Lean, then a chunked upload (the full path's), then whatever follows stays there.
    let reqs = "GET /one HTTP/1.1\r\nHost: a\r\nX-Case: Kept\r\n\r\n\
                POST /two HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                GET /three HTTP/1.1\r\nHost: a\r\nX-Case: Kept\r\n\r\n";
    let answers = exchange(lb, reqs, 3).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    let got = be.received.lock().expect("lock").clone();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].contains("X-Case: Kept"), "{}", got[0]);
    assert!(
        got[1].starts_with("POST /two HTTP/1.1\r\n") && got[1].contains("abc"),
        "{}",
        got[1]
    );
    // hyper's spelling: the full path took the rest of the connection.
    assert!(got[2].contains("x-case: Kept"), "{}", got[2]);
    // A refusal is the full path's too, with its JSON answer.
    let answers = exchange(
        lb,
        "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        2,
    )
    .await;
    assert!(answers[0].starts_with("HTTP/1.1 200 "), "{answers:?}");
    assert!(answers[1].starts_with("HTTP/1.1 400 "), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_both_ways() {
    const SIZE: usize = 3 * 1024 * 1024 + 17;
    let be = scripted(|_, _, _| {
        let mut body = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").into_bytes();
        body.extend(std::iter::repeat_n(b'z', SIZE));
        Some(Reply {
            pieces: vec![body],
            close: false,
            wait: Duration::ZERO,
        })
    })
    .await;
    let lb = lb_for(be.addr, "").await;
    let upload = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n{}",
        "u".repeat(SIZE)
    );
    let answers = exchange(lb, &upload, 1).await;
    assert!(answers[0].starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(answers[0].bytes().filter(|&b| b == b'z').count(), SIZE);
    let got = be.received.lock().expect("lock").clone();
    let (_, body) = got[0].split_once("\r\n\r\n").expect("head");
    assert_eq!(body.len(), SIZE);
    assert!(body.bytes().all(|b| b == b'u'));
}

#[tokio::test(flavor = "multi_thread")]
async fn draining_closes_idle_connections_and_ends_busy_ones_after_their_answer() {
    let slow_received = Arc::new(tokio::sync::Notify::new());
    let seen = slow_received.clone();
    let be = scripted(move |_, _, head| {
        let mut r = reply(&ok("done"));
        if head.starts_with("GET /slow") {
            seen.notify_one();
            r.wait = Duration::from_millis(400);
        }
        Some(r)
    })
    .await;
    let text = config(&[(&[be.addr], "")], "pool = \"p0\"", "");
    let (lb, _, drain) = gateway_draining(&text).await;
    let mut idle = TcpStream::connect(lb).await.expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 1024];
    let n = idle.read(&mut first).await.expect("read");
    assert!(String::from_utf8_lossy(&first[..n]).ends_with("done"));
    let busy = tokio::spawn(exchange(lb, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n", 2));
    // Drain while the backend holds the slow request.
    tokio::time::timeout(Duration::from_secs(5), slow_received.notified())
        .await
        .expect("the backend got the slow request");
    drain.cancel();
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut first))
        .await
        .expect("the idle connection is closed at once");
    assert_eq!(closed.expect("read"), 0);
    let answers = busy.await.expect("task");
    assert_eq!(
        answers.len(),
        1,
        "one answer, then the connection closed: {answers:?}"
    );
    assert!(
        answers[0].contains("connection: close\r\n") && answers[0].ends_with("done"),
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_run_on_the_lean_path_refusals_included() {
    // The backend's own reason phrase comes through (the full path would write "OK").
    let be = scripted(|_, _, _| {
        Some(reply(
            "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nServer: be\r\n\r\nok",
        ))
    })
    .await;
    // sha256("password").
    let policies = "[policy.keys]\nkind = \"api_key\"\nkeys = [{ name = \"cli\", sha256 = \"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\" }]\n\
                    [policy.stamp]\nkind = \"headers\"\nrequest = { set = { \"x-consumer\" = \"${consumer}\" } }\n\
                    response = { add = { \"x-served-by\" = \"lb/${route}\" }, remove = [\"server\"] }\n";
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"api\"\nmatch = {{ path_prefix = \"/\" }}\npool = \"p0\"\npolicies = [\"keys\", \"stamp\"]\n{policies}"
    );
    let text = config(&[(&[be.addr], "")], "", &routes);
    let lb = gateway(&text).await.0;
    let with_key = "GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-API-Key: password\r\nX-Keep: Yes\r\n\r\n";
    let without = "POST /a HTTP/1.1\r\nHost: h\r\n\r\n";
    let answers = exchange(lb, &format!("{with_key}{without}{with_key}"), 3).await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    for a in [&answers[0], &answers[2]] {
        assert!(a.starts_with("HTTP/1.1 200 Fine\r\n"), "{a}");
        assert!(
            a.contains("x-served-by: lb/api\r\n") && !a.contains("Server:"),
            "{a}"
        );
        assert!(a.ends_with("\r\n\r\nok"), "{a}");
    }
    assert!(
        answers[1].starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answers:?}"
    );
    assert!(
        answers[1]
            .to_ascii_lowercase()
            .contains("www-authenticate:"),
        "{answers:?}"
    );
    assert!(answers[1].contains("\"status\":401"), "{answers:?}");
    let got = be.received.lock().expect("lock").clone();
    assert_eq!(
        got.len(),
        2,
        "the refused request never reached the backend: {got:?}"
    );
    assert!(got[0].starts_with("GET /a?x=1 HTTP/1.1\r\n"), "{}", got[0]);
    assert!(
        got[0].contains("x-consumer: cli\r\n") && got[0].contains("x-keep: Yes\r\n"),
        "{}",
        got[0]
    );
    assert!(
        !got[0].to_ascii_lowercase().contains("x-api-key"),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{}",
        got[0]
    );
    assert_eq!(be.connections.load(Ordering::SeqCst), 1);
}
