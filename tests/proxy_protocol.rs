//! The PROXY protocol end to end: lb sends v1 and v2 headers that a backend parsing them
//! (independently of lb's parser) reads the client's real address from; lb accepts headers
//! from a balancer in front, split across reads, and passes the address on to backends,
//! hashing and logs; a broken header closes only its connection and is counted.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::backends::{echo, Backend};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Reads one PROXY header (v1 or v2, written by lb) and answers `source=IP:PORT payload=…\n`
/// with the first payload bytes it got (and ` destination=IP:PORT` after them), then closes.
async fn header_reader() -> Backend {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let answer = loop {
                    if let Some((src, dst, rest)) = parse(&buf) {
                        let rest = String::from_utf8_lossy(rest);
                        break format!("source={src} payload={rest} destination={dst}\n");
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break format!("no header in {buf:?}\n"),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Backend::from_task(addr, task)
}

/// A deliberately separate reading of the spec: v1 is a text line, v2 a 16-byte preamble.
fn parse(buf: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    if buf.starts_with(SIG) {
        if buf.len() < 16 {
            return None;
        }
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        let body = buf.get(16..16 + len)?;
        let (src, dst) = match buf[13] {
            0x11 => {
                let ip = |at: usize| {
                    IpAddr::from(Ipv4Addr::new(
                        body[at],
                        body[at + 1],
                        body[at + 2],
                        body[at + 3],
                    ))
                };
                let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                (
                    SocketAddr::new(ip(0), port(8)),
                    SocketAddr::new(ip(4), port(10)),
                )
            }
            0x21 => {
                let ip = |at: usize| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&body[at..at + 16]);
                    IpAddr::from(o)
                };
                let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                (
                    SocketAddr::new(ip(0), port(32)),
                    SocketAddr::new(ip(16), port(34)),
                )
            }
            f => panic!("unexpected family {f:#x}"),
        };
        // Only the payload that arrived with the header is echoed; wait for some.
        let rest = &buf[16 + len..];
        return (!rest.is_empty()).then_some((src, dst, rest));
    }
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..end]).ok()?;
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[0], "PROXY", "{line}");
    let rest = &buf[end + 2..];
    (!rest.is_empty()).then(|| {
        (
            SocketAddr::new(f[2].parse().expect("ip"), f[4].parse().expect("port")),
            SocketAddr::new(f[3].parse().expect("ip"), f[5].parse().expect("port")),
            rest,
        )
    })
}

