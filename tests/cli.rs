//! The `lb` command line as a user runs it: check, bad configs, exit codes, signals, demo.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::backends::echo;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
fn every_shipped_config_passes_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conf");
    // conf/oauth2-introspection.toml reads its client secret from the environment.
    std::env::set_var("LB_INTROSPECTION_SECRET", "example-secret");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("conf/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, out, err) =
                run_lb(&["check", "--config", path.to_str().expect("utf-8 path")]);
            assert_eq!(code, 0, "{}:\n{err}", path.display());
            assert!(
                !err.contains("forwards rewritten paths"),
                "a shipped route rewrites its way past another's auth: {}:\n{err}",
                path.display()
            );
            assert!(out.contains(": OK (sha256:"), "{out}");
            assert!(out.contains("listener \""), "plan lists listeners: {out}");
            n += 1;
        }
    }
    assert!(
        n >= 7,
        "expected the reference config and one per algorithm, found {n}"
    );
}

#[test]
fn check_prints_every_error_with_place_and_exits_2() {
    let text = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\npool = \"wbe\"\nidle_timeout = \"forever\"\n\n[[pool]]\nname = \"web\"\nalgoritm = \"random\"\nbackends = [{ addr = \"10.0.0.1\", weight = 0 }]\n";
    let path = write_config("bad", text);
    let p = path.to_str().expect("utf-8");
    let (code, out, err) = run_lb(&["check", "--config", p]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "no plan for a bad config: {out}");
    for expected in [
        format!("--> {p}:4:8"),
        "listener \"web\" points at pool \"wbe\", which does not exist".to_string(),
        "= help: did you mean \"web\"?".to_string(),
        format!("--> {p}:5:16"),
        "idle_timeout = \"forever\"".to_string(),
        "unknown key `algoritm`".to_string(),
        "= key: pool[0].backends[0].addr".to_string(),
        "expected a weight from 1 to 10000, found 0".to_string(),
        "5 errors found; the config was not used".to_string(),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    // `run` refuses the same file with the same exit code, before binding anything.
    let (code, _, err2) = run_lb(&["run", "--config", p]);
    assert_eq!(code, 2);
    assert!(err2.contains("5 errors found"), "{err2}");
}

#[test]
fn missing_config_file_exits_2() {
    let (code, _, err) = run_lb(&["check", "--config", "/nonexistent/lb.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read config file /nonexistent/lb.toml"),
        "{err}"
    );
}

#[test]
fn port_in_use_exits_1_naming_the_listener() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let text = format!("[[listener]]\nname = \"busy\"\nbind = \"{addr}\"\npool = \"p\"\n[[pool]]\nname = \"p\"\nbackends = [{{ addr = \"127.0.0.1:9\" }}]\n");
    let path = write_config("inuse", &text);
    let (code, _, err) = run_lb(&["run", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("listener \"busy\": cannot listen on {addr}")),
        "{err}"
    );
}

#[test]
fn version_and_help() {
    let (code, out, _) = run_lb(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("lb "), "{out}");
    let (code, out, _) = run_lb(&["help"]);
    assert_eq!(code, 0);
    for verb in ["run", "check", "demo"] {
        assert!(out.contains(verb), "{out}");
    }
    assert!(
        out.starts_with("A TCP/UDP load balancer and HTTP gateway"),
        "{out}"
    );
}

