//! Priority levels through the binary: two levels of three backends; as level-0 members fail
//! (listener stopped and seen by the health check, or disabled through the admin API), the
//! share of new connections reaching level 1 follows Envoy's priority-load formula
//! (overprovisioning 1.4), and comes back as they recover — with no failed connection, a
//! retry walking to another member. The same rule for an http pool on both HTTP paths, and a
//! consistent-hash pool keeping each client on its level and backend while health holds.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::backends::{named, named_at, Backend};
use common::web::{fetch, web};
use common::*;

const HEALTH: &str =
    "health = { kind = \"tcp\", interval = \"100ms\", timeout = \"100ms\", fall = 1, rise = 1 }";
const WAIT: Duration = Duration::from_secs(10);

/// The formula with level 1 fully healthy: level 0 of three equal members, `up` of them
/// available, overprovisioning 1.4, keeps min(1, 1.4 × up / 3); level 1 gets the rest.
fn spill(up: u32) -> f64 {
    1.0 - (1.4 * f64::from(up) / 3.0).min(1.0)
}

/// How far a measured share of `n` draws may be from `p`: four standard deviations and 1 %.
fn tolerance(p: f64, n: usize) -> f64 {
    4.0 * (p * (1.0 - p) / n as f64).sqrt() + 0.01
}

/// Runs `n` of `one` with at most 8 at a time; every one must succeed. Their answers.
async fn run<F, Fut>(n: usize, one: F) -> Vec<String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let (mut sent, mut out) = (0, Vec::with_capacity(n));
    while out.len() < n {
        while sent < n && set.len() < 8 {
            set.spawn(one());
            sent += 1;
        }
        let r = set.join_next().await.expect("a task").expect("joined");
        out.push(r.unwrap_or_else(|e| panic!("a connection failed: {e}")));
    }
    out
}

/// The share of `names` that are level-1 backends (named `b…`).
fn level1(names: &[String]) -> f64 {
    names.iter().filter(|n| n.starts_with('b')).count() as f64 / names.len() as f64
}

/// Level 1's share in `/api/status` (`priority_load`), in 0..1.
async fn status_spill(lb: &Lb) -> f64 {
    let s = lb.status().await;
    let loads = &s["pools"][0]["priority_load"];
    assert_eq!(loads[1]["priority"], 1, "{loads}");
    loads[1]["percent"].as_f64().expect("percent") / 100.0
}

async fn post(lb: &Lb, addr: SocketAddr, verb: &str) {
    let path = format!("/api/pools/p/backends/{addr}/{verb}");
    assert_eq!(http(lb.admin, "POST", &path, None).await.0, 200, "{path}");
}

