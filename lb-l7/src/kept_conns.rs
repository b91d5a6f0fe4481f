//! Backend connections kept across gateway rebuilds. A membership change (DNS, admin API) or a
//! reload builds every http listener's gateway anew; its clients to the backends take their
//! per-backend connection pools from here, so a member present before and after keeps its
//! idle keep-alive connections (and its HTTP/2 connection) instead of dropping them, and a
//! member that left loses them with the last gateway that used it. No I/O.
//!
//! The one decision — which pool a backend's connections live in — is [`Kept::conns`]: by
//! listener, pool and backend address, for the same way of connecting (HTTP/2 or not, the same
//! TLS material, the same PROXY version). Anything else gets a new pool.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpStream;

use crate::idle::Idle;

/// One backend's connections, shared by every gateway generation that has the backend.
#[derive(Debug, Default)]
pub struct Conns {
    /// Idle HTTP/1.1 connections of the general path.
    pub(crate) idle: Idle<crate::upstream::H1>,
    /// HTTP/2 multiplexes: one connection per backend, shared by every request. An async
    /// lock, held while connecting, so a burst of first requests makes one connection.
    pub(crate) h2:
        tokio::sync::Mutex<Option<hyper::client::conn::http2::SendRequest<crate::upstream::Body>>>,
    /// Idle plain connections of the lean path.
    pub(crate) lean: Idle<TcpStream>,
}

/// How connections to a pool's backends are made; connections made one way are never lent
/// for another.
#[derive(Debug, Clone)]
pub struct Way {
    pub http2: bool,
    /// The TLS material the client config was built from (`None`: plain), compared by
    /// identity: a reload that re-reads TLS files gets new connections.
    pub tls: Option<Arc<lb_core::tls::material::Backends>>,
    pub proxy: Option<lb_core::config::ProxyVersion>,
}

impl PartialEq for Way {
    fn eq(&self, o: &Self) -> bool {
        self.http2 == o.http2
            && self.proxy == o.proxy
            && match (&self.tls, &o.tls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

type Key = (String, String, SocketAddr);

/// Connection pools by listener, pool and backend address, held weakly: the gateways own
/// them. Shared by every config generation (the factory keeps it).
#[derive(Debug, Default)]
pub struct Kept {
    by_backend: Mutex<HashMap<Key, (Way, Weak<Conns>)>>,
}

impl Kept {
    /// The connection pools of `addrs` (a pool's backends, in order) for `listener`'s use of
    /// `pool`: the running ones of a backend connected the same `way`, new ones otherwise.
    /// Pools no gateway holds any more are forgotten.
    pub fn conns(
        &self,
        listener: &str,
        pool: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
        way: &Way,
    ) -> Vec<Arc<Conns>> {
        let mut map = self
            .by_backend
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, (_, w)| w.strong_count() > 0);
        addrs
            .into_iter()
            .map(|addr| {
                let key = (listener.to_string(), pool.to_string(), addr);
                if let Some(c) = map
                    .get(&key)
                    .filter(|(w, _)| w == way)
                    .and_then(|(_, c)| c.upgrade())
                {
                    return c;
                }
                let c = Arc::new(Conns::default());
                map.insert(key, (way.clone(), Arc::downgrade(&c)));
                c
            })
            .collect()
    }

    /// How many backends' pools are held (tests).
    pub fn len(&self) -> usize {
        self.by_backend
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|(_, w)| w.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    const PLAIN: Way = Way {
        http2: false,
        tls: None,
        proxy: None,
    };

    #[test]
    fn a_member_present_before_and_after_keeps_its_pool() {
        let kept = Kept::default();
        let before = kept.conns("web", "p", [addr(1), addr(2)], &PLAIN);
        // Member 3 joins ahead of 2: indices move, pools follow the address.
        let after = kept.conns("web", "p", [addr(1), addr(3), addr(2)], &PLAIN);
        assert!(Arc::ptr_eq(&before[0], &after[0]));
        assert!(Arc::ptr_eq(&before[1], &after[2]));
        assert!(!Arc::ptr_eq(&before[0], &after[1]));
        assert!(!Arc::ptr_eq(&before[1], &after[1]));
    }

    #[test]
    fn another_listener_pool_or_way_gets_its_own() {
        let kept = Kept::default();
        let a = kept.conns("web", "p", [addr(1)], &PLAIN);
        let h2 = Way {
            http2: true,
            ..PLAIN
        };
        let pp = Way {
            proxy: Some(lb_core::config::ProxyVersion::V2),
            ..PLAIN
        };
        for other in [
            kept.conns("api", "p", [addr(1)], &PLAIN),
            kept.conns("web", "q", [addr(1)], &PLAIN),
        ] {
            assert!(!Arc::ptr_eq(&a[0], &other[0]));
        }
        // A changed way replaces the kept pool.
        let b = kept.conns("web", "p", [addr(1)], &h2);
        assert!(!Arc::ptr_eq(&a[0], &b[0]));
        let c = kept.conns("web", "p", [addr(1)], &pp);
        assert!(!Arc::ptr_eq(&b[0], &c[0]));
    }

    #[test]
    fn a_member_no_gateway_holds_is_forgotten() {
        let kept = Kept::default();
        let first = kept.conns("web", "p", [addr(1), addr(2)], &PLAIN);
        assert_eq!(kept.len(), 2);
        let second = kept.conns("web", "p", [addr(2)], &PLAIN);
        drop(first);
        assert_eq!(kept.len(), 1, "member 1 left with the old gateway");
        let third = kept.conns("web", "p", [addr(1), addr(2)], &PLAIN);
        assert!(Arc::ptr_eq(&second[0], &third[1]));
        assert_eq!(
            Arc::strong_count(&third[0]),
            1,
            "member 1 came back with new pools"
        );
    }
}
