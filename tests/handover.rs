//! Binary upgrade with hand-over (`global.upgrade_handover`, on by default): open plain TCP
//! connections and UDP flows move to the new process, so the old one exits at once; a TLS
//! connection cannot move and drains in the old process.

mod common;
mod handover_support;

use std::time::{Duration, Instant};

use common::backends::{echo, fill};
use common::*;
use handover_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const TCP_CONNS: usize = 200;
const UDP_FLOWS: usize = 50;
/// Datagrams each flow sends after READY, every one of which must be answered.
const AFTER_READY: usize = 4;

#[tokio::test(flavor = "multi_thread")]
async fn open_connections_and_flows_move_and_the_old_process_exits_at_once() {
    let (e0, e1) = (echo().await, echo().await);
    let (u0, u1) = (udp_backend("u0").await, udp_backend("u1").await);
    let dir = scratch("handover-pki");
    let pki = pki::Pki::new(&dir);
    let leaf = pki.leaf("site", &["site.example"]);
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        leaf.cert.display(),
        leaf.key.display()
    );
    let text = handover_config(&[e0.addr, e1.addr], &[u0.addr, u1.addr], &tls);
    let sock = scratch("handover").join("lb.sock");
    let sock_arg = sock.to_str().expect("utf-8").to_string();
    let mut old = Lb::start_with("handover-old", &text, &["--upgrade-socket", &sock_arg]).await;
    old.wait_log("binary upgrade socket on", Duration::from_secs(5));
    let (main, dns, secure) = (
        old.listener("main").await,
        old.listener("dns").await,
        old.listener("secure").await,
    );

    // 200 plain connections, each relaying already; 50 UDP flows, each pinned to a backend.
    let mut conns = Vec::new();
    let mut sent = vec![0u64; TCP_CONNS];
    for (i, n) in sent.iter_mut().enumerate() {
        let mut s = TcpStream::connect(main).await.expect("connect");
        let mut seed = i as u64 + 1;
        echo_once(&mut s, &mut seed).await;
        *n += PAYLOAD as u64;
        conns.push((s, seed));
    }
    let mut flows = Vec::new();
    for i in 0..UDP_FLOWS {
        let c = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let first = ask(&c, dns, &format!("flow{i}-0"))
            .await
            .expect("first reply");
        flows.push((c, first));
    }
    let backends: std::collections::HashSet<_> = flows.iter().map(|(_, (n, _))| n).collect();
    assert_eq!(backends.len(), 2, "flows are spread over both backends");
    let mut tls_conn = pki::connect(secure, "site.example", pki.client(&[], None))
        .await
        .expect("tls");
    tls_conn.write_all(b"before").await.expect("write");
    let mut b = [0u8; 6];
    tls_conn.read_exact(&mut b).await.expect("echo");

    let mut new = Lb::start_with("handover-new", &text, &["--upgrade-socket", &sock_arg]).await;
    new.wait_log("the old process now drains", Duration::from_secs(5));
    let ready = Instant::now();
    let old_logs = old.logs.clone();
    let exit = tokio::task::spawn_blocking(move || {
        let code = old.wait_exit(Duration::from_secs(20));
        (code, ready.elapsed(), old)
    });

    // The TLS connection cannot move: it finishes through the old process.
    tls_conn.write_all(b"after!").await.expect("write");
    tls_conn.read_exact(&mut b).await.expect("echo after READY");
    assert_eq!(&b, b"after!");
    tls_conn.shutdown().await.expect("close");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls_conn.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    drop(tls_conn);

    // Datagrams sent after READY: every one answered, by the flow's backend, which sees
    // the same source address as before.
    for k in 1..=AFTER_READY {
        for (i, (c, (name, seen))) in flows.iter().enumerate() {
            let got = ask(c, dns, &format!("flow{i}-{k}")).await;
            assert_eq!(
                got,
                Some((name.clone(), seen.clone())),
                "flow {i}, datagram {k}"
            );
        }
    }

    let Ok((code, took, old)) = exit.await else {
        panic!(
            "the old process did not exit; its log:\n{}",
            old_logs.lock().expect("logs").join("\n")
        );
    };
    eprintln!(
        "hand-over: old process exited {took:?} after the new one's READY, with {TCP_CONNS} tcp connections and {UDP_FLOWS} udp flows open"
    );
    assert_eq!(code, Some(0), "the old process exits 0");
    assert!(took < Duration::from_secs(2), "old process took {took:?}");

    // The old process is gone: every connection still echoes, so through the new one.
    for (i, (s, seed)) in conns.iter_mut().enumerate() {
        echo_once(s, seed).await;
        sent[i] += PAYLOAD as u64;
    }
    let s = new.status().await;
    assert_eq!(
        s["inherited_connections"].as_u64(),
        Some((TCP_CONNS + UDP_FLOWS) as u64),
        "{s}"
    );
    let m = new.metrics().await;
    let moved = |kind, result| {
        metric(
            &m,
            "lb_upgrade_handover_total",
            &[("kind", kind), ("result", result)],
        )
    };
    assert_eq!(moved("tcp", "inherited"), TCP_CONNS as f64);
    assert_eq!(moved("udp", "inherited"), UDP_FLOWS as f64);

    // Each connection ends in the new process: one access-log line there, none in the old
    // one, with the bytes of its whole life.
    for (s, _) in conns {
        let mut s = s;
        s.shutdown().await.expect("fin");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("eof");
    }
    let rx = new
        .metric_reaching(
            "lb_bytes_total",
            &[("listener", "main"), ("direction", "rx")],
            sent.iter().sum::<u64>() as f64,
        )
        .await;
    assert_eq!(
        rx,
        sent.iter().sum::<u64>() as f64,
        "bytes counted once, in full"
    );
    let lines = |lb: &Lb| {
        lb.log_text()
            .lines()
            .filter(|l| l.contains("bytes_in=") && l.contains("listener=main"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(lines(&old).is_empty(), "{:?}", lines(&old));
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines(&new).len() < TCP_CONNS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new_lines = lines(&new);
    assert_eq!(new_lines.len(), TCP_CONNS, "one line per connection");
    let whole = format!("bytes_in={}", 2 * PAYLOAD);
    assert!(
        new_lines.iter().all(|l| l.contains(&whole)),
        "{new_lines:?}"
    );
}

/// `upgrade_handover = false` keeps the old behaviour: an open connection stays with the old
/// process, which drains it, and the new process inherits nothing.
#[tokio::test(flavor = "multi_thread")]
async fn with_handover_off_connections_drain_in_the_old_process() {
    let e0 = echo().await;
    let text = config("round-robin", &[(e0.addr, "")], "", "")
        .replace("[global]\n", "[global]\nupgrade_handover = false\n");
    let sock = scratch("handover-off").join("lb.sock");
    let sock_arg = sock.to_str().expect("utf-8").to_string();
    let mut old = Lb::start_with("handover-off-old", &text, &["--upgrade-socket", &sock_arg]).await;
    old.wait_log("binary upgrade socket on", Duration::from_secs(5));
    let mut s = TcpStream::connect(old.listener("main").await)
        .await
        .expect("connect");
    let mut seed = 7;
    echo_once(&mut s, &mut seed).await;
    let mut new = Lb::start_with("handover-off-new", &text, &["--upgrade-socket", &sock_arg]).await;
    new.wait_log("the old process now drains", Duration::from_secs(5));
    let draining = old.wait_log("waiting up to", Duration::from_secs(5));
    assert!(draining.contains("open_connections=1"), "{draining}");
    // Draining, the old process still relays it; the new one has none.
    echo_once(&mut s, &mut seed).await;
    assert_eq!(new.status().await["inherited_connections"], 0);
    // …and exits once it ends.
    s.shutdown().await.expect("fin");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.expect("eof");
    let code = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(10)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
}

/// Bytes each bulk transfer moves: far more than the socket buffers and splice pipes hold, so
/// the relay is spliced and blocked on a full peer when it pauses.
const BULK: u64 = 24 << 20;
/// How far each transfer gets before the first and the second upgrade.
const BULK_STEPS: [u64; 2] = [4 << 20, 8 << 20];

/// Two bulk transfers, one each way, spliced and blocked on a reader that stopped (bytes in
/// the splice pipe, a full peer), move through two upgrades in a row: every byte arrives
/// exactly once and in order, and bytes and the access-log line are counted once, in full,
/// by the process that ends the connection.
#[tokio::test(flavor = "multi_thread")]
async fn spliced_bulk_transfers_blocked_on_a_full_peer_move_twice_intact() {
    use sha2::{Digest, Sha256};
    let src = common::backends::source(BULK).await;
    let (allow_tx, allow_rx) = tokio::sync::watch::channel(BULK_STEPS[0]);
    let sink = gated_sink(allow_rx).await;
    let text = format!(
        "[global]\nworkers = 2\nsplice = true\nshutdown_timeout = \"10s\"\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"down\"\nbind = \"127.0.0.1:0\"\npool = \"src\"\naccess_log = true\n\n\
         [[listener]]\nname = \"up\"\nbind = \"127.0.0.1:0\"\npool = \"sink\"\naccess_log = true\n\n\
         [[pool]]\nname = \"src\"\nbackends = [{{ addr = \"{}\" }}]\n\n\
         [[pool]]\nname = \"sink\"\nbackends = [{{ addr = \"{}\" }}]\n",
        src.addr, sink.addr
    );
    let sock = scratch("handover-bulk").join("lb.sock");
    let sock_arg = sock.to_str().expect("utf-8").to_string();
    let mut lb0 = Lb::start_with("bulk-0", &text, &["--upgrade-socket", &sock_arg]).await;
    lb0.wait_log("binary upgrade socket on", Duration::from_secs(5));
    let (down, up) = (lb0.listener("down").await, lb0.listener("up").await);

    // Upload: the client writes everything as fast as the sink lets it, then half-closes.
    let up_conn = TcpStream::connect(up).await.expect("connect");
    let (mut up_r, mut up_w) = up_conn.into_split();
    let writer = tokio::spawn(async move {
        let (mut h, mut seed, mut left) = (Sha256::new(), 42u64, BULK);
        let mut block = vec![0u8; 256 * 1024];
        while left > 0 {
            let k = left.min(block.len() as u64) as usize;
            fill(&mut block[..k], &mut seed);
            up_w.write_all(&block[..k]).await.expect("upload write");
            h.update(&block[..k]);
            left -= k as u64;
        }
        up_w.shutdown().await.expect("upload fin");
        (format!("{:x}", h.finalize()), up_w)
    });

    // Download: the client reads up to each step, then stops reading.
    let mut dl = TcpStream::connect(down).await.expect("connect");
    let (mut got, mut h) = (0u64, Sha256::new());
    let mut buf = vec![0u8; 64 * 1024];
    let (mut lb, mut old_logs) = (lb0, Vec::new());
    for (i, step) in BULK_STEPS.iter().enumerate() {
        while got < *step {
            let want = (*step - got).min(buf.len() as u64) as usize;
            let n = tokio::time::timeout(Duration::from_secs(10), dl.read(&mut buf[..want]))
                .await
                .expect("download in time")
                .expect("download read");
            assert!(n > 0, "download ended early at {got}");
            h.update(&buf[..n]);
            got += n as u64;
        }
        allow_tx.send_replace(*step);
        let (new, log) = upgrade(lb, &format!("bulk-{}", i + 1), &text, &sock_arg).await;
        (lb, old_logs) = (new, [old_logs, vec![log]].concat());
        // The next step lets both transfers go on through the new process (the last one to
        // the end, and the sink's EOF).
        allow_tx.send_replace(BULK_STEPS.get(i + 1).copied().unwrap_or(u64::MAX));
    }
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), dl.read(&mut buf))
            .await
            .expect("download in time")
            .expect("download read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n as u64;
    }
    assert_eq!(got, BULK, "download: every byte exactly once");
    assert_eq!(
        format!("{:x}", h.finalize()),
        source_hash(BULK),
        "download: in order, uncorrupted"
    );
    let (sent_hash, _w) = writer.await.expect("upload writer");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), up_r.read_to_string(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("upload answer in time; {}: {}", answer, lb.log_text()))
        .expect("upload answer");
    assert_eq!(
        answer.trim(),
        format!("{sent_hash} {BULK}"),
        "upload: every byte exactly once, in order"
    );
    drop(dl);

    // Both moved twice and ended in the last process: counted there once, in full.
    for (listener, dir) in [("down", "tx"), ("up", "rx")] {
        let labels = [("listener", listener), ("direction", dir)];
        let n = lb
            .metric_reaching("lb_bytes_total", &labels, BULK as f64)
            .await;
        assert_eq!(n, BULK as f64, "{listener} {dir}");
    }
    let m = lb.metrics().await;
    let handed = metric(
        &m,
        "lb_upgrade_handover_total",
        &[("kind", "tcp"), ("result", "inherited")],
    );
    assert_eq!(handed, 2.0, "each process inherited both connections");
    let lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("bytes_out="))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for log in &old_logs {
        assert!(lines(log).is_empty(), "{:?}", lines(log));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines(&lb.log_text()).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let l = lines(&lb.log_text());
    assert_eq!(l.len(), 2, "one access-log line per connection: {l:?}");
    assert!(
        l.iter().any(|x| x.contains(&format!("bytes_out={BULK}"))),
        "{l:?}"
    );
    assert!(
        l.iter().any(|x| x.contains(&format!("bytes_in={BULK}"))),
        "{l:?}"
    );
}

