//! How the gateway uses its backends: retries that never replay a sent body, stickiness by
//! cookie and by hash key, WebSocket tunnels, body limits, and slow clients cut off.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lb_core::backend::AdminState;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_failures_are_retried_for_any_method() {
    let dead = dead_addr().await;
    let good = backend("good").await;
    let routes = "[[route]]\nlistener = \"web\"\npool = \"p0\"\nretries = 1\n";
    let (gw, _) = gateway(&config(&[(&[dead, good.addr], "")], "", routes)).await;
    for i in 0..6 {
        // The request never left for the dead backend: even a POST with a body may go on.
        let (s, _, body) = raw(gw, &post(&format!("/p/{i}"), "payload")).await;
        assert_eq!(s, 200, "{body}");
        assert!(body.starts_with(&format!("good POST /p/{i}")), "{body}");
    }
    assert_eq!(good.requests(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sent_post_is_never_replayed_but_a_get_is_retried() {
    let (swallow, good) = (swallower().await, backend("good").await);
    let routes = "[[route]]\nlistener = \"web\"\npool = \"p0\"\nretries = 1\n";
    let (gw, _) = gateway(&config(&[(&[swallow.addr, good.addr], "")], "", routes)).await;
    let n = 8;
    let mut ok = 0;
    for i in 0..n {
        let (s, _, body) = raw(gw, &post(&format!("/p/{i}"), "do-it-once")).await;
        match s {
            200 => ok += 1,
            502 => {}
            other => panic!("POST answered {other}: {body}"),
        }
    }
    // Every POST reached exactly one backend: none was sent twice.
    assert_eq!(good.requests(), ok);
    assert_eq!(
        swallow.requests() + good.requests(),
        n,
        "a POST was replayed"
    );
    assert!(
        swallow.requests() > 0,
        "round-robin never tried the failing backend"
    );
    // A GET without a body left for the swallower, failed, and went on to the good backend.
    let before = swallow.requests();
    for i in 0..n {
        let (s, body) = fetch(gw, "h", &format!("/g/{i}"), "").await;
        assert_eq!(s, 200, "{body}");
    }
    assert!(swallow.requests() > before);
    assert_eq!(good.requests(), ok + n);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_502_and_503_are_retried_only_when_replay_is_safe() {
    let (bad, good) = (failing(503).await, backend("good").await);
    let routes = "[[route]]\nlistener = \"web\"\npool = \"p0\"\nretries = 2\n";
    let (gw, _) = gateway(&config(&[(&[bad.addr, good.addr], "")], "", routes)).await;
    for i in 0..6 {
        let (s, body) = fetch(gw, "h", &format!("/g/{i}"), "").await;
        assert_eq!(s, 200, "{body}");
    }
    let mut passed_through = 0;
    for i in 0..6 {
        let (s, _, _) = raw(gw, &post(&format!("/p/{i}"), "x")).await;
        match s {
            200 => {}
            503 => passed_through += 1,
            other => panic!("POST answered {other}"),
        }
    }
    assert!(
        passed_through > 0,
        "a POST's 503 must reach the client, not be retried"
    );
    // Without retries, the backend's answer is the answer.
    let (gw, _) = gateway(&config(&[(&[bad.addr], "")], "pool = \"p0\"", "")).await;
    assert_eq!(fetch(gw, "h", "/", "").await.0, 503);
}

fn cookie_of(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .find_map(|l| {
            let v = l.split_once(':')?.1.trim();
            let pair = v.split(';').next()?;
            let (n, v) = pair.split_once('=')?;
            (n == name).then(|| v.to_string())
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_cookie_keeps_a_client_on_its_backend() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let pool = "sticky_cookie = \"lb_srv\"";
    let (gw, g) = gateway(&config(
        &[(&[a.addr, b.addr, c.addr], pool)],
        "pool = \"p0\"",
        "",
    ))
    .await;
    let (_, head, body) = raw(gw, &get("h", "/")).await;
    let first = body.split(' ').next().expect("name").to_string();
    let cookie = cookie_of(&head, "lb_srv").expect("lb inserts its cookie");
    assert!(
        !cookie.contains("127.0.0.1"),
        "the cookie must not reveal backend addresses"
    );
    let with = format!("Cookie: theme=dark; lb_srv={cookie}\r\n");
    for _ in 0..9 {
        let (_, head, body) = raw(
            gw,
            &format!("GET / HTTP/1.1\r\nHost: h\r\n{with}Connection: close\r\n\r\n"),
        )
        .await;
        assert!(body.starts_with(&format!("{first} ")), "{body}");
        assert!(
            cookie_of(&head, "lb_srv").is_none(),
            "no new cookie for a client that has the right one"
        );
    }
    // Without the cookie, clients spread.
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..6 {
        names.insert(
            fetch(gw, "h", "/", "")
                .await
                .1
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(names.len(), 3, "{names:?}");
    // A draining backend keeps its sticky clients; a disabled one hands them over.
    let pool = &g.pools[0].as_ref().expect("pool").pool;
    let i = ["a", "b", "c"]
        .iter()
        .position(|n| *n == first)
        .expect("known name");
    pool.backends[i].set_admin_state(AdminState::Draining);
    let req = format!("GET / HTTP/1.1\r\nHost: h\r\n{with}Connection: close\r\n\r\n");
    assert!(raw(gw, &req).await.2.starts_with(&format!("{first} ")));
    pool.backends[i].set_admin_state(AdminState::Disabled);
    let (_, head, body) = raw(gw, &req).await;
    assert!(!body.starts_with(&format!("{first} ")), "{body}");
    assert!(
        cookie_of(&head, "lb_srv").is_some_and(|c| c != cookie),
        "moved clients get a new cookie"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_keys_from_the_request_stick() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let pool = "algorithm = \"consistent-hash\"\nhash_key = \"header:x-user\"";
    let (gw, _) = gateway(&config(
        &[(&[a.addr, b.addr, c.addr], pool)],
        "pool = \"p0\"",
        "",
    ))
    .await;
    let mut by_user = std::collections::BTreeMap::new();
    for round in 0..3 {
        for user in 0..12 {
            let (_, body) = fetch(
                gw,
                "h",
                &format!("/r{round}"),
                &format!("X-User: u{user}\r\n"),
            )
            .await;
            let name = body.split(' ').next().unwrap_or("").to_string();
            let seen = by_user.entry(user).or_insert_with(|| name.clone());
            assert_eq!(*seen, name, "user {user} moved");
        }
    }
    let distinct: std::collections::BTreeSet<_> = by_user.values().collect();
    assert!(
        distinct.len() > 1,
        "12 users all on one backend: {by_user:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_are_tunnelled_both_ways() {
    let echo = websocket_echo().await;
    let (gw, _) = gateway(&config(&[(&[echo], "")], "pool = \"p0\"", "")).await;
    let tcp = TcpStream::connect(gw).await.expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{gw}/chat"), tcp)
        .await
        .expect("websocket handshake through lb");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("open")
            .expect("message");
        assert_eq!(back.into_text().expect("text").as_str(), text);
    }
    let big = vec![42u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.expect("send");
    let back = ws.next().await.expect("open").expect("message");
    assert_eq!(back.into_data().as_ref(), &big[..]);
    ws.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_route_limit_get_413() {
    let b = backend("b").await;
    let routes = "[[route]]\nlistener = \"web\"\nmatch = { path_prefix = \"/small\" }\npool = \"p0\"\nstrip_prefix = true\nmax_body_size = 1000\n";
    let (gw, _) = gateway(&config(
        &[(&[b.addr], "")],
        "pool = \"p0\"\nmax_body_size = \"1MiB\"",
        routes,
    ))
    .await;
    let big = "x".repeat(2000);
    let (s, _, body) = raw(gw, &post("/small/count", &big)).await;
    assert_eq!(s, 413, "{body}");
    assert!(body.contains("\"status\":413"), "{body}");
    assert_eq!(
        b.requests(),
        0,
        "a declared oversize body is refused before the backend"
    );
    // Chunked: the limit is found while streaming.
    let chunked = format!(
        "POST /small/count HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7d0\r\n{big}\r\n0\r\n\r\n"
    );
    assert_eq!(raw(gw, &chunked).await.0, 413);
    // Under the limit, and the listener's limit elsewhere.
    assert_eq!(raw(gw, &post("/small/count", &big[..900])).await.2, "900");
    assert_eq!(raw(gw, &post("/count", &big)).await.2, "2000");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_header_client_is_cut_while_others_are_served() {
    let b = backend("b").await;
    let (gw, _) = gateway(&config(
        &[(&[b.addr], "")],
        "pool = \"p0\"\nheader_timeout = \"500ms\"",
        "",
    ))
    .await;
    let mut slow = TcpStream::connect(gw).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let dribble = tokio::spawn(async move {
        // One header byte every 100 ms: never a whole head.
        for _ in 0..40 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        buf
    });
    for i in 0..5 {
        let (s, body) = fetch(gw, "h", &format!("/ok/{i}"), "").await;
        assert_eq!(s, 200, "{body}");
    }
    let _ = dribble.await.expect("task");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the slow client was not cut: {took:?}"
    );
    assert_eq!(b.requests(), 5);
}

/// RFC 8441: a WebSocket opened by extended CONNECT on an HTTP/2 connection reaches an
/// HTTP/1.1 WebSocket backend as an ordinary upgrade.
#[tokio::test(flavor = "multi_thread")]
async fn websockets_over_http2_reach_http1_backends() {
    use tokio_tungstenite::tungstenite::protocol::Role;
    let echo = websocket_echo().await;
    let (gw, _) = gateway(&config(&[(&[echo], "")], "pool = \"p0\"", "")).await;
    let tcp = TcpStream::connect(gw).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut req = http::Request::connect(format!("http://{gw}/chat"))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200, "RFC 8441 accepts with 200");
    assert!(resp.headers().get("sec-websocket-accept").is_none());
    let io = hyper::upgrade::on(resp).await.expect("upgraded stream");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(io),
        Role::Client,
        None,
    )
    .await;
    for i in 0..5 {
        let text = format!("over h2 {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("open")
            .expect("message");
        assert_eq!(back.into_text().expect("text").as_str(), text);
    }
}

/// A backend that switches any `Upgrade: foo` request to protocol `foo` and echoes what
/// follows; records the heads it got.
async fn foo_echo() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                seen.lock().expect("lock").push(head.clone());
                if head.contains("upgrade: foo") {
                    let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n").await;
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                } else {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
                        .await;
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_upgrades_a_route_lists_are_tunnelled() {
    let (be, heads) = foo_echo().await;
    let routes = "[[route]]\nlistener = \"web\"\nname = \"foo\"\nmatch = { path_prefix = \"/foo\" }\npool = \"p0\"\nupgrades = [\"websocket\", \"foo\"]\n";
    let (lb, _) = gateway(&config(&[(&[be], "")], "pool = \"p0\"", routes)).await;
    let ask = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n")
    };
    // A route that lists it: switched, and bytes go both ways.
    let mut s = TcpStream::connect(lb).await.expect("connect");
    s.write_all(ask("/foo/x").as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut one = [0u8; 1];
        assert_eq!(s.read(&mut one).await.expect("read"), 1);
        head.extend_from_slice(&one);
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping").await.expect("write");
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"ping");
    // Elsewhere (websocket only): a plain request, without its upgrade fields.
    let (status, _, body) = raw(
        lb,
        &ask("/other").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "plain"));
    let last = heads.lock().expect("lock").last().cloned().expect("a head");
    assert!(
        !last.contains("upgrade") && !last.contains("connection"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_authority_and_host_must_agree() {
    let b = backend("b").await;
    let (lb, _) = gateway(&config(&[(&[b.addr], "")], "pool = \"p0\"", "")).await;
    let tcp = TcpStream::connect(lb).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for (host, want) in [("a.example", 200), ("A.EXAMPLE", 200), ("b.example", 400)] {
        let req = http::Request::get("http://a.example/x")
            .header("host", host)
            .body(http_body_util::Empty::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("answer");
        assert_eq!(resp.status(), want, "host {host}");
    }
}
