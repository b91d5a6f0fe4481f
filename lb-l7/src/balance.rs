//! Picking a backend for one request: the pool's algorithm over lb-core's live state
//! (health, drain/disable, slow start, backups), as for a TCP connection, with the keys only a
//! request has (`hash_key = header:NAME | cookie:NAME | path`) and cookie-insert stickiness
//! (`sticky_cookie`, as HAProxy's `cookie NAME insert`). Pure but for the thread's RNG.

use std::cell::RefCell;
use std::net::SocketAddr;

use http::{header, HeaderMap};
use lb_core::config::{Algorithm, HashKey};
use lb_core::hash;
use lb_core::pool::{Attempt, Pool};

thread_local! {
    static RNG: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::new());
}

/// What a request offers for picking.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// The client's address and port (after a PROXY header).
    pub client: SocketAddr,
    pub sni: Option<&'a str>,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// The consistent-hash key of a request (0 for other algorithms, which ignore it).
pub fn key(pool: &Pool, k: &Keys<'_>) -> u64 {
    if pool.config.algorithm != Algorithm::ConsistentHash {
        return 0;
    }
    let by_ip = || hash::ip_key(k.client.ip());
    match &pool.config.hash_key {
        HashKey::SourceIp => by_ip(),
        // Per client connection, as for a TCP listener.
        HashKey::SourceAddr => hash::addr_key(k.client),
        HashKey::Sni => k.sni.map_or_else(by_ip, hash::name_key),
        HashKey::Path => hash::name_key(k.path),
        HashKey::Header(name) => k
            .headers
            .get(name.as_str())
            .map_or_else(by_ip, |v| hash::hash64(hash::KEY_SEED, v.as_bytes())),
        HashKey::Cookie(name) => cookie(k.headers, name)
            .map_or_else(by_ip, |v| hash::hash64(hash::KEY_SEED, v.as_bytes())),
    }
}

/// The next backend of `pool` for this key, skipping what `attempt` already tried.
pub fn next(pool: &Pool, key: u64, attempt: &mut Attempt) -> Option<usize> {
    RNG.with(|r| pool.next(key, attempt, &mut r.borrow_mut()))
}

/// Counts backend `i` (picked outside the algorithm) as tried by `attempt`.
pub fn exclude(pool: &Pool, i: usize, attempt: &mut Attempt) {
    pool.mark_tried(i, attempt);
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4: one or more
/// headers, `; `-separated pairs).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then(|| v.trim_matches('"'))
        })
}

/// The sticky cookie's value for each backend: a hash of its address, so the cookie names
/// the backend without telling clients where it is, and survives reloads and reordering.
pub fn sticky_values(pool: &Pool) -> Vec<String> {
    pool.backends
        .iter()
        .map(|b| format!("{:016x}", hash::hash64(hash::KEY_SEED, b.id.as_bytes())))
        .collect()
}

/// The `Set-Cookie` value that makes a client sticky to the backend whose value this is.
pub fn sticky_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/; HttpOnly")
}

