//! `lb demo`: the embedded default. Three built-in HTTP backends on loopback, a balancer in
//! front (weighted round-robin 3:2:1 with health checks, admin API on), a bounded burst of
//! requests through it, and the per-backend spread printed. Then it keeps serving until
//! Ctrl-C, or for `--duration`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Args;
use lb_core::config;
use lb_core::proxy::handoff::HttpSide;
use lb_core::runtime::{self, BindOptions, Threading};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::{parse_duration_arg, EXIT_FAILURE};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Exit by itself after this long (e.g. "5s"); default: run until Ctrl-C.
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Requests in the burst.
    #[arg(long, default_value_t = 600)]
    pub requests: usize,
}

const WEIGHTS: [u32; 3] = [3, 2, 1];

pub fn run(args: DemoArgs, http: Arc<dyn HttpSide>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the demo runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let backends = match rt.block_on(start_backends()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot start demo backends: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let udp_backends = match rt.block_on(start_udp_backends()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot start demo udp backends: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let text = demo_config(
        &backends,
        &udp_backends,
        port_or_zero(8080),
        port_or_zero(9900),
    );
    let source = config::Source {
        name: "<embedded demo config>".into(),
        text,
    };
    let loaded = match config::load(source, Some(&*http)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut opts = BindOptions {
        threading: Threading::PerCore,
        metrics: crate::logging::install_metrics(),
        http: Some(http),
        ..BindOptions::default()
    };
    let bound = match runtime::bind(loaded, &mut opts) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let addrs = bound.listener_addrs();
    let lb_addr = addrs[0].1;
    let udp_addr = addrs[1].1;
    let admin = bound.admin_addr();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let requests = args.requests;
    rt.spawn(async move {
        let spread = burst(lb_addr, requests).await;
        print_spread(&spread, &backends, requests, lb_addr, admin);
        let flows = udp_burst(udp_addr).await;
        print_udp(&flows, udp_addr);
        println!("serving on http://{lb_addr}/ (tcp) and {udp_addr} (udp) — try: curl http://{lb_addr}/   (Ctrl-C to stop)");
        let _ = done_tx.send(());
    });
    let duration = args.duration;
    let result = bound.run(move || async move {
        match duration {
            Some(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = crate::cli::shutdown_signal(None) => {}
                }
            }
            None => crate::cli::shutdown_signal(None).await,
        }
    });
    let _ = done_rx.recv_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The preferred port if free now, else 0 (the kernel picks).
fn port_or_zero(port: u16) -> u16 {
    StdListener::bind(("127.0.0.1", port)).map_or(0, |_| port)
}

fn demo_config(
    backends: &[SocketAddr],
    udp_backends: &[SocketAddr],
    port: u16,
    admin_port: u16,
) -> String {
    let list: Vec<String> = backends
        .iter()
        .zip(WEIGHTS)
        .map(|(a, w)| format!("  {{ addr = \"{a}\", weight = {w} }},"))
        .collect();
    format!(
        "[global]\nworkers = 2\nshutdown_timeout = \"2s\"\n\n[admin]\nbind = \"127.0.0.1:{admin_port}\"\n\n\
         [[listener]]\nname = \"demo\"\nbind = \"127.0.0.1:{port}\"\npool = \"demo\"\n\n\
         [[pool]]\nname = \"demo\"\nalgorithm = \"weighted-round-robin\"\nbackends = [\n{}\n]\n\
         health = {{ kind = \"http\", path = \"/healthz\", interval = \"1s\" }}\n\n\
         [[listener]]\nname = \"demo-udp\"\nbind = \"127.0.0.1:0\"\nprotocol = \"udp\"\npool = \"demo-udp\"\n\n\
         [[pool]]\nname = \"demo-udp\"\nalgorithm = \"round-robin\"\nbackends = [{}]\n\
         health = {{ kind = \"udp\", send = \"ping\", expect = \"pong\", interval = \"1s\" }}\n",
        list.join("\n"),
        udp_backends.iter().map(|a| format!("{{ addr = \"{a}\" }}")).collect::<Vec<_>>().join(", ")
    )
}

/// Three UDP servers answering "ping" with "pong" and anything else with their name.
async fn start_udp_backends() -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for i in 1..=3 {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        addrs.push(s.local_addr()?);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let reply = if &buf[..n] == b"ping" {
                    "pong".to_string()
                } else {
                    format!("udp-backend-{i}")
                };
                let _ = s.send_to(reply.as_bytes(), from).await;
            }
        });
    }
    Ok(addrs)
}

