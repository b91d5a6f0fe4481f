//! Test harness: runs the real `lb` binary against in-process backends on loopback.
#![allow(dead_code)]

pub mod backends;
pub mod origin;
pub mod pki;
pub mod web;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const LB: &str = env!("CARGO_BIN_EXE_lb");

/// A unique scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub fn write_config(name: &str, text: &str) -> PathBuf {
    let path = scratch(name).join("lb.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running `lb run`, killed on drop.
pub struct Lb {
    child: Option<Child>,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    pub config: PathBuf,
}

impl Lb {
    /// Starts lb with `config` (which must have `[admin] bind = "127.0.0.1:0"`) and waits
    /// until its admin API answers.
    pub async fn start(name: &str, config: &str) -> Lb {
        Self::start_with(name, config, &[]).await
    }

    pub async fn start_with(name: &str, config: &str, extra: &[&str]) -> Lb {
        Self::start_env(name, config, extra, &[]).await
    }

    /// [`Lb::start_with`], with more environment variables for the process.
    pub async fn start_env(name: &str, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Lb {
        Self::start_cmd(Command::new(LB), name, config, extra, env).await
    }

    /// [`Lb::start_env`] with `WATCHDOG_PID` naming lb itself, as systemd sets it: a shell
    /// exports its own PID and `exec`s lb, which keeps that PID.
    pub async fn start_watched(
        name: &str,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Lb {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("export WATCHDOG_PID=$$; exec \"$0\" \"$@\"")
            .arg(LB);
        Self::start_cmd(sh, name, config, extra, env).await
    }

    /// Runs `program run --config FILE EXTRA...` and waits until its admin API answers.
    async fn start_cmd(
        mut program: Command,
        name: &str,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Lb {
        let path = write_config(name, config);
        let mut child = program
            .arg("run")
            .arg("--config")
            .arg(&path)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lb");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let l2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l2.lock().expect("logs").push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut lb = Lb {
            child: Some(child),
            admin: "127.0.0.1:1".parse().expect("addr"),
            logs,
            lines: rx,
            config: path,
        };
        let line = lb.wait_log("admin API on http://", Duration::from_secs(20));
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .expect("admin addr");
        lb.admin = addr.parse().expect("admin addr parses");
        lb.wait_log("lb ready", Duration::from_secs(20));
        lb
    }

    /// Blocks until a log line containing `needle` appears (or panics after `within`).
    pub fn wait_log(&mut self, needle: &str, within: Duration) -> String {
        if let Some(l) = self
            .logs
            .lock()
            .expect("logs")
            .iter()
            .find(|l| l.contains(needle))
        {
            return l.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "no log line with {needle:?} within {within:?}; logs:\n{}",
                    self.logs.lock().expect("logs").join("\n")
                ),
            }
        }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    pub async fn status(&self) -> Value {
        let (code, body) = http(self.admin, "GET", "/api/status", None).await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }

    pub async fn metrics(&self) -> String {
        http(self.admin, "GET", "/metrics", None).await.1
    }

    /// The value of a metric once it reaches `want` (bounded: 5 s; then its last value). A
    /// client can see its connection end a moment before lb has counted why.
    pub async fn metric_reaching(&self, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = metric(&self.metrics().await, name, labels);
            if v >= want || Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `lb_rejected_connections_total` of listener "main" for `reason`, awaited up to `want`.
    pub async fn rejected(&self, reason: &str, want: f64) -> f64 {
        let labels = [("listener", "main"), ("reason", reason)];
        self.metric_reaching("lb_rejected_connections_total", &labels, want)
            .await
    }

    /// The bound address of listener `name`.
    pub async fn listener(&self, name: &str) -> SocketAddr {
        let s = self.status().await;
        let l = s["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .find(|l| l["name"] == name)
            .expect("listener");
        l["bind"].as_str().expect("bind").parse().expect("addr")
    }

    pub async fn backend_state(&self, pool: &str, addr: SocketAddr) -> String {
        let s = self.status().await;
        let p = s["pools"]
            .as_array()
            .expect("pools")
            .iter()
            .find(|p| p["name"] == pool)
            .expect("pool");
        let b = p["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .find(|b| b["address"] == addr.to_string())
            .expect("backend");
        b["state"].as_str().expect("state").to_string()
    }

    /// Polls status until the backend reaches `state`; returns how long it took.
    pub async fn wait_state(
        &self,
        pool: &str,
        addr: SocketAddr,
        state: &str,
        within: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if self.backend_state(pool, addr).await == state {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{addr} not {state} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// lb's resident memory (VmRSS of /proc/<pid>/status), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("lb's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for this lb to exit by itself; returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("lb did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. "HUP", "TERM") to this lb, by PID.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(&pid)
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Sends a signal and waits for lb to exit; returns the exit code.
    pub fn signal_and_wait(&mut self, sig: &str, within: Duration) -> Option<i32> {
        self.signal(sig);
        self.wait_exit(within)
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two lb processes with `config`: the default (HTTP/1.1 on the lean path where it can) and
/// one with every request on the general path (`LB_HTTP_PATH=general`), for tests that must
/// hold on both; each named for messages.
pub async fn both_paths(name: &str, config: &str) -> [(&'static str, Lb); 2] {
    [
        (
            "default",
            Lb::start(&format!("{name}-default"), config).await,
        ),
        (
            "general",
            Lb::start_env(
                &format!("{name}-general"),
                config,
                &[],
                &[("LB_HTTP_PATH", "general")],
            )
            .await,
        ),
    ]
}

/// An http listener "web" in front of pool "site" (the `origin`), with `routes` and the
/// listener's `extra` keys, admin on a kernel-chosen port.
pub fn http_site(origin: SocketAddr, extra: &str, routes: &str) -> String {
    format!(
        "[global]\nworkers = 1\nshutdown_timeout = \"5s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"site\"\n{extra}\n\n\
         [[pool]]\nname = \"site\"\nbackends = [{{ addr = \"{origin}\" }}]\n\n{routes}"
    )
}

/// Runs `lb <args>` to completion; returns (exit code, stdout, stderr).
pub fn run_lb(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(LB).args(args).output().expect("run lb");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A minimal HTTP/1.0 client for the admin API.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect admin");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req =
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Sum of a Prometheus counter/gauge over the series whose labels contain all `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One-listener config with the admin API on a kernel-chosen port.
pub fn config(
    algorithm: &str,
    backends: &[(SocketAddr, &str)],
    pool_extra: &str,
    listener_extra: &str,
) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, extra)| format!("  {{ addr = \"{a}\"{extra} }},"))
        .collect();
    format!(
        "[global]\nworkers = 2\nshutdown_timeout = \"5s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n{listener_extra}\n\n\
         [[pool]]\nname = \"p\"\nalgorithm = \"{algorithm}\"\nbackends = [\n{}\n]\n{pool_extra}\n",
        list.join("\n")
    )
}

/// Connects through lb and returns the backend's name line.
pub async fn fetch_name(lb: SocketAddr) -> std::io::Result<String> {
    fetch_name_from(lb, None).await
}

/// Same, from a chosen local address (e.g. 127.0.0.7) to vary the source IP.
pub async fn fetch_name_from(
    lb: SocketAddr,
    local: Option<std::net::IpAddr>,
) -> std::io::Result<String> {
    let mut s = match local {
        None => TcpStream::connect(lb).await?,
        Some(ip) => {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(ip, 0))?;
            sock.connect(lb).await?
        }
    };
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    let name = String::from_utf8_lossy(&buf).trim().to_string();
    if name.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without a name",
        ));
    }
    Ok(name)
}

/// Clients that keep opening connections to `addr`, sending a payload through an echo
/// backend and checking every byte comes back, until [`Load::finish`] (bounded: 30 s and
/// 50,000 connections per client).
pub struct Load {
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: u64, payload_len: usize) -> Load {
        use std::sync::atomic::Ordering::Relaxed;
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut seed = c;
                    for _ in 0..50_000 {
                        if stop.load(Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        let mut payload = vec![0u8; payload_len];
                        backends::fill(&mut payload, &mut seed);
                        match echo_round_trip(addr, &payload).await {
                            Ok(back) if back == payload => ok.fetch_add(1, Relaxed),
                            other => {
                                eprintln!("client {c}: {:?}", other.map(|b| b.len()));
                                failed.fetch_add(1, Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            ok,
            failed,
            stop,
            tasks,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the clients; returns (connections ok, connections failed).
    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let ok = self.ok.clone();
        for t in self.tasks {
            t.await.expect("load client");
        }
        let r = std::sync::atomic::Ordering::Relaxed;
        (ok.load(r), self.failed.load(r))
    }
}

/// One connection: send `payload`, half-close, read everything back.
pub async fn echo_round_trip(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(payload).await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await?;
    Ok(back)
}

/// Opens a connection, sends `bytes`, and returns what came back before lb closed it
/// (bounded: 5 s; a reset ends it like a close, keeping what was read before).
pub async fn answer_before_close(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("lb closes the connection in time");
    got
}

/// Reads until the peer closes (bounded by `within`); how long it took.
pub async fn closed_within(s: &mut TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, s.read(&mut sink)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("still open after {within:?}"),
        }
    }
}

/// A port free for TCP and UDP on each of `ips`, chosen below the kernel's ephemeral range.
/// A port the kernel hands out may be held by a client's TIME_WAIT socket: the discovery
/// tests open tens of thousands of short connections, and right after them most of the
/// ephemeral range fails dnsmasq's TCP bind though a UDP bind there succeeds (seen in CI:
/// five tries in a row "Address already in use").
pub fn free_port(ips: &[&str]) -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(11_000);
    for _ in 0..200 {
        let port = fastrand::u16(10_000..low);
        let free = |ip: &str| {
            std::net::TcpListener::bind((ip, port)).is_ok()
                && std::net::UdpSocket::bind((ip, port)).is_ok()
        };
        if ips.iter().all(|ip| free(ip)) {
            return port;
        }
    }
    panic!("no port below {low} free for TCP and UDP on {ips:?}");
}
