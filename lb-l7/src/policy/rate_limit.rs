//! `kind = "rate_limit"`: `requests` per `per` for each key (client address, a header, the
//! API-key consumer, or the whole route), smoothly: the generic cell rate algorithm (GCRA,
//! a token bucket kept as one timestamp per key) lets `burst` requests through at once and
//! then one every `per / requests`. A refused request gets 429 with `Retry-After`; every
//! answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
//!
//! Keys live in sharded maps, bounded by `max_keys`: a key whose bucket is full again is
//! forgotten at no loss (it would be allowed anyway), and if all are busy the shard sheds the
//! ones closest to full. A key is kept as a fixed-size digest ([`super::rate_key`]), never as
//! the bytes a client sent, so `max_keys` bounds the memory in bytes too
//! ([`RateLimit::memory`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use lb_core::config::{OnRedisError, RateKey, RateStore};

use super::rate_key::{self, KeyDigest};
use super::redis_store::{Decision, Redis};
use super::{refuse_with, Policy, Refusal, RequestInfo, Waiting};

const SHARDS: usize = 16;

/// One decision of the GCRA, in nanoseconds: `tat` is the key's theoretical arrival time,
/// `interval` the time one request costs, `tolerance` how far ahead of now `tat` may run
/// (`interval × (burst − 1)`). `Ok(new tat)`, or `Err(wait before a retry may pass)`.
pub fn gcra(tat: u64, now: u64, interval: u64, tolerance: u64) -> Result<u64, u64> {
    let tat = tat.max(now);
    let ahead = tat - now;
    if ahead > tolerance {
        return Err(ahead - tolerance);
    }
    Ok(tat.saturating_add(interval))
}

/// Requests still allowed right now by a key at `tat` (after this one was counted).
pub fn remaining(tat: u64, now: u64, interval: u64, tolerance: u64) -> u64 {
    let ahead = tat.saturating_sub(now);
    (tolerance + interval).saturating_sub(ahead) / interval.max(1)
}

#[derive(Debug)]
pub struct RateLimit {
    limit: u32,
    interval: u64,
    tolerance: u64,
    key: RateKey,
    shard_cap: usize,
    shards: Vec<Mutex<HashMap<KeyDigest, u64>>>,
    /// Hashes this limit's local keys ([`rate_key::local`]).
    secret: [u8; 32],
    refused: metrics::Counter,
    /// `store = "redis"`: the shared store, and what to do while it does not answer.
    redis: Option<(Arc<Redis>, OnRedisError)>,
}

fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

impl RateLimit {
    pub fn new(
        name: &str,
        requests: u32,
        per: Duration,
        burst: u32,
        key: RateKey,
        max_keys: usize,
        store: &RateStore,
    ) -> Self {
        let interval = (per.as_nanos() / u128::from(requests.max(1))).max(1) as u64;
        let redis = match store {
            RateStore::Local => None,
            RateStore::Redis { url, on_error } => {
                Redis::new(url, format!("lb:rl:{name}:"), "rate limit store")
                    .map(|s| (s, *on_error))
            }
        };
        Self {
            redis,
            limit: burst.max(1),
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
            key,
            shard_cap: max_keys.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            secret: rate_key::random_secret(),
            refused: metrics::counter!("lb_ratelimited_total", "policy" => name.to_string()),
        }
    }

    /// The request's key, handed to `f` as bytes (borrowed from the request where it can be).
    fn with_key<R>(
        &self,
        info: &RequestInfo,
        headers: &HeaderMap,
        f: impl FnOnce(&[u8]) -> R,
    ) -> R {
        match &self.key {
            RateKey::Ip => match info.client {
                std::net::IpAddr::V4(a) => f(&a.octets()),
                std::net::IpAddr::V6(a) => f(&a.octets()),
            },
            RateKey::Header(h) => f(headers.get(h.as_str()).map_or(&[], |v| v.as_bytes())),
            RateKey::ApiKey => f(info.consumer.as_deref().unwrap_or("").as_bytes()),
            RateKey::Jwt(claim) => {
                let text = info
                    .claims
                    .as_ref()
                    .and_then(|c| c.get(claim))
                    .map(super::jwt::claim_text)
                    .unwrap_or_default();
                f(text.as_bytes())
            }
            RateKey::Route => f(&[]),
            RateKey::GraphqlOperation => f(info.graphql.as_deref().unwrap_or("").as_bytes()),
        }
    }

    /// The local bucket of a key's bytes.
    pub fn digest(&self, key: &[u8]) -> KeyDigest {
        rate_key::local(&self.secret, key)
    }

