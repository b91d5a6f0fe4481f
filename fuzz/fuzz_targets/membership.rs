//! Untrusted inputs of live membership: the admin API's JSON body for a new member, a
//! `NAME:PORT` address, and DNS answers (any addresses, any SRV records) turned into
//! members. The first byte picks which; the member sets must keep their invariants.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use libfuzzer_sys::fuzz_target;
use lb_core::config::{NamedBackend, MAX_PRIORITY};
use lb_core::discovery::members::{self, SrvTarget, MAX_DNS_MEMBERS};

fn check(members: &[lb_core::config::Backend]) {
    assert!(members.len() <= MAX_DNS_MEMBERS);
    assert!(members.iter().all(|b| members::connectable(b.addr)));
    assert!(members.windows(2).all(|w| w[0].addr < w[1].addr), "sorted, unique");
    assert!(members.iter().all(|b| b.priority <= MAX_PRIORITY));
}

/// 16 bytes an address (IPv4-mapped when the first 10 are zero and the next two 0xff).
fn ips(data: &[u8]) -> Vec<IpAddr> {
    data.chunks_exact(16)
        .map(|c| {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap_or([0; 16]));
            IpAddr::V6(v6).to_canonical()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    match kind % 4 {
        0 => {
            if let Ok(b) = lb_core::runtime::parse_new_member(rest) {
                assert!(members::connectable(b.addr));
                assert!(b.priority <= MAX_PRIORITY);
            }
        }
        1 => {
            if let Ok((host, port)) = members::parse_host_port(&String::from_utf8_lossy(rest)) {
                assert!(port > 0 && !host.is_empty());
                assert_eq!(members::parse_host_port(&format!("{host}:{port}")), Ok((host, port)));
            }
        }
        2 => {
            let port = u16::from_be_bytes([rest.first().copied().unwrap_or(0), 80]);
            let named = NamedBackend {
                host: "app.test".into(),
                port: port.max(1),
                weight: NonZeroU32::MIN,
                priority: 0,
                zone: None,
            };
            let mut addrs = ips(rest.get(1..).unwrap_or(&[]));
            let m = members::from_addrs(&named, &addrs);
            check(&m);
            addrs.reverse();
            assert_eq!(members::from_addrs(&named, &addrs), m, "order-independent");
        }
        _ => {
            // 22 bytes a record: priority, weight, port, one address.
            let mut recs: Vec<SrvTarget> = rest
                .chunks_exact(22)
                .map(|c| SrvTarget {
                    priority: u16::from_be_bytes([c[0], c[1]]),
                    weight: u16::from_be_bytes([c[2], c[3]]),
                    port: u16::from_be_bytes([c[4], c[5]]),
                    ips: ips(&c[6..]),
                })
                .collect();
            let m = members::from_srv("_s._tcp.test", &recs, MAX_PRIORITY);
            check(&m);
            recs.reverse();
            assert_eq!(members::from_srv("_s._tcp.test", &recs, MAX_PRIORITY), m, "order-independent");
        }
    }
});
