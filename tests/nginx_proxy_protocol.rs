//! A real program reads lb's PROXY headers: nginx (installed by scripts/test.sh) listening
//! with `proxy_protocol` answers with the client address it was told.
#![cfg(feature = "external-tests")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx on a free port, expecting a PROXY header, answering `$proxy_protocol_addr:port`.
async fn nginx() -> (Nginx, std::net::SocketAddr) {
    let dir = scratch("nginx-pp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{ listen 127.0.0.1:{port} proxy_protocol;\n\
             location / {{ return 200 \"$proxy_protocol_addr:$proxy_protocol_port\\n\"; }} }} }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("conf");
    let guard = Nginx(
        Command::new("nginx")
            .args([
                "-p",
                &d.to_string(),
                "-c",
                &format!("{d}/nginx.conf"),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed by scripts/test.sh"),
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            return (guard, addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not start; see {d}/error.log");
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_reads_the_client_address_from_v1_and_v2() {
    let (_nginx, addr) = nginx().await;
    for version in ["v1", "v2"] {
        let lb = Lb::start(
            &format!("nginx-pp-{version}"),
            &config(
                "round-robin",
                &[(addr, "")],
                "",
                &format!("proxy_protocol = \"{version}\""),
            ),
        )
        .await;
        let through = lb.listener("main").await;
        let sock = TcpSocket::new_v4().expect("socket");
        sock.bind("127.0.0.9:0".parse().expect("ip")).expect("bind");
        let mut s = sock.connect(through).await.expect("connect");
        let local = s.local_addr().expect("local");
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
            .await
            .expect("in time")
            .expect("read");
        assert!(got.starts_with("HTTP/1.1 200"), "{version}: {got}");
        assert!(
            got.trim_end().ends_with(&local.to_string()),
            "{version}: nginx saw another address: {got}"
        );
    }
}
