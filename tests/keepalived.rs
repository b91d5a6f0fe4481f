//! VRRP failover measured (issue 17): two network namespaces each run lb and keepalived with
//! the shipped `conf/keepalived/` recipe, sharing the virtual IP 192.0.2.10 on a bridge; a
//! client namespace sends requests to the VIP; the master's lb is stopped (it answers 503 on
//! /api/ready but serves on for `shutdown_delay`, so its track_script lowers A's priority and B
//! takes the VIP while A still serves), then its keepalived. Measured: the failover time (last
//! success through A to first through B) and the failed requests, at most the one request in
//! flight when the VIP moved; checked: a consistent-hash client lands on the same backend
//! through either lb. Everything lives in namespaces the test
//! creates and deletes (a Drop guard, so a failed assertion cleans up too); addresses
//! (192.0.2.0/24, TEST-NET-1) exist only inside them. Needs root (external-tests).
#![cfg(feature = "external-tests")]

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket};

const VIP: &str = "192.0.2.10";
const BACKENDS: [&str; 3] = ["192.0.2.21", "192.0.2.22", "192.0.2.23"];
const LB_A: &str = "192.0.2.2";
const LB_B: &str = "192.0.2.3";
/// Client source addresses: the consistent-hash key is the source IP.
const CLIENTS: usize = 8;

fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// The namespaces and processes of one run; dropping it stops the processes (by PID) and
/// deletes the namespaces, which removes their interfaces and addresses.
struct Lab {
    id: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("lbk{}{role}", self.id)
    }

    /// hub (the bridge), a and b (lb + keepalived), c (client), s (backends).
    fn build(dir: PathBuf) -> Lab {
        let id = format!("{:05}", std::process::id() % 100_000);
        let mut lab = Lab {
            id,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for role in ["h", "a", "b", "c", "s"] {
            let ns = lab.ns(role);
            must(&["netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            must(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let hub = lab.ns("h");
        must(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must(&["-n", &hub, "link", "set", "br0", "up"]);
        let mut addrs: Vec<(&str, Vec<String>)> = vec![
            ("a", vec![LB_A.into()]),
            ("b", vec![LB_B.into()]),
            ("s", BACKENDS.iter().map(|s| s.to_string()).collect()),
        ];
        addrs.push((
            "c",
            (0..CLIENTS)
                .map(|i| format!("192.0.2.{}", 100 + i))
                .collect(),
        ));
        for (role, list) in addrs {
            let (ns, inner, outer) = (
                lab.ns(role),
                format!("k{}{role}", lab.id),
                format!("k{}{role}p", lab.id),
            );
            must(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            must(&["link", "set", &outer, "netns", &hub]);
            must(&["-n", &hub, "link", "set", &outer, "master", "br0", "up"]);
            must(&["link", "set", &inner, "netns", &ns]);
            must(&["-n", &ns, "link", "set", &inner, "name", "eth0"]);
            for a in list {
                must(&["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"]);
            }
            must(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    /// Starts `cmd` inside namespace `role`, output to a file in the lab's directory.
    fn spawn(&mut self, role: &str, name: &str, cmd: &[&str]) -> u32 {
        let log = File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Stops one child by PID (SIGTERM) and waits for it (bounded).
    fn stop(&mut self, pid: u32, within: Duration) -> Option<i32> {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let child = self.children.iter_mut().find(|c| c.id() == pid)?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("process {pid} did not stop within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn has_vip(&self, role: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.ns(role), "-o", "addr", "show", "dev", "eth0"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/")))
    }

    /// `GET /api/ready` of the lb in `role`, through curl inside its namespace.
    fn ready(&self, role: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(role),
                "curl",
                "-fsS",
                "--max-time",
                "1",
                "-o",
                "/dev/null",
            ])
            .arg("http://127.0.0.1:9900/api/ready")
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = Command::new("kill").arg(c.id().to_string()).status();
            }
        }
        for c in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !matches!(c.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Runs `f` on a new thread that lives in namespace `ns` (setns applies to the calling thread
/// only), on its own single-threaded runtime.
fn in_namespace<F, Fut>(ns: &str, f: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("namespace file");
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f());
    })
}

fn poll(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// lb's `shutdown_delay` here, by the recipe's rule: longer than the check noticing (interval 1
/// x fall 1) plus B's master-down timer (3 x advert_int 1 + skew 0.61) plus a second.
const SHUTDOWN_DELAY: &str = "6s";

/// One request's outcome: when it ended, its source, and the backend line or nothing.
struct Sample {
    at: Instant,
    source: IpAddr,
    answer: Option<String>,
}

fn lb_config(dir: &Path, role: &str) -> PathBuf {
    let list: Vec<String> = BACKENDS
        .iter()
        .map(|b| format!("{{ addr = \"{b}:80\" }}"))
        .collect();
    let text = format!(
        "[global]\nworkers = 1\nshutdown_timeout = \"2s\"\nshutdown_delay = \"{SHUTDOWN_DELAY}\"\n\n[admin]\nbind = \"127.0.0.1:9900\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"0.0.0.0:80\"\npool = \"web\"\nconnect_timeout = \"500ms\"\n\n\
         [[pool]]\nname = \"web\"\nalgorithm = \"consistent-hash\"\nhash_key = \"source-ip\"\nbackends = [{}]\n\
         health = {{ kind = \"tcp\", interval = \"500ms\", timeout = \"300ms\" }}\n",
        list.join(", ")
    );
    let path = dir.join(format!("lb-{role}.toml"));
    std::fs::write(&path, text).expect("write lb config");
    path
}

/// The shipped keepalived.conf with only what differs here changed: the notify hook's path
/// (a copy that also appends transitions to a file) and, for the second host, the priority.
fn keepalived_config(dir: &Path, role: &str, priority: u32) -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let template = std::fs::read_to_string(format!("{root}/conf/keepalived/keepalived.conf"))
        .expect("template");
    for needle in [
        "priority 150",
        "notify /etc/keepalived/lb-notify.sh",
        "interface eth0",
        VIP,
    ] {
        assert!(template.contains(needle), "the template has {needle:?}");
    }
    let hook =
        std::fs::read_to_string(format!("{root}/conf/keepalived/lb-notify.sh")).expect("hook");
    let transitions = dir.join(format!("transitions-{role}.log"));
    let hook = hook.replacen(
        "\n",
        &format!("\nLB_NOTIFY_LOG={}\n", transitions.display()),
        1,
    );
    let hook_path = dir.join(format!("lb-notify-{role}.sh"));
    std::fs::write(&hook_path, hook).expect("write hook");
    let _ = Command::new("chmod").arg("0755").arg(&hook_path).status();
    let conf = template
        .replace("priority 150", &format!("priority {priority}"))
        .replace(
            "notify /etc/keepalived/lb-notify.sh",
            &format!("notify {}", hook_path.display()),
        );
    let path = dir.join(format!("keepalived-{role}.conf"));
    std::fs::write(&path, conf).expect("write keepalived config");
    path
}

#[test]
fn vrrp_failover_between_two_lbs_is_measured() {
    // Privileges: creating a namespace is the whole question.
    let probe = format!("lbkprobe{}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        eprintln!("SKIPPED: cannot create network namespaces here ({e}); the VRRP failover test needs root / CAP_SYS_ADMIN");
        return;
    }
    let _ = ip(&["netns", "del", &probe]);
    // Scripts keepalived runs as root must not be writable by others, up the whole path.
    let dir = common::scratch("keepalived");
    let _ = Command::new("chmod").arg("0755").arg(&dir).status();
    let mut lab = Lab::build(dir.clone());

    // Three backends, each answering its name and the address lb came from.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let _backends = in_namespace(&lab.ns("s"), move || async move {
        for (i, b) in BACKENDS.iter().enumerate() {
            let l = TcpListener::bind(format!("{b}:80"))
                .await
                .expect("bind backend");
            tokio::spawn(async move {
                while let Ok((mut s, peer)) = l.accept().await {
                    let line = format!("b{} via {}\n", i + 1, peer.ip());
                    tokio::spawn(async move {
                        let _ = s.write_all(line.as_bytes()).await;
                        let _ = s.shutdown().await;
                    });
                }
            });
        }
        while !s2.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let lb = common::LB;
    let (ca, cb) = (lb_config(&dir, "a"), lb_config(&dir, "b"));
    let lb_a = lab.spawn(
        "a",
        "lb-a",
        &[lb, "run", "--config", ca.to_str().expect("path")],
    );
    lab.spawn(
        "b",
        "lb-b",
        &[lb, "run", "--config", cb.to_str().expect("path")],
    );
    poll("lb a ready", Duration::from_secs(20), || lab.ready("a"));
    poll("lb b ready", Duration::from_secs(20), || lab.ready("b"));

    let (ka, kb) = (
        keepalived_config(&dir, "a", 150),
        keepalived_config(&dir, "b", 100),
    );
    let keepalived = |conf: &Path, role: &str| -> Vec<String> {
        let d = dir.display();
        vec![
            "keepalived".into(),
            "--dont-fork".into(),
            "--log-console".into(),
            "--log-detail".into(),
            "--vrrp".into(),
            "--use-file".into(),
            conf.display().to_string(),
            format!("--pid={d}/keepalived-{role}.pid"),
            format!("--vrrp_pid={d}/vrrp-{role}.pid"),
            format!("--checkers_pid={d}/checkers-{role}.pid"),
        ]
    };
    let args_a = keepalived(&ka, "a");
    let args_b = keepalived(&kb, "b");
    let ka_pid = lab.spawn(
        "a",
        "keepalived-a",
        &args_a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    lab.spawn(
        "b",
        "keepalived-b",
        &args_b.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let elected = poll("A holds the VIP", Duration::from_secs(20), || {
        lab.has_vip("a")
    });
    eprintln!("A became master {elected:?} after keepalived started");
    assert!(!lab.has_vip("b"), "one VIP holder");

    // The client: a request every 10 ms, each from the next of CLIENTS source addresses.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let (out, s3) = (samples.clone(), stop.clone());
    let client = in_namespace(&lab.ns("c"), move || async move {
        let vip: SocketAddr = format!("{VIP}:80").parse().expect("vip");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0usize;
        while !s3.load(Ordering::Relaxed) && Instant::now() < deadline && n < 6000 {
            tick.tick().await;
            let source: IpAddr = format!("192.0.2.{}", 100 + n % CLIENTS)
                .parse()
                .expect("ip");
            n += 1;
            let answer = tokio::time::timeout(Duration::from_millis(500), async {
                let sock = TcpSocket::new_v4().ok()?;
                sock.bind(SocketAddr::new(source, 0)).ok()?;
                let s = sock.connect(vip).await.ok()?;
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).await.ok()?;
                Some(line.trim().to_string()).filter(|l| !l.is_empty())
            })
            .await
            .ok()
            .flatten();
            out.lock().expect("samples").push(Sample {
                at: Instant::now(),
                source,
                answer,
            });
        }
    });
    let via = |s: &Sample, lb: &str| {
        s.answer
            .as_deref()
            .is_some_and(|a| a.ends_with(&format!("via {lb}")))
    };
    let count_via = |lb: &str| {
        samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|s| via(s, lb))
            .count()
    };
    poll("100 answers through A", Duration::from_secs(20), || {
        count_via(LB_A) >= 100
    });

    // Stop A's lb: /api/ready answers 503 at once while lb A serves on for shutdown_delay;
    // A's track_script fails, A's priority drops below B's, and B takes the VIP.
    let stopped_at = Instant::now();
    assert_eq!(
        lab.stop(lb_a, Duration::from_secs(20)),
        Some(0),
        "lb A serves out shutdown_delay, drains and exits 0"
    );
    let lb_a_exited = stopped_at.elapsed();
    poll("B holds the VIP", Duration::from_secs(10), || {
        lab.has_vip("b")
    });
    poll("100 answers through B", Duration::from_secs(20), || {
        count_via(LB_B) >= 100
    });
    // Then A's keepalived goes away too: B keeps the VIP and keeps answering.
    lab.stop(ka_pid, Duration::from_secs(10));
    let after_kill = count_via(LB_B);
    poll("50 more answers through B", Duration::from_secs(20), || {
        count_via(LB_B) >= after_kill + 50
    });
    assert!(lab.has_vip("b") && !lab.has_vip("a"));
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");

    let samples = samples.lock().expect("samples");
    let last_a = samples
        .iter()
        .filter(|s| via(s, LB_A))
        .map(|s| s.at)
        .max()
        .expect("answers via A");
    let first_b = samples
        .iter()
        .filter(|s| via(s, LB_B))
        .map(|s| s.at)
        .min()
        .expect("answers via B");
    let failover = first_b.saturating_duration_since(last_a);
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at > last_a && s.at < first_b)
        .collect();
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.answer.is_none()).collect();
    let moved = first_b.saturating_duration_since(stopped_at);
    eprintln!(
        "VRRP failover: {failover:?} from the last answer through A to the first through B; \
         B answered first {moved:?} after lb A's SIGTERM, lb A exited after {lb_a_exited:?} \
         (shutdown_delay {SHUTDOWN_DELAY}); {} requests in that window, {} failed; {} failed \
         of {} in all (one request at a time, every 10 ms, 500 ms timeout){}",
        window.len(),
        window.iter().filter(|s| s.answer.is_none()).count(),
        failed.len(),
        samples.len(),
        failed
            .iter()
            .map(|s| format!(
                "; one failed {:?} after the SIGTERM",
                s.at.saturating_duration_since(stopped_at)
            ))
            .collect::<String>()
    );
    assert!(
        failover < Duration::from_secs(3),
        "failover took {failover:?}"
    );
    assert!(
        moved < lb_a_exited,
        "the VIP moved while lb A still served ({moved:?} vs exit at {lb_a_exited:?}): \
         shutdown_delay {SHUTDOWN_DELAY} is too short for this keepalived config"
    );
    // The client has one request in flight at a time: at most that one may be lost when the
    // VIP moves (a connection to A whose next packet reaches B).
    assert!(
        failed.len() <= 1,
        "only the request in flight when the VIP moved may fail: {} failed",
        failed.len()
    );

    // A consistent-hash client lands on the same backend through either lb (fixed seeds).
    let mut through: BTreeMap<(IpAddr, &str), std::collections::BTreeSet<String>> = BTreeMap::new();
    for s in samples.iter() {
        if let Some(a) = &s.answer {
            let (backend, lb) = a.split_once(" via ").expect("answer format");
            through
                .entry((s.source, if lb == LB_A { "A" } else { "B" }))
                .or_default()
                .insert(backend.to_string());
        }
    }
    let mut compared = 0;
    for i in 0..CLIENTS {
        let source: IpAddr = format!("192.0.2.{}", 100 + i).parse().expect("ip");
        let (a, b) = (through.get(&(source, "A")), through.get(&(source, "B")));
        let (Some(a), Some(b)) = (a, b) else { continue };
        assert_eq!(
            a.len(),
            1,
            "{source} always on one backend through A: {a:?}"
        );
        assert_eq!(a, b, "{source}: the same backend through A and B");
        compared += 1;
    }
    let spread: std::collections::BTreeSet<&String> = through.values().flatten().collect();
    eprintln!("consistent hash: {compared} client addresses on the same backend through A and B; backends used: {spread:?}");
    assert_eq!(
        compared, CLIENTS,
        "every client address went through both lbs"
    );
    assert!(
        spread.len() > 1,
        "the key spreads over backends: {spread:?}"
    );

    let transitions = std::fs::read_to_string(dir.join("transitions-b.log")).unwrap_or_default();
    assert!(
        transitions.contains("is now MASTER"),
        "B's notify hook logged its transition: {transitions:?}\nkeepalived-b:\n{}",
        lab.log("keepalived-b")
    );
    drop(samples);
    drop(lab);
}
