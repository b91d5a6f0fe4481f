//! What an accept loop does when `accept(2)` fails, for every loop (tcp, tls and http
//! listeners, the admin API): one place for one decision.
//!
//! Out of file descriptors or memory, the listening socket stays readable, so a loop that
//! retries at once spins and logs without end. As nginx and HAProxy pause the listener, the
//! loop pauses, longer each time while the failures last (5 ms doubling up to 500 ms), and
//! logs the condition once per interval with a count, never once per failure. Each failure
//! is counted in `lb_accept_errors_total{listener,reason}`. While out of descriptors, one
//! spare descriptor is given up to accept and close a waiting client, so it is answered
//! instead of left hanging in the backlog. [`Pause`] and [`LogEvery`] are pure (time is an
//! argument); [`AcceptBackoff`] is the shell with the socket, the clock and the log.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// First pause after a resource failure.
pub const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause: nginx's accept-disable interval (HAProxy's is of the same order).
pub const MAX_PAUSE: Duration = Duration::from_millis(500);
/// At most one log line per listener loop this often while failures last.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why an accept failed: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// EMFILE / ENFILE: the process or the system is out of file descriptors.
    NoFds,
    /// ENOMEM / ENOBUFS.
    NoMemory,
    /// A client gone before it was accepted (ECONNABORTED, EPROTO, ...): nothing to wait for.
    Aborted,
    Other,
}

impl Cause {
    pub const ALL: [Cause; 4] = [Self::NoFds, Self::NoMemory, Self::Aborted, Self::Other];

    pub fn of(e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) if n == EMFILE || n == ENFILE => Self::NoFds,
            Some(n) if n == ENOMEM || n == ENOBUFS => Self::NoMemory,
            _ => match e.kind() {
                io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock => Self::Aborted,
                io::ErrorKind::OutOfMemory => Self::NoMemory,
                _ => Self::Other,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoFds => "fd_limit",
            Self::NoMemory => "no_memory",
            Self::Aborted => "aborted",
            Self::Other => "other",
        }
    }
}

// errno values (Linux and the BSDs agree on these four).
const ENOMEM: i32 = 12;
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
#[cfg(target_os = "linux")]
const ENOBUFS: i32 = 105;
#[cfg(not(target_os = "linux"))]
const ENOBUFS: i32 = 55;

/// The pause after each failure: growing while failures last, reset by a success.
#[derive(Debug, Clone, Default)]
pub struct Pause {
    current: Duration,
}

impl Pause {
    /// The pause before the next accept after a failure of this cause.
    pub fn failed(&mut self, cause: Cause) -> Duration {
        match cause {
            Cause::Aborted => Duration::ZERO,
            // An unknown error might be lasting too; never spin on it.
            Cause::NoFds | Cause::NoMemory | Cause::Other => {
                self.current = if self.current.is_zero() {
                    FIRST_PAUSE
                } else {
                    (self.current * 2).min(MAX_PAUSE)
                };
                self.current
            }
        }
    }

    pub fn accepted(&mut self) {
        self.current = Duration::ZERO;
    }
}

/// Rate limit for a log line: the first event logs, then at most one line per interval
/// carrying how many events it stands for.
#[derive(Debug, Clone)]
pub struct LogEvery {
    interval: Duration,
    next: Option<Instant>,
    unlogged: u64,
}

impl LogEvery {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: None,
            unlogged: 0,
        }
    }

    /// Records one event at `now`; `Some(n)` when a line should be logged now, for `n`
    /// events (this one and those held back since the last line).
    pub fn record(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self.next.is_some_and(|at| now < at) {
            return None;
        }
        self.next = Some(now + self.interval);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Ends a run of events: returns how many were never logged, and lets the next one log
    /// at once.
    pub fn reset(&mut self) -> u64 {
        self.next = None;
        std::mem::take(&mut self.unlogged)
    }
}

/// One accept loop's failure handling: pause, rate-limited log, counters, spare descriptor.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: String,
    pause: Pause,
    log: LogEvery,
    /// Failures since the last accept.
    failing: u64,
    /// By `Cause as usize`.
    counters: Vec<metrics::Counter>,
}

impl AcceptBackoff {
    pub fn new(listener: &str) -> Self {
        Self {
            listener: listener.to_string(),
            pause: Pause::default(),
            log: LogEvery::new(LOG_INTERVAL),
            failing: 0,
            counters: Cause::ALL
                .iter()
                .map(|c| metrics::counter!("lb_accept_errors_total", "listener" => listener.to_string(), "reason" => c.as_str()))
                .collect(),
        }
    }

