use super::*;
use crate::config::Algorithm;
use proptest::prelude::*;

fn named(host: &str, port: u16) -> NamedBackend {
    NamedBackend {
        host: host.into(),
        port,
        weight: NonZeroU32::MIN,
        priority: 0,
        zone: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn pool_cfg(algorithm: &str) -> config::Pool {
    let text = format!(
        "[[listener]]\nname=\"l\"\nbind=\"127.0.0.1:1\"\npool=\"p\"\n[[pool]]\nname=\"p\"\nalgorithm=\"{algorithm}\"\nbackends=[{{addr=\"app.test:80\"}}]\n"
    );
    config::load_str("t", &text).expect("valid").config.pools[0].clone()
}

#[test]
fn host_port_parsing() {
    assert_eq!(
        parse_host_port("App.Internal:8080"),
        Ok(("app.internal".into(), 8080))
    );
    assert_eq!(parse_host_port("app.:80"), Ok(("app".into(), 80)));
    for bad in [
        "app",
        "app:0",
        "app:99999",
        "app:x",
        ":80",
        "a..b:80",
        "-a:80",
        "1.2.3.4:80",
        "a b:80",
        "1.2.3:80",
    ] {
        assert!(parse_host_port(bad).is_err(), "{bad}");
    }
    assert!(parse_host_port(&format!("{}:80", "a".repeat(64))).is_err());
}

#[test]
fn addresses_dedupe_and_sort() {
    let n = named("app.test", 80);
    let a = from_addrs(
        &n,
        &[
            ip("10.0.0.2"),
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("::ffff:10.0.0.3"),
        ],
    );
    let addrs: Vec<String> = a.iter().map(|b| b.addr.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
    assert!(a
        .iter()
        .all(|b| b.origin == Origin::Dns("app.test:80".into())));
}

#[test]
fn srv_priorities_rank_and_weights_map() {
    let rec = |priority, weight, port, ips: &[&str]| SrvTarget {
        priority,
        weight,
        port,
        ips: ips.iter().map(|s| ip(s)).collect(),
    };
    let m = from_srv(
        "_web._tcp.x",
        &[
            rec(20, 5, 80, &["10.0.0.3"]),
            rec(10, 0, 80, &["10.0.0.2", "10.0.0.1"]),
            rec(30, 60000, 81, &["10.0.0.9"]),
            rec(10, 7, 0, &["10.0.0.8"]),
            // The same address at a worse priority keeps its best.
            rec(20, 1, 80, &["10.0.0.1"]),
        ],
        1,
    );
    let got: Vec<(String, u32, u8)> = m
        .iter()
        .map(|b| (b.addr.to_string(), b.weight.get(), b.priority))
        .collect();
    assert_eq!(
        got,
        [
            ("10.0.0.1:80".to_string(), 1, 0),
            ("10.0.0.2:80".to_string(), 1, 0),
            ("10.0.0.3:80".to_string(), 5, 1),
            ("10.0.0.9:81".to_string(), 10_000, 1),
        ]
    );
}

#[test]
fn ttl_is_clamped() {
    let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
    assert_eq!(next_delay(Some(Duration::ZERO), min, max), min);
    assert_eq!(
        next_delay(Some(Duration::from_secs(30)), min, max),
        Duration::from_secs(30)
    );
    assert_eq!(next_delay(Some(Duration::from_secs(86400)), min, max), max);
    assert_eq!(next_delay(None, min, max), min);
}

#[test]
fn last_good_survives_failures_and_empty_answers() {
    let n = named("app.test", 80);
    let one = from_addrs(&n, &[ip("10.0.0.1")]);
    let two = from_addrs(&n, &[ip("10.0.0.1"), ip("10.0.0.2")]);
    let mut g = LastGood::new(one.clone());
    assert_eq!(g.update::<()>(Ok(one.clone())), Update::Unchanged);
    let u = g.update(Err("timeout"));
    assert_eq!(
        (u.label(), u),
        (
            "failed",
            Update::Kept {
                first: true,
                empty: false
            }
        )
    );
    assert_eq!(
        g.update(Err("timeout")),
        Update::Kept {
            first: false,
            empty: false
        }
    );
    assert_eq!(g.update::<()>(Ok(vec![])).label(), "empty");
    assert_eq!(g.members(), one.as_slice());
    assert_eq!(
        g.update::<()>(Ok(two.clone())),
        Update::Changed(two.clone())
    );
    assert_eq!(
        g.update::<()>(Ok(vec![])),
        Update::Kept {
            first: true,
            empty: true
        }
    );
    assert_eq!(g.members(), two.as_slice());
}

#[test]
fn effective_merges_in_order_and_dedupes() {
    let mut cfg = pool_cfg("round-robin");
    cfg.backends.push(Backend {
        addr: "10.0.0.1:80".parse().expect("addr"),
        weight: NonZeroU32::MIN,
        priority: 0,
        origin: Origin::Config,
        zone: None,
    });
    let mut d = Dynamic::default();
    d.dns.insert(
        "app.test:80".into(),
        from_addrs(&named("app.test", 80), &[ip("10.0.0.1"), ip("10.0.0.5")]),
    );
    d.api.push(Backend {
        addr: "10.0.0.7:80".parse().expect("addr"),
        weight: NonZeroU32::MIN,
        priority: 1,
        origin: Origin::Api,
        zone: None,
    });
    let e = effective(&cfg, &d);
    let got: Vec<(String, &str)> = e
        .backends
        .iter()
        .map(|b| (b.addr.to_string(), b.origin.kind()))
        .collect();
    assert_eq!(
        got,
        [
            ("10.0.0.1:80".to_string(), "config"),
            ("10.0.0.5:80".to_string(), "dns"),
            ("10.0.0.7:80".to_string(), "api"),
        ]
    );
    d.removed.insert("10.0.0.1:80".parse().expect("addr"));
    assert_eq!(
        effective(&cfg, &d).backends.len(),
        2,
        "removed through the API"
    );
}

/// Which member (by address) each of `keys` goes to in a consistent-hash pool built from
/// one name's answer, through the whole chain: answer → members → pool → Maglev.
fn owners(ips: &[IpAddr], keys: u64) -> Vec<SocketAddr> {
    let cfg = pool_cfg("consistent-hash");
    assert_eq!(cfg.algorithm, Algorithm::ConsistentHash);
    let mut d = Dynamic::default();
    d.dns.insert(
        "app.test:80".into(),
        from_addrs(&named("app.test", 80), ips),
    );
    let pool = crate::pool::Pool::new(&effective(&cfg, &d), None);
    let mut rng = fastrand::Rng::with_seed(7);
    (0..keys)
        .map(|k| {
            let key = crate::hash::hash64(1, &k.to_le_bytes());
            let i = pool
                .next(key, &mut crate::pool::Attempt::default(), &mut rng)
                .expect("a member");
            pool.backends[i].addr
        })
        .collect()
}

#[test]
fn a_member_added_by_dns_moves_at_most_its_share_of_keys() {
    const KEYS: u64 = 20_000;
    for n in [2usize, 5, 10] {
        let before: Vec<IpAddr> = (1..=n).map(|i| ip(&format!("10.0.1.{i}"))).collect();
        let mut after = before.clone();
        after.push(ip("10.0.1.200"));
        let (a, b) = (owners(&before, KEYS), owners(&after, KEYS));
        let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count() as f64 / KEYS as f64;
        let bound = 1.0 / (n + 1) as f64 + 0.03;
        assert!(
            moved <= bound,
            "n={n}: {moved} of keys moved, bound {bound}"
        );
        // Most moved keys went to the new member (Maglev reshuffles a few among the others).
        let to_new = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x != y && y.ip() == ip("10.0.1.200"))
            .count();
        assert!(
            to_new as f64 / KEYS as f64 >= 1.0 / (n + 1) as f64 - 0.03,
            "n={n}: {to_new} keys to the new member"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn the_same_answer_in_another_order_moves_nothing(
        hosts in proptest::collection::btree_set(1u8..250, 2..8),
        seed in any::<u64>(),
    ) {
        let ips: Vec<IpAddr> = hosts.iter().map(|h| ip(&format!("10.0.2.{h}"))).collect();
        let mut shuffled = ips.clone();
        fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
        prop_assert_eq!(owners(&ips, 2_000), owners(&shuffled, 2_000));
    }

    #[test]
    fn parse_host_port_never_panics_and_round_trips(s in "\\PC{0,40}") {
        if let Ok((h, p)) = parse_host_port(&s) {
            prop_assert_eq!(parse_host_port(&format!("{h}:{p}")), Ok((h, p)));
        }
    }
}

#[test]
fn hostile_answers_are_bounded_and_never_name_this_host() {
    let n = named("app.test", 80);
    // Thousands of records, repeated, A and AAAA mixed: bounded, the lowest addresses, the
    // same members in any order.
    let mut ips: Vec<IpAddr> = (0..5000u32)
        .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
        .chain((0..5000u128).map(|i| IpAddr::from(std::net::Ipv6Addr::from(0xfd00 << 112 | i))))
        .collect();
    ips.extend(ips.clone());
    let a = from_addrs(&n, &ips);
    assert_eq!(a.len(), MAX_DNS_MEMBERS);
    assert_eq!(a[0].addr.to_string(), "10.0.0.0:80");
    ips.reverse();
    assert_eq!(from_addrs(&n, &ips), a);
    // The unspecified address (Linux connects it to this host), multicast and broadcast
    // are no backend.
    let odd = [
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
        "::ffff:0.0.0.0",
    ];
    let odd: Vec<IpAddr> = odd.iter().map(|s| ip(s)).collect();
    assert!(from_addrs(&n, &odd).is_empty());
    let srv = SrvTarget {
        priority: 0,
        weight: 1,
        port: 80,
        ips: odd.clone(),
    };
    assert!(from_srv("_s._tcp.test", &[srv], config::MAX_PRIORITY).is_empty());
    assert!(!connectable("127.0.0.1:0".parse().expect("addr")));
    assert!(connectable("127.0.0.1:1".parse().expect("addr")));
}

#[test]
fn an_oversized_srv_answer_keeps_the_preferred_priorities() {
    let rec = |priority, i: u32| SrvTarget {
        priority,
        weight: 1,
        port: 80,
        ips: vec![IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))],
    };
    // Backups at low addresses, primaries at high ones: the cut keeps every primary.
    let mut recs: Vec<SrvTarget> = (0..MAX_DNS_MEMBERS as u32).map(|i| rec(20, i)).collect();
    recs.extend((0..100).map(|i| rec(10, 100_000 + i)));
    let m = from_srv("_s._tcp.test", &recs, config::MAX_PRIORITY);
    assert_eq!(m.len(), MAX_DNS_MEMBERS);
    assert_eq!(m.iter().filter(|b| b.priority == 0).count(), 100);
    assert!(
        m.windows(2).all(|w| w[0].addr < w[1].addr),
        "ordered by address"
    );
}
