//! `kind = "ip_filter"`: allow and deny lists of networks. The client is the peer, unless
//! the peer is a trusted proxy: then it is the right-most `X-Forwarded-For` address that is
//! not a trusted proxy itself, so a client cannot put an allowed address in the header and
//! pass (every address it writes is left of the ones the trusted proxies appended).

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

    /// The client behind the trusted proxies.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let chain: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        let mut client = peer;
        for ip in chain.iter().rev() {
            client = *ip;
            if !self.trusted(*ip) {
                break;
            }
        }
        client
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }
}

impl Policy for IpFilter {
    fn request(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        info.client = self.client(info.client, headers);
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
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // An untrusted peer's claims are ignored.
        assert_eq!(
            f.client(ip("203.0.113.5"), &xff("10.1.1.1")),
            ip("203.0.113.5")
        );
        // Behind trusted proxies: the right-most untrusted address; what the client wrote
        // on the left cannot win.
        assert_eq!(
            f.client(ip("127.0.0.1"), &xff("10.9.9.9, 198.51.100.7, 10.0.0.2")),
            ip("198.51.100.7")
        );
        assert_eq!(
            f.client(ip("127.0.0.1"), &xff("garbage, 198.51.100.7")),
            ip("198.51.100.7")
        );
        assert_eq!(
            f.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }
}
