//! A process-wide monotonic clock in milliseconds, cheap enough to store in atomics.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's clock epoch; never 0, so 0 can mean "unset".
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// The `Instant` of a value returned by [`now_ms`].
pub fn instant_of(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms.saturating_sub(1))
}

/// [`now_ms`] of an `Instant`.
pub fn ms_of(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_millis() as u64 + 1
}
