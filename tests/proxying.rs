//! End-to-end TCP proxying through the real binary: half-close, large transfers intact in
//! both relay modes, connection limits, idle timeout, failover under load.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backends::{echo, fill, hasher, named, silent, source};
use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIG: u64 = 256 * 1024 * 1024;

/// Waits (bounded: 10 s) until `counter` reaches `want`.
async fn until_at_least(counter: &AtomicU64, want: u64) {
    let start = Instant::now();
    while counter.load(Ordering::Relaxed) < want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "counter stuck at {} (want {want})",
            counter.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn half_close_keeps_the_other_direction_open() {
    let b = echo().await;
    let lb = Lb::start("halfclose", &config("round-robin", &[(b.addr, "")], "", "")).await;
    let addr = lb.listener("main").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"hello, ").await.expect("write");
    s.write_all(b"world").await.expect("write");
    // Client FIN: lb must shut down the backend's write side, and still relay the echo back.
    s.shutdown().await.expect("shutdown write");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("not hung")
        .expect("read");
    assert_eq!(got, b"hello, world");
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_fin_first_while_client_keeps_sending() {
    // The backend sends its name and FINs at once, then keeps reading: the client must see
    // EOF yet still be able to send for a while.
    let b = named("early-fin").await;
    let lb = Lb::start(
        "backendfin",
        &config("round-robin", &[(b.addr, "")], "", "access_log = true"),
    )
    .await;
    let addr = lb.listener("main").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.expect("read to FIN");
    assert_eq!(got, b"early-fin\n");
    for _ in 0..10 {
        s.write_all(&[7u8; 1000])
            .await
            .expect("client can still send after backend FIN");
    }
    s.shutdown().await.expect("shutdown");
    drop(s);
    let mut lb = lb;
    let line = lb.wait_log("end=\"backend_fin\"", Duration::from_secs(5));
    assert!(line.contains("bytes_in=10000"), "{line}");
    assert!(line.contains("bytes_out=10"), "{line}");
}

async fn upload_and_download(splice: bool) {
    let up = hasher().await;
    let down = source(BIG).await;
    let global = format!("splice = {splice}\n");
    let text = format!(
        "[global]\n{global}\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"up\"\nbind = \"127.0.0.1:0\"\npool = \"up\"\n\n\
         [[listener]]\nname = \"down\"\nbind = \"127.0.0.1:0\"\npool = \"down\"\n\n\
         [[pool]]\nname = \"up\"\nbackends = [{{ addr = \"{}\" }}]\n\n\
         [[pool]]\nname = \"down\"\nbackends = [{{ addr = \"{}\" }}]\n",
        up.addr, down.addr
    );
    let lb = Lb::start(if splice { "big-splice" } else { "big-copy" }, &text).await;

    // Upload 256 MiB; the backend answers with the hash of what reached it.
    let s = TcpStream::connect(lb.listener("up").await)
        .await
        .expect("connect");
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut h = Sha256::new();
        let mut block = vec![0u8; 256 * 1024];
        let mut seed = 42u64;
        let mut left = BIG;
        while left > 0 {
            let k = left.min(block.len() as u64) as usize;
            fill(&mut block[..k], &mut seed);
            h.update(&block[..k]);
            w.write_all(&block[..k]).await.expect("upload");
            left -= k as u64;
        }
        w.shutdown().await.expect("fin");
        format!("{:x} {BIG}", h.finalize())
    });
    let mut answer = String::new();
    r.read_to_string(&mut answer).await.expect("hash answer");
    let sent = writer.await.expect("writer");
    assert_eq!(answer.trim(), sent, "upload corrupted (splice={splice})");

    // Download 256 MiB from the source backend and hash it here.
    let mut s = TcpStream::connect(lb.listener("down").await)
        .await
        .expect("connect");
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let k = s.read(&mut buf).await.expect("download");
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let mut expect = Sha256::new();
    let mut seed = 0u64;
    let mut block = vec![0u8; 64 * 1024];
    let mut left = BIG;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        fill(&mut block[..k], &mut seed);
        expect.update(&block[..k]);
        left -= k as u64;
    }
    assert_eq!(n, BIG);
    assert_eq!(
        h.finalize(),
        expect.finalize(),
        "download corrupted (splice={splice})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_256_mib_intact_with_splice() {
    upload_and_download(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_256_mib_intact_with_copy() {
    upload_and_download(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listener_max_connections_refuses_and_counts() {
    let b = silent().await;
    let lb = Lb::start(
        "maxconn",
        &config("round-robin", &[(b.addr, "")], "", "max_connections = 2"),
    )
    .await;
    let addr = lb.listener("main").await;
    let held1 = TcpStream::connect(addr).await.expect("first");
    let held2 = TcpStream::connect(addr).await.expect("second");
    // Wait until lb has admitted both.
    let start = Instant::now();
    while lb.status().await["listeners"][0]["active_connections"] != 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "two connections never became active"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut third = TcpStream::connect(addr)
        .await
        .expect("kernel accepts the SYN");
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "third connection must be closed, got {r:?}"
    );
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "lb_rejected_connections_total",
            &[("listener", "main"), ("reason", "listener_limit")]
        ),
        1.0,
        "{m}"
    );
    // Freeing a slot lets the next one in.
    drop(held1);
    let start = Instant::now();
    while lb.status().await["listeners"][0]["active_connections"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut fourth = TcpStream::connect(addr).await.expect("fourth");
    fourth.write_all(b"x").await.expect("write");
    let r = tokio::time::timeout(Duration::from_millis(300), fourth.read(&mut buf)).await;
    assert!(r.is_err(), "fourth stays open (silent backend): {r:?}");
    drop(held2);
}

#[tokio::test(flavor = "multi_thread")]
async fn global_max_connections_refuses() {
    let b = silent().await;
    let text = config("round-robin", &[(b.addr, "")], "", "")
        .replace("workers = 2", "workers = 2\nmax_connections = 1");
    let lb = Lb::start("globalmax", &text).await;
    let addr = lb.listener("main").await;
    let _held = TcpStream::connect(addr).await.expect("first");
    let start = Instant::now();
    while lb.status().await["active_connections"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut second = TcpStream::connect(addr).await.expect("syn");
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(matches!(r, Ok(0) | Err(_)));
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "lb_rejected_connections_total",
            &[("reason", "global_limit")]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_closes_quiet_connections_only() {
    let b = echo().await;
    let text = config(
        "round-robin",
        &[(b.addr, "")],
        "",
        "idle_timeout = \"700ms\"\naccess_log = true",
    );
    let mut lb = Lb::start("idle", &text).await;
    let addr = lb.listener("main").await;
    // A chatty connection outlives the timeout, while a quiet one beside it is closed.
    let mut busy = TcpStream::connect(addr).await.expect("connect");
    let chat = tokio::spawn(async move {
        let start = Instant::now();
        let mut buf = [0u8; 4];
        while start.elapsed() < Duration::from_millis(2000) {
            busy.write_all(b"ping").await.expect("busy write");
            busy.read_exact(&mut buf)
                .await
                .expect("busy connection must stay open");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut quiet = TcpStream::connect(addr).await.expect("connect");
    let t0 = Instant::now();
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), quiet.read(&mut one))
        .await
        .expect("closed by lb");
    assert!(matches!(r, Ok(0) | Err(_)));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(650),
        "closed too early: {waited:?}"
    );
    let line = lb.wait_log("end=\"idle_timeout\"", Duration::from_secs(5));
    assert!(line.contains("main"), "{line}");
    chat.await.expect("busy connection survived");
}

/// A backend dies mid-run under steady load: no client sees a failure, and active health
/// checks mark it down within interval × fall + timeout.
#[tokio::test(flavor = "multi_thread")]
async fn backend_killed_mid_run_no_client_failure() {
    let bs = [named("b0").await, named("b1").await, named("b2").await];
    let list: Vec<_> = bs.iter().map(|b| (b.addr, "")).collect();
    let health = "health = { kind = \"tcp\", interval = \"500ms\", timeout = \"200ms\", fall = 2, rise = 2 }";
    let lb = Lb::start("killed", &config("round-robin", &list, health, "")).await;
    let addr = lb.listener("main").await;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (ok, failed) = (ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline && n < 5000 {
                match fetch_name(addr).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    // Steady load first: every backend has served some of it when one dies.
    until_at_least(&ok, 60).await;
    bs[1].stop();
    let took = lb
        .wait_state("p", bs[1].addr, "down", Duration::from_secs(5))
        .await;
    // interval × fall + timeout = 1.2 s; allow one more interval for a loaded CI machine.
    assert!(
        took <= Duration::from_millis(1700),
        "marked down after {took:?}"
    );
    for c in clients {
        c.await.expect("client task");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "clients saw failures");
    assert!(ok.load(Ordering::Relaxed) > 100);
    let m = lb.metrics().await;
    assert_eq!(
        metric(&m, "lb_backend_up", &[("backend", &bs[1].addr.to_string())]),
        0.0
    );
    assert!(
        lb.log_text().contains("backend up → down"),
        "state change logged:\n{}",
        lb.log_text()
    );
}

/// Without active checks, connect failures eject a backend (passive) for `eject_for`.
#[tokio::test(flavor = "multi_thread")]
async fn passive_ejection_after_consecutive_failures() {
    let good = named("good").await;
    let bad = named("bad").await;
    let bad_addr = bad.addr;
    drop(bad);
    let text = config(
        "round-robin",
        &[(good.addr, ""), (bad_addr, "")],
        "passive = { consecutive_failures = 2, eject_for = \"30s\" }",
        "",
    );
    let lb = Lb::start("passive", &text).await;
    let addr = lb.listener("main").await;
    for _ in 0..10 {
        assert_eq!(
            fetch_name(addr)
                .await
                .expect("retried onto the good backend"),
            "good"
        );
    }
    assert_eq!(lb.backend_state("p", bad_addr).await, "down");
    let s = lb.status().await;
    let b = &s["pools"][0]["backends"][1];
    assert_eq!(b["ejected"], true, "{b}");
    assert_eq!(
        b["connect_errors"], 2,
        "ejected after exactly two failures, then skipped: {b}"
    );
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "lb_connect_errors_total",
            &[("backend", &bad_addr.to_string())]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_connections_and_bytes() {
    let b = echo().await;
    let lb = Lb::start("metrics", &config("round-robin", &[(b.addr, "")], "", "")).await;
    let addr = lb.listener("main").await;
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&[1u8; 100]).await.expect("write");
        s.shutdown().await.expect("fin");
        let mut v = Vec::new();
        s.read_to_end(&mut v).await.expect("read");
        assert_eq!(v.len(), 100);
    }
    let baddr = b.addr.to_string();
    let start = Instant::now();
    loop {
        let m = lb.metrics().await;
        let labels = [
            ("listener", "main"),
            ("pool", "p"),
            ("backend", baddr.as_str()),
        ];
        if metric(&m, "lb_connections_total", &labels) == 3.0
            && metric(&m, "lb_active_connections", &labels) == 0.0
        {
            assert_eq!(
                metric(
                    &m,
                    "lb_bytes_total",
                    &[("backend", &baddr), ("direction", "rx")]
                ),
                300.0,
                "{m}"
            );
            assert_eq!(
                metric(
                    &m,
                    "lb_bytes_total",
                    &[("backend", &baddr), ("direction", "tx")]
                ),
                300.0,
                "{m}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = lb.status().await;
    let be = &s["pools"][0]["backends"][0];
    assert_eq!(be["total_connections"], 3);
    assert_eq!(be["bytes_in"], 300);
    assert_eq!(be["bytes_out"], 300);
}
