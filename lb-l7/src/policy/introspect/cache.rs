//! The answers an introspection policy reuses, by a keyed digest of the token (never the
//! token: 128 bits of SHA-256 under a secret drawn per policy, as the rate limit keeps its
//! keys — [`super::super::rate_key`]), with the introspection calls in flight so that
//! concurrent requests with one new token share one call.
//!
//! Bounded: at most [`MAX_ACTIVE`] active answers (each with its kept claims of at most
//! [`super::answer::MAX_KEPT`] bytes), [`MAX_INACTIVE`] inactive ones (a digest, a reason and
//! a time each) — kept apart so that a flood of made-up tokens, which only ever adds inactive
//! answers, never pushes out the active ones — and [`MAX_IN_FLIGHT`] calls in flight. A full
//! table first drops what has expired, then an arbitrary eighth of itself. No I/O; look-ups
//! take the time as an argument, and a finished call is filed at tokio's clock (so paused
//! test time applies).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::answer::Grant;
use crate::policy::rate_key::{self, KeyDigest};

/// Active answers kept, at most.
pub const MAX_ACTIVE: usize = 20_000;
/// Inactive answers kept, at most.
pub const MAX_INACTIVE: usize = 100_000;
/// Introspection calls in flight, at most (each for a different token): beyond them a
/// token is not checked (the policy's `on_error`), so lb never floods the endpoint.
pub const MAX_IN_FLIGHT: usize = 256;

/// What the policy concluded of a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Active(Arc<Grant>),
    /// The metric label of why not.
    Inactive(&'static str),
    /// The endpoint could not say; why, for the log.
    Unavailable(String),
}

/// A verdict and until when it may be reused (not after it; `now` or earlier: not at all).
#[derive(Debug, Clone)]
pub struct Settled {
    pub verdict: Verdict,
    pub until: Instant,
}

type Cell = Arc<OnceCell<Settled>>;

#[derive(Debug, Default)]
struct Tables {
    active: HashMap<KeyDigest, (Instant, Arc<Grant>)>,
    inactive: HashMap<KeyDigest, (Instant, &'static str)>,
    in_flight: HashMap<KeyDigest, Cell>,
}

#[derive(Debug)]
pub struct Cache {
    secret: [u8; 32],
    tables: Mutex<Tables>,
}

/// What a look-up found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A reusable verdict.
    Hit(Verdict),
    /// Nothing reusable: await the call through the ticket (shared with every concurrent
    /// request for the token).
    Miss(Ticket<'a>),
    /// Too many calls in flight.
    Busy,
}

/// A share in one token's introspection call. Dropping the last share of a call that
/// never finished (its requests gone) forgets the call; dropping a share of a finished
/// call files its verdict (once).
#[derive(Debug)]
pub struct Ticket<'a> {
    cache: &'a Cache,
    digest: KeyDigest,
    cell: Cell,
}

impl Ticket<'_> {
    pub fn cell(&self) -> &OnceCell<Settled> {
        &self.cell
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut t = self.cache.lock();
        let ours = t
            .in_flight
            .get(&self.digest)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell));
        if !ours {
            return;
        }
        match self.cell.get() {
            Some(s) => {
                t.in_flight.remove(&self.digest);
                let s = s.clone();
                t.file(self.digest, s, Instant::now());
            }
            // The table's share and this one: no one else waits for the call.
            None if Arc::strong_count(&self.cell) <= 2 => {
                t.in_flight.remove(&self.digest);
            }
            None => {}
        }
    }
}

/// Drops what expired by `now` from a full `table`, then an eighth of it if it is still full.
fn make_room<V>(table: &mut HashMap<KeyDigest, (Instant, V)>, max: usize, now: Instant) {
    if table.len() < max {
        return;
    }
    table.retain(|_, (until, _)| *until > now);
    if table.len() >= max {
        let drop: Vec<KeyDigest> = table.keys().take(max / 8 + 1).copied().collect();
        for k in drop {
            table.remove(&k);
        }
    }
}

impl Tables {
    fn file(&mut self, digest: KeyDigest, s: Settled, now: Instant) {
        if s.until <= now {
            return;
        }
        match s.verdict {
            Verdict::Active(g) => {
                make_room(&mut self.active, MAX_ACTIVE, now);
                self.inactive.remove(&digest);
                self.active.insert(digest, (s.until, g));
            }
            Verdict::Inactive(why) => {
                make_room(&mut self.inactive, MAX_INACTIVE, now);
                self.active.remove(&digest);
                self.inactive.insert(digest, (s.until, why));
            }
            Verdict::Unavailable(_) => {}
        }
    }
}

impl Cache {
    /// An empty cache with a secret of its own.
    pub fn new() -> Self {
        Self::with_secret(rate_key::random_secret())
    }

