//! What one attempt on a backend may cost and leave behind, on both paths (this suite runs
//! again with `LB_HTTP_PATH=general`): time limits counted from when the request was sent
//! whole, a backend that answers before the body is over, a kept connection never lent while
//! a body is still on its way, switches of protocol only when the backend accepts the one
//! asked for, and head timeouts that no request can switch off. Timed tests run on paused
//! tokio time with real loopback sockets.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{config, gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads each request head, then does what `reply` says with the
/// connection (it may read the body or not); records the heads.
async fn backend<F, Fut>(reply: F) -> (SocketAddr, Arc<Mutex<Vec<String>>>)
where
    F: Fn(TcpStream, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Option<TcpStream>> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (reply, seen) = (reply.clone(), seen.clone());
            tokio::spawn(async move {
                let mut s = s;
                loop {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut one = [0u8; 1];
                        match s.read(&mut one).await {
                            Ok(1) => head.push(one[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    seen.lock().expect("lock").push(head.clone());
                    match reply(s, head).await {
                        Some(next) => s = next,
                        None => return,
                    }
                }
            });
        }
    });
    (addr, heads)
}

fn lb_config(backend: SocketAddr, route_extra: &str, listener_extra: &str) -> String {
    let route = format!(
        "[[route]]\nlistener = \"web\"\nname = \"r\"\nmatch = {{ path_prefix = \"/\" }}\npool = \"p0\"\n{route_extra}\n"
    );
    config(
        &[(&[backend], "")],
        &format!("pool = \"p0\"\n{listener_extra}"),
        &route,
    )
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut one = [0u8; 1];
        if s.read(&mut one).await.expect("read") == 0 {
            break;
        }
        head.push(one[0]);
    }
    String::from_utf8_lossy(&head).to_string()
}

