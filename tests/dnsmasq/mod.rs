//! dnsmasq (installed by scripts/test.sh) on a loopback port, serving A records from an
//! `--addn-hosts` file (re-read on SIGHUP) and SRV records from `--srv-host` (read at start),
//! for the tests of backends by name; and what those tests share.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, Lb};

pub struct Dnsmasq {
    child: Child,
    pub port: u16,
}

impl Dnsmasq {
    /// Starts dnsmasq on `port` (0: a free one) with `hosts` as its added hosts file and
    /// `extra` options; waits until it answers. A taken port gets another try when free.
    pub async fn start(port: u16, hosts: &Path, extra: &[String]) -> Dnsmasq {
        for _ in 0..20 {
            let p = if port == 0 {
                free_port(&["127.0.0.1"])
            } else {
                port
            };
            let mut args = vec![
                "--keep-in-foreground".to_string(),
                "--conf-file=/dev/null".into(),
                "--no-resolv".into(),
                "--no-hosts".into(),
                "--bind-interfaces".into(),
                "--listen-address=127.0.0.1".into(),
                format!("--port={p}"),
                format!("--addn-hosts={}", hosts.display()),
                "--address=/ready.test/127.0.0.9".into(),
                "--pid-file=".into(),
            ];
            args.extend(extra.iter().cloned());
            let child = Command::new("dnsmasq")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq (apt-get install dnsmasq-base)");
            let mut d = Dnsmasq { child, port: p };
            if d.answers().await {
                return d;
            }
            d.stop();
            tokio::time::sleep(Duration::from_millis(50)).await; // back-off before a retry, not a sync
        }
        panic!("dnsmasq never answered");
    }

    async fn answers(&mut self) -> bool {
        let probe = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let q = lb_core::health::dns::query(1, "ready.test").expect("query");
        let addr = self.addr();
        for _ in 0..30 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let _ = probe.send_to(&q, addr).await;
            let mut buf = [0u8; 512];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(100), probe.recv_from(&mut buf)).await
            {
                return true;
            }
        }
        false
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Re-reads the hosts file.
    pub fn reload(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP dnsmasq");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn write(path: &PathBuf, text: &str) {
    // Written whole then renamed, so dnsmasq never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Polls `/api/status` until `pred` holds for pool 0's backend addresses (bounded).
pub async fn wait_members(lb: &Lb, want: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = lb.status().await;
        let mut got: Vec<String> = s["pools"][0]["backends"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|b| b["address"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        got.sort();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "members {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port free on both 127.0.0.2 and 127.0.0.3 for TCP and UDP (DNS members of one name
/// share its port).
pub fn twin_port() -> u16 {
    free_port(&["127.0.0.2", "127.0.0.3"])
}
