//! A backend at run time: its config, health and admin state, and counters. Shared by every
//! worker; the data path reads atomics only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::clock;
use crate::config;
use crate::health::state::{slow_start_share, Change, HealthState, FULL_SHARE};

/// Check results kept per backend for the dashboard's health history.
pub const HISTORY: usize = 20;

/// The last [`HISTORY`] check results, oldest first, and the last check in full.
#[derive(Debug, Default)]
struct CheckLog {
    last: Option<CheckRecord>,
    history: std::collections::VecDeque<bool>,
}

/// Operator-set state (admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    Enabled = 0,
    /// No new connections; open ones finish. Health checks go on.
    Draining = 1,
    /// No new connections and no health checks (maintenance).
    Disabled = 2,
}

/// What `/api/status` shows for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    Draining,
    Disabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Draining => "draining",
            Self::Disabled => "disabled",
        }
    }
}

/// The last active check, for status.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub ok: bool,
    pub at: SystemTime,
    pub detail: String,
}

#[derive(Debug)]
pub struct Backend {
    pub pool: String,
    pub addr: SocketAddr,
    /// `addr` as text: the Maglev identity and the metrics label.
    pub id: String,
    pub weight: u32,
    /// 0 = preferred; a level's traffic spills to the next as its members fail
    /// ([`crate::balance::priority`]).
    pub priority: u8,
    /// The config's `zone` label: shown and labelled (`lb_backend_up{zone}`), not balanced on.
    pub zone: Option<String>,
    /// Where it came from: config, DNS, API (the dashboard's source column).
    pub origin: config::Origin,
    admin: AtomicU8,
    up: AtomicBool,
    /// `clock::now_ms` until which passive detection keeps it out; 0 = not ejected.
    ejected_until: AtomicU64,
    /// `clock::now_ms` when it last came up, while slow start is ramping; 0 = not ramping.
    ramp_from: AtomicU64,
    slow_start_ms: u64,
    pub active: AtomicU64,
    pub total: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connect_errors: AtomicU64,
    /// HTTP attempts that failed after connecting (timeouts, broken exchanges) or were
    /// answered 5xx: the dashboard's errors with `connect_errors`.
    pub errors: AtomicU64,
    /// HTTP: time from an attempt's start to its response head.
    pub latency: crate::stats::Histogram,
    /// Set while real traffic has failures in a row, so successes skip the lock otherwise.
    failing: AtomicBool,
    health: Mutex<HealthState>,
    /// The last check and the recent results, updated together.
    checks: Mutex<CheckLog>,
    up_gauge: metrics::Gauge,
    connect_errors_metric: metrics::Counter,
}

impl Backend {
    /// A backend as lb starts with it: up until a check says otherwise (as HAProxy and nginx).
    pub fn new(pool: &config::Pool, b: &config::Backend) -> Self {
        Self::with_health(pool, b, HealthState::new())
    }

    /// A member joining a running pool (DNS, the admin API, a reload): with health checks
    /// it is down until its first check passes, so it gets no traffic before.
    pub fn joining(pool: &config::Pool, b: &config::Backend) -> Self {
        let state = if pool.health.is_some() {
            HealthState::joining()
        } else {
            HealthState::new()
        };
        Self::with_health(pool, b, state)
    }

    fn with_health(pool: &config::Pool, b: &config::Backend, health: HealthState) -> Self {
        let id = b.id();
        let labels = [("pool", pool.name.clone()), ("backend", id.clone())];
        let up_gauge = match &b.zone {
            Some(z) => {
                let [p, b] = labels.clone();
                metrics::gauge!("lb_backend_up", &[p, b, ("zone", z.clone())])
            }
            None => metrics::gauge!("lb_backend_up", &labels),
        };
        let up = health.is_up();
        up_gauge.set(if up { 1.0 } else { 0.0 });
        Self {
            pool: pool.name.clone(),
            addr: b.addr,
            weight: b.weight.get(),
            priority: b.priority,
            zone: b.zone.clone(),
            origin: b.origin.clone(),
            admin: AtomicU8::new(AdminState::Enabled as u8),
            up: AtomicBool::new(up),
            ejected_until: AtomicU64::new(0),
            ramp_from: AtomicU64::new(0),
            slow_start_ms: pool.slow_start.map_or(0, |d| d.as_millis() as u64),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: crate::stats::Histogram::default(),
            failing: AtomicBool::new(false),
            health: Mutex::new(health),
            checks: Mutex::new(CheckLog::default()),
            connect_errors_metric: metrics::counter!("lb_connect_errors_total", &labels),
            up_gauge,
            id,
        }
    }

