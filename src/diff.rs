//! `lb check --diff OLD NEW`: what a reload from one config to the other would change, and
//! for consistent-hash pools how many sticky keys would land on another backend. Pure: takes
//! two validated configs, returns the report; the CLI prints it and picks the exit code.

use std::collections::HashMap;
use std::fmt::Write;

use lb_core::balance::moved::{movement, Movement};
use lb_core::config::{Algorithm, Backend, Config, Pool};

/// A hashed group's key movement, for `--max-moved`.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    /// `web`, or `web (priority 1)` for a group of backups.
    pub group: String,
    pub movement: Movement,
}

#[derive(Debug, Default)]
pub struct Report {
    /// One line per change, in config order: listeners, pools, routes, policies.
    pub lines: Vec<String>,
    /// Every consistent-hash group whose keys move (old and new both hashed).
    pub moved: Vec<Moved>,
}

impl Report {
    /// The largest fraction of keys any hashed group moves.
    pub fn worst(&self) -> Option<&Moved> {
        self.moved
            .iter()
            .max_by(|a, b| a.movement.moved.total_cmp(&b.movement.moved))
    }

    pub fn render(&self) -> String {
        if self.lines.is_empty() {
            return "no changes\n".into();
        }
        let mut out = String::new();
        for l in &self.lines {
            let _ = writeln!(out, "{l}");
        }
        out
    }
}

pub fn diff(old: &Config, new: &Config) -> Report {
    let mut r = Report::default();
    listeners(old, new, &mut r.lines);
    let olds: HashMap<&str, &Pool> = old.pools.iter().map(|p| (p.name.as_str(), p)).collect();
    let news: HashMap<&str, &Pool> = new.pools.iter().map(|p| (p.name.as_str(), p)).collect();
    for p in &old.pools {
        if !news.contains_key(p.name.as_str()) {
            r.lines.push(format!("pool {}: removed", p.name));
        }
    }
    for p in &new.pools {
        match olds.get(p.name.as_str()) {
            None => r.lines.push(format!(
                "pool {}: added ({} backends, {})",
                p.name,
                p.backends.len(),
                p.algorithm.name()
            )),
            Some(o) => pool(o, p, &mut r),
        }
    }
    named(
        "route",
        old.routes.iter().map(|x| x.name.as_str()),
        new.routes.iter().map(|x| x.name.as_str()),
        &mut r.lines,
    );
    named(
        "policy",
        old.policies.iter().map(|x| x.name.as_str()),
        new.policies.iter().map(|x| x.name.as_str()),
        &mut r.lines,
    );
    for p in &new.policies {
        if old.policies.iter().any(|o| o.name == p.name && o != p) {
            r.lines.push(format!("policy {}: changed", p.name));
        }
    }
    r
}

fn listeners(old: &Config, new: &Config, lines: &mut Vec<String>) {
    let pool_name =
        |c: &Config, p: Option<usize>| p.map_or("none".to_string(), |i| c.pools[i].name.clone());
    for l in &old.listeners {
        if !new.listeners.iter().any(|n| n.name == l.name) {
            lines.push(format!("listener {}: removed ({})", l.name, l.bind));
        }
    }
    for l in &new.listeners {
        let Some(o) = old.listeners.iter().find(|o| o.name == l.name) else {
            lines.push(format!(
                "listener {}: added ({} {})",
                l.name,
                l.protocol.name(),
                l.bind
            ));
            continue;
        };
        let mut what = Vec::new();
        if o.bind != l.bind {
            what.push(format!("bind {} → {}", o.bind, l.bind));
        }
        if o.protocol != l.protocol {
            what.push(format!(
                "protocol {} → {}",
                o.protocol.name(),
                l.protocol.name()
            ));
        }
        let (op, np) = (pool_name(old, o.pool), pool_name(new, l.pool));
        if op != np {
            what.push(format!("pool {op} → {np}"));
        }
        if what.is_empty() && o != l {
            what.push("settings".into());
        }
        if !what.is_empty() {
            lines.push(format!("listener {}: changed {}", l.name, what.join(", ")));
        }
    }
}

/// What a change that re-deals every key moves (a new `hash_key`, or hashing given up).
const EVERY_KEY: Movement = Movement {
    moved: 1.0,
    ideal: 1.0,
    exact: true,
};