    /// Accepts the next connection, handling failures as the module says; never returns an
    /// error. Cancel-safe (drop it to stop).
    pub async fn accept(&mut self, sock: &TcpListener) -> (TcpStream, SocketAddr) {
        loop {
            match sock.accept().await {
                Ok(x) => {
                    self.accepted();
                    return x;
                }
                Err(e) => {
                    let cause = Cause::of(&e);
                    if cause == Cause::NoFds {
                        shed_one(sock).await;
                    }
                    let pause = self.failed(cause, &e, Instant::now());
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    fn accepted(&mut self) {
        self.pause.accepted();
        if self.failing > 0 {
            // `shed_one` could not take the spare back if another thread got the freed
            // descriptor first; without this the next outage would have none.
            crate::fd_limit::restore_spare();
            let unlogged = self.log.reset();
            tracing::warn!(listener = %self.listener, failures = self.failing, "accepting again after {} failed accepts ({unlogged} not logged before)", self.failing);
            self.failing = 0;
        }
    }

    /// Counts and maybe logs a failure; returns the pause before the next accept.
    pub fn failed(&mut self, cause: Cause, e: &io::Error, now: Instant) -> Duration {
        self.counters[cause as usize].increment(1);
        let pause = self.pause.failed(cause);
        if cause == Cause::Aborted {
            tracing::debug!(listener = %self.listener, error = %e, "accept: client gone");
            return pause;
        }
        self.failing += 1;
        if let Some(n) = self.log.record(now) {
            tracing::warn!(listener = %self.listener, error = %e, reason = cause.as_str(), "accept failed {n} times since the last report; pausing accepts (now {pause:?})");
        }
        pause
    }
}

/// Out of descriptors: gives up the spare one, accepts a waiting client and closes it at
/// once (it sees the connection end instead of waiting in the backlog), then takes the spare
/// back.
async fn shed_one(sock: &TcpListener) {
    let Some(spare) = crate::fd_limit::take_spare() else {
        return;
    };
    drop(spare);
    let got = tokio::select! {
        biased;
        r = sock.accept() => r.ok(),
        () = std::future::ready(()) => None,
    };
    drop(got);
    crate::fd_limit::restore_spare();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_from_errno() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(Cause::of(&os(EMFILE)), Cause::NoFds);
        assert_eq!(Cause::of(&os(ENFILE)), Cause::NoFds);
        assert_eq!(Cause::of(&os(ENOMEM)), Cause::NoMemory);
        assert_eq!(Cause::of(&os(ENOBUFS)), Cause::NoMemory);
        assert_eq!(
            Cause::of(&io::Error::from(io::ErrorKind::ConnectionAborted)),
            Cause::Aborted
        );
        assert_eq!(Cause::of(&io::Error::other("x")), Cause::Other);
    }

    #[test]
    fn pauses_grow_to_the_cap_and_reset_on_success() {
        let mut p = Pause::default();
        let ms = |d: Duration| d.as_millis() as u64;
        let seq: Vec<u64> = (0..10).map(|_| ms(p.failed(Cause::NoFds))).collect();
        assert_eq!(seq, [5, 10, 20, 40, 80, 160, 320, 500, 500, 500]);
        assert_eq!(p.failed(Cause::Aborted), Duration::ZERO);
        assert_eq!(ms(p.failed(Cause::NoMemory)), 500);
        p.accepted();
        assert_eq!(ms(p.failed(Cause::Other)), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn logs_once_per_interval_with_a_count() {
        let mut log = LogEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.record(t0), Some(1));
        let mut logged = Vec::new();
        // An hour of failures, one per 500 ms.
        for i in 1..=7200u32 {
            tokio::time::advance(Duration::from_millis(500)).await;
            if let Some(n) = log.record(Instant::now()) {
                logged.push((i, n));
            }
        }
        assert_eq!(logged.len(), 360, "one line per 10 s");
        assert_eq!(logged[0], (20, 20));
        assert!(logged.iter().all(|&(_, n)| n == 20));
        tokio::time::advance(Duration::from_millis(500)).await;
        log.record(Instant::now());
        assert_eq!(log.reset(), 1);
        assert_eq!(
            log.record(Instant::now()),
            Some(1),
            "a new outage logs at once"
        );
    }

    // The lock only keeps other tests off the process-wide spare; nothing in this task waits on it.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_spare_lost_during_an_outage_is_restored_on_recovery() {
        let _serial = crate::fd_limit::TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        crate::fd_limit::keep_spare();
        let sock = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = sock.local_addr().expect("addr");
        let mut b = AcceptBackoff::new("t");
        // An outage during which shed_one gave the spare up and could not open it again
        // (another thread took the freed descriptor first).
        b.failed(
            Cause::NoFds,
            &io::Error::from_raw_os_error(EMFILE),
            Instant::now(),
        );
        drop(crate::fd_limit::take_spare());
        // Descriptors are back: the next accept succeeds.
        let _client = TcpStream::connect(addr).await.expect("connect");
        let _accepted = b.accept(&sock).await;
        assert!(
            crate::fd_limit::take_spare().is_some(),
            "the next outage would have no spare to give up"
        );
        crate::fd_limit::restore_spare();
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_outage_is_a_few_lines_and_pauses_at_most_500ms() {
        let mut b = AcceptBackoff::new("t");
        let e = io::Error::from_raw_os_error(EMFILE);
        let mut slept = Duration::ZERO;
        let mut tries = 0u32;
        while slept < Duration::from_secs(60) {
            let p = b.failed(Cause::NoFds, &e, Instant::now());
            assert!(p <= MAX_PAUSE && !p.is_zero());
            tokio::time::advance(p).await;
            slept += p;
            tries += 1;
        }
        // ~2 tries a second once at the cap, not a spin.
        assert!(tries < 130, "{tries}");
        assert_eq!(b.failing, u64::from(tries));
        b.accepted();
        assert_eq!(b.failing, 0);
        assert_eq!(b.pause.failed(Cause::NoFds), FIRST_PAUSE);
    }
}