/// A connection handed over before a byte moved either way, whose backend then closes: the
/// new process retries it on another backend as the old one would have, so the client's
/// first request is served (it was not closed).
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_connection_whose_backend_closes_first_is_retried_on_another() {
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let (accepted_tx, mut accepted) = tokio::sync::watch::channel(0usize);
    let first = holder(close_rx, accepted_tx).await;
    let backup = echo().await;
    let text = config(
        "round-robin",
        &[(first.addr, ""), (backup.addr, ", backup = true")],
        "",
        "",
    );
    let sock = scratch("handover-retry").join("lb.sock");
    let sock_arg = sock.to_str().expect("utf-8").to_string();
    let mut lb0 = Lb::start_with("retry-0", &text, &["--upgrade-socket", &sock_arg]).await;
    lb0.wait_log("binary upgrade socket on", Duration::from_secs(5));
    let mut c = TcpStream::connect(lb0.listener("main").await)
        .await
        .expect("connect");
    tokio::time::timeout(Duration::from_secs(5), accepted.wait_for(|n| *n == 1))
        .await
        .expect("relayed to the first backend in time")
        .expect("holder runs");
    let (lb, _) = upgrade(lb0, "retry-1", &text, &sock_arg).await;
    assert_eq!(
        lb.metric_reaching(
            "lb_upgrade_handover_total",
            &[("kind", "tcp"), ("result", "inherited")],
            1.0
        )
        .await,
        1.0
    );
    close_tx.send_replace(true);
    let b = backup.addr.to_string();
    let to_backup = [("listener", "main"), ("backend", b.as_str())];
    assert_eq!(
        lb.metric_reaching("lb_connections_total", &to_backup, 1.0)
            .await,
        1.0,
        "retried on the backup; log:\n{}",
        lb.log_text()
    );
    c.write_all(b"hello").await.expect("write");
    let mut back = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
        .await
        .expect("answered in time")
        .expect("answered, not closed");
    assert_eq!(&back, b"hello");
    assert_eq!(
        *accepted.borrow(),
        1,
        "not retried on the backend that closed"
    );
}

