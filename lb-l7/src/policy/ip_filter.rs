//! `kind = "ip_filter"`: allow and deny lists of networks. The client is the peer, unless
//! the peer is a trusted proxy: then it is the right-most `X-Forwarded-For` address that is
//! not a trusted proxy itself, so a client cannot put an allowed address in the header and
//! pass (every address it writes is left of the ones the trusted proxies appended). An
//! entry on the way that is no address is where the walk stops: the client is unknown and
//! refused, never the address to its left, which the client chose.

use std::net::IpAddr;

use http::HeaderMap;
use lb_core::config::Cidr;

use super::{auth_failure, refuse_with, Policy, Refusal, RequestInfo};

#[derive(Debug)]
pub struct IpFilter {
    name: String,
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    trusted: Vec<Cidr>,
}

impl IpFilter {
    pub fn new(name: &str, allow: &[Cidr], deny: &[Cidr], trusted: &[Cidr]) -> Self {
        Self {
            name: name.to_string(),
            allow: allow.to_vec(),
            deny: deny.to_vec(),
            trusted: trusted.to_vec(),
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client behind the trusted proxies, or `None` when the entry that names it is not
    /// an address (`unknown`, garbage, a field value that is not text): that entry is the
    /// first untrusted hop, and reading past it would let the client choose its address.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        if !self.trusted(peer) {
            return Some(peer);
        }
        let mut fields = headers.get_all("x-forwarded-for").iter().peekable();
        if fields.peek().is_none() {
            return Some(peer);
        }
        let mut entries = Vec::new();
        for v in fields {
            // A value that is not text would otherwise vanish with the addresses it holds.
            entries.extend(v.to_str().map_or(vec![""], |v| v.split(',').collect()));
        }
        let mut client = peer;
        for entry in entries.iter().rev() {
            client = forwarded_address(entry)?;
            if !self.trusted(client) {
                break;
            }
        }
        Some(client)
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }
}

/// One `X-Forwarded-For` entry as an address: `IP`, or `IP:PORT` / `[IPv6]:PORT` /
/// `[IPv6]` as some proxies append them; anything else (empty, `unknown`, a name) is `None`.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    let v6 = entry.strip_prefix('[')?.strip_suffix(']')?;
    v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

impl Policy for IpFilter {
    fn request(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        let Some(client) = self.client(info.client, headers) else {
            // Fails closed: with no address there is nothing an allow or deny list can judge.
            auth_failure(&self.name, "ip_unknown");
            return Err(refuse_with(
                403,
                "the client address behind the trusted proxies is not known",
                &[],
            ));
        };
        info.client = client;
        if self.admits(info.client) {
            return Ok(());
        }
        auth_failure(&self.name, "ip_denied");
        Err(refuse_with(
            403,
            &format!("client address {} is not allowed", info.client),
            &[],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).expect("cidr")).collect()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().expect("value"));
        h
    }

    #[test]
    fn allow_and_deny_for_both_families() {
        let f = IpFilter::new(
            "f",
            &cidrs(&["10.0.0.0/8", "2001:db8::/32"]),
            &cidrs(&["10.6.0.0/16"]),
            &[],
        );
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(f.admits(ip("10.1.2.3")));
        assert!(!f.admits(ip("10.6.1.1")), "deny wins");
        assert!(!f.admits(ip("192.168.1.1")), "not on the allow list");
        assert!(f.admits(ip("2001:db8::1")));
        assert!(!f.admits(ip("2001:db9::1")));
        assert!(
            f.admits(ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
        let deny_only = IpFilter::new("f", &[], &cidrs(&["192.0.2.0/24"]), &[]);
        assert!(deny_only.admits(ip("198.51.100.1")) && !deny_only.admits(ip("192.0.2.9")));
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let f = IpFilter::new("f", &[], &[], &cidrs(&["127.0.0.1", "10.0.0.0/8"]));
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        // An untrusted peer's claims are ignored.
        assert_eq!(
            f.client("203.0.113.5".parse().expect("ip"), &xff("10.1.1.1")),
            ip("203.0.113.5")
        );
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        // Behind trusted proxies: the right-most untrusted address; what the client wrote
        // on the left cannot win.
        assert_eq!(
            f.client(local, &xff("10.9.9.9, 198.51.100.7, 10.0.0.2")),
            ip("198.51.100.7")
        );
        assert_eq!(
            f.client(local, &xff("garbage, 198.51.100.7")),
            ip("198.51.100.7"),
            "garbage left of the client is never read"
        );
        assert_eq!(f.client(local, &HeaderMap::new()), ip("127.0.0.1"));
        // Every trusted: the left-most of them.
        assert_eq!(f.client(local, &xff("10.0.0.3,10.0.0.2")), ip("10.0.0.3"));
    }

    #[test]
    fn an_entry_that_is_no_address_stops_the_walk() {
        let f = IpFilter::new("f", &[], &[], &cidrs(&["127.0.0.1", "10.0.0.0/8"]));
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        for chain in [
            "10.1.1.1, unknown",
            "10.1.1.1, UNKNOWN, 10.0.0.2",
            "10.1.1.1, _hidden",
            "10.1.1.1, host.example",
            "10.1.1.1, 198.51.100.7:80:1",
            "10.1.1.1, [2001:db8::1",
            "10.1.1.1, ",
            "10.1.1.1,",
            "10.1.1.1, 1.2.3",
            "",
        ] {
            assert_eq!(f.client(local, &xff(chain)), None, "{chain:?}");
        }
        // A field that is not text hides no addresses: the walk stops there too (it used
        // to vanish, so the client's own field on its left won).
        let mut h = xff("10.1.1.1");
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.7 \xff").expect("obs-text"),
        );
        assert_eq!(f.client(local, &h), None);
    }

    #[test]
    fn ports_and_brackets_that_proxies_append_are_read() {
        let f = IpFilter::new("f", &[], &[], &cidrs(&["127.0.0.1", "10.0.0.0/8"]));
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        for (chain, want) in [
            ("10.1.1.1, 198.51.100.7:5123", "198.51.100.7"),
            ("10.1.1.1,198.51.100.7:5123 , 10.0.0.2:80", "198.51.100.7"),
            ("10.1.1.1, [2001:db8::7]:443", "2001:db8::7"),
            ("10.1.1.1, [2001:db8::7]", "2001:db8::7"),
            ("10.1.1.1,\t2001:db8::7", "2001:db8::7"),
        ] {
            assert_eq!(f.client(local, &xff(chain)), ip(want), "{chain:?}");
        }
    }
}
