//! Binary upgrade (SPEC §5): a second lb started with the same `--upgrade-socket` takes over
//! the listening sockets; the first stops accepting, drains and exits 0. Under load, no
//! connection is refused or reset.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backends::echo;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_under_load_loses_no_connection() {
    let e0 = echo().await;
    let e1 = echo().await;
    let text = config("round-robin", &[(e0.addr, ""), (e1.addr, "")], "", "");
    let sock = scratch("upgrade").join("lb.sock");
    let sock_arg = sock.to_str().expect("utf-8").to_string();
    let mut old = Lb::start_with("upgrade-old", &text, &["--upgrade-socket", &sock_arg]).await;
    let addr = old.listener("main").await;
    old.wait_log("binary upgrade socket on", Duration::from_secs(5));

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut seed = 100 + c;
            for _ in 0..50_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let mut payload = vec![0u8; 1024];
                common::backends::fill(&mut payload, &mut seed);
                let r = async {
                    let mut s = TcpStream::connect(addr).await?;
                    s.write_all(&payload).await?;
                    s.shutdown().await?;
                    let mut back = Vec::new();
                    s.read_to_end(&mut back).await?;
                    Ok::<_, std::io::Error>(back)
                }
                .await;
                match r {
                    Ok(back) if back == payload => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("client {c}: {:?}", other.map(|b| b.len()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = ok.load(Ordering::Relaxed);

    // The same command line again: it finds the old process and takes over.
    let mut new = Lb::start_with("upgrade-new", &text, &["--upgrade-socket", &sock_arg]).await;
    new.wait_log("took over the listening socket on", Duration::from_secs(5));
    assert_eq!(new.listener("main").await, addr, "same socket, same port");
    let code = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(20)))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "the old process drains and exits 0");
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("binary upgrade under load: {ok} connections ok ({before} before the upgrade), {failed} failed");
    assert_eq!(failed, 0);
    assert!(
        ok > before + 100,
        "load went on through the upgrade: {before} → {ok}"
    );
    // The new process carries the traffic now, and can itself be upgraded later.
    let s = new.status().await;
    assert!(
        s["listeners"][0]["total_connections"].as_u64().unwrap_or(0) > 0,
        "{s}"
    );
    new.wait_log("binary upgrade socket on", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_upgrade_socket_means_a_fresh_start() {
    let e0 = echo().await;
    let text = config("round-robin", &[(e0.addr, "")], "", "");
    let sock = scratch("upgrade-stale").join("lb.sock");
    // A socket file nobody listens on (a crashed lb left it).
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    let sock_arg = sock.to_str().expect("utf-8").to_string();
    let mut lb = Lb::start_with("upgrade-stale", &text, &["--upgrade-socket", &sock_arg]).await;
    lb.wait_log("binary upgrade socket on", Duration::from_secs(5));
    let mut s = TcpStream::connect(lb.listener("main").await)
        .await
        .expect("connect");
    s.write_all(b"x").await.expect("write");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("echo");
}