fn pool(o: &Pool, p: &Pool, r: &mut Report) {
    let by_id = |pool: &Pool| -> HashMap<String, Backend> {
        pool.backends.iter().map(|b| (b.id(), b.clone())).collect()
    };
    let (ob, nb) = (by_id(o), by_id(p));
    for b in &o.backends {
        if !nb.contains_key(&b.id()) {
            r.lines.push(format!("pool {}: - {}", p.name, b.id()));
        }
    }
    for b in &p.backends {
        match ob.get(&b.id()) {
            None => r.lines.push(format!(
                "pool {}: + {} (weight {}{})",
                p.name,
                b.id(),
                b.weight,
                match b.priority {
                    0 => String::new(),
                    n => format!(", priority {n}"),
                }
            )),
            Some(was) if was != b => r.lines.push(format!(
                "pool {}: ~ {} (weight {} → {}, priority {} → {})",
                p.name,
                b.id(),
                was.weight,
                b.weight,
                was.priority,
                b.priority
            )),
            Some(_) => {}
        }
    }
    // Names and SRV records resolve at run time: their changes are listed, and the keys they
    // move are not counted (no table can be built from a name here).
    named(
        &format!("pool {}: name", p.name),
        o.names
            .iter()
            .map(|n| n.label())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
        p.names
            .iter()
            .map(|n| n.label())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
        &mut r.lines,
    );
    let srv = |x: &Pool| x.discovery.as_ref().map(|d| d.name.clone());
    if srv(o) != srv(p) {
        let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        r.lines.push(format!(
            "pool {}: discovery {} → {}",
            p.name,
            show(srv(o)),
            show(srv(p))
        ));
    }
    let hashed = |x: &Pool| x.algorithm == Algorithm::ConsistentHash;
    if o.algorithm != p.algorithm {
        r.lines.push(format!(
            "pool {}: algorithm {} → {}{}",
            p.name,
            o.algorithm.name(),
            p.algorithm.name(),
            if hashed(o) {
                ": keys are no longer sticky"
            } else {
                ""
            }
        ));
    }
    if hashed(o) && !hashed(p) {
        // No key keeps its backend but by chance: as a change of hash_key, every key moves,
        // and `--max-moved` must see it.
        r.moved.push(Moved {
            group: p.name.clone(),
            movement: EVERY_KEY,
        });
    }
    if !(hashed(o) && hashed(p)) {
        return;
    }
    if o.hash_key != p.hash_key {
        r.lines.push(format!(
            "{}: every key moves (hash_key {} → {})",
            p.name,
            o.hash_key.describe(),
            p.hash_key.describe()
        ));
        r.moved.push(Moved {
            group: p.name.clone(),
            movement: EVERY_KEY,
        });
        return;
    }
    let mut priorities: Vec<u8> = o
        .backends
        .iter()
        .chain(&p.backends)
        .map(|b| b.priority)
        .collect();
    priorities.sort_unstable();
    priorities.dedup();
    for priority in priorities {
        let group = match priority {
            0 => p.name.clone(),
            n => format!("{} (priority {n})", p.name),
        };
        let (before, after) = (o.members(priority), p.members(priority));
        if before.is_empty() && after.is_empty() {
            continue;
        }
        if priority > 0 && (before.is_empty() || after.is_empty()) {
            // A level that comes or goes holds keys only while the levels below it are
            // degraded: no key served now moves, so it does not count against --max-moved.
            let what = if before.is_empty() {
                "added"
            } else {
                "removed"
            };
            r.lines.push(format!(
                "{group}: level {what}; it takes keys only while lower levels are degraded"
            ));
            continue;
        }
        let m = movement(&before, &after);
        if m.moved == 0.0 {
            continue;
        }
        r.lines.push(format!(
            "{group}: {:.1}% of keys move (ideal {:.1}%{})",
            m.moved * 100.0,
            m.ideal * 100.0,
            if m.exact {
                ""
            } else {
                ", estimated over 1,000,000 keys"
            }
        ));
        r.moved.push(Moved { group, movement: m });
    }
}

/// Items identified by name: those only in the old config and those only in the new one.
fn named<'a>(
    kind: &str,
    old: impl Iterator<Item = &'a str> + Clone,
    new: impl Iterator<Item = &'a str> + Clone,
    lines: &mut Vec<String>,
) {
    for o in old.clone() {
        if !new.clone().any(|n| n == o) {
            lines.push(format!("{kind} {o}: removed"));
        }
    }
    for n in new {
        if !old.clone().any(|o| o == n) {
            lines.push(format!("{kind} {n}: added"));
        }
    }
}

