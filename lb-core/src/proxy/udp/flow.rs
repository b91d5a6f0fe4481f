//! The UDP flow table, sans I/O: each client address's flow (whatever the shell keeps per
//! flow: its backend, its upstream socket), when it was last active, and which flows have
//! expired. The socket shell owns the sockets and the clock and calls in with `now`. Bounded:
//! past `max_flows`, new flows are refused while existing ones carry on.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Flow<T> {
    value: T,
    last_seen: Instant,
}

/// What to do with a datagram from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a, T> {
    /// A live flow (now refreshed): send through it.
    Existing(&'a mut T),
    /// No live flow and there is room: start one with [`FlowTable::insert`]. Carries the
    /// client's previous flow if it had just gone stale, for the caller to close.
    New(Option<T>),
    /// No live flow and the table is full: drop the datagram and count it.
    Full(Option<T>),
}

#[derive(Debug)]
pub struct FlowTable<T> {
    flows: HashMap<SocketAddr, Flow<T>>,
    max_flows: usize,
    timeout: Duration,
}

impl<T> FlowTable<T> {
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
    pub fn route(&mut self, client: SocketAddr, now: Instant) -> Route<'_, T> {
        let (len, max, timeout) = (self.flows.len(), self.max_flows, self.timeout);
        match self.flows.entry(client) {
            Entry::Occupied(o) if now.saturating_duration_since(o.get().last_seen) < timeout => {
                let f = o.into_mut();
                f.last_seen = now;
                Route::Existing(&mut f.value)
            }
            Entry::Occupied(o) => {
                let stale = Some(o.remove().value);
                if len > max {
                    Route::Full(stale)
                } else {
                    Route::New(stale)
                }
            }
            Entry::Vacant(_) if len >= max => Route::Full(None),
            Entry::Vacant(_) => Route::New(None),
        }
    }

    /// Starts `client`'s flow (after [`Route::New`]); gives the value back if the table is
    /// full, so the caller can close what it opened.
    pub fn insert(&mut self, client: SocketAddr, value: T, now: Instant) -> Result<&mut T, T> {
        let len = self.flows.len();
        match self.flows.entry(client) {
            Entry::Occupied(mut o) => {
                o.insert(Flow {
                    value,
                    last_seen: now,
                });
                Ok(&mut o.into_mut().value)
            }
            Entry::Vacant(v) if len < self.max_flows => Ok(&mut v
                .insert(Flow {
                    value,
                    last_seen: now,
                })
                .value),
            Entry::Vacant(_) => Err(value),
        }
    }

    /// Counts activity the table does not see (a backend's replies keep a flow alive too):
    /// `seen` says when each flow was last active elsewhere, if it was.
    pub fn refresh(&mut self, seen: impl Fn(&T) -> Option<Instant>) {
        for f in self.flows.values_mut() {
            if let Some(at) = seen(&f.value) {
                f.last_seen = f.last_seen.max(at);
            }
        }
    }

    /// Forgets one flow (its upstream socket failed).
    pub fn remove(&mut self, client: &SocketAddr) -> Option<T> {
        self.flows.remove(client).map(|f| f.value)
    }

    /// Removes and returns every flow silent for the timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<(SocketAddr, T)> {
        let timeout = self.timeout;
        let gone: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.last_seen) >= timeout)
            .map(|(a, _)| *a)
            .collect();
        gone.into_iter()
            .filter_map(|a| self.flows.remove(&a).map(|f| (a, f.value)))
            .collect()
    }

    /// Removes every flow (shutdown).
    pub fn drain(&mut self) -> Vec<(SocketAddr, T)> {
        self.flows.drain().map(|(a, f)| (a, f.value)).collect()
    }

    /// Removes every flow with when it was last active (a hand-over to a new process).
    pub fn drain_seen(&mut self) -> Vec<(SocketAddr, T, Instant)> {
        self.flows
            .drain()
            .map(|(a, f)| (a, f.value, f.last_seen))
            .collect()
    }

    pub fn get(&self, client: &SocketAddr) -> Option<&T> {
        self.flows.get(client).map(|f| &f.value)
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
        assert_eq!(t.route(addr(1), t0), Route::New(None));
        assert!(t.insert(addr(1), 2, t0).is_ok());
        assert_eq!(
            t.route(addr(1), t0 + Duration::from_secs(29)),
            Route::Existing(&mut 2)
        );
        // Activity refreshed the flow: 29 s more is still inside the timeout.
        assert_eq!(
            t.route(addr(1), t0 + Duration::from_secs(58)),
            Route::Existing(&mut 2)
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
        assert!(t.insert(addr(1), 0, t0).is_ok());
        t.refresh(|_| Some(t0 + Duration::from_millis(900)));
        assert!(t.expire(t0 + Duration::from_millis(1500)).is_empty());
        // An older outside activity never moves a flow back in time.
        t.refresh(|_| Some(t0));
        assert!(t.expire(t0 + Duration::from_millis(1500)).is_empty());
    }

    #[test]
    fn full_table_refuses_new_flows_only() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(2, Duration::from_secs(30));
        for i in 0..2 {
            assert_eq!(t.route(addr(i), t0), Route::New(None));
            assert!(t.insert(addr(i), i as usize, t0).is_ok());
        }
        assert_eq!(t.route(addr(9), t0), Route::Full(None));
        assert_eq!(t.insert(addr(9), 7, t0), Err(7));
        assert_eq!(t.len(), 2, "insert past the bound is ignored");
        assert_eq!(
            t.route(addr(1), t0),
            Route::Existing(&mut 1),
            "old flows are unaffected"
        );
    }

    #[test]
    fn a_stale_flow_is_replaced_not_reused() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(1, Duration::from_secs(1));
        t.route(addr(1), t0);
        assert!(t.insert(addr(1), 3, t0).is_ok());
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            t.route(addr(1), later),
            Route::New(Some(3)),
            "a stale flow picks its backend anew"
        );
        assert!(t.insert(addr(1), 0, later).is_ok());
        assert_eq!(t.get(&addr(1)), Some(&0));
        assert_eq!(t.route(addr(2), later), Route::Full(None));
        assert_eq!(t.drain(), vec![(addr(1), 0)]);
    }

    #[test]
    fn a_drained_flow_keeps_when_it_was_last_seen() {
        let t0 = Instant::now();
        let mut t = FlowTable::new(4, Duration::from_secs(30));
        t.route(addr(1), t0);
        assert!(t.insert(addr(1), 5, t0).is_ok());
        let later = t0 + Duration::from_secs(3);
        assert_eq!(t.route(addr(1), later), Route::Existing(&mut 5));
        assert_eq!(t.drain_seen(), vec![(addr(1), 5, later)]);
        assert!(t.is_empty());
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
                    Route::Existing(b) => prop_assert_eq!(Some(&*b), pinned.get(&a)),
                    Route::New(_) => { prop_assert!(t.insert(a, backend, now).is_ok()); pinned.insert(a, backend); }
                    Route::Full(_) => prop_assert!(t.len() >= 16),
                }
                prop_assert!(t.len() <= 16);
                for (gone, _) in t.expire(now) { pinned.remove(&gone); }
            }
        }
    }
}
