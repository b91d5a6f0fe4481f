//! [`Upstreams`] over lb-core's pools: each request's backend is picked by the pool's
//! algorithm against live state (health, drain/disable, slow start, backups), exactly as a
//! TCP connection's is. Hash keys for HTTP (`header:`, `cookie:`, `path`) come with the
//! runtime wiring; until then consistent-hash pools hash every request alike.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use lb_core::pool::{Attempt, Pool};

use crate::proxy::Upstreams;

thread_local! {
    static RNG: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::new());
}

/// A listener's pools, indexed like the config's `[[pool]]`s.
#[derive(Debug, Clone)]
pub struct Pools {
    pools: Vec<Arc<Pool>>,
}

impl Pools {
    pub fn new(pools: Vec<Arc<Pool>>) -> Self {
        Self { pools }
    }
}

impl Upstreams for Pools {
    fn pick(&self, pool: usize) -> Option<SocketAddr> {
        let p = self.pools.get(pool)?;
        let i = RNG.with(|r| p.next(0, &mut Attempt::default(), &mut r.borrow_mut()))?;
        Some(p.backends[i].addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::backend::AdminState;

    fn pools(algorithm: &str) -> Pools {
        let text = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:1\"\npool = \"p\"\n\
             [[pool]]\nname = \"p\"\nalgorithm = \"{algorithm}\"\n\
             backends = [{{ addr = \"127.0.0.1:10\" }}, {{ addr = \"127.0.0.1:11\" }}, {{ addr = \"127.0.0.1:12\", backup = true }}]\n"
        );
        let loaded = lb_core::config::load_str("t", &text).expect("valid");
        Pools::new(vec![Arc::new(Pool::new(&loaded.config.pools[0], None))])
    }

    #[test]
    fn picks_follow_the_algorithm_and_live_state() {
        let p = pools("round-robin");
        let picks: Vec<u16> = (0..4).filter_map(|_| p.pick(0)).map(|a| a.port()).collect();
        assert_eq!(picks, [10, 11, 10, 11]);
        p.pools[0].backends[0].set_admin_state(AdminState::Disabled);
        assert!((0..4).all(|_| p.pick(0).map(|a| a.port()) == Some(11)));
        // No primary left: the backup serves.
        p.pools[0].backends[1].set_admin_state(AdminState::Draining);
        assert_eq!(p.pick(0).map(|a| a.port()), Some(12));
        assert_eq!(p.pick(7), None, "no such pool");
    }
}
