//! A recording origin for HTTP tests: it reads requests the way a strict origin server
//! does (a PROXY header first if one comes, then heads framed by Content-Length or chunked
//! encoding, pipelined ones in order), records exactly what it received, and answers each
//! with `200` and `origin <n>`. Tests assert on what reached it, never on what lb says it sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::backends::Backend;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which of the origin's connections it came on (0, 1, …).
    pub conn: u64,
    /// The PROXY header its connection began with, if any (v1 text, or `v2` + the bytes).
    pub proxy: Option<Vec<u8>>,
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// Every value of field `name` (any case).
    pub fn fields(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.fields(name).into_iter().next()
    }
}

/// A running origin.
pub struct Origin {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicU64>,
    /// `true`: stop accepting and close each connection at its next request boundary.
    kill: watch::Sender<bool>,
    _task: Backend,
}

impl Origin {
    pub async fn start() -> Origin {
        Self::answering(|_| Reply::Ok).await
    }

    /// An origin that answers what `answer` says for each request.
    pub async fn answering<F>(answer: F) -> Origin
    where
        F: Fn(&Received) -> Reply + Send + Sync + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let (kill, killed) = watch::channel(false);
        let answer = Arc::new(answer);
        let (rec, count) = (received.clone(), connections.clone());
        let mut stop = killed.clone();
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = l.accept() => a,
                    _ = stop.wait_for(|k| *k) => return,
                };
                let Ok((s, _)) = accepted else { return };
                let conn = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, conn, rec.clone(), answer.clone(), killed.clone()));
            }
        });
        Origin {
            addr,
            received,
            connections,
            kill,
            _task: Backend::from_task(addr, task),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// What arrived since `from` requests.
    pub fn since(&self, from: usize) -> Vec<Received> {
        self.received().split_off(from)
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Goes away as a server process does when it is stopped: no new connections (they are
    /// refused), and each open one closed as soon as it is between requests.
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }
}

/// How the origin answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Ok,
    /// Wait this long, then answer.
    After(Duration),
    /// Close the connection without an answer.
    Close,
    /// Answer with this status instead of 200.
    Status(u16),
}

async fn serve<F>(
    mut s: TcpStream,
    conn: u64,
    rec: Arc<Mutex<Vec<Received>>>,
    answer: Arc<F>,
    mut killed: watch::Receiver<bool>,
) where
    F: Fn(&Received) -> Reply + Send + Sync + 'static,
{
    let mut buf = Vec::new();
    let mut proxy = None;
    let mut first = true;
    loop {
        let request = tokio::select! {
            r = read_request(&mut s, &mut buf, first.then_some(&mut proxy)) => r,
            _ = killed.wait_for(|k| *k), if buf.is_empty() => return,
        };
        first = false;
        let Some((head, body)) = request else { return };
        let r = Received {
            conn,
            proxy: proxy.clone(),
            head,
            body,
        };
        let reply = answer(&r);
        let n = {
            let mut all = rec.lock().expect("lock");
            all.push(r);
            all.len()
        };
        let status = match reply {
            Reply::Close => return,
            Reply::After(d) => {
                tokio::time::sleep(d).await;
                200
            }
            Reply::Ok => 200,
            Reply::Status(s) => s,
        };
        let text = format!("origin {n}");
        let out = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if s.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    let n = s.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

/// The v2 PROXY signature.
const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// One request off the connection (head as text, body bytes); a PROXY header first when
/// `proxy` asks for it.
async fn read_request(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    proxy: Option<&mut Option<Vec<u8>>>,
) -> Option<(String, Vec<u8>)> {
    if let Some(proxy) = proxy {
        while buf.len() < 16 {
            more(s, buf).await?;
        }
        if buf.starts_with(b"PROXY ") {
            while !buf.windows(2).any(|w| w == b"\r\n") {
                more(s, buf).await?;
            }
            let end = buf.windows(2).position(|w| w == b"\r\n")? + 2;
            *proxy = Some(buf.drain(..end).collect());
        } else if buf.starts_with(V2) {
            let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            while buf.len() < 16 + len {
                more(s, buf).await?;
            }
            *proxy = Some(buf.drain(..16 + len).collect());
        }
    }
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        more(s, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let fields: Vec<(&str, &str)> = lower
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect();
    let chunked = fields
        .iter()
        .rev()
        .find(|(n, _)| *n == "transfer-encoding")
        .is_some_and(|(_, v)| v.rsplit(',').next().is_some_and(|c| c.trim() == "chunked"));
    let body = if chunked {
        read_chunked(s, buf).await?
    } else {
        let len: usize = fields
            .iter()
            .find(|(n, _)| *n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            more(s, buf).await?;
        }
        buf.drain(..len).collect()
    };
    Some((head, body))
}

/// A chunked body, decoded (trailers read and dropped).
async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            more(s, buf).await?;
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).to_string();
        buf.drain(..line_end + 2);
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                let end = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    more(s, buf).await?;
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Some(body);
                }
            }
        }
        while buf.len() < size + 2 {
            more(s, buf).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Sends `bytes` on a new connection and reads up to `n` responses (each framed by its
/// Content-Length or chunked body), or until lb closes (bounded: 5 s): status, head, body.
pub async fn responses(addr: SocketAddr, bytes: &[u8], n: usize) -> Vec<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_responses(&mut s, n).await
}

/// Reads up to `n` responses from `s` (bounded: 5 s).
pub async fn read_responses(s: &mut TcpStream, n: usize) -> Vec<(u16, String, String)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let read = async {
        while out.len() < n {
            if let Some((len, resp)) = complete(&buf) {
                out.push(resp);
                buf.drain(..len);
                continue;
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    out
}

fn complete(buf: &[u8]) -> Option<(usize, (u16, String, String))> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let lower = head.to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let (len, body) = if lower.contains("transfer-encoding: chunked") {
        let i = buf[head_end..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        (
            head_end + i + 5,
            String::from_utf8_lossy(&buf[head_end..head_end + i]).to_string(),
        )
    } else {
        let n: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(Some(0), |v| v.trim().parse().ok())?;
        if buf.len() < head_end + n {
            return None;
        }
        (
            head_end + n,
            String::from_utf8_lossy(&buf[head_end..head_end + n]).to_string(),
        )
    };
    Some((len, (status, head, body)))
}