/// `--max-moved`: `30%` or `30` (percent), up to 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 30%)"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?} is not between 0% and 100%"));
    }
    Ok(v / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::config::{load, Source};

    fn config(backends: &str, algorithm: &str) -> Config {
        let text = format!(
            "[[listener]]\nname=\"l\"\nbind=\"127.0.0.1:1\"\npool=\"web\"\n\
             [[pool]]\nname=\"web\"\nalgorithm=\"{algorithm}\"\nbackends=[{backends}]\n"
        );
        load(
            Source {
                name: "t.toml".into(),
                text,
            },
            None,
        )
        .expect("valid")
        .config
    }

    const FOUR: &str =
        r#"{addr="10.0.0.1:80"},{addr="10.0.0.2:80"},{addr="10.0.0.3:80"},{addr="10.0.0.4:80"}"#;

    #[test]
    fn a_member_leaving_a_hashed_pool_is_named_with_the_keys_it_moves() {
        let old = config(FOUR, "consistent-hash");
        let new = config(
            r#"{addr="10.0.0.1:80"},{addr="10.0.0.2:80"},{addr="10.0.0.4:80"}"#,
            "consistent-hash",
        );
        let r = diff(&old, &new);
        assert_eq!(r.lines[0], "pool web: - 10.0.0.3:80");
        let moved = r.worst().expect("a hashed group moved").movement;
        assert!((moved.moved - 0.25).abs() <= 0.01, "{moved:?}");
        assert!(r.lines[1].starts_with("web: 2"), "{:?}", r.lines);
        assert!(r.lines[1].ends_with("of keys move (ideal 25.0%)"));
    }

    #[test]
    fn the_same_config_reordered_changes_nothing() {
        let old = config(FOUR, "consistent-hash");
        let new = config(
            r#"{addr="10.0.0.4:80"},{addr="10.0.0.3:80"},{addr="10.0.0.2:80"},{addr="10.0.0.1:80"}"#,
            "consistent-hash",
        );
        let r = diff(&old, &new);
        assert_eq!(r.render(), "no changes\n");
        assert!(r.worst().is_none());
    }

    #[test]
    fn weights_backups_and_algorithms_are_reported() {
        let old = config(FOUR, "consistent-hash");
        let new = config(
            r#"{addr="10.0.0.1:80",weight=3},{addr="10.0.0.2:80"},{addr="10.0.0.3:80"},{addr="10.0.0.4:80",backup=true},{addr="10.0.0.5:80"}"#,
            "weighted-round-robin",
        );
        let r = diff(&old, &new).lines;
        assert!(r.contains(&"pool web: ~ 10.0.0.1:80 (weight 1 → 3, priority 0 → 0)".into()));
        assert!(r.contains(&"pool web: ~ 10.0.0.4:80 (weight 1 → 1, priority 0 → 1)".into()));
        assert!(r.contains(&"pool web: + 10.0.0.5:80 (weight 1)".into()));
        assert!(r.contains(
            &"pool web: algorithm consistent-hash → weighted-round-robin: keys are no longer sticky".into()
        ));
    }

    #[test]
    fn giving_up_hashing_moves_every_key_for_max_moved() {
        let old = config(FOUR, "consistent-hash");
        let new = config(FOUR, "round-robin");
        let r = diff(&old, &new);
        let worst = r.worst().expect("leaving consistent-hash moves keys");
        assert_eq!(worst.group, "web");
        assert_eq!(worst.movement.moved, 1.0);
        // Taking hashing up moves nothing that was sticky.
        assert!(diff(&new, &old).worst().is_none());
    }

    #[test]
    fn a_backup_level_coming_or_going_moves_no_served_key() {
        let old = config(FOUR, "consistent-hash");
        let new = config(
            &format!("{FOUR},{{addr=\"10.0.0.9:80\",backup=true}}"),
            "consistent-hash",
        );
        for (a, b, what) in [(&old, &new, "added"), (&new, &old, "removed")] {
            let r = diff(a, b);
            assert!(r.worst().is_none(), "{:?}", r.lines);
            assert!(
                r.lines
                    .iter()
                    .any(|l| l.starts_with(&format!("web (priority 1): level {what}"))),
                "{:?}",
                r.lines
            );
        }
    }

    #[test]
    fn percentages_parse_with_or_without_the_sign() {
        assert_eq!(parse_percent("30%"), Ok(0.3));
        assert_eq!(parse_percent("12.5"), Ok(0.125));
        assert!(parse_percent("130%").is_err());
        assert!(parse_percent("-1%").is_err());
        assert!(parse_percent("lots").is_err());
    }
}
