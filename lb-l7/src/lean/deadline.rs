//! A deadline on a timer that is kept for the connection's life and moved lazily. Most
//! waits end long before their deadline, and each new deadline is later than the last; so
//! the timer is only moved earlier when it must be, and a timer that fires before the
//! deadline it now stands for is set again then. A wait costs a field write, not a trip
//! through tokio's timer wheel.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct Deadline {
    timer: Pin<Box<Sleep>>,
    at: Instant,
}

impl Default for Deadline {
    fn default() -> Self {
        let far = Instant::now() + Duration::from_secs(86_400);
        Self {
            timer: Box::pin(tokio::time::sleep_until(far)),
            at: far,
        }
    }
}

impl Deadline {
    /// From now on, [`Deadline::passed`] completes at `at`.
    pub fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.timer.deadline() || self.timer.is_elapsed() {
            self.timer.as_mut().reset(at);
        }
    }

    /// Completes once the deadline last set has passed.
    pub async fn passed(&mut self) {
        loop {
            self.timer.as_mut().await;
            if Instant::now() >= self.at {
                return;
            }
            self.timer.as_mut().reset(self.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_last_deadline_set_whichever_way_it_moved() {
        let start = Instant::now();
        let mut d = Deadline::default();
        d.set(start + Duration::from_secs(5));
        // Later: the timer stays where it was, fires early, and waits on.
        d.set(start + Duration::from_secs(8));
        d.passed().await;
        assert_eq!(Instant::now(), start + Duration::from_secs(8));
        // Earlier than the timer: moved at once.
        d.set(Instant::now() + Duration::from_secs(60));
        d.set(Instant::now() + Duration::from_secs(2));
        let t = Instant::now();
        d.passed().await;
        assert_eq!(Instant::now(), t + Duration::from_secs(2));
        // A wait that ends first leaves the timer armed for the next deadline.
        d.set(Instant::now() + Duration::from_secs(30));
        let quick = tokio::time::timeout(Duration::from_secs(1), d.passed()).await;
        assert!(quick.is_err());
        let t = Instant::now();
        d.set(t + Duration::from_secs(3));
        d.passed().await;
        assert_eq!(Instant::now(), t + Duration::from_secs(3));
    }
}
