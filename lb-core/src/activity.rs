//! When bytes last moved on a connection, and the wait for it to have been idle for a limit:
//! one clock for every HTTP server lb runs (the gateway's connections and the admin API's),
//! read by their idle timeouts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// When bytes last moved on a connection, in milliseconds from its start (one atomic store
/// per read or write, no timer moved).
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Bytes moved now.
    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    /// When the connection will have been idle for `limit`, as things stand.
    pub fn idle_at(&self, limit: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Relaxed)) + limit
    }

    /// Completes once no bytes have moved for `limit`. The timer is set for the deadline as
    /// it stood and, when it fires, moved to where activity has pushed it since: one timer
    /// for the wait, however busy the connection.
    pub async fn idle_for(&self, limit: Duration) {
        let idle = tokio::time::sleep_until(self.idle_at(limit));
        tokio::pin!(idle);
        loop {
            idle.as_mut().await;
            let at = self.idle_at(limit);
            if Instant::now() >= at {
                return;
            }
            idle.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_for_waits_from_the_last_touch() {
        let a = Activity::new();
        let start = Instant::now();
        let limit = Duration::from_secs(30);
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                a.idle_for(limit).await;
                Instant::now()
            })
        };
        tokio::time::advance(Duration::from_secs(20)).await;
        a.touch();
        assert_eq!(
            waiter.await.expect("waiter"),
            start + Duration::from_secs(50)
        );
    }
}
