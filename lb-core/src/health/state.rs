//! The health state machine of one backend, fed by active checks and by real traffic.
//! Pure: the caller passes the time in; nothing here reads a clock or does I/O.

use std::time::{Duration, Instant};

use crate::config::Passive;

/// A change of a backend's health worth logging and exporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Active checks brought it up (after `rise` successes).
    Up,
    /// Active checks took it down (after `fall` failures).
    Down,
    /// Passive detection ejected it until the given time.
    Ejected { until: Instant },
    /// The ejection ran out; it takes traffic again.
    Restored,
}

#[derive(Debug, Clone)]
pub struct HealthState {
    up: bool,
    checked: bool,
    ok_streak: u32,
    fail_streak: u32,
    traffic_failures: u32,
    ejected_until: Option<Instant>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    /// A new backend starts up, as in HAProxy and nginx, so traffic flows before the first
    /// check; until a check has succeeded, one failed check is enough to take it down.
    pub fn new() -> Self {
        Self {
            up: true,
            checked: false,
            ok_streak: 0,
            fail_streak: 0,
            traffic_failures: 0,
            ejected_until: None,
        }
    }

    /// A member that joins a running pool: down until its first check passes.
    pub fn joining() -> Self {
        Self {
            up: false,
            ..Self::new()
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Records an active check result.
    pub fn on_check(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Change> {
        let first = !self.checked;
        self.checked = true;
        if ok {
            self.fail_streak = 0;
            self.ok_streak = self.ok_streak.saturating_add(1);
            // A joining member comes up on its first pass, as a new one goes down on its
            // first failure.
            if !self.up && (self.ok_streak >= rise || first) {
                self.up = true;
                self.traffic_failures = 0;
                self.ejected_until = None;
                return Some(Change::Up);
            }
        } else {
            self.ok_streak = 0;
            self.fail_streak = self.fail_streak.saturating_add(1);
            if self.up && (self.fail_streak >= fall || first) {
                self.up = false;
                return Some(Change::Down);
            }
        }
        None
    }

    /// Records the outcome of a real connection attempt (passive outlier detection).
    pub fn on_traffic(
        &mut self,
        ok: bool,
        passive: Option<&Passive>,
        now: Instant,
    ) -> Option<Change> {
        if ok {
            self.traffic_failures = 0;
            return None;
        }
        let p = passive?;
        self.traffic_failures = self.traffic_failures.saturating_add(1);
        if self.traffic_failures >= p.consecutive_failures
            && self.ejected_until.is_none_or(|t| t <= now)
        {
            self.traffic_failures = 0;
            let until = now + p.eject_for;
            self.ejected_until = Some(until);
            return Some(Change::Ejected { until });
        }
        None
    }

    /// Ends an ejection whose time has come.
    pub fn on_tick(&mut self, now: Instant) -> Option<Change> {
        match self.ejected_until {
            Some(t) if t <= now => {
                self.ejected_until = None;
                Some(Change::Restored)
            }
            _ => None,
        }
    }
}

/// A full share, in thousandths.
pub const FULL_SHARE: u32 = 1000;

/// The share of its traffic a backend takes during slow start, in thousandths: it ramps
/// linearly from 1 to [`FULL_SHARE`] over `ramp` (HAProxy's `slowstart`).
pub fn slow_start_share(since_up: Duration, ramp: Duration) -> u32 {
    if ramp.is_zero() || since_up >= ramp {
        return FULL_SHARE;
    }
    let s = u128::from(FULL_SHARE) * since_up.as_millis() / ramp.as_millis();
    (s as u32).clamp(1, FULL_SHARE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_downs_an_unchecked_backend() {
        let mut h = HealthState::new();
        assert_eq!(h.on_check(false, 2, 3), Some(Change::Down));
        assert!(!h.is_up());
    }

    #[test]
    fn fall_and_rise_counts() {
        let mut h = HealthState::new();
        assert_eq!(h.on_check(true, 2, 3), None);
        assert_eq!(h.on_check(false, 2, 3), None);
        assert_eq!(h.on_check(false, 2, 3), None);
        assert_eq!(h.on_check(false, 2, 3), Some(Change::Down));
        assert_eq!(h.on_check(true, 2, 3), None);
        assert_eq!(h.on_check(false, 2, 3), None, "streak resets");
        assert_eq!(h.on_check(true, 2, 3), None);
        assert_eq!(h.on_check(true, 2, 3), Some(Change::Up));
    }

    #[test]
    fn passive_ejection_and_restore() {
        let p = Passive {
            consecutive_failures: 2,
            eject_for: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let mut h = HealthState::new();
        assert_eq!(h.on_traffic(false, Some(&p), t0), None);
        assert_eq!(h.on_traffic(true, Some(&p), t0), None, "success resets");
        assert_eq!(h.on_traffic(false, Some(&p), t0), None);
        let until = t0 + Duration::from_secs(10);
        assert_eq!(
            h.on_traffic(false, Some(&p), t0),
            Some(Change::Ejected { until })
        );
        assert_eq!(h.on_tick(t0 + Duration::from_secs(9)), None);
        assert_eq!(h.on_tick(until), Some(Change::Restored));
        assert_eq!(h.ejected_until(), None);
    }

    #[test]
    fn no_passive_config_never_ejects() {
        let mut h = HealthState::new();
        for _ in 0..100 {
            assert_eq!(h.on_traffic(false, None, Instant::now()), None);
        }
    }

    #[test]
    fn slow_start_ramps() {
        let r = Duration::from_secs(10);
        assert_eq!(slow_start_share(Duration::ZERO, r), 1);
        assert_eq!(slow_start_share(Duration::from_secs(5), r), 500);
        assert_eq!(slow_start_share(Duration::from_secs(11), r), FULL_SHARE);
        assert_eq!(
            slow_start_share(Duration::from_secs(1), Duration::ZERO),
            FULL_SHARE
        );
    }
}
