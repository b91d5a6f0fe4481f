//! systemd's notify protocol as `Type=notify` sees it (SPEC §6): the test plays systemd, a
//! datagram socket named by `NOTIFY_SOCKET`, and checks what the real `lb` binary says and
//! when: `READY=1` only once the listener serves, `RELOADING=1` + `MONOTONIC_USEC` then
//! `READY=1` around SIGHUP and `POST /api/reload` (refused ones too), `WATCHDOG=1` at half
//! `WATCHDOG_USEC`, `STOPPING=1` on SIGTERM (at the start of `shutdown_delay`, with no
//! `READY=1` after it, reloads or not), and a binary upgrade's `MAINPID=` hand-over with no
//! `STOPPING=1` from the old process and the watchdog passed on.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::backends::echo;
use common::*;

/// One datagram from lb, when it came, and whether the listener served a client right then.
struct Note {
    at: Instant,
    text: String,
    served_then: Option<bool>,
}

/// The test's stand-in for systemd's notify socket.
struct Systemd {
    path: PathBuf,
    notes: mpsc::Receiver<Note>,
    seen: Vec<String>,
}

impl Systemd {
    /// Listens on a fresh socket; on the first `READY=1`, checks at once that `probe` (the
    /// listener's address) answers an echo round trip.
    fn listen(name: &str, probe: Option<SocketAddr>) -> Systemd {
        let path = scratch(name).join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        let (tx, notes) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            let mut probed = false;
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let at = Instant::now();
                let served_then = match probe {
                    Some(addr) if !probed && text.lines().any(|l| l == "READY=1") => {
                        probed = true;
                        Some(round_trip(addr))
                    }
                    _ => None,
                };
                let note = Note {
                    at,
                    text,
                    served_then,
                };
                if tx.send(note).is_err() {
                    return;
                }
            }
        });
        Systemd {
            path,
            notes,
            seen: Vec::new(),
        }
    }

    fn env(&self) -> String {
        self.path.to_str().expect("utf-8 path").to_string()
    }

    /// The next datagram that is not only a watchdog ping (bounded by `within`).
    fn next(&mut self, within: Duration) -> Note {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let note = self.notes.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no notification within {within:?}; seen so far: {:?}",
                    self.seen
                )
            });
            self.seen.push(note.text.clone());
            if note.text != "WATCHDOG=1\n" {
                return note;
            }
        }
    }

    /// Waits for `count` more watchdog pings; returns when each came.
    fn pings(&mut self, count: usize, within: Duration) -> Vec<Instant> {
        let deadline = Instant::now() + within;
        let mut at = Vec::new();
        while at.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let note = self
                .notes
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{} of {count} pings within {within:?}", at.len()));
            self.seen.push(note.text.clone());
            if note.text.lines().any(|l| l == "WATCHDOG=1") {
                at.push(note.at);
            }
        }
        at
    }

    /// Everything received until now, without waiting.
    fn drain(&mut self) -> Vec<String> {
        while let Ok(n) = self.notes.try_recv() {
            self.seen.push(n.text);
        }
        self.seen.clone()
    }
}

fn round_trip(addr: SocketAddr) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut back = [0u8; 5];
    s.write_all(b"ping\n").is_ok() && s.read_exact(&mut back).is_ok() && &back == b"ping\n"
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A port free a moment ago: READY must be checked against an address known before lb runs.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn our_monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

