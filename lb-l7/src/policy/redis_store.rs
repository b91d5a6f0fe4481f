//! The Redis store of `rate_limit` (`store = "redis"`): the same GCRA as the local store, run
//! inside Redis by one Lua script, so every lb pointed at one Redis shares one limit. The
//! script reads Redis's own clock (lb hosts' clocks may differ) and is one round trip per
//! request (`EVALSHA`, falling back to `EVAL` once if Redis lost it). A few multiplexed
//! connections, reconnecting by themselves.
//!
//! When Redis does not answer (down, or slower than [`TIMEOUT`]), the policy's
//! `on_redis_error` decides; lb logs the switch once and the recovery once, and skips Redis
//! for [`BACKOFF`] after a failure so a dead Redis costs requests no waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

/// Longest wait for Redis's answer before the fallback takes the request.
pub const TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, Redis is left alone this long.
pub const BACKOFF: Duration = Duration::from_secs(1);
/// Connections per store (each multiplexes requests).
const CONNECTIONS: usize = 4;

/// GCRA in Redis. KEYS[1]: the key; ARGV[1]: interval (µs); ARGV[2]: tolerance (µs).
/// Answers {1, tat − now} when the request passes, {0, wait} when it does not (µs).
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then
  return {0, ahead - tolerance}
end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil((new - now) / 1000) + 1)
return {1, new - now}
"#;

/// What Redis said of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Passes; the key's time ahead of now (µs) after it.
    Pass(u64),
    /// Refused; wait this long (µs).
    Wait(u64),
}

pub struct RedisStore {
    client: redis::Client,
    url: String,
    prefix: String,
    script: redis::Script,
    conns: OnceCell<Vec<ConnectionManager>>,
    next: AtomicUsize,
    /// `clock::now_ms` until which Redis is skipped.
    skip_until: AtomicU64,
    /// Whether the store is failing (for logging each change once).
    failing: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// `None` if the URL does not parse (the config checked its form already).
    pub fn new(url: &str, policy: &str) -> Option<Arc<Self>> {
        let client = redis::Client::open(url).ok()?;
        Some(Arc::new(Self {
            client,
            url: url.to_string(),
            prefix: format!("lb:rl:{policy}:"),
            script: redis::Script::new(SCRIPT),
            conns: OnceCell::new(),
            next: AtomicUsize::new(0),
            skip_until: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }))
    }

    /// Counts one request of `key`; `None` when Redis could not say (the caller falls back).
    pub async fn take(&self, key: &str, interval_us: u64, tolerance_us: u64) -> Option<Decision> {
        let now = lb_core::clock::now_ms();
        if now < self.skip_until.load(Relaxed) {
            return None;
        }
        let answer = tokio::time::timeout(TIMEOUT, self.call(key, interval_us, tolerance_us)).await;
        match answer {
            Ok(Ok(d)) => {
                if self.failing.swap(false, Relaxed) {
                    tracing::info!(redis = %self.url, "rate limit store answers again; the shared limit applies");
                }
                Some(d)
            }
            failed => {
                self.skip_until
                    .store(now + BACKOFF.as_millis() as u64, Relaxed);
                if !self.failing.swap(true, Relaxed) {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {TIMEOUT:?}"),
                    };
                    tracing::warn!(redis = %self.url, error = %why, "rate limit store unreachable; falling back until it answers");
                }
                None
            }
        }
    }

    async fn call(
        &self,
        key: &str,
        interval_us: u64,
        tolerance_us: u64,
    ) -> redis::RedisResult<Decision> {
        let conns = self
            .conns
            .get_or_try_init(|| async {
                let mut v = Vec::with_capacity(CONNECTIONS);
                for _ in 0..CONNECTIONS {
                    v.push(ConnectionManager::new(self.client.clone()).await?);
                }
                Ok::<_, redis::RedisError>(v)
            })
            .await?;
        let mut conn = conns[self.next.fetch_add(1, Relaxed) % conns.len()].clone();
        let (pass, micros): (i64, i64) = self
            .script
            .key(format!("{}{key}", self.prefix))
            .arg(interval_us)
            .arg(tolerance_us)
            .invoke_async(&mut conn)
            .await?;
        let micros = micros.max(0) as u64;
        Ok(if pass == 1 {
            Decision::Pass(micros)
        } else {
            Decision::Wait(micros)
        })
    }
}