    pub fn with_secret(secret: [u8; 32]) -> Self {
        Self {
            secret,
            tables: Mutex::new(Tables::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The digest `token` is kept under.
    pub fn digest(&self, token: &str) -> KeyDigest {
        rate_key::local(&self.secret, token.as_bytes())
    }

    /// The verdict reusable at `now` for `digest`, or a share in its call.
    pub fn lookup(&self, digest: KeyDigest, now: Instant) -> Lookup<'_> {
        let mut t = self.lock();
        if let Some((until, g)) = t.active.get(&digest) {
            if *until > now {
                return Lookup::Hit(Verdict::Active(g.clone()));
            }
            t.active.remove(&digest);
        }
        if let Some((until, why)) = t.inactive.get(&digest) {
            if *until > now {
                return Lookup::Hit(Verdict::Inactive(why));
            }
            t.inactive.remove(&digest);
        }
        let cell = match t.in_flight.get(&digest) {
            Some(c) => c.clone(),
            None if t.in_flight.len() >= MAX_IN_FLIGHT => return Lookup::Busy,
            None => {
                let c = Cell::default();
                t.in_flight.insert(digest, c.clone());
                c
            }
        };
        Lookup::Miss(Ticket {
            cache: self,
            digest,
            cell,
        })
    }

    /// `(active, inactive, in flight)` entries.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let t = self.lock();
        (t.active.len(), t.inactive.len(), t.in_flight.len())
    }
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn grant() -> Arc<Grant> {
        Arc::new(Grant {
            scopes: vec![],
            exp: None,
            claims: Arc::new(serde_json::Value::Null),
            cacheable: true,
        })
    }

    fn settle(c: &Cache, token: &str, verdict: Verdict, until: Instant) {
        let d = c.digest(token);
        let Lookup::Miss(ticket) = c.lookup(d, Instant::now()) else {
            panic!("a miss")
        };
        ticket
            .cell()
            .set(Settled { verdict, until })
            .expect("first");
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_are_reused_until_their_time() {
        let c = Cache::with_secret([7; 32]);
        let now = Instant::now();
        settle(
            &c,
            "good",
            Verdict::Active(grant()),
            now + Duration::from_secs(5),
        );
        settle(
            &c,
            "bad",
            Verdict::Inactive("inactive"),
            now + Duration::from_secs(1),
        );
        settle(
            &c,
            "down",
            Verdict::Unavailable("x".into()),
            now + Duration::from_secs(9),
        );
        assert_eq!(c.sizes(), (1, 1, 0), "unavailable is never kept");
        let at = |s| now + Duration::from_millis(s);
        assert!(matches!(
            c.lookup(c.digest("good"), at(4_999)),
            Lookup::Hit(Verdict::Active(_))
        ));
        assert!(matches!(
            c.lookup(c.digest("bad"), at(999)),
            Lookup::Hit(Verdict::Inactive("inactive"))
        ));
        assert!(matches!(
            c.lookup(c.digest("bad"), at(1_000)),
            Lookup::Miss(_)
        ));
        assert!(matches!(
            c.lookup(c.digest("good"), at(5_000)),
            Lookup::Miss(_)
        ));
        assert!(matches!(c.lookup(c.digest("down"), at(0)), Lookup::Miss(_)));
        // The misses above were dropped unfinished: nothing stays in flight.
        assert_eq!(c.sizes(), (0, 0, 0));
    }

    #[test]
    fn concurrent_misses_share_one_call_and_a_finished_call_is_filed_once() {
        let c = Cache::new();
        let d = c.digest("t");
        let now = Instant::now();
        let (Lookup::Miss(a), Lookup::Miss(b)) = (c.lookup(d, now), c.lookup(d, now)) else {
            panic!("misses")
        };
        assert!(Arc::ptr_eq(&a.cell, &b.cell), "one call");
        drop(a);
        assert_eq!(c.sizes(), (0, 0, 1), "b still waits");
        b.cell()
            .set(Settled {
                verdict: Verdict::Inactive("expired"),
                until: now + Duration::from_secs(1),
            })
            .expect("set");
        drop(b);
        assert_eq!(c.sizes(), (0, 1, 0));
    }

    #[test]
    fn tables_and_calls_in_flight_are_bounded() {
        let c = Cache::new();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut tickets = Vec::new();
        for i in 0..MAX_IN_FLIGHT {
            match c.lookup(c.digest(&format!("t{i}")), now) {
                Lookup::Miss(t) => tickets.push(t),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(c.lookup(c.digest("one more"), now), Lookup::Busy));
        drop(tickets);
        for i in 0..(MAX_INACTIVE + 10) {
            settle(&c, &format!("n{i}"), Verdict::Inactive("inactive"), later);
        }
        settle(&c, "a", Verdict::Active(grant()), later);
        let (active, inactive, flying) = c.sizes();
        assert_eq!((active, flying), (1, 0));
        assert!(
            inactive <= MAX_INACTIVE && inactive > MAX_INACTIVE / 2,
            "{inactive}"
        );
        assert!(
            matches!(c.lookup(c.digest("a"), now), Lookup::Hit(_)),
            "made-up tokens never push out an active one"
        );
    }

    #[test]
    fn digests_are_keyed() {
        let (a, b) = (Cache::new(), Cache::new());
        assert_eq!(a.digest("tok"), a.digest("tok"));
        assert_ne!(a.digest("tok"), b.digest("tok"));
        assert_ne!(a.digest("tok"), a.digest("tok2"));
    }
}
