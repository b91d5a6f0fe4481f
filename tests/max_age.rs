//! `max_connection_age` through the binary: long-lived TCP connections are closed once old,
//! at a quiet moment and spread by the jitter; HTTP keep-alive clients are told to reconnect.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backends::echo;
use common::web::web;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tcp_config(backend: SocketAddr, keys: &str) -> String {
    config("round-robin", &[(backend, "")], "", keys)
}

/// How long after `opened` the connection was closed by lb (its read returned 0).
async fn closed_after(mut s: TcpStream, opened: Instant) -> Duration {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => opened.elapsed(),
        Ok(Ok(_)) => panic!("an idle echo connection received bytes"),
        Err(_) => panic!("not closed within 10 s"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_tcp_connections_close_in_their_jittered_window() {
    let b = echo().await;
    let keys =
        "max_connection_age = \"2s\"\nmax_connection_age_jitter = \"20%\"\nage_grace = \"100ms\"\naccess_log = true";
    let mut lb = Lb::start("age-tcp", &tcp_config(b.addr, keys)).await;
    let addr = lb.listener("main").await;
    let mut waits = Vec::new();
    for i in 0..20u8 {
        let opened = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&[i; 8]).await.expect("write");
        let mut got = [0u8; 8];
        s.read_exact(&mut got).await.expect("echo");
        assert_eq!(got, [i; 8]);
        waits.push(tokio::spawn(closed_after(s, opened)));
    }
    let mut ages = Vec::new();
    for w in waits {
        ages.push(w.await.expect("waiter").as_secs_f64());
    }
    let (min, max) = ages
        .iter()
        .fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
    // Each age is drawn from 2 s ± 20%; the quiet grace and scheduling may only add.
    assert!(min >= 1.6, "a connection closed before 1.6 s: {ages:?}");
    assert!(
        max <= 2.4 + 0.1 + 1.0,
        "a connection outlived its window: {ages:?}"
    );
    // Twenty draws over 0.8 s: closing all together would be no jitter at all.
    assert!(max - min >= 0.2, "closes were not spread: {ages:?}");
    lb.wait_log("end=\"max_age\"", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_connection_past_its_age_is_closed_only_once_quiet() {
    let b = echo().await;
    let keys = "max_connection_age = \"500ms\"\nage_grace = \"300ms\"";
    let lb = Lb::start("age-busy", &tcp_config(b.addr, keys)).await;
    let addr = lb.listener("main").await;
    let opened = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // A transfer that spans the age: a byte every 50 ms (well inside the grace) for 1.5 s,
    // each echoed back — never cut in the middle.
    let (mut n, mut last) = (0u32, Instant::now());
    while opened.elapsed() < Duration::from_millis(1500) {
        s.write_all(&[n as u8]).await.expect("write past the age");
        let mut got = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("echo in time")
            .expect("echo: the busy connection was cut");
        assert_eq!(got[0], n as u8);
        last = Instant::now();
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await; // the client's pace, not a wait
    }
    assert!(n >= 10, "only {n} exchanges");
    // Timed from the last byte the client saw, which lb moved no later.
    let closed = closed_after(s, last).await;
    assert!(
        closed >= Duration::from_millis(280),
        "closed {closed:?} into the quiet, before age_grace (300 ms)"
    );
}

/// One keep-alive HTTP/1.1 exchange: status, whether the answer said `Connection: close`.
async fn exchange(s: &mut TcpStream) -> std::io::Result<(u16, bool)> {
    s.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((status, head.contains("connection: close")))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_http_keep_alive_connection_is_told_to_reconnect() {
    let (origin, _) = web("origin").await;
    let cfg = http_site(origin.addr, "max_connection_age = \"700ms\"", "");
    for (path, lb) in both_paths("age-http", &cfg).await {
        let addr = lb.listener("web").await;
        let started = Instant::now();
        let (mut connections, mut told, mut requests) = (1u32, 0u32, 0u32);
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // A client that keeps its connection busy for 2.5 s: every answer arrives, and the
        // connection's age shows as `Connection: close` on one of them, after which the
        // client opens a new connection (as HTTP clients do).
        while started.elapsed() < Duration::from_millis(2500) && requests < 20_000 {
            let (status, close) = exchange(&mut s)
                .await
                .unwrap_or_else(|e| panic!("{path}: request {requests} failed: {e}"));
            assert_eq!(status, 200, "{path}");
            requests += 1;
            if close {
                told += 1;
                let mut rest = [0u8; 1];
                assert_eq!(
                    s.read(&mut rest).await.expect("eof"),
                    0,
                    "{path}: closed after"
                );
                s = TcpStream::connect(addr).await.expect("reconnect");
                connections += 1;
            }
        }
        assert!(
            told >= 2,
            "{path}: {told} answers said close in 2.5 s at age 0.7 s"
        );
        assert_eq!(connections, told + 1, "{path}");
        assert!(requests > 2 * told, "{path}: {requests} requests");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_http2_connection_gets_a_goaway_and_finishes_its_streams() {
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (origin, _) = web("origin").await;
    // An hour of idle_timeout: only the age can end this connection.
    let extra = "max_connection_age = \"500ms\"\nidle_timeout = \"1h\"";
    let lb = Lb::start("age-h2", &http_site(origin.addr, extra, "")).await;
    let addr = lb.listener("web").await;
    // Before the connect: lb counts the age from its accept.
    let opened = Instant::now();
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2");
    let mut conn = tokio::spawn(conn);
    let mut answered = 0u32;
    // Requests one after another until lb's GOAWAY ends the connection: each one sent is
    // answered, and the end is clean (a GOAWAY, not a reset).
    let ended = loop {
        let req = http::Request::get(format!("http://{addr}/y"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        tokio::select! {
            r = send.send_request(req) => match r {
                Ok(resp) => {
                    assert_eq!(resp.status(), 200);
                    answered += 1;
                }
                // Refused by the client once it has the GOAWAY (never sent), or sent as the
                // GOAWAY crossed it and refused by the server unprocessed (a stream above the
                // GOAWAY's last stream id): nothing lost, a client retries it elsewhere.
                Err(e) => assert!(never_processed(&e), "{e:?}"),
            },
            end = &mut conn => break end,
        }
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "no GOAWAY in 10 s"
        );
        assert!(answered < 100_000);
    };
    ended.expect("task").expect("a clean end after the GOAWAY");
    assert!(
        opened.elapsed() >= Duration::from_millis(500),
        "ended before its age"
    );
    assert!(answered >= 1);
}

/// A download to a slow client past its age: lb's own reads and writes come up to a second
/// apart (the kernel's send buffer feeds the client meanwhile), but bytes move all along, so
/// the transfer is never quiet and must not be cut; once delivered, it is closed.
async fn slow_download(name: &str, global: &str) {
    // More than lb's send buffer to the client (tcp_wmem's 4 MiB at most) holds, so a cut
    // loses bytes the client sees missing.
    const TOTAL: usize = 8 << 20;
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let backend_addr = backend.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let chunk = vec![7u8; 64 << 10];
                for _ in 0..TOTAL / chunk.len() {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                // Stays open: only lb may end the connection.
                let mut sink = [0u8; 64];
                let _ = s.read(&mut sink).await;
            });
        }
    });
    let keys = "max_connection_age = \"200ms\"\nage_grace = \"300ms\"\naccess_log = true";
    let text = tcp_config(backend_addr, keys).replace("[global]\n", &format!("[global]\n{global}"));
    let lb = Lb::start(name, &text).await;
    let addr = lb.listener("main").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = vec![0u8; 128 << 10];
    let mut got = 0;
    let started = Instant::now();
    while got < TOTAL {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("bytes within 10 s")
            .unwrap_or(0);
        assert!(
            n > 0,
            "{name}: cut after {got} of {TOTAL} bytes, {:?} into a transfer that never paused",
            started.elapsed()
        );
        got += n;
        // The client's pace (about 2.6 MB/s), not a wait for an event.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Delivered and quiet: the old connection is closed after all.
    closed_after(s, Instant::now()).await;
    drop(lb);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_download_past_its_age_is_not_cut_spliced() {
    slow_download("age-slow-splice", "splice = true\n").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_download_past_its_age_is_not_cut_copied() {
    slow_download("age-slow-copy", "splice = false\n").await;
}

/// An HTTP/2 request error that says the server never processed the request: the client
/// refused to send it after the GOAWAY, or the server refused its stream (GOAWAY with
/// NO_ERROR above the last stream id, or REFUSED_STREAM).
fn never_processed(e: &hyper::Error) -> bool {
    if e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if text.contains("not a result of an error") || text.contains("refused stream") {
            return true;
        }
        source = s.source();
    }
    false
}