async fn from_ip(addr: SocketAddr, ip: &str, payload: &[u8]) -> (SocketAddr, String) {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(ip.parse().expect("ip"), 0))
        .expect("bind");
    let mut s = sock.connect(addr).await.expect("connect");
    let local = s.local_addr().expect("local");
    s.write_all(payload).await.expect("write");
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
        .await
        .expect("in time")
        .expect("read");
    (local, got.trim().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_see_the_client_address_in_v1_and_v2() {
    let b = header_reader().await;
    for version in ["v1", "v2"] {
        let lb = Lb::start(
            &format!("pp-send-{version}"),
            &config(
                "round-robin",
                &[(b.addr, "")],
                "",
                &format!("proxy_protocol = \"{version}\""),
            ),
        )
        .await;
        let addr = lb.listener("main").await;
        let (local, answer) = from_ip(addr, "127.0.0.7", b"hello").await;
        assert_eq!(
            answer,
            format!("source={local} payload=hello destination={addr}"),
            "{version}"
        );
    }
}

/// The header's destination is the address the client reached: lb's listener address when
/// it names one (no system call asks the socket), the connection's own behind a wildcard.
#[tokio::test(flavor = "multi_thread")]
async fn the_destination_is_the_address_the_client_reached() {
    let b = header_reader().await;
    // A wildcard with a port of its own: only the address is left to the connection.
    let wild_port = free_port(&["0.0.0.0"]);
    let fixed: SocketAddr = format!("127.0.0.1:{}", free_port(&["127.0.0.1"]))
        .parse()
        .expect("addr");
    let text = format!(
        "[global]\nworkers = 1\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"wild\"\nbind = \"0.0.0.0:{wild_port}\"\npool = \"p\"\nproxy_protocol = \"v2\"\n\n\
         [[listener]]\nname = \"fixed\"\nbind = \"{fixed}\"\npool = \"p\"\nproxy_protocol = \"v1\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ addr = \"{}\" }}]\n",
        b.addr
    );
    let lb = Lb::start("pp-destination", &text).await;
    let wild = lb.listener("wild").await;
    // Two loopback addresses reach the wildcard listener: each is its connection's own.
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let reached = SocketAddr::new(ip.parse().expect("ip"), wild.port());
        let (local, answer) = from_ip(reached, "127.0.0.9", b"x").await;
        assert_eq!(
            answer,
            format!("source={local} payload=x destination={reached}")
        );
    }
    let (local, answer) = from_ip(fixed, "127.0.0.9", b"y").await;
    assert_eq!(
        answer,
        format!("source={local} payload=y destination={fixed}")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_accepted_header_split_across_reads_is_passed_on() {
    let b = header_reader().await;
    let lb = Lb::start(
        "pp-accept",
        &config(
            "round-robin",
            &[(b.addr, "")],
            "",
            "accept_proxy_protocol = true\nproxy_protocol = \"v2\"\naccess_log = true",
        ),
    )
    .await;
    let addr = lb.listener("main").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    for part in [
        &b"PROXY TCP4 203.0"[..],
        b".113.9 127.0.0.1 4242 80\r",
        b"\nGET",
    ] {
        s.write_all(part).await.expect("part");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
        .await
        .expect("in time")
        .expect("read");
    // The source is the accepted header's; the destination lb's own listener address, as
    // nginx's stream proxy sends it (HAProxy would pass the accepted header's on).
    assert_eq!(
        got.trim(),
        format!("source=203.0.113.9:4242 payload=GET destination={addr}")
    );
    // The access line is written when both sides have closed.
    drop(s);
    let mut lb = lb;
    lb.wait_log("client=203.0.113.9:4242", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn hashing_by_source_uses_the_accepted_address() {
    let backs = [
        common::backends::named("h1").await,
        common::backends::named("h2").await,
        common::backends::named("h3").await,
    ];
    let list: Vec<(SocketAddr, &str)> = backs.iter().map(|b| (b.addr, "")).collect();
    let lb = Lb::start(
        "pp-hash",
        &config(
            "consistent-hash",
            &list,
            "hash_key = \"source-ip\"",
            "accept_proxy_protocol = true",
        ),
    )
    .await;
    let addr = lb.listener("main").await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..24u8 {
        let header = format!(
            "PROXY TCP4 198.51.100.{i} 127.0.0.1 {} 80\r\n",
            1000 + u16::from(i)
        );
        let mut names = Vec::new();
        // Same claimed source from different real ports: same backend each time.
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(header.as_bytes()).await.expect("header");
            let mut got = String::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
                .await
                .expect("in time")
                .expect("read");
            names.push(got.trim().to_string());
        }
        assert!(
            names.iter().all(|n| n == &names[0]),
            "198.51.100.{i}: {names:?}"
        );
        seen.insert(names[0].clone());
    }
    // The claimed addresses, not the one real one (127.0.0.1), are what is hashed.
    assert!(seen.len() >= 2, "all sources went to {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_header_is_refused_without_harming_other_connections() {
    let e = echo().await;
    let lb = Lb::start(
        "pp-broken",
        &config(
            "round-robin",
            &[(e.addr, "")],
            "",
            "accept_proxy_protocol = true",
        ),
    )
    .await;
    let addr = lb.listener("main").await;
    let mut good = TcpStream::connect(addr).await.expect("connect");
    good.write_all(b"PROXY TCP6 2001:db8::1 ::1 5000 80\r\nfirst")
        .await
        .expect("write");
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), good.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("echo");
    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
    ] {
        let got = answer_before_close(addr, bad).await;
        assert!(got.is_empty(), "{bad:?} got {got:?}");
    }
    good.write_all(b"second").await.expect("write");
    let mut buf = [0u8; 6];
    good.read_exact(&mut buf).await.expect("still echoing");
    assert_eq!(&buf, b"second");
    assert_eq!(lb.rejected("bad_proxy_header", 3.0).await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_header_times_out_and_is_counted() {
    let e = echo().await;
    let lb = Lb::start(
        "pp-slow",
        &config(
            "round-robin",
            &[(e.addr, "")],
            "",
            "accept_proxy_protocol = true\nhandshake_timeout = \"300ms\"",
        ),
    )
    .await;
    let addr = lb.listener("main").await;
    let got = answer_before_close(addr, b"PROXY TCP4 1.2.3.4").await;
    assert!(got.is_empty());
    assert_eq!(lb.rejected("handshake_timeout", 1.0).await, 1.0);
}
