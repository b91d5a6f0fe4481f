//! Whether lb should be sent traffic: the one decision behind `GET /api/ready`, the systemd
//! `STATUS=` line and keepalived's `track_script`. Pure: the phase, the config and a view of
//! which pools have a backend up come in as arguments; no I/O, no clock.

use serde_json::{json, Value};

use crate::config::Config;

/// Where the process is in its life: `Starting → Ready → Stopping → Draining → Stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Binding and starting the accept loops.
    Starting,
    Ready,
    /// Asked to stop, within `global.shutdown_delay`: every listener still accepts and
    /// serves, but readiness is withdrawn so health checkers move traffic away first.
    Stopping,
    /// Listeners stopped accepting; open connections finish within `shutdown_timeout`.
    Draining,
    Stopped,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Stopping => "stopping",
            Self::Draining => "draining",
            Self::Stopped => "stopped",
        }
    }

    /// Whether lb is on its way out (stopping, draining or stopped): nothing may make it
    /// ready again, and a reload must not tell systemd `READY=1`.
    pub fn is_leaving(self) -> bool {
        matches!(self, Self::Stopping | Self::Draining | Self::Stopped)
    }
}

/// The verdict with what led to it, for the answer's body and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub phase: Phase,
    /// Pools some listener sends to that have no backend able to take a connection, by name.
    pub pools_without_backends: Vec<String>,
}

impl Readiness {
    /// Ready = serving (every listener bound and accepting, not draining) and every pool a
    /// listener can send to has at least one backend up. A pool no listener names (only
    /// reachable by nothing) does not count: it cannot lose a client anything.
    pub fn ready(&self) -> bool {
        self.phase == Phase::Ready && self.pools_without_backends.is_empty()
    }

    /// The body of `GET /api/ready`.
    pub fn to_json(&self) -> Value {
        let reason = match self.phase {
            Phase::Ready if self.pools_without_backends.is_empty() => None,
            Phase::Ready => Some(format!(
                "no backend up in pool(s) {}",
                self.pools_without_backends.join(", ")
            )),
            Phase::Starting => Some("starting: listeners are not accepting yet".into()),
            Phase::Stopping => Some(
                "stopping: shutting down after shutdown_delay; listeners still accept meanwhile"
                    .into(),
            ),
            Phase::Draining => Some("draining: listeners stopped accepting".into()),
            Phase::Stopped => Some("stopped".into()),
        };
        json!({
            "ready": self.ready(),
            "phase": self.phase.as_str(),
            "pools_without_backends": self.pools_without_backends,
            "reason": reason,
        })
    }
}

/// Decides readiness. `has_backend_up(i)` says whether `config.pools[i]` has a backend that
/// may take a new connection now (enabled, healthy, not ejected).
pub fn decide(phase: Phase, config: &Config, has_backend_up: impl Fn(usize) -> bool) -> Readiness {
    let mut pools_without_backends = Vec::new();
    for i in pools_in_use(config) {
        if !has_backend_up(i) {
            pools_without_backends.push(config.pools[i].name.clone());
        }
    }
    Readiness {
        phase,
        pools_without_backends,
    }
}

/// Indexes of the pools some listener sends to: a listener's default pool, its SNI routes'
/// pools and its HTTP routes' pools. Sorted, each once.
pub fn pools_in_use(config: &Config) -> Vec<usize> {
    let mut used: Vec<usize> = config
        .listeners
        .iter()
        .flat_map(|l| {
            l.pool
                .into_iter()
                .chain(l.sni_routes.iter().map(|r| r.pool))
        })
        .chain(config.routes.iter().flat_map(|r| r.pools()))
        .collect();
    used.sort_unstable();
    used.dedup();
    used
}

