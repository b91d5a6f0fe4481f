//! Redis for the policies that share state between lb instances: the rate limit's GCRA, run
//! inside Redis by one Lua script on Redis's own clock (lb hosts' clocks may differ), one
//! round trip per request (`EVALSHA`, falling back to `EVAL` once if Redis lost it); and the
//! cache's entries. A few multiplexed connections, reconnecting by themselves.
//!
//! When Redis does not answer (down, or slower than [`TIMEOUT`]) the caller falls back; lb
//! logs the switch once and the recovery once, and leaves Redis alone for [`BACKOFF`] after
//! a failure so a dead Redis costs requests no waiting.

use std::future::Future;
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
const GCRA: &str = r#"
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

/// What Redis said of one rate-limited request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Passes; the key's time ahead of now (µs) after it.
    Pass(u64),
    /// Refused; wait this long (µs).
    Wait(u64),
}

/// One Redis, as one policy uses it; its keys start with `prefix`.
pub struct Redis {
    client: redis::Client,
    url: String,
    prefix: String,
    what: &'static str,
    gcra: redis::Script,
    conns: OnceCell<Vec<ConnectionManager>>,
    next: AtomicUsize,
    /// `clock::now_ms` until which Redis is skipped.
    skip_until: AtomicU64,
    /// Whether Redis is failing (for logging each change once).
    failing: AtomicBool,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// `None` if the URL does not parse (the config checked its form already). `what` names
    /// the use in logs ("rate limit store", "cache store").
    pub fn new(url: &str, prefix: String, what: &'static str) -> Option<Arc<Self>> {
        let client = redis::Client::open(url).ok()?;
        Some(Arc::new(Self {
            client,
            url: url.to_string(),
            prefix,
            what,
            gcra: redis::Script::new(GCRA),
            conns: OnceCell::new(),
            next: AtomicUsize::new(0),
            skip_until: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }))
    }

    /// Runs `op` on a connection; `None` when Redis could not answer (the caller falls back).
    async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let now = lb_core::clock::now_ms();
        if now < self.skip_until.load(Relaxed) {
            return None;
        }
        let call = async {
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
            let conn = conns[self.next.fetch_add(1, Relaxed) % conns.len()].clone();
            op(conn).await
        };
        match tokio::time::timeout(TIMEOUT, call).await {
            Ok(Ok(v)) => {
                if self.failing.swap(false, Relaxed) {
                    tracing::info!(redis = %self.url, "{} answers again", self.what);
                }
                Some(v)
            }
            failed => {
                self.skip_until
                    .store(now + BACKOFF.as_millis() as u64, Relaxed);
                if !self.failing.swap(true, Relaxed) {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {TIMEOUT:?}"),
                    };
                    tracing::warn!(redis = %self.url, error = %why, "{} unreachable; falling back until it answers", self.what);
                }
                None
            }
        }
    }

    /// Counts one request of `key` by the GCRA.
    pub async fn take(&self, key: &str, interval_us: u64, tolerance_us: u64) -> Option<Decision> {
        let key = format!("{}{key}", self.prefix);
        self.run(|mut conn| async move {
            let (pass, micros): (i64, i64) = self
                .gcra
                .key(key)
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
        })
        .await
    }

    /// The bytes stored under `key`, if any (`Some(None)`: Redis answered, nothing there).
    pub async fn get(&self, key: &str) -> Option<Option<Vec<u8>>> {
        let key = format!("{}{key}", self.prefix);
        self.run(|mut conn| async move { redis::cmd("GET").arg(key).query_async(&mut conn).await })
            .await
    }

    /// Stores `value` under `key` for `ttl`.
    pub async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> bool {
        let key = format!("{}{key}", self.prefix);
        let ms = ttl.as_millis().max(1) as u64;
        self.run(|mut conn| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
        .is_some()
    }
}
