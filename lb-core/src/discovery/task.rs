//! The re-resolution loop of one name (a `name:port` member or a pool's SRV name): asks DNS
//! after the answer's TTL (clamped to the global bounds, or the discovery's fixed
//! `interval`), keeps the last good set through failures and empty answers (logged once per
//! run of failures, counted), and hands every changed set to the runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::members::{self, LastGood, Update};
use super::resolve;
use crate::config::{self, Backend, NamedBackend};

/// Applies a changed member set: `(pool, name, members)`. Blocking (it takes the runtime's
/// reload lock), so it is called off the async threads.
pub type Apply = Arc<dyn Fn(&str, &str, Vec<Backend>) + Send + Sync>;

/// What one loop asks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    Addrs(NamedBackend),
    Srv(String),
}

impl Query {
    pub fn label(&self) -> String {
        match self {
            Self::Addrs(n) => n.label(),
            Self::Srv(s) => s.clone(),
        }
    }
}

/// One loop's settings; a reload that leaves them equal keeps the loop running.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Watch {
    pub pool: String,
    pub query: Query,
    pub server: Option<SocketAddr>,
    pub min: Duration,
    pub max: Duration,
    /// The discovery's `interval`: a fixed period instead of the TTL.
    pub fixed: Option<Duration>,
}

/// The loops a config's pool needs.
pub fn watches(p: &config::Pool, g: &config::Global) -> Vec<Watch> {
    let w = |query, server, fixed| Watch {
        pool: p.name.clone(),
        query,
        server,
        min: g.resolve_interval_min,
        max: g.resolve_interval_max,
        fixed,
    };
    let mut out: Vec<Watch> = p
        .names
        .iter()
        .map(|n| w(Query::Addrs(n.clone()), p.resolver, None))
        .collect();
    if let Some(d) = &p.discovery {
        out.push(w(
            Query::Srv(d.name.clone()),
            d.resolver.or(p.resolver),
            d.interval,
        ));
    }
    out
}

/// Runs `watch` until `stop`, starting from the members it had (`initial`).
pub async fn run(watch: Watch, initial: Vec<Backend>, apply: Apply, stop: CancellationToken) {
    let label = watch.query.label();
    let resolver = match resolve::resolver(watch.server) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(pool.name = %watch.pool, name = %label, error = %e, "cannot re-resolve; the members resolved at load stay");
            return;
        }
    };
    let mut last = LastGood::new(initial);
    let mut delay = watch.fixed.unwrap_or(watch.min);
    let counter = |result: &'static str| metrics::counter!("lb_discovery_updates_total", "pool" => watch.pool.clone(), "result" => result);
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        let (answer, ttl) = match &watch.query {
            Query::Addrs(n) => match resolve::lookup_ip(&resolver, &n.host).await {
                Ok(a) => (Ok(members::from_addrs(n, &a.ips)), a.ttl),
                Err(e) => (Err(e), None),
            },
            Query::Srv(name) => match resolve::lookup_srv(&resolver, name).await {
                Ok((recs, ttl)) => (
                    Ok(members::from_srv(name, &recs, config::MAX_PRIORITY)),
                    ttl,
                ),
                Err(e) => (Err(e), None),
            },
        };
        let why = answer.as_ref().err().cloned();
        let was_failing = last.failing();
        let update = last.update(answer);
        if was_failing && !last.failing() {
            tracing::info!(pool.name = %watch.pool, name = %label, "DNS resolution works again");
        }
        counter(update.label()).increment(1);
        match update {
            Update::Changed(m) => {
                tracing::info!(pool.name = %watch.pool, name = %label, members = m.len(), "DNS answer changed the pool's members");
                let (apply, pool, name) = (apply.clone(), watch.pool.clone(), label.clone());
                // The reload lock is a blocking one.
                let _ = tokio::task::spawn_blocking(move || apply(&pool, &name, m)).await;
            }
            Update::Unchanged => {}
            Update::Kept { first: true, empty } => {
                let why = why.unwrap_or_else(|| "no address records".into());
                tracing::warn!(pool.name = %watch.pool, name = %label, error = %why, empty, kept = last.members().len(), "DNS resolution failed; the last good members stay (logged once until it resolves again)");
            }
            Update::Kept { first: false, .. } => {}
        }
        delay = watch
            .fixed
            .unwrap_or_else(|| members::next_delay(ttl, watch.min, watch.max));
    }
}
