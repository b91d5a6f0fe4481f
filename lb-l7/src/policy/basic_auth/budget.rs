//! The failure budget of a `basic_auth` policy: how many bcrypt verifications that did not
//! verify lb runs for a user name, a source, and the two together, per window. Pure: no I/O,
//! and the time is an argument.
//!
//! Why these three and not a lock-out: an attacker guessing one user's password from one
//! address spends the (user, source) budget, after which that pair is answered 401 without
//! bcrypt until its window ends; the same user from other addresses is not touched. Many
//! addresses against one user meet the larger per-user budget, and one address spraying
//! many names meets the per-source one (IPv6 by /64, what one host usually holds). Nothing
//! lasts past a window (a minute), so an attacker cannot lock a legitimate user out for
//! good, and credentials that already verified pass without any budget (the policy
//! remembers them), so a signed-in user keeps working through an attack. That is what users
//! of nginx's `limit_req` in front of `auth_basic`, or of Kong's brute-force plugins, expect:
//! the attacker is slowed, the user is not locked out.
//!
//! A verification is spent before it runs (so concurrent guesses cannot overshoot) and
//! given back when it verified. Unknown user names spend exactly as known ones do: the
//! answer must not tell them apart.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How many failed verifications each key may cost per window.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One user name from one source.
    pub pair: u32,
    /// One user name, all sources.
    pub user: u32,
    /// One source, all user names.
    pub source: u32,
    pub window: Duration,
    /// Keys held per table at most; past it the least spent window is forgotten.
    pub max_keys: usize,
}

/// lb's budget: 5 guesses a minute per user and address, 50 per user, 50 per address.
pub const LIMITS: Limits = Limits {
    pair: 5,
    user: 50,
    source: 50,
    window: Duration::from_secs(60),
    max_keys: 10_000,
};

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    spent: u32,
}

/// One table of windows, keyed by a hash (user names are the client's: bounded by the hash,
/// not their length). The hasher is seeded per process, so keys cannot be made to collide.
#[derive(Debug, Default)]
struct Table(HashMap<u64, Window>);

impl Table {
    fn spent(&self, key: u64, now: Instant, window: Duration) -> u32 {
        match self.0.get(&key) {
            Some(w) if now.duration_since(w.start) < window => w.spent,
            _ => 0,
        }
    }

    fn spend(&mut self, key: u64, now: Instant, limits: &Limits) {
        if !self.0.contains_key(&key) && self.0.len() >= limits.max_keys {
            self.0
                .retain(|_, w| now.duration_since(w.start) < limits.window);
            // The least spent goes (the oldest of those): forgetting a spent window would
            // hand its budget back, so an attacker could buy a fresh one for a name under
            // attack with as many throwaway names as the table holds.
            if self.0.len() >= limits.max_keys {
                if let Some(least) = self
                    .0
                    .iter()
                    .min_by_key(|(_, w)| (w.spent, w.start))
                    .map(|(k, _)| *k)
                {
                    self.0.remove(&least);
                }
            }
        }
        let w = self.0.entry(key).or_insert(Window {
            start: now,
            spent: 0,
        });
        if now.duration_since(w.start) >= limits.window {
            *w = Window {
                start: now,
                spent: 0,
            };
        }
        w.spent += 1;
    }

    fn give_back(&mut self, key: u64) {
        if let Some(w) = self.0.get_mut(&key) {
            w.spent = w.spent.saturating_sub(1);
        }
    }
}

/// The three tables of one policy.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    seed: std::collections::hash_map::RandomState,
    pairs: Table,
    users: Table,
    sources: Table,
}

/// The keys of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pair: u64,
    user: u64,
    source: u64,
}