/// The backend a sticky cookie names, if it may still serve: up, or draining (a draining
/// backend finishes the sessions it has, as HAProxy's persistence does).
pub fn sticky_backend(
    pool: &Pool,
    values: &[String],
    headers: &HeaderMap,
    name: &str,
) -> Option<usize> {
    let v = cookie(headers, name)?;
    let i = values.iter().position(|s| s == v)?;
    let b = &pool.backends[i];
    let state = b.state();
    matches!(
        state,
        lb_core::backend::State::Up | lb_core::backend::State::Draining
    )
    .then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use lb_core::backend::AdminState;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn pool(algorithm: &str, hash_key: &str) -> Pool {
        let key = if hash_key.is_empty() {
            String::new()
        } else {
            format!("hash_key = \"{hash_key}\"\n")
        };
        let text = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\npool = \"p\"\n\
             [[pool]]\nname = \"p\"\nalgorithm = \"{algorithm}\"\n{key}\
             overprovisioning = 2.0\n\
             backends = [{{ addr = \"127.0.0.1:10\" }}, {{ addr = \"127.0.0.1:11\" }}, {{ addr = \"127.0.0.1:12\", backup = true }}]\n"
        );
        // overprovisioning 2.0: one primary of two up still takes all traffic (1.4 would
        // spill 30% to the backup), so picks here are the algorithm's alone.
        let loaded = lb_core::config::load_str("t", &text).expect("valid");
        Pool::new(&loaded.config.pools[0], None)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn keys<'a>(h: &'a HeaderMap, path: &'a str, ip: [u8; 4]) -> Keys<'a> {
        Keys {
            client: SocketAddr::from((IpAddr::from(ip), 40_000)),
            sni: None,
            path,
            headers: h,
        }
    }

    #[test]
    fn picks_follow_the_algorithm_and_live_state() {
        let p = pool("round-robin", "");
        let pick =
            |p: &Pool| next(p, 0, &mut Attempt::default()).map(|i| p.backends[i].addr.port());
        let picks: Vec<_> = (0..4).filter_map(|_| pick(&p)).collect();
        assert_eq!(picks, [10, 11, 10, 11]);
        p.backends[0].set_admin_state(AdminState::Disabled);
        assert!((0..4).all(|_| pick(&p) == Some(11)));
        p.backends[1].set_admin_state(AdminState::Draining);
        assert_eq!(pick(&p), Some(12), "no primary left: the backup serves");
    }

    #[test]
    fn cookies_are_found_among_pairs_and_headers() {
        let h = headers(&[("cookie", "a=1; lb_srv=abc"), ("cookie", "b=\"2\"")]);
        assert_eq!(cookie(&h, "lb_srv"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "lb"), None);
        assert_eq!(cookie(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn header_cookie_and_path_keys_stick_and_fall_back_to_the_client() {
        let h = headers(&[("x-user", "alice"), ("cookie", "sid=42")]);
        let none = HeaderMap::new();
        let p = pool("consistent-hash", "header:x-user");
        assert_eq!(
            key(&p, &keys(&h, "/a", [1, 1, 1, 1])),
            key(&p, &keys(&h, "/b", [2, 2, 2, 2]))
        );
        assert_eq!(
            key(&p, &keys(&none, "/", [1, 1, 1, 1])),
            hash::ip_key(IpAddr::from([1, 1, 1, 1]))
        );
        let p = pool("consistent-hash", "source-addr");
        let mut other_port = keys(&none, "/", [1, 1, 1, 1]);
        other_port.client.set_port(40_001);
        assert_ne!(
            key(&p, &keys(&none, "/", [1, 1, 1, 1])),
            key(&p, &other_port),
            "source-addr keys on the client's port too"
        );
        let p = pool("consistent-hash", "cookie:sid");
        assert_eq!(
            key(&p, &keys(&h, "/a", [1, 1, 1, 1])),
            key(&p, &keys(&h, "/b", [3, 3, 3, 3]))
        );
        let p = pool("consistent-hash", "path");
        assert_eq!(
            key(&p, &keys(&none, "/x", [1, 1, 1, 1])),
            key(&p, &keys(&h, "/x", [9, 9, 9, 9]))
        );
        assert_ne!(
            key(&p, &keys(&none, "/x", [1, 1, 1, 1])),
            key(&p, &keys(&none, "/y", [1, 1, 1, 1]))
        );
        assert_eq!(key(&pool("random", ""), &keys(&h, "/x", [1, 1, 1, 1])), 0);
    }

    #[test]
    fn sticky_cookie_names_a_backend_while_it_may_serve() {
        let p = pool("round-robin", "");
        let values = sticky_values(&p);
        assert_eq!(values.len(), 3);
        assert!(values.iter().all(|v| v.len() == 16 && !v.contains("127")));
        let h = headers(&[("cookie", &format!("lb_srv={}", values[1]))]);
        assert_eq!(sticky_backend(&p, &values, &h, "lb_srv"), Some(1));
        p.backends[1].set_admin_state(AdminState::Draining);
        assert_eq!(
            sticky_backend(&p, &values, &h, "lb_srv"),
            Some(1),
            "draining keeps its sessions"
        );
        p.backends[1].set_admin_state(AdminState::Disabled);
        assert_eq!(sticky_backend(&p, &values, &h, "lb_srv"), None);
        let forged = headers(&[("cookie", "lb_srv=127.0.0.1:11")]);
        assert_eq!(sticky_backend(&p, &values, &forged, "lb_srv"), None);
    }

    proptest! {
        #[test]
        fn cookie_parsing_never_panics(v in "[ -~]{0,64}") {
            if let Ok(v) = HeaderValue::from_str(&v) {
                let mut h = HeaderMap::new();
                h.insert(header::COOKIE, v);
                let _ = cookie(&h, "a");
            }
        }
    }
}
