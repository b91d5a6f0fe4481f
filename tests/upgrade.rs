//! Binary upgrade (SPEC §5): a second lb started with the same `--upgrade-socket` takes over
//! the listening sockets; the first stops accepting, drains and exits 0. Under load, no
//! connection is refused or reset.

mod common;

use std::time::Duration;

use common::backends::echo;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until `load` has had `want` connections succeed (bounded: 10 s; the caller's
/// assertions judge what it reached).
async fn ok_reaching(load: &Load, want: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while load.ok() < want && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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

    let load = Load::start(addr, 4, 1024);
    // Load under way before the upgrade.
    ok_reaching(&load, 50).await;
    let before = load.ok();

    // The same command line again: it finds the old process and takes over.
    let mut new = Lb::start_with("upgrade-new", &text, &["--upgrade-socket", &sock_arg]).await;
    new.wait_log("took over the listening socket on", Duration::from_secs(5));
    assert_eq!(new.listener("main").await, addr, "same socket, same port");
    assert_eq!(new.admin, old.admin, "the admin socket is handed over too");
    let old_logs = old.logs.clone();
    let code = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(20)))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "the old process drains and exits 0");
    // Load goes on with the new process alone.
    let at_exit = load.ok();
    ok_reaching(&load, at_exit + 101).await;
    let (ok, failed) = load.finish().await;
    eprintln!("binary upgrade under load: {ok} connections ok ({before} before the upgrade), {failed} failed");
    assert_eq!(
        failed,
        0,
        "old process:\n{}\nnew process:\n{}",
        old_logs.lock().expect("logs").join("\n"),
        new.log_text()
    );
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
