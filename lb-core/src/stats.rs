//! What the dashboard shows beyond connection counters: latency histograms with fixed
//! buckets (atomics, no lock on the data path), per-route request statistics kept across
//! reloads, and the last five minutes of rate, error rate and p99 per listener and per
//! backend in fixed-size rings. No I/O and no clock: the sampler passes `now`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in milliseconds; the last bucket takes the rest.
/// Roughly 1-2.5-5 per decade (Prometheus' default buckets, in ms), enough for p50/p99 on a
/// dashboard.
pub const BOUNDS_MS: [u64; 14] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000,
];
const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// Counts by latency bucket.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        let i = BOUNDS_MS.partition_point(|&b| b < ms);
        self.counts[i].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Counts {
        Counts(std::array::from_fn(|i| self.counts[i].load(Relaxed)))
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts(pub [u64; BUCKETS]);

impl Counts {
    /// What was recorded between `before` and `self`.
    pub fn since(&self, before: &Counts) -> Counts {
        Counts(std::array::from_fn(|i| {
            self.0[i].saturating_sub(before.0[i])
        }))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The upper bound (ms) of the bucket holding quantile `q` (0 < q ≤ 1); `None` when empty.
    /// The last bucket reads as twice the last bound.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &c) in self.0.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(
                    BOUNDS_MS
                        .get(i)
                        .copied()
                        .unwrap_or(BOUNDS_MS[BUCKETS - 2] * 2),
                );
            }
        }
        None
    }
}

/// Refusal statuses counted per policy.
pub const REFUSALS: [u16; 3] = [401, 403, 429];

/// One route's requests: by status class, latency, refusals by policy, cache hits.
#[derive(Debug)]
pub struct RouteStats {
    /// 1xx..5xx (index = class - 1).
    pub classes: [AtomicU64; 5],
    pub latency: Histogram,
    /// The route's policies by name, each with its 401/403/429 refusals.
    pub refusals: Vec<(String, [AtomicU64; 3])>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
}

impl RouteStats {
    fn new(policies: &[String]) -> Self {
        Self {
            classes: Default::default(),
            latency: Histogram::default(),
            refusals: policies
                .iter()
                .map(|p| (p.clone(), Default::default()))
                .collect(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        }
    }

    /// Counts an answer with `status`.
    pub fn count(&self, status: u16) {
        if let Some(c) = self.classes.get(usize::from(status / 100).wrapping_sub(1)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts policy `i`'s refusal with `status` (other statuses are not refusals of note).
    pub fn refused(&self, i: usize, status: u16) {
        if let (Some((_, by)), Some(k)) = (
            self.refusals.get(i),
            REFUSALS.iter().position(|&s| s == status),
        ) {
            by[k].fetch_add(1, Relaxed);
        }
    }

    pub fn requests(&self) -> u64 {
        self.classes.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn errors(&self) -> u64 {
        self.classes[4].load(Relaxed)
    }
}

/// Route statistics by (listener, route), kept across reloads while the route keeps its
/// name and policies; one registry per process (routes are few: bounded by the config).
#[derive(Debug, Default)]
pub struct Registry {
    routes: Mutex<HashMap<(String, String), Arc<RouteStats>>>,
}

impl Registry {
    /// The process's registry.
    pub fn global() -> &'static Registry {
        static R: OnceLock<Registry> = OnceLock::new();
        R.get_or_init(Registry::default)
    }

    /// The statistics of route `route` of `listener` with these policies (new ones when the
    /// policies changed).
    pub fn route(&self, listener: &str, route: &str, policies: &[String]) -> Arc<RouteStats> {
        let mut map = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let key = (listener.to_string(), route.to_string());
        match map.get(&key) {
            Some(s) if s.refusals.iter().map(|(n, _)| n).eq(policies.iter()) => s.clone(),
            _ => {
                let s = Arc::new(RouteStats::new(policies));
                map.insert(key, s.clone());
                s
            }
        }
    }

    /// The statistics of `route` of `listener`, if it served.
    pub fn get(&self, listener: &str, route: &str) -> Option<Arc<RouteStats>> {
        let map = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(listener.to_string(), route.to_string())).cloned()
    }

    /// Forgets routes no longer in the config (`keep` says which are).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut map = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(l, r), _| keep(l, r));
    }
}

/// Samples kept per series: five minutes at one a second.
pub const SLOTS: usize = 300;

/// One sample of a series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    /// Requests (HTTP) or connections (TCP) per second.
    pub rate: f64,
    /// Failures per second (5xx answers, failed attempts, connect errors).
    pub errors: f64,
    /// p99 latency in ms over the interval, when anything was timed.
    pub p99_ms: Option<u64>,
}

/// Cumulative counters of one thing at one moment, from which a [`Point`] is the difference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub count: u64,
    pub errors: u64,
    pub latency: Counts,
}