/// A connection whose backend the new config no longer has cannot be resumed: the new
/// process closes it at once (no hang, counted `refused`), the old one still exits at once,
/// and new connections go to the new backend.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_whose_backend_is_gone_from_the_new_config_is_refused_and_counted() {
    let (e0, e1) = (echo().await, echo().await);
    let before = config("round-robin", &[(e0.addr, "")], "", "");
    let after = config("round-robin", &[(e1.addr, "")], "", "");
    let sock = scratch("handover-gone").join("lb.sock");
    let sock_arg = sock.to_str().expect("utf-8").to_string();
    let mut lb0 = Lb::start_with("gone-0", &before, &["--upgrade-socket", &sock_arg]).await;
    lb0.wait_log("binary upgrade socket on", Duration::from_secs(5));
    let main = lb0.listener("main").await;
    let mut c = TcpStream::connect(main).await.expect("connect");
    let mut seed = 3;
    echo_once(&mut c, &mut seed).await;
    let (lb, _) = upgrade(lb0, "gone-1", &after, &sock_arg).await;
    let refused = [("kind", "tcp"), ("result", "refused")];
    assert_eq!(
        lb.metric_reaching("lb_upgrade_handover_total", &refused, 1.0)
            .await,
        1.0
    );
    // Closed, not left hanging (a FIN, or a reset: either ends the read).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the refused connection was closed");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(
        echo_round_trip(main, b"new").await.expect("new connection"),
        b"new"
    );
    assert_eq!(lb.status().await["inherited_connections"], 0);
}
