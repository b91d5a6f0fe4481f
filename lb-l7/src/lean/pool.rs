//! The lean path's idle backend connections: plain TCP streams that finished an exchange
//! cleanly, kept per backend (bounded, with the same idle timeout as the full path's pool).

use std::sync::Mutex;

use tokio::net::TcpStream;

use crate::upstream::{IDLE_PER_BACKEND, IDLE_TIMEOUT_MS};

/// One backend's idle connections, with when each was returned.
#[derive(Debug, Default)]
pub struct Idle {
    conns: Mutex<Vec<(u64, TcpStream)>>,
}

impl Idle {
    /// The newest connection still open and not idle too long. A connection the backend
    /// closed, or that holds bytes nobody asked for, is dropped: that costs no syscall
    /// unless its socket was reported readable.
    pub fn take(&self) -> Option<TcpStream> {
        let now = lb_core::clock::now_ms();
        loop {
            let (at, s) = lock(&self.conns).pop()?;
            if now.saturating_sub(at) >= IDLE_TIMEOUT_MS {
                continue;
            }
            match s.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(s),
                _ => continue,
            }
        }
    }

    pub fn put(&self, s: TcpStream) {
        let now = lb_core::clock::now_ms();
        let mut idle = lock(&self.conns);
        if idle.len() >= IDLE_PER_BACKEND {
            idle.retain(|(at, _)| now.saturating_sub(*at) < IDLE_TIMEOUT_MS);
        }
        if idle.len() < IDLE_PER_BACKEND {
            idle.push((now, s));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves plain data: carry on with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn closed_or_dirty_connections_are_not_lent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let idle = Idle::default();
        let mut served = Vec::new();
        for _ in 0..3 {
            let c = TcpStream::connect(addr).await.expect("connect");
            served.push(listener.accept().await.expect("accept").0);
            idle.put(c);
        }
        // Newest first: the third is closed by its server, the second gets stray bytes.
        drop(served.pop());
        served[1].write_all(b"stray").await.expect("write");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let lent = idle.take().expect("the first is still good");
        let served_first = served[0].peer_addr().expect("peer");
        assert_eq!(lent.local_addr().expect("local"), served_first);
        assert!(idle.take().is_none());
    }
}