#[test]
fn demo_spreads_and_exits_by_itself() {
    let (code, out, err) = run_lb(&["demo", "--duration", "1s", "--requests", "120"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lb demo: 120 requests"), "{out}");
    // Weighted 3:2:1 over 120 requests is exactly 60/40/20.
    for (name, n) in [("backend-1", 60), ("backend-2", 40), ("backend-3", 20)] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .expect("row");
        let count: usize = line
            .split_whitespace()
            .nth(3)
            .and_then(|c| c.parse().ok())
            .expect("count");
        assert_eq!(count, n, "{line}");
    }
    assert!(
        out.contains("/api/status"),
        "demo prints where the admin API is: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_open_connection_finish_then_exits_0() {
    let b = echo().await;
    let mut lb = Lb::start("sigterm", &config("round-robin", &[(b.addr, "")], "", "")).await;
    let addr = lb.listener("main").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"before").await.expect("write");
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).await.expect("echo");
    let pid = lb.pid();
    let waiter = std::thread::spawn(move || lb.signal_and_wait("TERM", Duration::from_secs(10)));
    // lb stops accepting: new connections are refused once the listener is closed.
    let start = std::time::Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "lb {pid} kept accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …but the open connection still works, and finishing it lets lb exit 0.
    s.write_all(b"after!").await.expect("still open");
    s.read_exact(&mut buf).await.expect("still relayed");
    assert_eq!(&buf, b"after!");
    s.shutdown().await.expect("fin");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.expect("eof");
    let code = tokio::task::spawn_blocking(move || waiter.join().expect("join"))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_does_not_kill_lb() {
    let b = echo().await;
    let mut lb = Lb::start("sighup", &config("round-robin", &[(b.addr, "")], "", "")).await;
    lb.signal("HUP");
    lb.wait_log("SIGHUP received", Duration::from_secs(5));
    // Still serving.
    let addr = lb.listener("main").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"ok").await.expect("write");
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).await.expect("echo after SIGHUP");
    assert_eq!(lb.signal_and_wait("TERM", Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn second_signal_exits_at_once() {
    let b = echo().await;
    let text = config("round-robin", &[(b.addr, "")], "", "")
        .replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"60s\"");
    let mut lb = Lb::start("twosignals", &text).await;
    let addr = lb.listener("main").await;
    // A connection that never finishes would hold the drain for the full 60 s.
    let _held = TcpStream::connect(addr).await.expect("connect");
    let start = std::time::Instant::now();
    while lb.status().await["active_connections"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lb.signal("TERM");
    lb.wait_log("shutting down", Duration::from_secs(5));
    let t0 = std::time::Instant::now();
    let code = lb.signal_and_wait("TERM", Duration::from_secs(5));
    assert_eq!(code, Some(1), "an interrupted drain is not a graceful exit");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn second_signal_during_shutdown_delay_exits_at_once() {
    let b = echo().await;
    let text = config("round-robin", &[(b.addr, "")], "", "")
        .replace("shutdown_timeout = \"5s\"", "shutdown_delay = \"60s\"");
    let mut lb = Lb::start("twosignals-delay", &text).await;
    lb.signal("TERM");
    lb.wait_log("stopping: /api/ready answers 503", Duration::from_secs(5));
    let t0 = std::time::Instant::now();
    let code = lb.signal_and_wait("TERM", Duration::from_secs(5));
    assert_eq!(
        code,
        Some(1),
        "an interrupted shutdown is not a graceful exit"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "not the 60 s delay");
}

#[test]
fn check_shows_an_introspection_policy_and_names_a_missing_secret() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/oauth2-introspection.toml"
    );
    std::env::set_var("LB_INTROSPECTION_SECRET", "example-secret");
    let (code, out, err) = run_lb(&["check", "--config", dir]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("policy \"tokens\": oauth2_introspection at https://auth.example.com/oauth2/introspect as client lb-gateway (secret from $LB_INTROSPECTION_SECRET), needs scopes orders:read, forwards"),
        "{out}"
    );
    assert!(out.contains("when it fails: 401 (deny)"), "{out}");
    let text = std::fs::read_to_string(dir)
        .expect("example")
        .replace("LB_INTROSPECTION_SECRET", "LB_TEST_SECRET_NEVER_SET");
    let path = write_config("introspection", &text);
    let (code, _, err) = run_lb(&["check", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("environment variable LB_TEST_SECRET_NEVER_SET is not set"),
        "{err}"
    );
    assert!(err.contains("policy.tokens.client_secret_env"), "{err}");
}
