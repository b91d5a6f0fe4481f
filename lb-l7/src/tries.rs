//! The attempts of one request on a pool's backends, for both the lean and the general path:
//! which backend comes next (the sticky one first, then the pool's algorithm, never one
//! already tried), the counters an attempt moves, and whether a failed attempt may go on.
//!
//! A request that never left (no connection could be made) goes on whatever its method. One
//! that left goes on only if it is replayable (idempotent, no body): after a timeout, a failed
//! exchange, or a 502/503 answer while tries remain. A POST is never sent twice.

use std::sync::atomic::Ordering::Relaxed;

use lb_core::pool::Attempt;

use crate::balance;
use crate::gateway::PoolTarget;

/// How an attempt that got no answer to pass on failed (the text follows the backend's id).
#[derive(Debug)]
pub enum Failure {
    /// No connection: the request did not leave.
    Connect(String),
    /// No response head within the route's timeout (504).
    Timeout(String),
    /// The exchange broke, or the answer could not be forwarded (502).
    Exchange(String),
}

/// `lb_http_upstream_errors_total` kinds, as indexes of [`PoolTarget::errors`].
const CONNECT: usize = 0;
const TIMEOUT: usize = 1;
const RESPONSE: usize = 2;

/// One request's attempts.
pub struct Tries<'a> {
    pt: &'a PoolTarget,
    listener: &'a str,
    route: &'a str,
    key: u64,
    sticky: Option<usize>,
    replayable: bool,
    retries: u32,
    /// Attempts started.
    started: u32,
    attempt: Attempt,
    /// What the client gets if no backend answers.
    last: Option<(u16, String)>,
}

impl<'a> Tries<'a> {
    pub fn new(
        pt: &'a PoolTarget,
        listener: &'a str,
        route: &'a str,
        key: u64,
        sticky: Option<usize>,
        replayable: bool,
        retries: u32,
    ) -> Self {
        Self {
            pt,
            listener,
            route,
            key,
            sticky,
            replayable,
            retries,
            started: 0,
            attempt: Attempt::default(),
            last: None,
        }
    }

    /// The next backend to try, counted as active; `None` when tries or backends ran out.
    pub fn pick(&mut self) -> Option<usize> {
        if self.started > self.retries {
            return None;
        }
        let pick = match (self.started, self.sticky) {
            (0, Some(i)) => Some(i),
            _ => balance::next(&self.pt.pool, self.key, &mut self.attempt),
        };
        self.started += 1;
        let b = &self.pt.pool.backends[pick?];
        b.active.fetch_add(1, Relaxed);
        b.total.fetch_add(1, Relaxed);
        pick
    }

    /// Backend `i` gave no answer: counted, and whether the request may go on to the next.
    pub fn failed(&mut self, i: usize, failure: Failure) -> bool {
        let pool = &self.pt.pool;
        let b = &pool.backends[i];
        b.active.fetch_sub(1, Relaxed);
        let (kind, status, why, go_on) = match failure {
            Failure::Connect(e) => {
                b.record_traffic(false, pool.config.passive.as_ref(), &e);
                tracing::debug!(listener = %self.listener, route = %self.route, backend = %b.id, "connect failed: {e}");
                (CONNECT, 502, format!("failed: {e}"), true)
            }
            Failure::Timeout(why) => (TIMEOUT, 504, why, self.replayable),
            Failure::Exchange(why) => (RESPONSE, 502, why, self.replayable),
        };
        self.pt.errors[i][kind].increment(1);
        self.last = Some((status, format!("backend {} {why}", b.id)));
        go_on
    }

    /// Backend `i` answered `status`: `true` if that answer goes to the client, `false` for
    /// a 502/503 to a replayable request while tries remain (then try the next).
    pub fn answered(&mut self, i: usize, status: u16) -> bool {
        let pool = &self.pt.pool;
        let b = &pool.backends[i];
        if matches!(status, 502 | 503) && self.replayable && self.started <= self.retries {
            b.active.fetch_sub(1, Relaxed);
            self.last = Some((status, String::new()));
            return false;
        }
        b.record_traffic(true, pool.config.passive.as_ref(), "");
        true
    }

    /// Backend `i`'s attempt ended for the client's sake (it left, or its body is refused):
    /// no verdict on the backend.
    pub fn abandoned(&mut self, i: usize) {
        self.pt.pool.backends[i].active.fetch_sub(1, Relaxed);
    }

    /// What lb answers when no backend did.
    pub fn answer(self) -> (u16, String) {
        match self.last {
            Some((status, msg)) if !msg.is_empty() => (status, msg),
            Some((status, _)) => (status, "every backend tried answered with an error".into()),
            None => (503, "no healthy backend".into()),
        }
    }
}
