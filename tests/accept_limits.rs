//! Accept failures (issue 15): out of file descriptors, an accept loop pauses instead of
//! spinning, answers waiting clients by closing them (a spare descriptor), logs once per
//! interval with a count rather than once per failure, counts `lb_accept_errors_total`, and
//! the data plane recovers as soon as descriptors are free again. lb's descriptor limit is
//! lowered from outside with prlimit(2) once it is running.

mod common;

use std::time::Duration;

use common::origin::Origin;
use common::*;
use rustix::process::{prlimit, Pid, Resource, Rlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Descriptors lb may open past those it has when the limit is lowered.
const HEADROOM: u64 = 12;
/// Clients beyond those lb can take; each must be answered by a close.
const EXTRA: usize = 20;

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count() as u64
}

async fn get(addr: std::net::SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: site\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    (text.split(' ').nth(1) == Some("200")).then_some(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_descriptors_lb_pauses_logs_a_little_and_recovers() {
    let origin = Origin::start().await;
    // Idle clients hold one descriptor each for as long as they like.
    let mut lb = Lb::start(
        "accept-emfile",
        &http_site(origin.addr, "header_timeout = \"5m\"", ""),
    )
    .await;
    let web = lb.listener("web").await;
    assert!(get(web).await.is_some(), "serves before");
    let pid = lb.pid();
    let limit = open_fds(pid) + HEADROOM;
    prlimit(
        Pid::from_raw(pid as i32),
        Resource::Nofile,
        Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .expect("prlimit on lb");

    // HEADROOM clients use up the descriptors; EXTRA more wait in the backlog.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for _ in 0..HEADROOM as usize + EXTRA {
        let s = TcpStream::connect(web).await.expect("connect");
        let (mut r, w) = s.into_split();
        let tx = tx.clone();
        clients.push((
            w,
            tokio::spawn(async move {
                let mut b = [0u8; 16];
                if matches!(r.read(&mut b).await, Ok(0) | Err(_)) {
                    let _ = tx.send(());
                }
            }),
        ));
    }
    // The waiting ones are closed one by one while lb is out of descriptors.
    let mut closed = 0;
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while closed < EXTRA - 2 {
            rx.recv().await.expect("client tasks");
            closed += 1;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "only {closed} waiting clients were answered:\n{}",
        lb.log_text()
    );
    let failures = lb
        .log_text()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(
        (1..=2).contains(&failures),
        "{closed} failed accepts logged in {failures} lines:\n{}",
        lb.log_text()
    );

    // Descriptors come back: lb says so once, and serves again.
    for (w, reader) in clients {
        drop(w);
        reader.abort();
    }
    let mut served = None;
    while served.is_none() {
        served = get(web).await;
    }
    let line = lb.wait_log("accepting again after", Duration::from_secs(30));
    assert!(line.contains("listener=web"), "{line}");
    let errors = lb
        .metric_reaching(
            "lb_accept_errors_total",
            &[("listener", "web"), ("reason", "fd_limit")],
            (EXTRA - 2) as f64,
        )
        .await;
    assert!(errors >= (EXTRA - 2) as f64, "{errors}");
}
