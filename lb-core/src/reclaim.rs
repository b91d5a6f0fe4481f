//! Memory a reload frees is freed off the workers and given back to the kernel, on a thread
//! of its own (`lb-reclaim`). No I/O.
//!
//! Two costs of a big pool going away would otherwise land where they hurt:
//! - Dropping it: the last holder of a replaced pool is often a worker (a removed listener's
//!   accept loop, a connection that outlived the reload), and 100,000 backends take tens of
//!   milliseconds to free, a stall for every connection on that worker. [`drop_later`] moves
//!   the value to this thread instead.
//! - Keeping it: glibc's malloc keeps what lb frees for later allocations and returns only
//!   the top of each arena by itself, so the memory of a removed pool (or the ~150 MB parse
//!   tree of a 100,000-backend config) stayed resident. After a reload this thread runs
//!   `malloc_trim(0)` ([`crate::sys::trim`]), as servers built on glibc do after a
//!   configuration change; it takes milliseconds and holds each arena's lock in turn.
//!
//! Requests are merged: the thread waits until none came for [`QUIET`], then drops what it
//! was given, runs the [`before_trim`] hooks (registries forgetting dead entries), and trims.

use std::any::Any;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How long the thread waits for requests to stop before it works: a reload's many frees
/// (and the drops that follow as connections let go) make one trim.
pub const QUIET: Duration = Duration::from_millis(100);

/// Asks for the freed heap to be returned to the kernel soon. Cheap; never blocks on a trim.
pub fn release_freed_memory() {
    ask(None);
}

/// Drops `value` on the reclaim thread (then trims), not on the caller's: for what is big
/// to free. Dropped at once, here, if the thread could not be started.
pub fn drop_later<T: Send + 'static>(value: T) {
    ask(Some(Box::new(value)));
}

/// Adds work to run just before each trim: a registry dropping the entries nobody holds any
/// more, so that their memory is free when the trim runs.
pub fn before_trim(hook: Box<dyn Fn() + Send + Sync>) {
    lock(&reclaimer().hooks).push(hook);
}

/// How many rounds (drops, hooks, trim) have run; for tests.
pub fn rounds() -> u64 {
    *lock(&reclaimer().rounds)
}

type Garbage = Box<dyn Any + Send>;

#[derive(Default)]
struct Queue {
    asked: bool,
    garbage: Vec<Garbage>,
}

struct Reclaimer {
    queue: Mutex<Queue>,
    wake: Condvar,
    hooks: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    rounds: Mutex<u64>,
    running: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data behind it: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ask(garbage: Option<Garbage>) {
    let r = reclaimer();
    if !r.running {
        drop(garbage);
        return;
    }
    let mut q = lock(&r.queue);
    q.asked = true;
    q.garbage.extend(garbage);
    r.wake.notify_one();
}

fn reclaimer() -> &'static Reclaimer {
    static R: OnceLock<Reclaimer> = OnceLock::new();
    R.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("lb-reclaim".into())
            .spawn(|| run(reclaimer()));
        if let Err(e) = &spawned {
            tracing::warn!(error = %e, "cannot start the reclaim thread; memory is freed where it is dropped and stays resident");
        }
        Reclaimer {
            queue: Mutex::default(),
            wake: Condvar::new(),
            hooks: Mutex::default(),
            rounds: Mutex::new(0),
            running: spawned.is_ok(),
        }
    })
}

fn run(r: &'static Reclaimer) {
    loop {
        let garbage = {
            let mut q = lock(&r.queue);
            while !q.asked {
                q = r.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            // Until a whole QUIET passes with no new request.
            while q.asked {
                q.asked = false;
                q = r
                    .wake
                    .wait_timeout(q, QUIET)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::take(&mut q.garbage)
        };
        drop(garbage);
        for hook in lock(&r.hooks).iter() {
            hook();
        }
        crate::sys::trim();
        *lock(&r.rounds) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Witness(std::sync::mpsc::Sender<Option<String>>);

    impl Drop for Witness {
        fn drop(&mut self) {
            let _ = self
                .0
                .send(std::thread::current().name().map(str::to_string));
        }
    }

    #[test]
    fn dropped_later_on_the_reclaim_thread_then_a_round_counted() {
        let before = rounds();
        let (tx, rx) = std::sync::mpsc::channel();
        drop_later(Witness(tx));
        let on = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("dropped within 10 s");
        assert_eq!(on.as_deref(), Some("lb-reclaim"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rounds() == before {
            assert!(std::time::Instant::now() < deadline, "no round ran");
            std::thread::yield_now();
        }
    }
}