    /// `(accounted, bound)`: the bytes the local buckets' tables hold now, and the most they
    /// can ever hold (each shard's table at its largest for `max_keys / 16` buckets),
    /// whatever keys clients send.
    pub fn memory(&self) -> (usize, usize) {
        let used = self
            .shards
            .iter()
            .map(|s| {
                let map = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                rate_key::table_bytes(map.capacity())
            })
            .sum();
        let bound = SHARDS * rate_key::table_bytes(rate_key::capacity_for(self.shard_cap));
        (used, bound)
    }

    /// Counts one request of `key` at `now`: `Ok(remaining)` or `Err(retry after, ns)`.
    pub fn take(&self, key: KeyDigest, now: u64) -> Result<u64, u64> {
        // The digest is uniform: its top bits pick the shard, the table hashes the rest.
        let shard = &self.shards[(key >> 120) as usize % SHARDS];
        let mut map = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tat = map.get(&key).copied().unwrap_or(0);
        let new = gcra(tat, now, self.interval, self.tolerance)?;
        if !map.contains_key(&key) && map.len() >= self.shard_cap {
            // Full buckets first: forgetting them changes no decision.
            map.retain(|_, t| *t > now);
            if map.len() >= self.shard_cap {
                let mut tats: Vec<u64> = map.values().copied().collect();
                tats.sort_unstable();
                let cut = tats[tats.len() / 10];
                map.retain(|_, t| *t > cut);
            }
            // Rebuilt rather than left with the tombstones `retain` leaves: with them a later
            // insert can rehash the table into twice its capacity, past the bound `memory`
            // promises (seen as a rare failure of huge_keys_cost_their_digest_only).
            let kept = std::mem::take(&mut *map);
            map.reserve(self.shard_cap);
            map.extend(kept);
        }
        map.insert(key, new);
        Ok(remaining(new, now, self.interval, self.tolerance))
    }

    fn reset_secs(&self, remaining: u64) -> u64 {
        // Time until the bucket is full again, rounded up.
        let missing = u64::from(self.limit).saturating_sub(remaining);
        (missing * self.interval).div_ceil(1_000_000_000)
    }
}

impl RateLimit {
    /// The answer to one counted request: `Ok(remaining)` or `Err(wait, ns)`.
    fn decide(&self, info: &mut RequestInfo, counted: Result<u64, u64>) -> Result<(), Refusal> {
        match counted {
            Ok(left) => {
                info.rate = Some((self.limit, left as u32, self.reset_secs(left)));
                Ok(())
            }
            Err(wait) => {
                self.refused.increment(1);
                let secs = wait.div_ceil(1_000_000_000).max(1);
                let v = |n: u64| HeaderValue::from(n);
                Err(refuse_with(
                    429,
                    "too many requests",
                    &[
                        (http::header::RETRY_AFTER, v(secs)),
                        (
                            HeaderName::from_static("ratelimit-limit"),
                            v(u64::from(self.limit)),
                        ),
                        (HeaderName::from_static("ratelimit-remaining"), v(0)),
                        (HeaderName::from_static("ratelimit-reset"), v(secs)),
                    ],
                ))
            }
        }
    }

    async fn shared(
        &self,
        store: &Redis,
        on_error: OnRedisError,
        info: &mut RequestInfo,
        key: (String, KeyDigest),
    ) -> Result<(), Refusal> {
        let (interval_us, tolerance_us) = ((self.interval / 1000).max(1), self.tolerance / 1000);
        match store.take(&key.0, interval_us, tolerance_us).await {
            Some(Decision::Pass(ahead_us)) => {
                let left = remaining(ahead_us, 0, interval_us, tolerance_us);
                self.decide(info, Ok(left))
            }
            Some(Decision::Wait(us)) => self.decide(info, Err(us * 1000)),
            None => match on_error {
                OnRedisError::Local => self.decide(info, self.take(key.1, now_ns())),
                OnRedisError::Allow => Ok(()),
                OnRedisError::Deny => Err(refuse_with(
                    503,
                    "the rate limit store is unavailable",
                    &[(http::header::RETRY_AFTER, HeaderValue::from(1u64))],
                )),
            },
        }
    }
}

impl Policy for RateLimit {
    fn request(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        if self.redis.is_some() {
            return Ok(());
        }
        let key = self.with_key(info, headers, |k| self.digest(k));
        let counted = self.take(key, now_ns());
        self.decide(info, counted)
    }

