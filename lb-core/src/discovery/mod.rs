//! Backends by name: host names resolved to members (A/AAAA) and pools discovered through DNS
//! SRV, re-resolved by TTL. `members.rs` is the pure half (answers → members, the last good
//! set, the pool as it runs); `resolve.rs` asks DNS; `task.rs` re-resolves on a schedule.
//! Membership changes they find go through the runtime's one mechanism (`Shared::set_members`).

pub mod members;
pub mod resolve;
pub mod task;

use std::collections::BTreeMap;

pub use members::{effective, parse_host_port, Dynamic};

use crate::config::{self, Backend, Config};

/// One name resolved at load, for `lb check` and the start-up log.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub pool: String,
    /// `host:port`, or the SRV name.
    pub name: String,
    /// The members it gave, or why it gave none.
    pub result: Result<Vec<Backend>, String>,
}

/// Resolves every name and SRV discovery of `cfg` once. A name that fails or answers empty
/// keeps its members from `previous` (a reload's last good set) when there are some.
pub async fn resolve_all(
    cfg: &Config,
    previous: &BTreeMap<String, Dynamic>,
) -> (BTreeMap<String, Dynamic>, Vec<Resolution>) {
    let mut out = BTreeMap::new();
    let mut report = Vec::new();
    for p in &cfg.pools {
        let mut d = previous.get(&p.name).cloned().unwrap_or_default();
        // Names no longer in the pool are forgotten.
        d.dns.retain(|k, _| {
            p.names.iter().any(|n| &n.label() == k)
                || p.discovery.as_ref().is_some_and(|s| &s.name == k)
        });
        if !p.names.is_empty() || p.discovery.is_some() {
            for (name, result) in resolve_pool(p).await {
                let mut last =
                    members::LastGood::new(d.dns.get(&name).cloned().unwrap_or_default());
                if let members::Update::Changed(m) = last.update(result.clone()) {
                    d.dns.insert(name.clone(), m);
                }
                report.push(Resolution {
                    pool: p.name.clone(),
                    name,
                    result: result.and_then(|m| {
                        if m.is_empty() {
                            Err("no address records".into())
                        } else {
                            Ok(m)
                        }
                    }),
                });
            }
        }
        if d != Dynamic::default() {
            out.insert(p.name.clone(), d);
        }
    }
    (out, report)
}

/// Queries each name of `p` once: `(label, members or error)`.
pub async fn resolve_pool(p: &config::Pool) -> Vec<(String, Result<Vec<Backend>, String>)> {
    let mut out = Vec::new();
    if !p.names.is_empty() {
        match resolve::resolver(p.resolver) {
            Ok(r) => {
                for n in &p.names {
                    let got = resolve::lookup_ip(&r, &n.host)
                        .await
                        .map(|a| members::from_addrs(n, &a.ips));
                    out.push((n.label(), got));
                }
            }
            Err(e) => out.extend(p.names.iter().map(|n| (n.label(), Err(e.clone())))),
        }
    }
    if let Some(d) = &p.discovery {
        let got = match resolve::resolver(d.resolver.or(p.resolver)) {
            Ok(r) => resolve::lookup_srv(&r, &d.name)
                .await
                .map(|(recs, _)| members::from_srv(&d.name, &recs, config::MAX_PRIORITY)),
            Err(e) => Err(e),
        };
        out.push((d.name.clone(), got));
    }
    out
}

/// [`resolve_all`] from blocking code (start-up, `lb check`, a reload on tokio's blocking
/// pool): on a thread of its own with a small runtime, so it never runs inside another.
pub fn resolve_blocking(
    cfg: &Config,
    previous: &BTreeMap<String, Dynamic>,
) -> (BTreeMap<String, Dynamic>, Vec<Resolution>) {
    let needed = cfg
        .pools
        .iter()
        .any(|p| !p.names.is_empty() || p.discovery.is_some());
    if !needed {
        return (previous.clone(), Vec::new());
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(resolve_all(cfg, previous)),
                Err(e) => {
                    let report = cfg
                        .pools
                        .iter()
                        .flat_map(|p| {
                            task::watches(p, &cfg.global)
                                .into_iter()
                                .map(|w| Resolution {
                                    pool: p.name.clone(),
                                    name: w.query.label(),
                                    result: Err(format!("cannot start the resolver: {e}")),
                                })
                        })
                        .collect();
                    (previous.clone(), report)
                }
            }
        })
        .join()
        .unwrap_or_else(|_| (previous.clone(), Vec::new()))
    })
}