/// A one-line summary for systemd's `STATUS=` (shown by `systemctl status`).
pub fn status_line(r: &Readiness, listeners: usize, backends_up: usize, backends: usize) -> String {
    let state = match r.phase {
        Phase::Ready if r.ready() => "ready",
        Phase::Ready => "degraded",
        p => p.as_str(),
    };
    let mut line =
        format!("{state}: {listeners} listener(s), {backends_up}/{backends} backends up");
    if !r.pools_without_backends.is_empty() {
        line.push_str(&format!(
            "; no backend up in {}",
            r.pools_without_backends.join(", ")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const TWO_LISTENERS: &str = r#"
[[listener]]
name = "a"
bind = "127.0.0.1:8080"
pool = "a"

[[listener]]
name = "b"
bind = "127.0.0.1:8081"
pool = "a"
sni_routes = { "x.example" = "b" }

[[pool]]
name = "a"
backends = [{ addr = "10.0.0.1:80" }]

[[pool]]
name = "b"
backends = [{ addr = "10.0.0.2:80" }]

[[pool]]
name = "unused"
backends = [{ addr = "10.0.0.3:80" }]
"#;

    fn config() -> Config {
        match load_str("t.toml", TWO_LISTENERS) {
            Ok(l) => l.config,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn pools_in_use_are_default_and_sni_pools_not_orphans() {
        let c = config();
        let names: Vec<&str> = pools_in_use(&c)
            .into_iter()
            .map(|i| c.pools[i].name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn an_aggregate_routes_part_pools_are_in_use() {
        let text = "[[listener]]\nname = \"h\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\
            [[pool]]\nname = \"a\"\nbackends = [{ addr = \"10.0.0.1:80\" }]\n\
            [[pool]]\nname = \"b\"\nbackends = [{ addr = \"10.0.0.2:80\" }]\n\
            [[route]]\nlistener = \"h\"\naggregate = [{ name = \"x\", pool = \"b\", path = \"/x\" }]\n";
        let c = match load_str("t.toml", text) {
            Ok(l) => l.config,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(pools_in_use(&c), [1]);
    }

    #[test]
    fn ready_only_when_serving_with_a_backend_in_every_used_pool() {
        let c = config();
        let all_up = decide(Phase::Ready, &c, |_| true);
        assert!(all_up.ready());
        assert_eq!(all_up.to_json()["reason"], Value::Null);

        // The unused pool (index 2) being empty changes nothing.
        assert!(decide(Phase::Ready, &c, |i| i != 2).ready());

        let b_down = decide(Phase::Ready, &c, |i| i != 1);
        assert!(!b_down.ready());
        assert_eq!(b_down.pools_without_backends, ["b"]);
        assert!(b_down.to_json()["reason"]
            .as_str()
            .is_some_and(|r| r.contains("pool(s) b")));

        for phase in [
            Phase::Starting,
            Phase::Stopping,
            Phase::Draining,
            Phase::Stopped,
        ] {
            let r = decide(phase, &c, |_| true);
            assert!(!r.ready(), "{phase:?}");
            assert_eq!(r.to_json()["phase"], phase.as_str());
            assert!(r.to_json()["reason"]
                .as_str()
                .is_some_and(|why| why.starts_with(phase.as_str())));
        }
        assert!(!Phase::Ready.is_leaving() && !Phase::Starting.is_leaving());
    }

    #[test]
    fn status_line_is_one_line_naming_counts_and_empty_pools() {
        let c = config();
        let ok = status_line(&decide(Phase::Ready, &c, |_| true), 2, 3, 3);
        assert_eq!(ok, "ready: 2 listener(s), 3/3 backends up");
        let bad = status_line(&decide(Phase::Ready, &c, |i| i == 2), 2, 1, 3);
        assert_eq!(
            bad,
            "degraded: 2 listener(s), 1/3 backends up; no backend up in a, b"
        );
        let draining = status_line(&decide(Phase::Draining, &c, |_| true), 2, 3, 3);
        assert!(draining.starts_with("draining: "), "{draining}");
        let stopping = status_line(&decide(Phase::Stopping, &c, |_| true), 2, 3, 3);
        assert_eq!(stopping, "stopping: 2 listener(s), 3/3 backends up");
        assert!(!draining.contains('\n'));
    }
}
