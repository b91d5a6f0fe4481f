//! The UDP flow table, sans I/O: which backend each client address is pinned to, when each
//! flow was last active, and which flows have expired. The socket shell owns the sockets and
//! the clock and calls in with `now`. Bounded: past `max_flows`, new flows are refused while
//! existing ones carry on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One client's flow: its backend (pool index) and last activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub backend: usize,
    pub last_seen: Instant,
}

/// What to do with a datagram from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// An existing flow: send to this backend.
    Existing(usize),
    /// No flow yet and there is room: pick a backend and call [`FlowTable::insert`].
    New,
    /// No flow and the table is full: drop the datagram and count it.
    Full,
}

#[derive(Debug)]
pub struct FlowTable {
    flows: HashMap<SocketAddr, Flow>,
    max_flows: usize,
    timeout: Duration,
}

impl FlowTable {
    pub fn new(max_flows: usize, timeout: Duration) -> Self {
        Self {
            flows: HashMap::new(),
            max_flows,
            timeout,
        }
    }

    /// A reload may change the timeout; it applies to existing flows from then on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Routes a datagram from `client`, refreshing its flow. A flow silent for the timeout
    /// counts as gone even before [`expire`](Self::expire) runs.
    pub fn route(&mut self, client: SocketAddr, now: Instant) -> Route {
        if let Some(f) = self.flows.get_mut(&client) {
            if now.saturating_duration_since(f.last_seen) < self.timeout {
                f.last_seen = now;
                return Route::Existing(f.backend);
            }
            self.flows.remove(&client);
        }
        if self.flows.len() >= self.max_flows {
            Route::Full
        } else {
            Route::New
        }
    }

    /// Pins `client` to `backend` (after [`Route::New`]).
    pub fn insert(&mut self, client: SocketAddr, backend: usize, now: Instant) {
        if self.flows.len() < self.max_flows || self.flows.contains_key(&client) {
            self.flows.insert(
                client,
                Flow {
                    backend,
                    last_seen: now,
                },
            );
        }
    }

    /// Marks activity from the backend side (a reply keeps the flow alive too).
    pub fn touch(&mut self, client: SocketAddr, now: Instant) {
        if let Some(f) = self.flows.get_mut(&client) {
            f.last_seen = now;
        }
    }

    /// Forgets one flow (its backend went away, or its upstream socket failed).
    pub fn remove(&mut self, client: &SocketAddr) -> Option<Flow> {
        self.flows.remove(client)
    }

    /// Removes and returns every flow silent for the timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<(SocketAddr, Flow)> {
        let timeout = self.timeout;
        let gone: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.last_seen) >= timeout)
            .map(|(a, _)| *a)
            .collect();
        gone.into_iter()
            .filter_map(|a| self.flows.remove(&a).map(|f| (a, f)))
            .collect()
    }

    pub fn get(&self, client: &SocketAddr) -> Option<&Flow> {
        self.flows.get(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10_000 + i))
    }

    #[test]
    fn new_then_existing_then_expired() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(10, Duration::from_secs(30));
        assert_eq!(t.route(addr(1), t0), Route::New);
        t.insert(addr(1), 2, t0);
        assert_eq!(
            t.route(addr(1), t0 + Duration::from_secs(29)),
            Route::Existing(2)
        );
        // Activity refreshed the flow: 29 s more is still inside the timeout.
        assert_eq!(
            t.route(addr(1), t0 + Duration::from_secs(58)),
            Route::Existing(2)
        );
        assert!(t.expire(t0 + Duration::from_secs(87)).is_empty());
        let gone = t.expire(t0 + Duration::from_secs(88));
        assert_eq!(gone.len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn replies_keep_a_flow_alive() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(10, Duration::from_secs(1));
        t.route(addr(1), t0);
        t.insert(addr(1), 0, t0);
        t.touch(addr(1), t0 + Duration::from_millis(900));
        assert!(t.expire(t0 + Duration::from_millis(1500)).is_empty());
    }

    #[test]
    fn full_table_refuses_new_flows_only() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(2, Duration::from_secs(30));
        for i in 0..2 {
            assert_eq!(t.route(addr(i), t0), Route::New);
            t.insert(addr(i), i as usize, t0);
        }
        assert_eq!(t.route(addr(9), t0), Route::Full);
        t.insert(addr(9), 0, t0);
        assert_eq!(t.len(), 2, "insert past the bound is ignored");
        assert_eq!(
            t.route(addr(1), t0),
            Route::Existing(1),
            "old flows are unaffected"
        );
    }

    #[test]
    fn a_stale_flow_is_replaced_not_reused() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(1, Duration::from_secs(1));
        t.route(addr(1), t0);
        t.insert(addr(1), 3, t0);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            t.route(addr(1), later),
            Route::New,
            "a stale flow picks its backend anew"
        );
        t.insert(addr(1), 0, later);
        assert_eq!(t.get(&addr(1)).map(|f| f.backend), Some(0));
        assert_eq!(t.route(addr(2), later), Route::Full);
    }

    proptest! {
        /// Never more flows than the bound; a routed existing flow always names the backend
        /// it was inserted with.
        #[test]
        fn bounded_and_sticky(ops in proptest::collection::vec((0u16..40, 0u64..5_000, 0usize..4), 1..300)) {
            let t0 = Instant::now();
            let mut t = FlowTable::new(16, Duration::from_millis(1_000));
            let mut pinned: HashMap<SocketAddr, usize> = HashMap::new();
            let mut now = t0;
            for (client, advance, backend) in ops {
                now += Duration::from_millis(advance % 400);
                let a = addr(client);
                match t.route(a, now) {
                    Route::Existing(b) => prop_assert_eq!(Some(&b), pinned.get(&a)),
                    Route::New => { t.insert(a, backend, now); pinned.insert(a, backend); }
                    Route::Full => prop_assert!(t.len() >= 16),
                }
                prop_assert!(t.len() <= 16);
                for (gone, _) in t.expire(now) { pinned.remove(&gone); }
            }
        }
    }
}