/// A fixed ring of the last [`SLOTS`] points and the totals of the last sample.
#[derive(Debug, Clone)]
pub struct Series {
    points: Box<[Point; SLOTS]>,
    /// Where the next point goes.
    next: usize,
    len: usize,
    last: Totals,
}

impl Series {
    fn new(first: Totals) -> Self {
        Self {
            points: Box::new([Point::default(); SLOTS]),
            next: 0,
            len: 0,
            last: first,
        }
    }

    fn push(&mut self, now: Totals, secs: f64) {
        let d = now.latency.since(&self.last.latency);
        let p = Point {
            rate: now.count.saturating_sub(self.last.count) as f64 / secs,
            errors: now.errors.saturating_sub(self.last.errors) as f64 / secs,
            p99_ms: d.quantile_ms(0.99),
        };
        self.points[self.next] = p;
        self.next = (self.next + 1) % SLOTS;
        self.len = (self.len + 1).min(SLOTS);
        self.last = now;
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &Point> {
        let start = (self.next + SLOTS - self.len) % SLOTS;
        (0..self.len).map(move |i| &self.points[(start + i) % SLOTS])
    }
}

/// Series by name (listeners as `NAME`, backends as `POOL/ADDR`): only the names of the last
/// sample are kept, so the history is bounded by the config, never by uptime.
#[derive(Debug, Default)]
pub struct History {
    series: HashMap<String, Series>,
}

impl History {
    /// Adds one sample, `secs` after the last: every named thing's totals now.
    pub fn sample(&mut self, now: Vec<(String, Totals)>, secs: f64) {
        let secs = secs.max(0.001);
        let mut next = HashMap::with_capacity(now.len());
        for (name, totals) in now {
            let s = match self.series.remove(&name) {
                Some(mut s) => {
                    s.push(totals, secs);
                    s
                }
                None => Series::new(totals),
            };
            next.insert(name, s);
        }
        self.series = next;
    }

    pub fn get(&self, name: &str) -> Option<&Series> {
        self.series.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Series)> {
        self.series.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_read_the_bucket_bounds() {
        let h = Histogram::default();
        for _ in 0..98 {
            h.record(Duration::from_millis(3));
        }
        h.record(Duration::from_millis(40));
        h.record(Duration::from_secs(60));
        let c = h.snapshot();
        assert_eq!(c.total(), 100);
        assert_eq!(c.quantile_ms(0.5), Some(5));
        assert_eq!(c.quantile_ms(0.99), Some(50));
        assert_eq!(c.quantile_ms(1.0), Some(60_000));
        assert_eq!(Counts::default().quantile_ms(0.99), None);
    }

    #[test]
    fn route_stats_count_classes_and_refusals_by_policy() {
        let r = Registry::default();
        let s = r.route("web", "api", &["jwt".into(), "limit".into()]);
        s.count(200);
        s.count(503);
        s.count(99);
        s.count(600);
        s.refused(1, 429);
        s.refused(0, 401);
        s.refused(0, 500);
        s.refused(7, 429);
        assert_eq!((s.requests(), s.errors()), (2, 1));
        assert_eq!(s.refusals[1].1[2].load(Relaxed), 1);
        assert_eq!(s.refusals[0].1[0].load(Relaxed), 1);
        // A reload with the same policies keeps the counts; other policies start anew.
        let same = r.route("web", "api", &["jwt".into(), "limit".into()]);
        assert!(Arc::ptr_eq(&s, &same));
        let other = r.route("web", "api", &["jwt".into()]);
        assert_eq!(other.requests(), 0);
        r.retain(|_, route| route != "api");
        assert!(r.get("web", "api").is_none());
    }

    #[test]
    fn series_give_rates_and_p99_per_interval_and_forget_removed_names() {
        let mut h = History::default();
        let t = |count, errors| Totals {
            count,
            errors,
            latency: Counts::default(),
        };
        h.sample(vec![("a".into(), t(0, 0)), ("b".into(), t(5, 0))], 1.0);
        let mut lat = Counts::default();
        lat.0[3] = 10;
        h.sample(
            vec![(
                "a".into(),
                Totals {
                    count: 20,
                    errors: 2,
                    latency: lat,
                },
            )],
            2.0,
        );
        let a: Vec<Point> = h.get("a").expect("a").points().copied().collect();
        assert_eq!(
            a,
            vec![Point {
                rate: 10.0,
                errors: 1.0,
                p99_ms: Some(10)
            }]
        );
        assert!(h.get("b").is_none(), "b left the config");
    }

    proptest! {
        #[test]
        fn a_ring_never_holds_more_than_its_slots_and_keeps_the_newest(n in 0usize..1000) {
            let mut h = History::default();
            for i in 0..=n {
                h.sample(vec![("x".into(), Totals { count: i as u64 * 2, ..Totals::default() })], 1.0);
            }
            let pts: Vec<Point> = h.get("x").expect("x").points().copied().collect();
            prop_assert_eq!(pts.len(), n.min(SLOTS));
            prop_assert!(pts.iter().all(|p| p.rate == 2.0));
        }
    }
}