    fn request_async<'a>(
        &'a self,
        info: &'a mut RequestInfo,
        headers: &'a mut HeaderMap,
    ) -> Option<Waiting<'a>> {
        let (store, on_error) = self.redis.as_ref()?;
        // Redis gets a digest every lb computes alike; the local one is for the fallback.
        let key = self.with_key(info, headers, |k| (rate_key::shared(k), self.digest(k)));
        Some(Box::pin(self.shared(store, *on_error, info, key)))
    }

    fn memory(&self) -> Option<(usize, usize)> {
        Some(RateLimit::memory(self))
    }

    fn response(&self, info: &RequestInfo, headers: &mut HeaderMap) {
        if let Some((limit, left, reset)) = info.rate {
            headers.insert(
                HeaderName::from_static("ratelimit-limit"),
                HeaderValue::from(limit),
            );
            headers.insert(
                HeaderName::from_static("ratelimit-remaining"),
                HeaderValue::from(left),
            );
            headers.insert(
                HeaderName::from_static("ratelimit-reset"),
                HeaderValue::from(reset),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn limiter(requests: u32, burst: u32, max_keys: usize) -> RateLimit {
        RateLimit::new(
            "t",
            requests,
            Duration::from_secs(10),
            burst,
            RateKey::Ip,
            max_keys,
            &RateStore::Local,
        )
    }

    #[test]
    fn n_pass_then_429_then_one_per_interval_then_full_after_the_window() {
        let l = limiter(5, 5, 100);
        let t0 = 100 * S;
        for i in 0..5 {
            assert_eq!(l.take(l.digest(b"a"), t0), Ok(4 - i), "request {i}");
        }
        let wait = l
            .take(l.digest(b"a"), t0)
            .expect_err("the sixth is refused");
        assert_eq!(wait, 2 * S, "one request costs 10s / 5");
        assert!(l.take(l.digest(b"b"), t0).is_ok(), "keys are separate");
        assert_eq!(l.take(l.digest(b"a"), t0 + 2 * S), Ok(0));
        // After the whole window, the whole allowance again.
        let later = t0 + 12 * S;
        for _ in 0..5 {
            assert!(l.take(l.digest(b"a"), later).is_ok());
        }
        assert!(l.take(l.digest(b"a"), later).is_err());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = limiter(1, 1, 64);
        for i in 0..10_000u64 {
            let _ = l.take(l.digest(format!("k{i}").as_bytes()), 100 * S + i);
        }
        let total: usize = l
            .shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(total <= 64 + SHARDS, "{total} keys kept");
    }

    #[test]
    fn the_byte_bound_is_what_the_config_docs_say() {
        for max_keys in [1, 15, 16, 17, 1000, 6250, 100_000, 1_000_000] {
            let (_, bound) = limiter(1, 1, max_keys).memory();
            assert!(bound <= 76 * max_keys + 4096, "{max_keys}: {bound}");
        }
        assert!(limiter(1, 1, 100_000).memory().1 <= 44 * 100_000);
    }

    /// Distinct 32 KiB `header:NAME` keys, as a client may send them: the limiter's tables
    /// cost the same whatever the keys' size, and never more than their bound.
    #[test]
    fn huge_keys_cost_their_digest_only() {
        let max_keys = 1000;
        let l = RateLimit::new(
            "t",
            1,
            Duration::from_secs(3600),
            1,
            RateKey::Header("x-key".into()),
            max_keys,
            &RateStore::Local,
        );
        let info = RequestInfo::new(
            std::net::Ipv4Addr::LOCALHOST.into(),
            http::Method::GET,
            None,
            "/",
            None,
            "r",
        );
        let mut value = vec![b'a'; 32 * 1024];
        for i in 0..5_000u32 {
            value[..8].copy_from_slice(format!("{i:08}").as_bytes());
            let mut h = HeaderMap::new();
            h.insert("x-key", HeaderValue::from_bytes(&value).expect("value"));
            let key = l.with_key(&info, &h, |k| l.digest(k));
            let _ = l.take(key, 100 * S + u64::from(i));
            let (used, bound) = l.memory();
            assert!(used <= bound, "after {i}: {used} > {bound}");
        }
        let (used, bound) = l.memory();
        // 5000 keys of 32 KiB would be 160 MiB kept as sent; a bucket is ~33 bytes.
        assert!(used > 0);
        assert!(
            bound <= max_keys * 4 * rate_key::BUCKET_BYTES,
            "bound {bound}"
        );
    }

    proptest! {
        /// Over any schedule, a key never gets more than burst + elapsed / interval passes.
        #[test]
        fn never_more_than_the_allowance(gaps in proptest::collection::vec(0u64..3 * S, 1..200), requests in 1u32..20, burst in 1u32..20) {
            let l = RateLimit::new("t", requests, Duration::from_secs(10), burst, RateKey::Route, 10, &RateStore::Local);
            let mut now = S;
            let start = now;
            let mut passed = 0u64;
            for g in gaps {
                now += g;
                if l.take(l.digest(b""), now).is_ok() {
                    passed += 1;
                }
            }
            let allowance = u64::from(burst) + (now - start) / l.interval;
            prop_assert!(passed <= allowance, "{} passed, allowance {}", passed, allowance);
        }
    }
}
