//! Backends by name against a real DNS server: dnsmasq (installed by scripts/test.sh) on a
//! loopback port serves A records from an `--addn-hosts` file (re-read on SIGHUP) and SRV
//! records from `--srv-host` (only read at start: dnsmasq is restarted on the same port to
//! change them). Clients loop through lb while the records change and count failures.
#![cfg(feature = "external-tests")]

mod common;
mod dnsmasq;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backends::*;
use common::*;
use dnsmasq::{wait_members, write, Dnsmasq};

/// Two name-answering backends on the same port at 127.0.0.2 and 127.0.0.3 (DNS members of
/// one name share its port).
async fn twin_backends() -> (Backend, Backend, u16) {
    for _ in 0..20 {
        let a = named_at("127.0.0.2:0".parse().expect("addr"), "a").await;
        let port = a.addr.port();
        let b_addr: SocketAddr = format!("127.0.0.3:{port}").parse().expect("addr");
        if std::net::TcpListener::bind(b_addr).is_ok() {
            let b = named_at(b_addr, "b").await;
            return (a, b, port);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// Clients that connect through lb in a loop until told to stop (bounded: 60 s, 100,000
/// connections), recording every answer with its time, and counting failures.
struct Clients {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<(Instant, String)>, u64)>,
}

impl Clients {
    fn start(lb: SocketAddr) -> Clients {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut seen, mut failed) = (Vec::new(), 0u64);
            let deadline = Instant::now() + Duration::from_secs(60);
            for _ in 0..100_000 {
                if s.load(std::sync::atomic::Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                match fetch_name(lb).await {
                    Ok(n) => seen.push((Instant::now(), n)),
                    Err(_) => failed += 1,
                }
            }
            (seen, failed)
        });
        Clients { stop, task }
    }

    async fn finish(self) -> (Vec<(Instant, String)>, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("clients")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_change_and_lb_follows_without_a_failed_connection() {
    let (_a, _b, port) = twin_backends().await;
    let hosts = scratch("discovery-hosts").join("hosts");
    write(&hosts, "127.0.0.2 app.test\n");
    let mut dns = Dnsmasq::start(0, &hosts, &[]).await;
    let text = format!(
        "[global]\nresolve_interval_min = \"200ms\"\nresolve_interval_max = \"1s\"\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nresolver = \"{}\"\nbackends = [{{ addr = \"app.test:{port}\" }}]\n\
         health = {{ kind = \"tcp\", interval = \"200ms\", timeout = \"200ms\" }}\n",
        dns.addr()
    );
    // `lb check` prints what the name resolved to.
    let path = write_config("discovery-check", &text);
    let (code, out, err) = run_lb(&["check", "--config", path.to_str().expect("path")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("app.test:{port} -> 127.0.0.2:{port}")),
        "{out}"
    );

    let mut lb = Lb::start("discovery-a", &text).await;
    let addr = lb.listener("main").await;
    assert_eq!(fetch_name(addr).await.expect("through lb"), "a");
    let clients = Clients::start(addr);

    write(&hosts, "127.0.0.3 app.test\n");
    let changed = Instant::now();
    dns.reload();
    wait_members(
        &lb,
        &[&format!("127.0.0.3:{port}")],
        Duration::from_secs(10),
    )
    .await;
    // Traffic moves: wait for a run of answers from b only.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = fetch_name(addr).await.expect("through lb");
        if n == "b" {
            break;
        }
        assert!(Instant::now() < deadline, "still answered by {n}");
    }
    let (seen, failed) = clients.finish().await;
    let first_b = seen
        .iter()
        .find(|(t, n)| *t >= changed && n == "b")
        .map(|(t, _)| t.duration_since(changed))
        .expect("a request reached the new member");
    let after: Vec<&String> = seen
        .iter()
        .filter(|(t, _)| t.duration_since(changed) > first_b + Duration::from_secs(1))
        .map(|(_, n)| n)
        .collect();
    assert!(
        after.iter().all(|n| *n == "b"),
        "the removed member still got traffic"
    );
    eprintln!(
        "DNS change -> first request at the new member: {:?}; {} requests, {failed} failed",
        first_b,
        seen.len()
    );
    assert_eq!(failed, 0, "failed connections during the change");
    assert!(first_b < Duration::from_secs(3), "{first_b:?}");
    assert!(
        lb.metric_reaching(
            "lb_discovery_updates_total",
            &[("pool", "p"), ("result", "changed")],
            1.0
        )
        .await
            >= 1.0
    );
    assert_eq!(
        lb.metric_reaching("lb_pool_members", &[("pool", "p")], 1.0)
            .await,
        1.0
    );

    // The DNS server goes away: the last good set keeps serving; logged once.
    dns.stop();
    lb.wait_log("DNS resolution failed", Duration::from_secs(10));
    lb.metric_reaching(
        "lb_discovery_updates_total",
        &[("pool", "p"), ("result", "failed")],
        3.0,
    )
    .await;
    for _ in 0..20 {
        assert_eq!(fetch_name(addr).await.expect("last good set serves"), "b");
    }
    let logged = lb.log_text().matches("DNS resolution failed").count();
    assert_eq!(logged, 1, "logged once per run of failures");
}

#[tokio::test(flavor = "multi_thread")]
async fn srv_priorities_give_backups_and_a_changed_answer_moves_traffic() {
    let (_a, _b, port) = twin_backends().await;
    let hosts = scratch("discovery-srv").join("hosts");
    write(&hosts, "127.0.0.2 a.test\n127.0.0.3 b.test\n");
    let srv = |pa: u16, pb: u16| {
        vec![
            format!("--srv-host=_web._tcp.svc.test,a.test,{port},{pa},5"),
            format!("--srv-host=_web._tcp.svc.test,b.test,{port},{pb},5"),
        ]
    };
    let mut dns = Dnsmasq::start(0, &hosts, &srv(10, 20)).await;
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\n\
         discovery = {{ kind = \"dns_srv\", name = \"_web._tcp.svc.test\", resolver = \"{}\", interval = \"200ms\" }}\n",
        dns.addr()
    );
    let lb = Lb::start("discovery-srv", &text).await;
    let addr = lb.listener("main").await;
    let s = lb.status().await;
    let a = format!("127.0.0.2:{port}");
    let prio = |s: &serde_json::Value, addr: &str| {
        s["pools"][0]["backends"]
            .as_array()
            .and_then(|v| v.iter().find(|b| b["address"] == addr).cloned())
            .map(|b| {
                (
                    b["priority"].as_u64(),
                    b["backup"].as_bool(),
                    b["source"].clone(),
                )
            })
    };
    assert_eq!(prio(&s, &a), Some((Some(0), Some(false), "dns".into())));
    assert_eq!(
        prio(&s, &format!("127.0.0.3:{port}")),
        Some((Some(1), Some(true), "dns".into()))
    );
    for _ in 0..10 {
        assert_eq!(
            fetch_name(addr).await.expect("through lb"),
            "a",
            "the backup is idle"
        );
    }
    // dnsmasq reads --srv-host only at start: restart it on the same port with b preferred.
    let clients = Clients::start(addr);
    let port_dns = dns.port;
    dns.stop();
    let changed = Instant::now();
    let _dns = Dnsmasq::start(port_dns, &hosts, &srv(30, 20)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch_name(addr).await.expect("through lb") != "b" {
        assert!(
            Instant::now() < deadline,
            "traffic never moved to the new primary"
        );
    }
    let (seen, failed) = clients.finish().await;
    let first_b = seen
        .iter()
        .find(|(t, n)| *t >= changed && n == "b")
        .map(|(t, _)| t.duration_since(changed));
    eprintln!(
        "SRV change -> first request at the new primary: {first_b:?}; {} requests, {failed} failed",
        seen.len()
    );
    assert_eq!(failed, 0);
}
