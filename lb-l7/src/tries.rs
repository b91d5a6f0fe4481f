//! The attempts of one request on a pool's backends, for both the lean and the general path:
//! which backend comes next (the sticky one first, then the pool's algorithm, never one
//! already tried), each attempt's deadline, the counters an attempt moves (an [`InFlight`]
//! guard per attempt), and whether a failed attempt may go on.
//!
//! Failover works as for a TCP connection: a request that never left (no connection could be
//! made, or a connection failed before any byte of the request was written) goes to the next
//! backend whatever its method, until every backend was tried; so does a replayable one
//! (idempotent, no body) whose backend closed the connection without a byte of an answer.
//! `retries` bounds only the resending of replayable requests after an answer went wrong: a
//! timeout, a failed exchange, or a 502/503. A POST that left is never sent twice.
//!
//! What the client is told names no backend and no OS error; those go to the debug log and
//! `lb_http_upstream_errors_total{pool,backend,kind}`.

use std::time::Duration;

use lb_core::backend::InFlight;
use lb_core::pool::Attempt;
use tokio::time::Instant;

use crate::balance;
use crate::gateway::PoolTarget;

/// How an attempt that got no answer to pass on failed (the text is for the log).
#[derive(Debug)]
pub enum Failure {
    /// The request did not leave: no connection, or it broke before a byte was written.
    Connect(String),
    /// No response head before the attempt's deadline (504).
    Timeout(String),
    /// The exchange broke after the request left, or the answer could not be forwarded (502).
    Exchange(String),
    /// A new connection closed or reset before a byte of an answer: the backend went away
    /// with the request (502). A replayable request goes on to the next backend for free, as
    /// nginx's `proxy_next_upstream error` does; any other stops here.
    Unanswered(String),
}

/// `lb_http_upstream_errors_total` kinds, as indexes of [`PoolTarget::errors`].
const CONNECT: usize = 0;
const TIMEOUT: usize = 1;
const RESPONSE: usize = 2;

/// One attempt on one backend, in flight until dropped.
#[derive(Debug)]
pub struct Try {
    /// The backend's index in its pool.
    pub index: usize,
    /// Counts the backend active, and takes the exchange's bytes.
    pub flight: InFlight,
    /// When this attempt started: each attempt gets the route's whole `timeout`, counted
    /// from when its request was sent whole (or last moved), never from an earlier attempt.
    pub started: Instant,
    /// The route's `timeout`.
    pub timeout: Duration,
}

impl Try {
    /// When the backend must have answered a request sent whole at `sent` (a connect or a
    /// head write counts from the attempt's start).
    pub fn answer_by(&self, sent: Instant) -> Instant {
        sent.max(self.started) + self.timeout
    }
}

/// One request's attempts.
pub struct Tries<'a> {
    pt: &'a PoolTarget,
    listener: &'a str,
    route: &'a str,
    key: u64,
    sticky: Option<usize>,
    replayable: bool,
    retries: u32,
    timeout: Duration,
    /// Attempts started.
    started: u32,
    /// Attempts whose request left.
    sent: u32,
    attempt: Attempt,
    /// What the client gets if no backend answers.
    last: Option<(u16, &'static str)>,
}

impl<'a> Tries<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pt: &'a PoolTarget,
        listener: &'a str,
        route: &'a str,
        key: u64,
        sticky: Option<usize>,
        replayable: bool,
        retries: u32,
        timeout: Duration,
    ) -> Self {
        Self {
            pt,
            listener,
            route,
            key,
            sticky,
            replayable,
            retries,
            timeout,
            started: 0,
            sent: 0,
            attempt: Attempt::default(),
            last: None,
        }
    }

    /// The next attempt, its backend counted as active; `None` when backends ran out.
    pub fn pick(&mut self) -> Option<Try> {
        let pick = match (self.started, self.sticky) {
            (0, Some(i)) => {
                // The sticky backend is tried first and never again.
                balance::exclude(&self.pt.pool, i, &mut self.attempt);
                Some(i)
            }
            _ => balance::next(&self.pt.pool, self.key, &mut self.attempt),
        }?;
        self.started += 1;
        let b = &self.pt.pool.backends[pick];
        b.total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Try {
            index: pick,
            flight: b.begin(),
            started: Instant::now(),
            timeout: self.timeout,
        })
    }

    /// Attempt `t` got no answer: counted, and whether the request may go on to the next.
    pub fn failed(&mut self, t: Try, failure: Failure) -> bool {
        let pool = &self.pt.pool;
        let b = &pool.backends[t.index];
        drop(t.flight);
        if !matches!(failure, Failure::Connect(_)) {
            b.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (kind, status, said, why) = match failure {
            Failure::Connect(why) => {
                b.record_traffic(false, pool.config.passive.as_ref(), &why);
                (CONNECT, 502, "the backend could not be reached", why)
            }
            Failure::Timeout(why) => (TIMEOUT, 504, "the backend did not answer in time", why),
            Failure::Exchange(why) => (
                RESPONSE,
                502,
                "the backend's answer failed or could not be forwarded",
                why,
            ),
            Failure::Unanswered(why) => {
                // Not a passive-health failure: one request that makes every backend close
                // (a worker killed by its own timeout, say) must not eject the whole pool.
                tracing::debug!(listener = %self.listener, route = %self.route, backend = %b.id, "backend closed without answering: {why}");
                self.pt.errors[t.index][RESPONSE].increment(1);
                self.last = Some((502, "the backend closed the connection without answering"));
                return self.replayable;
            }
        };
        tracing::debug!(listener = %self.listener, route = %self.route, backend = %b.id, "backend attempt failed: {why}");
        self.pt.errors[t.index][kind].increment(1);
        self.last = Some((status, said));
        if kind == CONNECT {
            return true;
        }
        self.sent += 1;
        self.may_resend()
    }

    /// Attempt `t` answered `status`: `true` if that answer goes to the client, `false` for
    /// a 502/503 to a replayable request while resends remain (drop `t`, then pick again).
    pub fn answered(&mut self, t: &Try, status: u16) -> bool {
        let pool = &self.pt.pool;
        let b = &pool.backends[t.index];
        self.sent += 1;
        b.latency.record(t.started.elapsed());
        if status >= 500 {
            b.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if matches!(status, 502 | 503) && self.may_resend() {
            self.last = Some((status, "every backend tried answered with an error"));
            return false;
        }
        b.record_traffic(true, pool.config.passive.as_ref(), "");
        true
    }

    /// Whether the request may go again, on a new connection to the same backend, after a
    /// kept connection broke before answering it (the race with the backend's keep-alive
    /// timer): only a replayable one, and it costs no try.
    pub fn may_resend_stale(&self) -> bool {
        self.replayable
    }

    /// Whether a request that left may be sent again.
    fn may_resend(&self) -> bool {
        self.replayable && self.sent <= self.retries
    }

    /// Whether the last failure ends the request even though backends remain.
    pub fn exhausted(&self) -> bool {
        self.sent > 0 && !self.may_resend()
    }

    /// What lb answers when no backend did: status and a message naming no backend.
    pub fn answer(&self) -> (u16, &'static str) {
        self.last.unwrap_or((503, "no healthy backend"))
    }
}
