//! End-to-end TLS through the real binary: termination with a verified chain, the certificate
//! chosen by SNI, TLS 1.1 refused, ALPN, client certificates, re-encryption to backends, new
//! certificates on reload, and SNI passthrough where the backend does the handshake.

mod common;

use std::time::Duration;

use common::backends::{echo, named, Backend};
use common::pki::{answer, connect, read_all, tls_named, Pki};
use common::*;
use lb_core::tls::client_hello::build::{client_hello, hello_with_version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tls_listener(pki: &Pki, extra: &str) -> String {
    let d = pki.leaf("default", &["default.example"]);
    let a = pki.leaf("a", &["a.example"]);
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\", sni = [{{ server_name = \"a.example\", cert = \"{}\", key = \"{}\" }}], alpn = [\"h2\", \"http/1.1\"]{extra} }}",
        d.cert.display(),
        d.key.display(),
        a.cert.display(),
        a.key.display()
    )
}

/// lb terminating TLS ([`tls_listener`], with `tls_extra` inside the table and
/// `listener_extra` after it) in front of a plain backend answering `answer`.
async fn tls_front(
    pki: &Pki,
    tag: &str,
    answer: &str,
    tls_extra: &str,
    listener_extra: &str,
) -> (Backend, Lb, std::net::SocketAddr) {
    let b = named(answer).await;
    let listener = format!("{}\n{listener_extra}", tls_listener(pki, tls_extra));
    let lb = Lb::start(tag, &config("round-robin", &[(b.addr, "")], "", &listener)).await;
    let addr = lb.listener("main").await;
    (b, lb, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn terminates_tls_and_picks_the_certificate_by_sni() {
    let dir = scratch("tls-sni-certs");
    let pki = Pki::new(&dir);
    let (_b, lb, addr) = tls_front(&pki, "tls-term", "plain-backend", "", "").await;
    // The client verifies the chain against the CA and the name: only the right certificate
    // for each name lets the handshake finish.
    for name in ["a.example", "default.example"] {
        let mut s = connect(addr, name, pki.client(&[], None))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let peer = s.get_ref().1.peer_certificates().expect("cert")[0].clone();
        let expected = std::fs::read_to_string(
            dir.join(format!("{}.pem", name.split('.').next().unwrap_or(""))),
        )
        .expect("pem");
        assert!(
            expected.contains(&pem_body(&peer)),
            "{name} got another certificate"
        );
        assert_eq!(read_all(&mut s).await.expect("answer"), "plain-backend");
    }
    // An unknown name gets the default certificate, which does not verify for it.
    assert!(connect(addr, "other.example", pki.client(&[], None))
        .await
        .is_err());
    let m = lb.metrics().await;
    assert_eq!(
        lb.metric_reaching(
            "lb_tls_handshakes_total",
            &[("listener", "main"), ("result", "ok")],
            2.0
        )
        .await,
        2.0
    );
    assert!(
        metric(
            &m,
            "lb_tls_handshake_duration_seconds_count",
            &[("listener", "main")]
        ) >= 2.0
    );
}

fn pem_body(der: &[u8]) -> String {
    // The first 60 base64 characters of the DER identify the certificate well enough.
    let b64 = base64(der);
    b64[..60].to_string()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_1_is_refused() {
    let pki = Pki::new(&scratch("tls11"));
    let (_b, lb, addr) = tls_front(&pki, "tls11", "never", "", "").await;
    let got = answer_before_close(
        addr,
        &hello_with_version(Some("a.example"), &[], 16_384, [3, 2]),
    )
    .await;
    // An alert record (21), never a ServerHello (22), and the backend's name never arrives.
    assert_eq!(got.first(), Some(&21), "got {got:?}");
    assert!(!String::from_utf8_lossy(&got).contains("never"));
    assert_eq!(
        lb.metric_reaching(
            "lb_tls_handshakes_total",
            &[("listener", "main"), ("result", "error")],
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(lb.rejected("tls_handshake", 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn alpn_h2_is_negotiated_when_offered() {
    let pki = Pki::new(&scratch("tls-alpn"));
    let (_b, _lb, addr) = tls_front(&pki, "tls-alpn", "alpn", "", "").await;
    for (offer, want) in [
        (&["h2", "http/1.1"][..], Some(&b"h2"[..])),
        (&["http/1.1"][..], Some(&b"http/1.1"[..])),
        (&[][..], None),
    ] {
        let s = connect(addr, "a.example", pki.client(offer, None))
            .await
            .expect("handshake");
        assert_eq!(s.get_ref().1.alpn_protocol(), want, "offered {offer:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_required_with_client_ca() {
    let dir = scratch("tls-mtls");
    let pki = Pki::new(&dir);
    let other = Pki::new(&scratch("tls-mtls-other"));
    let extra = format!(", client_ca = \"{}\"", pki.ca_path().display());
    let (_b, lb, addr) = tls_front(&pki, "tls-mtls", "mtls-ok", &extra, "").await;
    let good = pki.leaf("client", &["client.example"]);
    let mut s = connect(addr, "a.example", pki.client(&[], Some(&good)))
        .await
        .expect("with a cert");
    assert_eq!(read_all(&mut s).await.expect("answer"), "mtls-ok");
    // No certificate, or one from another CA: refused (in TLS 1.3 the client learns it on
    // its first read), and the backend's answer never comes.
    let stranger = other.leaf("stranger", &["client.example"]);
    for (what, cert) in [("no certificate", None), ("another CA", Some(&stranger))] {
        let outcome = answer(connect(addr, "a.example", pki.client(&[], cert)).await).await;
        assert_eq!(outcome, None, "{what}");
    }
    assert_eq!(
        lb.metric_reaching(
            "lb_tls_handshakes_total",
            &[("listener", "main"), ("result", "error")],
            2.0
        )
        .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_tls_reencrypts_and_verifies() {
    let dir = scratch("tls-backend");
    let pki = Pki::new(&dir);
    let leaf = pki.leaf("internal", &["internal.example"]);
    let b = tls_named(&leaf, "encrypted-backend").await;
    let ca = pki.ca_path();
    let cfg = |tls: &str| config("round-robin", &[(b.addr, "")], tls, "");
    let lb = Lb::start(
        "tls-reenc",
        &cfg(&format!(
            "backend_tls = {{ ca = \"{}\", server_name = \"internal.example\" }}",
            ca.display()
        )),
    )
    .await;
    assert_eq!(
        fetch_name(lb.listener("main").await)
            .await
            .expect("through"),
        "encrypted-backend"
    );
    drop(lb);
    // The wrong name fails verification: the client gets nothing and the backend is blamed.
    let lb = Lb::start(
        "tls-reenc-bad",
        &cfg(&format!(
            "backend_tls = {{ ca = \"{}\", server_name = \"wrong.example\" }}",
            ca.display()
        )),
    )
    .await;
    assert!(fetch_name(lb.listener("main").await).await.is_err());
    let m = lb.metrics().await;
    assert!(metric(&m, "lb_connect_errors_total", &[]) >= 1.0, "{m}");
    drop(lb);
    // verify = false: encrypted, not authenticated; the wrong name is accepted.
    let lb = Lb::start(
        "tls-reenc-noverify",
        &cfg("backend_tls = { server_name = \"wrong.example\", verify = false }"),
    )
    .await;
    assert_eq!(
        fetch_name(lb.listener("main").await)
            .await
            .expect("through"),
        "encrypted-backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_certificates_take_effect_on_reload_without_dropping_connections() {
    let dir = scratch("tls-reload");
    let pki = Pki::new(&dir);
    let e = echo().await;
    let first = pki.leaf("site", &["site.example"]);
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        first.cert.display(),
        first.key.display()
    );
    let mut lb = Lb::start(
        "tls-reload",
        &config("round-robin", &[(e.addr, "")], "", &tls),
    )
    .await;
    let addr = lb.listener("main").await;
    let mut old = connect(addr, "site.example", pki.client(&[], None))
        .await
        .expect("first");
    assert_eq!(
        old.get_ref().1.peer_certificates().expect("cert")[0],
        first.der
    );
    old.write_all(b"before ").await.expect("write");
    // Same paths, new certificate: a reload picks it up for new connections only.
    let second = pki.leaf("site", &["site.example"]);
    lb.signal("HUP");
    lb.wait_log("config reloaded", Duration::from_secs(10));
    let fresh = connect(addr, "site.example", pki.client(&[], None))
        .await
        .expect("second");
    assert_eq!(
        fresh.get_ref().1.peer_certificates().expect("cert")[0],
        second.der
    );
    old.write_all(b"after")
        .await
        .expect("old connection still writes");
    old.shutdown().await.expect("close_notify");
    assert_eq!(read_all(&mut old).await.expect("echo"), "before after");
}

/// Passthrough listener: `sni_routes` to two TLS backends, anything else to `fallback`.
fn passthrough(a: &Backend, b: &Backend, fallback: &Backend) -> String {
    format!(
        "[global]\nworkers = 2\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\npool = \"fallback\"\naccess_log = true\n\
         sni_routes = {{ \"a.example\" = \"pool-a\", \"*.b.example\" = \"pool-b\" }}\n\n\
         [[pool]]\nname = \"pool-a\"\nbackends = [{{ addr = \"{}\" }}]\n\n\
         [[pool]]\nname = \"pool-b\"\nbackends = [{{ addr = \"{}\" }}]\n\n\
         [[pool]]\nname = \"fallback\"\nbackends = [{{ addr = \"{}\" }}]\n",
        a.addr, b.addr, fallback.addr
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_passthrough_reaches_the_backend_that_does_the_handshake() {
    let pki = Pki::new(&scratch("tls-pass"));
    let a = tls_named(&pki.leaf("a", &["a.example"]), "backend-a").await;
    let b = tls_named(
        &pki.leaf("b", &["x.b.example", "deep.y.b.example"]),
        "backend-b",
    )
    .await;
    let fallback = echo().await;
    let lb = Lb::start("tls-pass", &passthrough(&a, &b, &fallback)).await;
    let addr = lb.listener("main").await;
    for (name, want) in [
        ("a.example", "backend-a"),
        ("x.b.example", "backend-b"),
        ("deep.y.b.example", "backend-b"),
    ] {
        // The client verifies the backend's own certificate: lb never decrypted.
        let mut s = connect(addr, name, pki.client(&[], None))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(read_all(&mut s).await.expect("answer"), want, "{name}");
    }
    // A ClientHello trickling in over several segments and records is reassembled; an
    // unrouted name goes to the fallback pool (an echo: it returns the bytes intact).
    let hello = client_hello(Some("nobody.example"), &["h2"], 40);
    let mut s = TcpStream::connect(addr).await.expect("connect");
    for part in hello.chunks(hello.len() / 3 + 1) {
        s.write_all(part).await.expect("part");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await.expect("fin");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(back, hello);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_client_hello_closes_only_that_connection_and_is_counted() {
    let pki = Pki::new(&scratch("tls-badhello"));
    let a = tls_named(&pki.leaf("a", &["a.example"]), "backend-a").await;
    let fallback = echo().await;
    let lb = Lb::start("tls-badhello", &passthrough(&a, &fallback, &fallback)).await;
    let addr = lb.listener("main").await;
    // A connection in progress through lb: it must not notice the bad ones.
    let mut good = TcpStream::connect(addr).await.expect("connect");
    let hello = client_hello(Some("keep.example"), &[], 16_384);
    good.write_all(&hello).await.expect("hello");
    let mut echoed = vec![0u8; hello.len()];
    tokio::time::timeout(Duration::from_secs(5), good.read_exact(&mut echoed))
        .await
        .expect("in time")
        .expect("echo");
    let huge = [22u8, 3, 1, 0x40, 0, 1, 0, 0x50, 0];
    for bad in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &huge[..]] {
        let got = answer_before_close(addr, bad).await;
        assert!(got.is_empty(), "bad hello got an answer: {got:?}");
    }
    good.write_all(b"still here").await.expect("write");
    let mut tail = [0u8; 10];
    good.read_exact(&mut tail)
        .await
        .expect("echo after the bad ones");
    assert_eq!(&tail, b"still here");
    assert_eq!(lb.rejected("bad_client_hello", 2.0).await, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_key_sni_keeps_each_name_on_one_backend() {
    let backs = [named("s1").await, named("s2").await, named("s3").await];
    let list: Vec<(std::net::SocketAddr, &str)> = backs.iter().map(|b| (b.addr, "")).collect();
    // No sni_routes: the ClientHello is read only for the hash.
    let lb = Lb::start(
        "tls-hash-sni",
        &config("consistent-hash", &list, "hash_key = \"sni\"", ""),
    )
    .await;
    let addr = lb.listener("main").await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..16 {
        let hello = client_hello(Some(&format!("tenant{i}.example")), &[], 16_384);
        let mut names = Vec::new();
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(&hello).await.expect("hello");
            names.push(read_all(&mut s).await.expect("name"));
        }
        assert!(names.iter().all(|n| n == &names[0]), "tenant{i}: {names:?}");
        seen.insert(names[0].clone());
    }
    // One client address, many names: the names are what spreads.
    assert!(seen.len() >= 2, "every name went to {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_timeout_bounds_the_proxy_header_and_tls_together() {
    let pki = Pki::new(&scratch("tls-budget"));
    let budget = "accept_proxy_protocol = true
handshake_timeout = \"1s\"";
    let (_b, lb, addr) = tls_front(&pki, "tls-budget", "too-late", "", budget).await;
    // Each step alone is within the second; together they are not. (Wide margins: a late
    // accept only moves the budget's start, and a step arriving late fails the same way.)
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(900)).await;
    tcp.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 443\r\n")
        .await
        .expect("header");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let name = rustls::pki_types::ServerName::try_from("a.example").expect("name");
    let tls = tokio_rustls::TlsConnector::from(pki.client(&[], None)).connect(name, tcp);
    let session = tokio::time::timeout(Duration::from_secs(5), tls)
        .await
        .expect("ends");
    assert_eq!(answer(session).await, None);
    assert_eq!(lb.rejected("handshake_timeout", 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_client_is_retried_on_the_next_backend_when_one_closes_at_once() {
    let pki = Pki::new(&scratch("tls-retry"));
    let dead = common::backends::closer().await;
    let live = named("live").await;
    let listener = tls_listener(&pki, "");
    let lb = Lb::start(
        "tls-retry",
        &config(
            "round-robin",
            &[(dead.addr, ""), (live.addr, "")],
            "",
            &listener,
        ),
    )
    .await;
    let addr = lb.listener("main").await;
    // Round-robin sends every other client to the closer first: each must still be answered
    // by the live backend over its untouched TLS session.
    for i in 0..6 {
        let mut s = connect(addr, "a.example", pki.client(&[], None))
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(
            read_all(&mut s).await.expect("answer"),
            "live",
            "client {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_listener_takes_the_proxy_header_only_from_a_trusted_proxy() {
    let pki = Pki::new(&scratch("tls-trusted"));
    let trust = "accept_proxy_protocol = true\ntrusted_proxies = [\"127.0.0.2\"]";
    let (_b, lb, addr) = tls_front(&pki, "tls-trusted", "behind", "", trust).await;
    for (from, want) in [("127.0.0.2", Some("behind")), ("127.0.0.1", None)] {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(format!("{from}:0").parse().expect("addr"))
            .expect("bind source");
        let mut tcp = sock.connect(addr).await.expect("connect");
        // An untrusted peer may be closed before the header is even written.
        let _ = tcp
            .write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 443\r\n")
            .await;
        let name = rustls::pki_types::ServerName::try_from("a.example").expect("name");
        let tls = tokio_rustls::TlsConnector::from(pki.client(&[], None)).connect(name, tcp);
        let session = tokio::time::timeout(Duration::from_secs(5), tls)
            .await
            .expect("ends");
        assert_eq!(answer(session).await.as_deref(), want, "from {from}");
    }
    assert_eq!(lb.rejected("untrusted_proxy", 1.0).await, 1.0);
}
