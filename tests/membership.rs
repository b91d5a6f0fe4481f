//! Live membership through the admin API: `POST /api/pools/{pool}/backends` adds a member
//! that then gets traffic; `DELETE /api/pools/{pool}/backends/{addr}` drains it first (open
//! connections go on, no new ones) and removes it when its last connection ends.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backends::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect admin");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

fn backend<'a>(status: &'a serde_json::Value, addr: &str) -> Option<&'a serde_json::Value> {
    status["pools"][0]["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_adds_a_member_that_gets_traffic_and_deletes_one_that_drains_first() {
    let a = named("a").await;
    let b = named("b").await;
    let health = "health = { kind = \"tcp\", interval = \"200ms\", timeout = \"200ms\" }";
    let text = config("round-robin", &[(a.addr, "")], health, "");
    let lb = Lb::start("membership", &text).await;
    let addr = lb.listener("main").await;
    let path = "/api/pools/p/backends";

    // Hostile bodies are refused, and change nothing.
    for bad in [
        "",
        "{",
        r#"{"addr":"app:80"}"#,
        r#"{"addr":"127.0.0.1:1","weight":0}"#,
        r#"{"addr":"127.0.0.1:1","evil":1}"#,
    ] {
        let (code, _) = request(lb.admin, "POST", path, bad).await;
        assert_eq!(code, 400, "{bad}");
    }
    let (code, _) = request(
        lb.admin,
        "POST",
        "/api/pools/nope/backends",
        &format!(r#"{{"addr":"{}"}}"#, b.addr),
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = request(
        lb.admin,
        "POST",
        path,
        &format!(r#"{{"addr":"{}"}}"#, a.addr),
    )
    .await;
    assert_eq!(code, 409, "already a member");

    let (code, body) = request(
        lb.admin,
        "POST",
        path,
        &format!(r#"{{"addr":"{}","weight":1}}"#, b.addr),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let s = lb.status().await;
    let added = backend(&s, &b.addr.to_string()).expect("listed");
    assert_eq!(added["source"], "api");
    assert_eq!(
        backend(&s, &a.addr.to_string()).expect("kept")["source"],
        "config"
    );
    // It gets traffic (after its first health check passes).
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut name = Vec::new();
        s.read_to_end(&mut name).await.expect("read");
        if name == b"b\n" {
            // Kept open: the backend waits for the client's close, so lb counts it active.
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the added member never got traffic"
        );
    };

    let (code, body) = request(lb.admin, "DELETE", &format!("{path}/{}", b.addr), "").await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(lb.backend_state("p", b.addr).await, "draining");
    for _ in 0..10 {
        assert_eq!(
            fetch_name(addr).await.expect("through lb"),
            "a",
            "no new connections to a draining member"
        );
    }
    // Still listed while its connection is open.
    assert!(backend(&lb.status().await, &b.addr.to_string()).is_some());
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend(&lb.status().await, &b.addr.to_string()).is_some() {
        assert!(
            Instant::now() < deadline,
            "not removed after its last connection ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        lb.metric_reaching("lb_pool_members", &[("pool", "p")], 1.0)
            .await,
        1.0
    );
}

/// An http listener's backend connections outlive a membership change: the gateway is
/// rebuilt over the new members, and a member present before and after keeps its idle
/// keep-alive connection (the origin counts the connections it accepted). On both paths.
#[tokio::test(flavor = "multi_thread")]
async fn a_kept_member_keeps_its_idle_backend_connection_across_a_membership_change() {
    use common::origin::Origin;
    use common::web::fetch;
    let a = Origin::start().await;
    let b = Origin::start().await;
    let text = http_site(a.addr, "", "");
    for (path_name, lb) in both_paths("membership-keepalive", &text).await {
        let web = lb.listener("web").await;
        let (a0, ac0) = (a.count(), a.connections());
        for _ in 0..3 {
            assert_eq!(fetch(web, "/before", "").await.status, 200);
        }
        assert_eq!(a.count(), a0 + 3);
        assert_eq!(
            a.connections(),
            ac0 + 1,
            "{path_name}: one kept connection to a"
        );

        // b joins and later leaves: two rebuilds of the gateway.
        let members = "/api/pools/site/backends";
        let (code, body) = request(
            lb.admin,
            "POST",
            members,
            &format!(r#"{{"addr":"{}"}}"#, b.addr),
        )
        .await;
        assert_eq!(code, 201, "{body}");
        let (b0, bc0) = (b.count(), b.connections());
        // Round robin over a and b: requests reach both.
        let before = a.count();
        for _ in 0..6 {
            assert_eq!(fetch(web, "/after-add", "").await.status, 200);
        }
        assert!(a.count() >= before + 2, "{path_name}: a still gets traffic");
        assert!(b.count() > b0, "{path_name}: the added member gets traffic");
        assert_eq!(b.connections(), bc0 + 1, "{path_name}: one connection to b");
        let (code, body) = request(lb.admin, "DELETE", &format!("{members}/{}", b.addr), "").await;
        assert_eq!(code, 202, "{body}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while backend(&lb.status().await, &b.addr.to_string()).is_some() {
            assert!(Instant::now() < deadline, "{path_name}: b never removed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = a.count();
        for _ in 0..3 {
            assert_eq!(fetch(web, "/after-delete", "").await.status, 200);
        }
        assert_eq!(a.count(), before + 3);
        assert_eq!(
            a.connections(),
            ac0 + 1,
            "{path_name}: a's idle connection was dropped by a membership change"
        );
    }
}

fn members(status: &serde_json::Value) -> Vec<String> {
    let mut m: Vec<String> = status["pools"][0]["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["address"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    m.sort();
    m
}

async fn wait_members(lb: &Lb, want: &[SocketAddr]) {
    let mut want: Vec<String> = want.iter().map(ToString::to_string).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = members(&lb.status().await);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "members {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Changes made through the admin API (a member added, a config member deleted) are kept by
/// a reload that leaves the pool unchanged, and shown by `/api/status`; a reload that changes
/// the pool takes it as the file says, dropping them, and says so in its answer and log.
#[tokio::test(flavor = "multi_thread")]
async fn api_changes_survive_a_reload_that_leaves_the_pool_unchanged() {
    let (a, b, c) = (named("a").await, named("b").await, named("c").await);
    let text = config("round-robin", &[(a.addr, ""), (c.addr, "")], "", "");
    let mut lb = Lb::start("membership-reload", &text).await;
    let path = "/api/pools/p/backends";
    let (code, body) = request(
        lb.admin,
        "POST",
        path,
        &format!(r#"{{"addr":"{}"}}"#, b.addr),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = request(lb.admin, "DELETE", &format!("{path}/{}", c.addr), "").await;
    assert_eq!(code, 202, "{body}");
    wait_members(&lb, &[a.addr, b.addr]).await;

    // The file changes elsewhere (the listener's idle timeout): the pool is unchanged.
    let elsewhere = text.replace("pool = \"p\"\n", "pool = \"p\"\nidle_timeout = \"7m\"\n");
    assert_ne!(elsewhere, text);
    std::fs::write(&lb.config, &elsewhere).expect("write config");
    let (code, body) = http(lb.admin, "POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let s = lb.status().await;
    assert_eq!(members(&s), {
        let mut m = vec![a.addr.to_string(), b.addr.to_string()];
        m.sort();
        m
    });
    assert_eq!(s["pools"][0]["api_changes"]["added"][0], b.addr.to_string());
    assert_eq!(
        s["pools"][0]["api_changes"]["removed"][0],
        c.addr.to_string()
    );
    assert_eq!(
        backend(&s, &b.addr.to_string()).expect("kept")["source"],
        "api"
    );
    // Traffic still reaches the API's member after the reload.
    let web = lb.listener("main").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch_name(web).await.expect("through lb") != "b" {
        assert!(
            Instant::now() < deadline,
            "b lost its traffic over the reload"
        );
    }

    // The file changes the pool (its algorithm): the file's members, the API's changes dropped.
    let changed = elsewhere.replace("\"round-robin\"", "\"least-connections\"");
    assert_ne!(changed, elsewhere);
    std::fs::write(&lb.config, &changed).expect("write config");
    let (code, body) = http(lb.admin, "POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("members added or removed through the API are dropped"),
        "{body}"
    );
    lb.wait_log(
        "members added or removed through the admin API are dropped",
        Duration::from_secs(5),
    );
    let s = lb.status().await;
    assert_eq!(members(&s), {
        let mut m = vec![a.addr.to_string(), c.addr.to_string()];
        m.sort();
        m
    });
    assert_eq!(s["pools"][0]["api_changes"]["added"], serde_json::json!([]));
}

/// Hostile or mistaken admin requests are refused and change nothing: lb's own listener or
/// admin address as a backend (a loop), addresses lb cannot connect to, names, zone ids;
/// DELETE of a member the pool does not have; a percent-encoded address names the member.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_refuses_loops_and_odd_addresses_and_decodes_paths() {
    let (a, b) = (named("a").await, named("b").await);
    let lb = Lb::start(
        "membership-hostile",
        &config("round-robin", &[(a.addr, "")], "", ""),
    )
    .await;
    let web = lb.listener("main").await;
    let path = "/api/pools/p/backends";
    for own in [web, lb.admin] {
        let (code, body) = request(lb.admin, "POST", path, &format!(r#"{{"addr":"{own}"}}"#)).await;
        assert_eq!(code, 409, "{own}: {body}");
        assert!(body.contains("itself"), "{body}");
    }
    for odd in [
        format!("0.0.0.0:{}", b.addr.port()),
        "127.0.0.1:0".into(),
        format!("[fe80::1%lo]:{}", b.addr.port()),
        format!("localhost:{}", b.addr.port()),
        format!("224.0.0.1:{}", b.addr.port()),
    ] {
        let (code, body) = request(lb.admin, "POST", path, &format!(r#"{{"addr":"{odd}"}}"#)).await;
        assert_eq!(code, 400, "{odd}: {body}");
    }
    // A weight the pool's round-robin would ignore is refused, as the config refuses it.
    let weighted = format!(r#"{{"addr":"{}","weight":3}}"#, b.addr);
    let (code, body) = request(lb.admin, "POST", path, &weighted).await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("ignores weights"), "{body}");
    let (code, _) = request(lb.admin, "DELETE", &format!("{path}/{}", b.addr), "").await;
    assert_eq!(code, 404, "not a member");
    assert_eq!(members(&lb.status().await), [a.addr.to_string()]);

    let (code, body) = request(
        lb.admin,
        "POST",
        path,
        &format!(r#"{{"addr":"{}"}}"#, b.addr),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let encoded = b.addr.to_string().replace(':', "%3A");
    let (code, body) = request(lb.admin, "DELETE", &format!("{path}/{encoded}"), "").await;
    assert_eq!(code, 202, "{body}");
    wait_members(&lb, &[a.addr]).await;
}

/// Concurrent writers lose nothing: admin additions racing reloads (that leave the pool
/// unchanged) all end up in the pool. Every change takes the one reload lock and builds on
/// the snapshot it finds under it, so the last writer cannot drop another's change.
#[tokio::test(flavor = "multi_thread")]
async fn api_changes_racing_reloads_are_all_kept() {
    let a = named("a").await;
    let lb = Lb::start(
        "membership-race",
        &config("round-robin", &[(a.addr, "")], "", ""),
    )
    .await;
    let admin = lb.admin;
    // Addresses nobody listens on: no health check, so they join as members at once.
    let added: Vec<SocketAddr> = (1..=20u16)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, addr) in added.iter().copied().enumerate() {
        tasks.spawn(async move {
            let body = format!(r#"{{"addr":"{addr}"}}"#);
            let (code, body) = request(admin, "POST", "/api/pools/p/backends", &body).await;
            assert_eq!(code, 201, "{body}");
        });
        if i % 4 == 0 {
            tasks.spawn(async move {
                let (code, body) = http(admin, "POST", "/api/reload", None).await;
                assert_eq!(code, 200, "{body}");
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("writer");
    }
    let mut want = added.clone();
    want.push(a.addr);
    wait_members(&lb, &want).await;
    assert_eq!(
        lb.status().await["pools"][0]["api_changes"]["added"]
            .as_array()
            .map(Vec::len),
        Some(20)
    );
}
