//! Idle keep-alive connections to one backend, for both HTTP clients (the general path's
//! hyper senders, the lean path's plain streams): newest first (warm caches, and the
//! backend's keep-alive timer is least likely to have run out), bounded, forgotten after the
//! idle timeout or once the caller's check says they closed.

use std::sync::Mutex;

use tokio::net::TcpStream;

/// Idle keep-alive connections kept per backend, and for how long.
pub const IDLE_PER_BACKEND: usize = 64;
pub const IDLE_TIMEOUT_MS: u64 = 60_000;

/// One backend's idle connections, with when each was returned.
#[derive(Debug)]
pub struct Idle<T> {
    conns: Mutex<Vec<(u64, T)>>,
}

impl<T> Default for Idle<T> {
    fn default() -> Self {
        Self {
            conns: Mutex::new(Vec::new()),
        }
    }
}

impl<T> Idle<T> {
    /// The newest connection not idle too long for which `open` holds.
    pub fn take(&self, open: impl Fn(&T) -> bool) -> Option<T> {
        let now = lb_core::clock::now_ms();
        loop {
            let (at, c) = lock(&self.conns).pop()?;
            if now.saturating_sub(at) < IDLE_TIMEOUT_MS && open(&c) {
                return Some(c);
            }
        }
    }

    /// Keeps `c` for the next exchange, if there is room once stale ones are forgotten.
    pub fn put(&self, c: T, open: impl Fn(&T) -> bool) {
        let now = lb_core::clock::now_ms();
        let mut idle = lock(&self.conns);
        if idle.len() >= IDLE_PER_BACKEND {
            idle.retain(|(at, c)| now.saturating_sub(*at) < IDLE_TIMEOUT_MS && open(c));
        }
        if idle.len() < IDLE_PER_BACKEND {
            idle.push((now, c));
        }
    }
}

/// Whether a plain stream lent back to the pool may still carry a request: not closed by the
/// backend and holding no bytes nobody asked for. That costs no syscall unless its socket was
/// reported readable.
pub fn stream_open(s: &TcpStream) -> bool {
    matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
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
        let (mut clients, mut served) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
            served.push(listener.accept().await.expect("accept").0);
        }
        // Newest first: the third is closed by its server, the second gets stray bytes.
        drop(served.pop());
        served[1].write_all(b"stray").await.expect("write");
        // Once the FIN and the bytes have reached the client ends, all three go idle.
        for c in &clients[1..] {
            c.readable().await.expect("readable");
        }
        for c in clients {
            idle.put(c, stream_open);
        }
        let lent = idle.take(stream_open).expect("the first is still good");
        let served_first = served[0].peer_addr().expect("peer");
        assert_eq!(lent.local_addr().expect("local"), served_first);
        assert!(idle.take(stream_open).is_none());
    }

    #[test]
    fn bounded_and_newest_first() {
        let idle = Idle::default();
        for n in 0..IDLE_PER_BACKEND + 5 {
            idle.put(n, |_| true);
        }
        assert_eq!(idle.take(|_| true), Some(IDLE_PER_BACKEND - 1));
        // One that says it closed is dropped on the way.
        assert_eq!(idle.take(|&n| n % 2 == 1), Some(IDLE_PER_BACKEND - 3));
        assert_eq!(idle.take(|_| true), Some(IDLE_PER_BACKEND - 4));
    }
}