/// `a0 a1 a2` at priority 0 (zone "near"), `b0 b1 b2` at priority 1 (zone "far").
fn members(a: &[SocketAddr], b: &[SocketAddr]) -> Vec<(SocketAddr, &'static str)> {
    let near = a.iter().map(|&x| (x, ", zone = \"near\""));
    let far = b.iter().map(|&x| (x, ", priority = 1, zone = \"far\""));
    near.chain(far).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_spills_by_the_formula_and_returns_with_no_failed_connection() {
    let mut a: Vec<Backend> = Vec::new();
    let mut b: Vec<Backend> = Vec::new();
    for i in 0..3 {
        a.push(named(&format!("a{i}")).await);
        b.push(named(&format!("b{i}")).await);
    }
    let aa: Vec<SocketAddr> = a.iter().map(|x| x.addr).collect();
    let ba: Vec<SocketAddr> = b.iter().map(|x| x.addr).collect();
    let text = config("round-robin", &members(&aa, &ba), HEALTH, "");
    let lb = Lb::start("priority-tcp", &text).await;
    let addr = lb.listener("main").await;
    let s = lb.status().await;
    let zones: Vec<&str> = s["pools"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["zone"].as_str().expect("zone"))
        .collect();
    assert_eq!(zones, ["near", "near", "near", "far", "far", "far"]);
    assert_eq!(s["pools"][0]["overprovisioning"], 1.4);

    let n = 800;
    let fetch_one = || async move { fetch_name(addr).await.map_err(|e| e.to_string()) };
    let mut report = Vec::new();
    // (what happens, level-0 members up after it)
    let steps = [
        ("start", 3),
        ("a0 stops", 2),
        ("a1 disabled", 1),
        ("a2 stops", 0),
        ("a2 back", 1),
        ("a1 enabled", 2),
        ("a0 back", 3),
    ];
    for (what, up) in steps {
        match what {
            "a0 stops" | "a2 stops" => {
                let i = usize::from(what.as_bytes()[1] - b'0');
                a[i].stop();
                // Before the health check sees it: refused connects are retried elsewhere.
                run(50, fetch_one).await;
                lb.wait_state("p", aa[i], "down", WAIT).await;
            }
            "a1 disabled" => post(&lb, aa[1], "disable").await,
            "a2 back" | "a0 back" => {
                let i = usize::from(what.as_bytes()[1] - b'0');
                a[i] = named_at(aa[i], &format!("a{i}")).await;
                lb.wait_state("p", aa[i], "up", WAIT).await;
            }
            "a1 enabled" => {
                post(&lb, aa[1], "enable").await;
                lb.wait_state("p", aa[1], "up", WAIT).await;
            }
            _ => {}
        }
        let want = spill(up);
        let in_status = status_spill(&lb).await;
        assert!(
            (in_status - want).abs() < 1e-3,
            "{what}: status says {in_status}, formula {want}"
        );
        let got = level1(&run(n, fetch_one).await);
        report.push(format!("{what}: level 1 got {got:.3}, formula {want:.3}"));
        eprintln!("{}", report.last().expect("a line"));
        match up {
            3 => assert_eq!(got, 0.0, "{what}: level 0 fully healthy keeps everything"),
            0 => assert_eq!(got, 1.0, "{what}: nothing left on level 0"),
            _ => assert!(
                (got - want).abs() <= tolerance(want, n),
                "{what}: {got} reached level 1, formula {want} ± {}",
                tolerance(want, n)
            ),
        }
        if what == "a1 disabled" {
            let m = lb.metrics().await;
            let ratio = metric(
                &m,
                "lb_pool_priority_load_ratio",
                &[("pool", "p"), ("priority", "1")],
            );
            assert!(
                (ratio - want).abs() < 1e-3,
                "metric {ratio}, formula {want}"
            );
            let zone = metric(
                &m,
                "lb_backend_up",
                &[("backend", &ba[0].to_string()), ("zone", "far")],
            );
            assert_eq!(zone, 1.0, "lb_backend_up carries the zone");
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// `n` requests through an http listener: the answering backend's name each.
async fn requests(addr: SocketAddr, n: usize) -> Vec<String> {
    run(n, || async move {
        let a = fetch(addr, "/", "").await;
        match a.status {
            200 => Ok(a.body.split(' ').next().unwrap_or_default().to_string()),
            s => Err(format!("status {s}: {}", a.body)),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn http_spills_by_the_same_rule_on_both_paths() {
    for path in ["lean", "general"] {
        let mut keep = Vec::new();
        let (mut aa, mut ba) = (Vec::new(), Vec::new());
        for (na, nb) in [("a0", "b0"), ("a1", "b1"), ("a2", "b2")] {
            let (x, _) = web(na).await;
            let (y, _) = web(nb).await;
            aa.push(x.addr);
            ba.push(y.addr);
            keep.extend([x, y]);
        }
        let text = config("random", &members(&aa, &ba), "", "protocol = \"http\"");
        let env: &[(&str, &str)] = if path == "general" {
            &[("LB_HTTP_PATH", "general")]
        } else {
            &[]
        };
        let lb = Lb::start_env(&format!("priority-http-{path}"), &text, &[], env).await;
        let addr = lb.listener("main").await;
        let n = 400;
        assert_eq!(
            level1(&requests(addr, 100).await),
            0.0,
            "{path}: all healthy"
        );
        post(&lb, aa[0], "disable").await;
        post(&lb, aa[1], "disable").await;
        let (got, want) = (level1(&requests(addr, n).await), spill(1));
        eprintln!(
            "http {path}, 2 of 3 level-0 members disabled: level 1 got {got:.3}, formula {want:.3}"
        );
        assert!(
            (got - want).abs() <= tolerance(want, n),
            "{path}: {got} reached level 1, formula {want}"
        );
        post(&lb, aa[0], "enable").await;
        post(&lb, aa[1], "enable").await;
        lb.wait_state("p", aa[1], "up", WAIT).await;
        assert_eq!(level1(&requests(addr, 100).await), 0.0, "{path}: recovered");
    }
}

/// Each client address's backend, one connection each from 127.0.0.2.. (source-ip hashing).
async fn by_client(addr: SocketAddr, clients: u8) -> HashMap<u8, String> {
    let mut out = HashMap::new();
    for c in 2..2 + clients {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, c));
        let name = fetch_name_from(addr, Some(ip)).await.expect("through lb");
        out.insert(c, name);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_keeps_clients_on_their_level_and_backend() {
    let mut keep = Vec::new();
    let (mut aa, mut ba) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let (x, y) = (named(&format!("a{i}")).await, named(&format!("b{i}")).await);
        aa.push(x.addr);
        ba.push(y.addr);
        keep.extend([x, y]);
    }
    let text = config(
        "consistent-hash",
        &members(&aa, &ba),
        "hash_key = \"source-ip\"",
        "",
    );
    let lb = Lb::start("priority-hash", &text).await;
    let addr = lb.listener("main").await;
    let clients = 200;
    post(&lb, aa[0], "disable").await;
    post(&lb, aa[1], "disable").await;
    let first = by_client(addr, clients).await;
    let names: Vec<String> = first.values().cloned().collect();
    let (got, want) = (level1(&names), spill(1));
    eprintln!("consistent-hash, 2 of 3 level-0 members disabled: {got:.3} of clients on level 1, formula {want:.3}");
    assert!(
        (got - want).abs() <= tolerance(want, names.len()),
        "{got} vs {want}"
    );
    for _ in 0..2 {
        assert_eq!(
            by_client(addr, clients).await,
            first,
            "same client, same backend"
        );
    }
    // a1 recovers: level 0 grows back to 93 %; a client on level 0 stays there.
    post(&lb, aa[1], "enable").await;
    lb.wait_state("p", aa[1], "up", WAIT).await;
    let after = by_client(addr, clients).await;
    for (c, was) in &first {
        if was.starts_with('a') {
            assert!(
                after[c].starts_with('a'),
                "127.0.0.{c} left level 0 as it recovered"
            );
        }
    }
    let names: Vec<String> = after.values().cloned().collect();
    let (got, want) = (level1(&names), spill(2));
    assert!(
        (got - want).abs() <= tolerance(want, names.len()),
        "{got} vs {want}"
    );
}

#[test]
fn check_plans_the_levels_and_zones() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/priority.toml");
    let (code, out, err) = run_lb(&["check", "--config", path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("  - 127.0.0.1:9001 weight 1 zone eu-west-1a\n"),
        "{out}"
    );
    assert!(
        out.contains("priority levels 0, 1: each takes all new traffic while at least 71.4% of its weight is up (overprovisioning 1.4)"),
        "{out}"
    );
    let single = write_config(
        "priority-single",
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:1\"\npool = \"p\"\n[[pool]]\nname = \"p\"\noverprovisioning = 2.0\nbackends = [{ addr = \"127.0.0.1:2\" }]\n",
    );
    let (code, out, err) = run_lb(&["check", "--config", single.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "a warning only: {err}");
    assert!(err.contains("`overprovisioning` has no effect"), "{err}");
    assert!(!out.contains("priority levels"), "{out}");
}