#[tokio::test(start_paused = true)]
async fn the_route_timeout_runs_from_when_the_request_was_sent_whole() {
    // The backend reads the whole body, then answers 201.
    let (be, _) = backend(|mut s, head| async move {
        let len: usize = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.ok()?;
        s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            .await
            .ok()?;
        Some(s)
    })
    .await;
    let (lb, _) = gateway(&lb_config(be, "timeout = \"1s\"", "")).await;
    let mut c = TcpStream::connect(lb).await.expect("connect");
    c.write_all(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n")
        .await
        .expect("write");
    // The upload takes 2.5 s, a byte every 250 ms: longer than the route's timeout, which
    // only starts once the backend has it all.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.write_all(b"x").await.expect("write");
    }
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_answers_before_the_body_is_over_is_relayed_at_once() {
    // At once, and a second after the head: by then lb's writes of the body wait for room
    // the backend will never make, and the answer must still be seen (not a 504).
    for after in [Duration::ZERO, Duration::from_secs(1)] {
        answered_before_the_body_is_over(after).await;
    }
}

async fn answered_before_the_body_is_over(after: Duration) {
    // It refuses on seeing the head and reads nothing more.
    let (be, _) = backend(move |mut s, _| async move {
        tokio::time::sleep(after).await;
        let _ = s
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
            .await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        None
    })
    .await;
    let (lb, gw) = gateway(&lb_config(be, "timeout = \"5s\"", "")).await;
    let mut c = TcpStream::connect(lb).await.expect("connect");
    c.write_all(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 104857600\r\n\r\n")
        .await
        .expect("write");
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        // Until lb stops reading (bounded: the body's size).
        for _ in 0..1600 {
            if c.write_all(&chunk).await.is_err() {
                break;
            }
        }
        c
    });
    let started = tokio::time::Instant::now();
    let mut c = loop {
        if writer.is_finished() {
            break writer.await.expect("writer");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "lb kept reading the body"
        );
    };
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{after:?}: {head}");
    let pool = &gw.pools[0].as_ref().expect("pool").pool;
    assert_eq!(
        pool.backends[0].active.load(Ordering::SeqCst),
        0,
        "the attempt ended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_connection_is_not_lent_while_a_body_is_still_on_its_way() {
    // POSTs are refused at once, their body unread; GETs are answered.
    let (be, _) = backend(|mut s, head| async move {
        let answer: &[u8] = if head.starts_with("POST") {
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        s.write_all(answer).await.ok()?;
        Some(s)
    })
    .await;
    let (lb, _) = gateway(&lb_config(be, "timeout = \"2s\"", "")).await;
    // The attacker's chunked upload (the general path's) stalls after one chunk.
    let mut attacker = TcpStream::connect(lb).await.expect("connect");
    attacker
        .write_all(
            b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .expect("write");
    assert!(read_head(&mut attacker).await.starts_with("HTTP/1.1 401"));
    // Another client is served at once, not held behind the unfinished body.
    let started = std::time::Instant::now();
    let (status, _, body) = support::raw(lb, &support::get("h", "/y")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(attacker);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_101_that_does_not_accept_the_upgrade_opens_no_tunnel() {
    // Answers 101 to anything, without naming the protocol or accepting the key: a status
    // some backends can be made to echo.
    let (be, heads) = backend(|mut s, _| async move {
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n")
            .await;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        None
    })
    .await;
    let admin = "[[route]]\nlistener = \"web\"\nname = \"admin\"\nmatch = { path_prefix = \"/admin\" }\npool = \"p0\"\npolicies = [\"nobody\"]\n\
                 [policy.nobody]\nkind = \"ip_filter\"\nallow = [\"192.0.2.0/24\"]\n";
    let (lb, _) = gateway(&format!("{}{admin}", lb_config(be, "", ""))).await;
    let mut c = TcpStream::connect(lb).await.expect("connect");
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    // Whatever the client writes next is HTTP again, never a tunnel past /admin's policy.
    let _ = c
        .write_all(b"GET /admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    let heads = heads.lock().expect("lock").clone();
    assert!(
        heads.iter().all(|h| !h.starts_with("GET /admin")),
        "{heads:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_request_switches_off_the_head_timeout() {
    let (be, _) = backend(|mut s, _| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .ok()?;
        Some(s)
    })
    .await;
    let (lb, _) = gateway(&lb_config(
        be,
        "",
        "header_timeout = \"1s\"\nidle_timeout = \"1h\"",
    ))
    .await;
    let long_field = format!("X-Big: {}\r\n", "b".repeat(70 * 1024));
    for first in [
        "GET /a HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n".to_string(),
        "GET /a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nUpgrade: foo\r\n\r\n".to_string(),
        format!("\r\n\r\nGET /a HTTP/1.1\r\nHost: h\r\n{long_field}\r\n"),
    ] {
        let mut c = TcpStream::connect(lb).await.expect("connect");
        c.write_all(first.as_bytes()).await.expect("write");
        let head = read_head(&mut c).await;
        let _ = head;
        // Then a head that never ends: cut after header_timeout, whatever came before.
        let started = tokio::time::Instant::now();
        if c.write_all(b"GET /b HTTP/1.1\r\nHo").await.is_err() {
            continue; // the first request already closed the connection (431)
        }
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{first:.40?}: the slow head was not cut");
        assert!(
            started.elapsed() <= Duration::from_secs(2),
            "{first:.40?}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_closing_without_answering_are_not_ejected_for_it() {
    let closes = Arc::new(AtomicU64::new(0));
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let n = closes.clone();
        let (a, _) = backend(move |_s, _| {
            n.fetch_add(1, Ordering::SeqCst);
            async { None }
        })
        .await;
        addrs.push(a);
    }
    let text = config(
        &[(
            &addrs,
            "passive = { consecutive_failures = 3, eject_for = \"1m\" }",
        )],
        "pool = \"p0\"",
        "",
    );
    let (lb, gw) = gateway(&text).await;
    for _ in 0..3 {
        let (status, _, _) = support::raw(lb, &support::get("h", "/")).await;
        assert_eq!(status, 502);
    }
    assert_eq!(
        closes.load(Ordering::SeqCst),
        9,
        "each GET went to every backend"
    );
    let pool = &gw.pools[0].as_ref().expect("pool").pool;
    for b in &pool.backends {
        assert!(b.available(), "one request's fate ejected {}", b.id);
    }
}