fn config_at(listen: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "[global]\nworkers = 2\nshutdown_timeout = \"5s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"{listen}\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{backend}\" }}]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_reload_watchdog_and_stopping_reach_systemd() {
    let backend = echo().await;
    let listen = free_port();
    let mut systemd = Systemd::listen("notify", Some(listen));
    // WatchdogSec=400ms: pings every 200 ms.
    let env = systemd.env();
    let mut lb = Lb::start_env(
        "notify",
        &config_at(listen, backend.addr),
        &[],
        &[("NOTIFY_SOCKET", &env), ("WATCHDOG_USEC", "400000")],
    )
    .await;

    let ready = systemd.next(Duration::from_secs(10));
    assert!(
        ready.text.lines().any(|l| l == "READY=1"),
        "the first notification is READY=1: {:?}",
        ready.text
    );
    assert_eq!(
        ready.served_then,
        Some(true),
        "when READY=1 arrived, the listener served a client at once"
    );
    assert_eq!(field(&ready.text, "MAINPID"), Some(&*lb.pid().to_string()));
    let status = field(&ready.text, "STATUS").expect("STATUS= with READY=1");
    assert_eq!(status, "ready: 1 listener(s), 1/1 backends up");
    let (code, body) = http(lb.admin, "GET", "/api/ready", None).await;
    assert_eq!(code, 200, "{body}");

    // Watchdog pings at half of WATCHDOG_USEC: six pings span five intervals of 200 ms.
    let at = systemd.pings(6, Duration::from_secs(10));
    let span = at[5] - at[0];
    eprintln!("6 watchdog pings over {span:?} (expected ~1 s)");
    assert!(
        span >= Duration::from_millis(800) && span <= Duration::from_millis(2000),
        "pings every ~200 ms: 5 intervals took {span:?}"
    );

    // SIGHUP: RELOADING=1 with our own CLOCK_MONOTONIC's reading, then READY=1.
    let before = our_monotonic_usec();
    lb.signal("HUP");
    let reloading = systemd.next(Duration::from_secs(10));
    assert!(
        reloading.text.starts_with("RELOADING=1\n"),
        "{:?}",
        reloading.text
    );
    let usec: u64 = field(&reloading.text, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC");
    assert!(
        usec >= before && usec <= our_monotonic_usec(),
        "MONOTONIC_USEC {usec} is CLOCK_MONOTONIC at the reload (sent at or after {before})"
    );
    let done = systemd.next(Duration::from_secs(10));
    assert!(done.text.starts_with("READY=1\n"), "{:?}", done.text);

    // A refused reload (POST /api/reload of a broken file) still ends with READY=1.
    std::fs::write(&lb.config, "[[listener]]\nnmae = 1\n").expect("write bad config");
    let (code, body) = http(lb.admin, "POST", "/api/reload", None).await;
    assert_eq!(code, 400, "{body}");
    assert!(systemd
        .next(Duration::from_secs(10))
        .text
        .starts_with("RELOADING=1\n"));
    let after_refusal = systemd.next(Duration::from_secs(10));
    assert!(
        after_refusal.text.starts_with("READY=1\n"),
        "{:?}",
        after_refusal.text
    );
    assert_eq!(
        field(&after_refusal.text, "STATUS"),
        Some("ready: 1 listener(s), 1/1 backends up")
    );

    // SIGTERM: STOPPING=1, then a clean exit.
    lb.signal("TERM");
    let stopping = systemd.next(Duration::from_secs(10));
    assert!(
        stopping.text.starts_with("STOPPING=1\n"),
        "{:?}",
        stopping.text
    );
    let code = tokio::task::spawn_blocking(move || lb.wait_exit(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_watchdog_pings_for_another_pid_and_status_follows_backends() {
    let backend = echo().await;
    let listen = free_port();
    let mut systemd = Systemd::listen("notify-pid", None);
    let env = systemd.env();
    let mut text = config_at(listen, backend.addr);
    text.push_str("health = { kind = \"tcp\", interval = \"100ms\", timeout = \"100ms\", rise = 1, fall = 1 }\n");
    // WATCHDOG_PID names another process (as when a shell wrapper got it): lb must not ping.
    let lb = Lb::start_env(
        "notify-pid",
        &text,
        &[],
        &[
            ("NOTIFY_SOCKET", &env),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    )
    .await;
    let ready = systemd.next(Duration::from_secs(10));
    assert!(ready.text.contains("READY=1"), "{:?}", ready.text);
    // The backend goes away: the next STATUS= says so (refreshed within 2 s of a change).
    backend.stop();
    let degraded = systemd.next(Duration::from_secs(10));
    assert_eq!(
        field(&degraded.text, "STATUS"),
        Some("degraded: 1 listener(s), 0/1 backends up; no backend up in p"),
        "{:?}",
        degraded.text
    );
    let seen = systemd.drain();
    assert!(
        !seen.iter().any(|t| t.contains("WATCHDOG=1")),
        "no pings for WATCHDOG_PID=1: {seen:?}"
    );
    drop(lb);
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_upgrade_moves_mainpid_without_stopping() {
    let backend = echo().await;
    let listen = free_port();
    let mut systemd = Systemd::listen("notify-upgrade", None);
    let env = systemd.env();
    let text = config_at(listen, backend.addr);
    let sock = scratch("notify-upgrade").join("upgrade.sock");
    let sock = sock.to_str().expect("utf-8");
    let envs = [("NOTIFY_SOCKET", env.as_str())];
    let mut old = Lb::start_env("notify-old", &text, &["--upgrade-socket", sock], &envs).await;
    let first = systemd.next(Duration::from_secs(10));
    assert_eq!(field(&first.text, "MAINPID"), Some(&*old.pid().to_string()));
    old.wait_log("binary upgrade socket on", Duration::from_secs(5));

    let new = Lb::start_env("notify-new", &text, &["--upgrade-socket", sock], &envs).await;
    let second = systemd.next(Duration::from_secs(10));
    assert!(second.text.contains("READY=1"), "{:?}", second.text);
    assert_eq!(
        field(&second.text, "MAINPID"),
        Some(&*new.pid().to_string()),
        "the new process names itself the main one"
    );
    let code = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(20)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
    let seen = systemd.drain();
    assert!(
        !seen.iter().any(|t| t.contains("STOPPING=1")),
        "the old process handed over; the service did not stop: {seen:?}"
    );
    assert!(round_trip(listen), "the new process serves");
    let (code, body) = http(new.admin, "GET", "/api/ready", None).await;
    assert_eq!(code, 200, "{body}");
}

/// Kills a process this test caused to start (the SIGUSR2 successor), by PID, on drop.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr2_starts_the_successor_inside_the_same_service() {
    let backend = echo().await;
    let listen = free_port();
    let mut systemd = Systemd::listen("notify-usr2", None);
    let env = systemd.env();
    let text = config_at(listen, backend.addr);
    let sock = scratch("notify-usr2").join("upgrade.sock");
    let sock = sock.to_str().expect("utf-8");
    let envs = [("NOTIFY_SOCKET", env.as_str()), ("WATCHDOG_USEC", "400000")];
    // WATCHDOG_PID names the old process, as systemd sets it.
    let mut old = Lb::start_watched("notify-usr2", &text, &["--upgrade-socket", sock], &envs).await;
    let old_pid = old.pid();
    systemd.next(Duration::from_secs(10));
    // It pings: WATCHDOG_PID names it.
    systemd.pings(1, Duration::from_secs(5));
    old.wait_log("binary upgrade socket on", Duration::from_secs(5));

    old.signal("USR2");
    let taken = systemd.next(Duration::from_secs(20));
    assert!(taken.text.contains("READY=1"), "{:?}", taken.text);
    let new_pid: u32 = field(&taken.text, "MAINPID")
        .and_then(|p| p.parse().ok())
        .expect("MAINPID");
    let _successor = KillOnDrop(new_pid);
    assert_ne!(new_pid, old_pid, "a new process took over");
    let code = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(20)))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "the old process drained and exited");
    let exited = Instant::now();
    assert!(round_trip(listen), "the successor serves the same port");
    // The successor keeps systemd's watchdog fed: the old process took WATCHDOG_PID (its own
    // PID) out of its environment, else the successor would take the pings for another's
    // job. A ping read a second after the old process exited is the successor's (the old
    // one's last ones were read as they came).
    let deadline = exited + Duration::from_secs(5);
    loop {
        let at = systemd.pings(1, deadline.saturating_duration_since(Instant::now()));
        if at[0] > exited + Duration::from_secs(1) {
            break;
        }
    }
    let seen = systemd.drain();
    assert!(!seen.iter().any(|t| t.contains("STOPPING=1")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_delay_says_stopping_at_once_and_reloads_do_not_say_ready() {
    let backend = echo().await;
    let listen = free_port();
    let mut systemd = Systemd::listen("notify-delay", None);
    let env = systemd.env();
    let text = config_at(listen, backend.addr).replace(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"5s\"\nshutdown_delay = \"2s\"",
    );
    let mut lb = Lb::start_env("notify-delay", &text, &[], &[("NOTIFY_SOCKET", &env)]).await;
    let ready = systemd.next(Duration::from_secs(10));
    assert!(ready.text.contains("READY=1"), "{:?}", ready.text);

    lb.signal("TERM");
    let stopping = systemd.next(Duration::from_secs(5));
    assert!(
        stopping.text.starts_with("STOPPING=1\n"),
        "{:?}",
        stopping.text
    );
    assert_eq!(
        field(&stopping.text, "STATUS"),
        Some("stopping: 1 listener(s), 1/1 backends up")
    );
    // STOPPING=1 came at the start of the delay: the listener still serves after it.
    assert!(round_trip(listen), "serving during shutdown_delay");

    // A reload now applies, but tells systemd neither RELOADING=1 nor READY=1.
    let (code, body) = http(lb.admin, "POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let after_reload = systemd.next(Duration::from_secs(5));
    assert_eq!(
        after_reload.text, "STATUS=stopping: 1 listener(s), 1/1 backends up\n",
        "only the status"
    );

    let code = tokio::task::spawn_blocking(move || lb.wait_exit(Duration::from_secs(15)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
    let seen = systemd.drain();
    let from_stop = seen
        .iter()
        .skip_while(|t| !t.starts_with("STOPPING=1"))
        .collect::<Vec<_>>();
    assert!(
        !from_stop
            .iter()
            .any(|t| t.contains("READY=1") || t.contains("RELOADING=1")),
        "nothing after STOPPING=1 says lb is (re)starting: {seen:?}"
    );
    assert!(
        from_stop.iter().any(|t| t.contains("STATUS=draining: ")),
        "the drain after the delay shows: {seen:?}"
    );
}

/// A `NOTIFY_SOCKET` whose reader never reads: once its queue is full a blocking send would
/// wait forever, and lb's control thread (admin API, signals, health checks) with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_notify_socket_that_never_reads_does_not_stall_lb() {
    let backend = echo().await;
    let listen = free_port();
    let path = scratch("notify-stuck").join("notify.sock");
    let stuck = UnixDatagram::bind(&path).expect("bind notify socket");
    let env = path.to_str().expect("utf-8").to_string();
    // WatchdogSec=4ms: a ping every 2 ms fills the queue at once.
    let mut lb = Lb::start_env(
        "notify-stuck",
        &config_at(listen, backend.addr),
        &[],
        &[("NOTIFY_SOCKET", &env), ("WATCHDOG_USEC", "4000")],
    )
    .await;
    // Wait until the queue is full: a send of our own would block (it says WouldBlock).
    let probe = UnixDatagram::unbound().expect("probe socket");
    probe.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match probe.send_to(b"x", &path) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Ok(_) => {}
            Err(e) => panic!("probe: {e}"),
        }
        assert!(Instant::now() < deadline, "the notify queue never filled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // lb keeps trying to ping every 2 ms; the admin API must go on answering…
    for _ in 0..10 {
        let live = tokio::time::timeout(
            Duration::from_secs(3),
            http(lb.admin, "GET", "/api/live", None),
        )
        .await;
        assert!(
            matches!(live, Ok((200, _))),
            "/api/live stalled behind the notify socket: {live:?}"
        );
    }
    assert!(round_trip(listen), "the listener serves");
    // …and SIGTERM still stops it.
    let code =
        tokio::task::spawn_blocking(move || lb.signal_and_wait("TERM", Duration::from_secs(10)))
            .await
            .expect("join");
    assert_eq!(code, Some(0));
    drop(stuck);
}

/// SIGHUPs (reloaded on a blocking thread) and `POST /api/reload`s (on the admin's) at once:
/// systemd must hear `RELOADING=1` and `READY=1` strictly in turn, never a `READY=1` while a
/// reload it was told of still runs.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reloads_tell_systemd_reloading_and_ready_in_turn() {
    let backend = echo().await;
    let listen = free_port();
    let mut systemd = Systemd::listen("notify-race", None);
    let env = systemd.env();
    let lb = Lb::start_env(
        "notify-race",
        &config_at(listen, backend.addr),
        &[],
        &[("NOTIFY_SOCKET", &env)],
    )
    .await;
    systemd.next(Duration::from_secs(10));
    let posts: Vec<_> = (0..20)
        .map(|_| tokio::spawn(http(lb.admin, "POST", "/api/reload", None)))
        .collect();
    for _ in 0..20 {
        lb.signal("HUP");
        tokio::task::yield_now().await;
    }
    for p in posts {
        assert_eq!(p.await.expect("post").0, 200);
    }
    // Every reload started has finished (SIGHUPs may have merged: count them in the log).
    let count = |needle: &str| {
        let logs = lb.logs.lock().expect("logs");
        logs.iter().filter(|l| l.contains(needle)).count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count("config reload started") != count("config reloaded") {
        assert!(Instant::now() < deadline, "reloads did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reloads = count("config reloaded");
    assert!(reloads >= 20, "{reloads} reloads");
    // Two notifications per reload.
    let mut seen = Vec::new();
    while seen.len() < 2 * reloads {
        seen.push(systemd.next(Duration::from_secs(10)).text);
    }
    for (i, pair) in seen.chunks(2).enumerate() {
        assert!(
            pair[0].starts_with("RELOADING=1\n") && pair[1].starts_with("READY=1\n"),
            "reload {i} was told out of turn: {pair:?} (all: {seen:?})"
        );
    }
    drop(lb);
}
