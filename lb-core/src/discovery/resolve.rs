//! DNS queries for pool members, through hickory-resolver: A/AAAA for `name:port` members,
//! SRV (and its targets' addresses) for `discovery`. The I/O half; what an answer means is
//! decided in `members.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use std::collections::HashMap;

use super::members::{SrvTarget, MAX_DNS_MEMBERS};

/// How long one query may take before it counts as failed (the answer that was good stays).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A resolver for one pool: `server` (the pool's `resolver`), or the system's
/// (`/etc/resolv.conf`). lb keeps no cache of its own beyond the last good member set: every
/// query asks the server, so a changed record is seen at the next re-resolution.
pub fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver config: {e}"))?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 1;
    builder
        .build()
        .map_err(|e| format!("cannot build the resolver: {e}"))
}

/// An answer's addresses and its smallest TTL.
#[derive(Debug, Clone)]
pub struct Addrs {
    pub ips: Vec<IpAddr>,
    pub ttl: Option<Duration>,
}

/// A and AAAA records of `host` (a fully qualified name: no search list).
pub async fn lookup_ip(r: &TokioResolver, host: &str) -> Result<Addrs, String> {
    let fqdn = format!("{}.", host.trim_end_matches('.'));
    match tokio::time::timeout(QUERY_TIMEOUT * 2, r.lookup_ip(fqdn.as_str())).await {
        Err(_) => Err(format!("{host}: no answer within {:?}", QUERY_TIMEOUT * 2)),
        Ok(Err(e)) if e.is_no_records_found() => Ok(Addrs {
            ips: Vec::new(),
            ttl: None,
        }),
        Ok(Err(e)) => Err(format!("{host}: {e}")),
        Ok(Ok(l)) => Ok(Addrs {
            ips: l.iter().collect(),
            ttl: min_ttl(l.as_lookup().answers().iter().map(|r| r.ttl)),
        }),
    }
}

/// The SRV records of `name`, each with its target's addresses, and the smallest TTL.
pub async fn lookup_srv(
    r: &TokioResolver,
    name: &str,
) -> Result<(Vec<SrvTarget>, Option<Duration>), String> {
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let answer =
        match tokio::time::timeout(QUERY_TIMEOUT * 2, r.lookup(fqdn.as_str(), RecordType::SRV))
            .await
        {
            Err(_) => return Err(format!("{name}: no answer within {:?}", QUERY_TIMEOUT * 2)),
            Ok(Err(e)) if e.is_no_records_found() => return Ok((Vec::new(), None)),
            Ok(Err(e)) => return Err(format!("{name}: {e}")),
            Ok(Ok(l)) => l,
        };
    let mut ttls: Vec<u32> = Vec::new();
    let mut records = Vec::new();
    for rec in answer.answers() {
        let RData::SRV(srv) = &rec.data else { continue };
        ttls.push(rec.ttl);
        let target = srv.target.to_ascii().to_ascii_lowercase();
        records.push((srv.priority, target, srv.port, srv.weight));
    }
    // Each record's target is asked for its addresses, one query at a time: an answer of
    // thousands of records is cut to the first MAX_DNS_MEMBERS in a fixed order (so the
    // same answer in another order keeps the same ones), and a target named twice is asked
    // once.
    records.sort();
    records.dedup();
    records.truncate(MAX_DNS_MEMBERS);
    let mut asked: HashMap<String, Vec<IpAddr>> = HashMap::new();
    let mut out = Vec::new();
    for (priority, target, port, weight) in records {
        let ips = match asked.get(&target) {
            Some(ips) => ips.clone(),
            None => {
                // A target that does not resolve gives no member; its failure fails the
                // whole answer, so a half-resolved set never replaces the last good one.
                let addrs = lookup_ip(r, &target).await?;
                if let Some(t) = addrs.ttl {
                    ttls.push(u32::try_from(t.as_secs()).unwrap_or(u32::MAX));
                }
                asked.insert(target, addrs.ips.clone());
                addrs.ips
            }
        };
        out.push(SrvTarget {
            priority,
            weight,
            port,
            ips,
        });
    }
    Ok((out, min_ttl(ttls)))
}

fn min_ttl(ttls: impl IntoIterator<Item = u32>) -> Option<Duration> {
    ttls.into_iter()
        .min()
        .map(|s| Duration::from_secs(u64::from(s)))
}