const UDP_FLOWS: usize = 30;
const UDP_PER_FLOW: usize = 5;

/// 30 flows (client sockets) of 5 datagrams each; counts, per backend, the flows it served
/// and whether every flow stayed on one backend.
async fn udp_burst(lb: SocketAddr) -> BTreeMap<String, (usize, bool)> {
    let mut out: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    for _ in 0..UDP_FLOWS {
        let Ok(c) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
            continue;
        };
        let mut names = Vec::new();
        for _ in 0..UDP_PER_FLOW {
            let _ = c.send_to(b"hello", lb).await;
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_secs(1), c.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => names.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                _ => names.push("(no reply)".to_string()),
            }
        }
        let sticky = names.windows(2).all(|w| w[0] == w[1]);
        let e = out.entry(names[0].clone()).or_insert((0, true));
        e.0 += 1;
        e.1 &= sticky;
    }
    out
}

fn print_udp(flows: &BTreeMap<String, (usize, bool)>, lb: SocketAddr) {
    println!();
    println!("lb demo: {UDP_FLOWS} UDP flows × {UDP_PER_FLOW} datagrams through {lb} (round-robin per new flow)");
    for (name, (n, sticky)) in flows {
        println!(
            "  {name:<16} {n:>3} flows{}",
            if *sticky {
                "  (each stayed on its backend)"
            } else {
                "  (a flow moved!)"
            }
        );
    }
}

/// Three tiny HTTP/1.0 servers answering with their own name.
async fn start_backends() -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for i in 1..=3 {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(l.local_addr()?);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let body = format!("backend-{i}\n");
                    let resp = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
    }
    Ok(addrs)
}

/// Sends `n` requests, 8 at a time, each bounded by a timeout; counts answers by backend.
async fn burst(lb: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let mut set = tokio::task::JoinSet::new();
    let mut sent = 0;
    while sent < n || !set.is_empty() {
        while sent < n && set.len() < 8 {
            set.spawn(tokio::time::timeout(
                Duration::from_secs(2),
                one_request(lb),
            ));
            sent += 1;
        }
        if let Some(r) = set.join_next().await {
            let who = match r {
                Ok(Ok(Ok(name))) => name,
                Ok(Ok(Err(_))) | Err(_) => "(error)".to_string(),
                Ok(Err(_)) => "(timeout)".to_string(),
            };
            *counts.entry(who).or_insert(0) += 1;
        }
    }
    counts
}

async fn one_request(lb: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(lb).await?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n").await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    Ok(text
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

fn print_spread(
    spread: &BTreeMap<String, usize>,
    backends: &[SocketAddr],
    n: usize,
    lb: SocketAddr,
    admin: Option<SocketAddr>,
) {
    let total_w: u32 = WEIGHTS.iter().sum();
    println!();
    println!("lb demo: {n} requests through http://{lb}/ (weighted-round-robin 3:2:1)");
    println!(
        "  {:<12} {:<22} {:>6} {:>8} {:>8}",
        "backend", "address", "weight", "requests", "share"
    );
    for (i, addr) in backends.iter().enumerate() {
        let name = format!("backend-{}", i + 1);
        let c = spread.get(&name).copied().unwrap_or(0);
        println!(
            "  {:<12} {:<22} {:>6} {:>8} {:>7.1}%   (expected {:.1}%)",
            name,
            addr.to_string(),
            WEIGHTS[i],
            c,
            100.0 * c as f64 / n.max(1) as f64,
            100.0 * f64::from(WEIGHTS[i]) / f64::from(total_w)
        );
    }
    for (k, v) in spread.iter().filter(|(k, _)| k.starts_with('(')) {
        println!("  {k:<12} {v}");
    }
    if let Some(a) = admin {
        println!("admin: http://{a}/api/status   metrics: http://{a}/metrics");
    }
}