    pub fn admin_state(&self) -> AdminState {
        match self.admin.load(Relaxed) {
            1 => AdminState::Draining,
            2 => AdminState::Disabled,
            _ => AdminState::Enabled,
        }
    }

    pub fn set_admin_state(&self, s: AdminState) {
        let old = self.admin.swap(s as u8, Relaxed);
        // Enabled again after maintenance: it ramps up as one that came up does.
        if s == AdminState::Enabled && old != s as u8 {
            self.start_ramp();
        }
        if old != s as u8 {
            tracing::info!(pool.name = %self.pool, backend.addr = %self.id, state = ?s, "backend admin state changed");
        }
        self.refresh_gauge();
    }

    /// Healthy by checks and not ejected (ignores admin state).
    pub fn healthy(&self) -> bool {
        self.healthy_at(clock::now_ms())
    }

    /// [`Backend::healthy`] at `now` (a [`clock::now_ms`] reading).
    fn healthy_at(&self, now: u64) -> bool {
        if !self.up.load(Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Relaxed);
        until == 0 || now >= until
    }

    /// May take new connections.
    #[inline]
    pub fn available(&self) -> bool {
        self.available_at(clock::now_ms())
    }

    /// [`Backend::available`], reading the clock (once, into `now`) only when an ejection
    /// is pending: what a priority level's health reads for each member.
    #[inline]
    pub(crate) fn available_lazy(&self, now: &mut Option<u64>) -> bool {
        if self.admin.load(Relaxed) != AdminState::Enabled as u8 || !self.up.load(Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Relaxed);
        until == 0 || *now.get_or_insert_with(clock::now_ms) >= until
    }

    /// [`Backend::available`] at `now` (a [`clock::now_ms`] reading).
    #[inline]
    fn available_at(&self, now: u64) -> bool {
        self.admin.load(Relaxed) == AdminState::Enabled as u8 && self.healthy_at(now)
    }

    pub fn state(&self) -> State {
        match self.admin_state() {
            AdminState::Disabled => State::Disabled,
            AdminState::Draining => State::Draining,
            AdminState::Enabled if self.healthy() => State::Up,
            AdminState::Enabled => State::Down,
        }
    }

    /// The share of its traffic this backend takes, in thousandths: [`FULL_SHARE`] but while
    /// slow start ramps after it came up or was enabled again.
    #[inline]
    pub fn share(&self) -> u32 {
        self.share_at(clock::now_ms())
    }

    /// [`Backend::share`] at `now` (a [`clock::now_ms`] reading).
    #[inline]
    fn share_at(&self, now: u64) -> u32 {
        let from = self.ramp_from.load(Relaxed);
        if from == 0 {
            return FULL_SHARE;
        }
        let since = now.saturating_sub(from);
        if since >= self.slow_start_ms {
            self.ramp_from.store(0, Relaxed);
            return FULL_SHARE;
        }
        slow_start_share(
            std::time::Duration::from_millis(since),
            std::time::Duration::from_millis(self.slow_start_ms),
        )
    }

    /// Weight with slow start applied (at least 1), as status shows it.
    pub fn effective_weight(&self) -> u32 {
        let w = u64::from(self.weight) * u64::from(self.share());
        (w.div_ceil(u64::from(FULL_SHARE)) as u32).max(1)
    }

    fn start_ramp(&self) {
        if self.slow_start_ms > 0 {
            self.ramp_from.store(clock::now_ms(), Relaxed);
        }
    }

    /// Feeds an active check result; logs and exports any change.
    pub fn record_check(&self, ok: bool, detail: String, rise: u32, fall: u32) {
        let change = {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            h.on_check(ok, rise, fall)
        };
        if let Some(c) = change {
            self.apply(c, &detail);
        }
        let mut log = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        if log.history.len() == HISTORY {
            log.history.pop_front();
        }
        log.history.push_back(ok);
        log.last = Some(CheckRecord {
            ok,
            at: SystemTime::now(),
            detail,
        });
    }