/// IPv4 (mapped or not) by address, IPv6 by its /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            seed: Default::default(),
            pairs: Table::default(),
            users: Table::default(),
            sources: Table::default(),
        }
    }

    pub fn attempt(&self, user: &str, source: IpAddr) -> Attempt {
        let source = source_of(source);
        Attempt {
            pair: self.seed.hash_one((user, source)),
            user: self.seed.hash_one(("user", user)),
            source: self.seed.hash_one(source),
        }
    }

    /// Spends one verification for `a` if every budget it falls under has one left; `false`
    /// means answer without verifying.
    pub fn spend(&mut self, a: Attempt, now: Instant) -> bool {
        let (l, w) = (&self.limits, self.limits.window);
        let room = self.pairs.spent(a.pair, now, w) < l.pair
            && self.users.spent(a.user, now, w) < l.user
            && self.sources.spent(a.source, now, w) < l.source;
        if room {
            let l = self.limits;
            self.pairs.spend(a.pair, now, &l);
            self.users.spend(a.user, now, &l);
            self.sources.spend(a.source, now, &l);
        }
        room
    }

    /// Gives back what `a` spent: its credentials verified.
    pub fn verified(&mut self, a: Attempt) {
        self.pairs.give_back(a.pair);
        self.users.give_back(a.user);
        self.sources.give_back(a.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        pair: 2,
        user: 3,
        source: 4,
        window: Duration::from_secs(60),
        max_keys: 100,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn each_budget_holds_and_a_window_ends_it() {
        let mut b = Budget::new(SMALL);
        let t0 = Instant::now();
        let alice_a = b.attempt("alice", ip("192.0.2.1"));
        assert!(b.spend(alice_a, t0) && b.spend(alice_a, t0));
        assert!(!b.spend(alice_a, t0), "the pair's 2 are spent");
        // Alice from elsewhere: her own pair, until the user's 3 are spent.
        let alice_b = b.attempt("alice", ip("192.0.2.2"));
        assert!(b.spend(alice_b, t0));
        assert!(!b.spend(alice_b, t0), "the user's 3 are spent");
        // Bob from the first address: his own pair and user; the source has 4 (2 left).
        let bob_a = b.attempt("bob", ip("192.0.2.1"));
        assert!(b.spend(bob_a, t0) && b.spend(bob_a, t0));
        let carol_a = b.attempt("carol", ip("192.0.2.1"));
        assert!(!b.spend(carol_a, t0), "the source's 4 are spent");
        // A refusal spent nothing; a window later, all is back.
        let later = t0 + SMALL.window;
        assert!(b.spend(alice_a, later) && b.spend(carol_a, later));
    }

    #[test]
    fn a_verified_attempt_gives_its_spending_back() {
        let mut b = Budget::new(SMALL);
        let t0 = Instant::now();
        let a = b.attempt("alice", ip("192.0.2.1"));
        for _ in 0..10 {
            assert!(b.spend(a, t0));
            b.verified(a);
        }
    }

    #[test]
    fn sources_are_addresses_or_ipv6_64s() {
        assert_eq!(source_of(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(source_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        let mut b = Budget::new(SMALL);
        let t0 = Instant::now();
        // Rotating through one /64 does not buy more guesses.
        for (i, user) in ["u1", "u2", "u3", "u4"].into_iter().enumerate() {
            let a = b.attempt(user, ip(&format!("2001:db8::{}", i + 1)));
            assert!(b.spend(a, t0));
        }
        assert!(!b.spend(b.attempt("u5", ip("2001:db8::99")), t0));
        assert!(b.spend(b.attempt("u5", ip("2001:db8:0:1::99")), t0));
    }

    #[test]
    fn a_full_table_does_not_hand_a_spent_budget_back() {
        let limits = Limits {
            max_keys: 4,
            source: 100,
            ..SMALL
        };
        let mut b = Budget::new(limits);
        let t0 = Instant::now();
        let alice = b.attempt("alice", ip("192.0.2.1"));
        while b.spend(alice, t0) {}
        // Fresh names from elsewhere, each a verification of its own, fill the tables.
        for i in 0..limits.max_keys {
            let a = b.attempt(&format!("u{i}"), ip("198.51.100.1"));
            assert!(b.spend(a, t0 + Duration::from_millis(1)));
        }
        assert!(
            !b.spend(alice, t0 + Duration::from_millis(2)),
            "alice's spent window was forgotten to make room"
        );
    }

    #[test]
    fn tables_stay_bounded() {
        let mut b = Budget::new(SMALL);
        let t0 = Instant::now();
        for i in 0..1_000u32 {
            let a = b.attempt(&format!("user{i}"), IpAddr::from(i.to_be_bytes()));
            b.spend(a, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(b.pairs.0.len() <= SMALL.max_keys && b.users.0.len() <= SMALL.max_keys);
        assert!(b.sources.0.len() <= SMALL.max_keys);
    }
}
