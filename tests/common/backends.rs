//! In-process test backends on 127.0.0.1:0.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running backend; `stop()` closes its port (new connects are refused).
pub struct Backend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Backend {
    pub fn from_task(addr: SocketAddr, task: JoinHandle<()>) -> Backend {
        Backend { addr, task }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F, Fut>(bind: SocketAddr, handler: F) -> Backend
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind(bind).await.expect("bind backend");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                r = l.accept() => match r {
                    Ok((s, _)) => { conns.spawn(handler(s)); }
                    Err(_) => return,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Backend { addr, task }
}

/// Answers every connection with `name\n`, then closes after the client does.
pub async fn named(name: &str) -> Backend {
    named_at("127.0.0.1:0".parse().expect("addr"), name).await
}

pub async fn named_at(bind: SocketAddr, name: &str) -> Backend {
    let name = format!("{name}\n");
    serve(bind, move |mut s| {
        let name = name.clone();
        async move {
            let _ = s.write_all(name.as_bytes()).await;
            let _ = s.shutdown().await;
            let mut sink = [0u8; 256];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    })
    .await
}

/// Echoes everything; after the client's FIN, finishes echoing and sends its own FIN.
pub async fn echo() -> Backend {
    serve("127.0.0.1:0".parse().expect("addr"), |s| async move {
        let (mut r, mut w) = s.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Reads until EOF, then answers with the hex SHA-256 and byte count of what it read.
pub async fn hasher() -> Backend {
    serve("127.0.0.1:0".parse().expect("addr"), |mut s| async move {
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k as u64;
                }
                Err(_) => return,
            }
        }
        let _ = s
            .write_all(format!("{:x} {n}\n", h.finalize()).as_bytes())
            .await;
        let _ = s.shutdown().await;
    })
    .await
}

/// Sends `len` bytes of a fixed pattern, then its FIN.
pub async fn source(len: u64) -> Backend {
    serve(
        "127.0.0.1:0".parse().expect("addr"),
        move |mut s| async move {
            let mut left = len;
            let mut block = vec![0u8; 64 * 1024];
            let mut seed = 0u64;
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                fill(&mut block[..k], &mut seed);
                if s.write_all(&block[..k]).await.is_err() {
                    return;
                }
                left -= k as u64;
            }
            let _ = s.shutdown().await;
        },
    )
    .await
}

/// Deterministic, incompressible-looking bytes (xorshift) so corruption cannot hide.
pub fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// Accepts every connection and closes it at once, before a byte either way (a backend
/// dying with connections in its accept queue).
pub async fn closer() -> Backend {
    serve(
        "127.0.0.1:0".parse().expect("addr"),
        |s| async move { drop(s) },
    )
    .await
}

/// Accepts and holds connections open without reading (for limit and idle tests).
pub async fn silent() -> Backend {
    serve("127.0.0.1:0".parse().expect("addr"), |mut s| async move {
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

/// A UDP backend: answers "ping" with "pong" (health checks), and anything else with
/// `name|` followed by the datagram itself. `stop()` closes it (later datagrams get ICMP
/// port unreachable).
pub async fn udp_named(name: &str) -> Backend {
    udp_named_at("127.0.0.1:0".parse().expect("addr"), name).await
}

pub async fn udp_named_at(bind: SocketAddr, name: &str) -> Backend {
    let s = tokio::net::UdpSocket::bind(bind)
        .await
        .expect("bind udp backend");
    let addr = s.local_addr().expect("addr");
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let reply = if &buf[..n] == b"ping" {
                b"pong".to_vec()
            } else {
                let mut r = format!("{name}|").into_bytes();
                r.extend_from_slice(&buf[..n]);
                r
            };
            let _ = s.send_to(&reply, from).await;
        }
    });
    Backend { addr, task }
}