    /// Feeds the outcome of a real connect; passive ejection when configured.
    pub fn record_traffic(&self, ok: bool, passive: Option<&config::Passive>, why: &str) {
        if !ok {
            self.connect_errors.fetch_add(1, Relaxed);
            self.connect_errors_metric.increment(1);
        }
        if passive.is_none() || ok && !self.failing.swap(false, Relaxed) {
            return;
        }
        if !ok {
            self.failing.store(true, Relaxed);
        }
        let change = {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            h.on_traffic(ok, passive, Instant::now())
        };
        if let Some(c) = change {
            self.apply(c, why);
        }
    }

    /// Starts one use of this backend (a TCP connection, an HTTP exchange): counted in
    /// `active` until the returned guard is dropped, which also adds the bytes it moved.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Relaxed);
        InFlight {
            backend: self.clone(),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Ends an expired ejection (called by the health task's tick).
    pub fn tick(&self) {
        self.tick_at(Instant::now());
    }

    /// [`Backend::tick`] at `now`.
    fn tick_at(&self, now: Instant) {
        if self.ejected_until.load(Relaxed) == 0 {
            return;
        }
        let change = self
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_tick(now);
        if let Some(c) = change {
            self.apply(c, "ejection ended");
        }
    }

    fn apply(&self, change: Change, why: &str) {
        let old = self.state();
        match change {
            Change::Up => {
                self.up.store(true, Relaxed);
                self.ejected_until.store(0, Relaxed);
                self.start_ramp();
            }
            Change::Down => self.up.store(false, Relaxed),
            Change::Ejected { until } => self.ejected_until.store(clock::ms_of(until), Relaxed),
            Change::Restored => {
                self.ejected_until.store(0, Relaxed);
                self.start_ramp();
            }
        }
        let new = self.state();
        let event = match change {
            Change::Up => "health checks passed",
            Change::Down => "health checks failed",
            Change::Ejected { .. } => "ejected after consecutive connect failures",
            Change::Restored => "ejection ended",
        };
        if new == State::Down || old == State::Down && new == State::Up {
            tracing::warn!(pool.name = %self.pool, backend.addr = %self.id, "backend {} → {}: {event} ({why})", old.as_str(), new.as_str());
        } else {
            tracing::info!(pool.name = %self.pool, backend.addr = %self.id, "backend {} → {}: {event} ({why})", old.as_str(), new.as_str());
        }
        self.refresh_gauge();
    }

    fn refresh_gauge(&self) {
        self.up_gauge
            .set(if self.state() == State::Up { 1.0 } else { 0.0 });
    }

    pub fn last_check(&self) -> Option<CheckRecord> {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last
            .clone()
    }

    /// Recent check results, oldest first.
    pub fn history(&self) -> Vec<bool> {
        let log = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        log.history.iter().copied().collect()
    }

    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until.load(Relaxed)
    }
}

/// One use of a backend in flight, from [`Backend::begin`]. Dropping it is the one place
/// where `active` comes down and the use's bytes are added, so a cancelled future (a client
/// reset, an HTTP/2 stream reset) cannot leave the count raised.
#[derive(Debug)]
#[must_use = "dropping the guard ends the backend's use at once"]
pub struct InFlight {
    backend: Arc<Backend>,
    bytes_in: u64,
    bytes_out: u64,
}

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Bytes this use moved: `rx` from the client to the backend, `tx` back.
    pub fn add_bytes(&mut self, rx: u64, tx: u64) {
        self.bytes_in += rx;
        self.bytes_out += tx;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let b = &self.backend;
        b.active.fetch_sub(1, Relaxed);
        if self.bytes_in > 0 {
            b.bytes_in.fetch_add(self.bytes_in, Relaxed);
        }
        if self.bytes_out > 0 {
            b.bytes_out.fetch_add(self.bytes_out, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(extra: &str) -> config::Pool {
        let text = format!(
            "[[listener]]\nname=\"l\"\nbind=\"127.0.0.1:1\"\npool=\"p\"\n[[pool]]\nname=\"p\"\nalgorithm=\"random\"\nbackends=[{{addr=\"127.0.0.1:2\",weight=100}}]\n{extra}\n"
        );
        config::load_str("t", &text)
            .expect("valid")
            .config
            .pools
            .remove(0)
    }

    #[test]
    fn states_follow_checks_and_admin() {
        let p = pool("");
        let b = Backend::new(&p, &p.backends[0]);
        assert_eq!(b.state(), State::Up);
        b.record_check(false, "refused".into(), 2, 3);
        assert_eq!(
            b.state(),
            State::Down,
            "first failed check before any success"
        );
        assert!(!b.available());
        b.record_check(true, "ok".into(), 2, 3);
        assert_eq!(b.state(), State::Down);
        b.record_check(true, "ok".into(), 2, 3);
        assert_eq!(b.state(), State::Up);
        b.set_admin_state(AdminState::Draining);
        assert_eq!((b.state(), b.available()), (State::Draining, false));
        b.set_admin_state(AdminState::Enabled);
        assert!(b.available());
        assert_eq!(b.last_check().map(|c| c.ok), Some(true));
    }

    #[test]
    fn in_flight_guards_bring_active_down_and_add_bytes_once() {
        let p = pool("");
        let b = Arc::new(Backend::new(&p, &p.backends[0]));
        let mut one = b.begin();
        let two = b.begin();
        assert_eq!(b.active.load(Relaxed), 2);
        one.add_bytes(10, 20);
        drop(one);
        assert_eq!(b.active.load(Relaxed), 1);
        assert_eq!(
            (b.bytes_in.load(Relaxed), b.bytes_out.load(Relaxed)),
            (10, 20)
        );
        // A future holding the guard, dropped before it finished (a cancelled request).
        let fut = async move {
            let _held = two;
            std::future::pending::<()>().await;
        };
        drop(fut);
        assert_eq!(b.active.load(Relaxed), 0);
    }

    #[test]
    fn slow_start_ramps_weight_after_coming_back() {
        let p = pool("slow_start = \"300ms\"");
        let b = Backend::new(&p, &p.backends[0]);
        assert_eq!(b.effective_weight(), 100, "no ramp at start-up");
        b.record_check(false, "down".into(), 1, 1);
        b.record_check(true, "up".into(), 1, 1);
        let w = b.effective_weight();
        assert!(w < 50, "just came up: weight {w} should be small");
        // Looked at later on the clock: halfway up the ramp, then at the top.
        let up_at = b.ramp_from.load(Relaxed);
        assert_eq!(b.share_at(up_at + 150), FULL_SHARE / 2);
        assert_eq!(b.share_at(up_at + 300), FULL_SHARE);
    }

    #[test]
    fn enabling_a_backend_again_starts_its_ramp() {
        let p = pool("slow_start = \"60s\"");
        let b = Backend::new(&p, &p.backends[0]);
        assert_eq!(b.share(), FULL_SHARE);
        b.set_admin_state(AdminState::Disabled);
        b.set_admin_state(AdminState::Enabled);
        assert!(b.share() < 10, "just enabled: share {}", b.share());
        assert!(b.effective_weight() >= 1);
        let unramped = Backend::new(&pool(""), &p.backends[0]);
        unramped.set_admin_state(AdminState::Disabled);
        unramped.set_admin_state(AdminState::Enabled);
        assert_eq!(unramped.share(), FULL_SHARE, "no slow_start, no ramp");
    }

    #[test]
    fn passive_ejection_makes_unavailable_then_expires() {
        let p = pool("passive = { consecutive_failures = 2, eject_for = \"200ms\" }");
        let b = Backend::new(&p, &p.backends[0]);
        let passive = p.passive.as_ref();
        b.record_traffic(false, passive, "refused");
        assert!(b.available());
        b.record_traffic(false, passive, "refused");
        assert!(!b.available());
        assert_eq!(b.state(), State::Down);
        assert_eq!(b.connect_errors.load(Relaxed), 2);
        // Looked at later on the clock: out until the ejection's end, back from then on.
        let until = b.ejected_until_ms();
        assert!(!b.available_at(until - 1), "still ejected");
        assert!(b.available_at(until), "ejection expired");
        b.tick_at(clock::instant_of(until + 1));
        assert_eq!(b.ejected_until_ms(), 0);
        assert!(b.available(), "the health task's tick ended the ejection");
    }
}
