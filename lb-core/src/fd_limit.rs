//! The process's file descriptors: the soft `RLIMIT_NOFILE` is raised to the hard limit at
//! start (as nginx's `worker_rlimit_nofile` and HAProxy's computed `ulimit-n` do; the usual
//! soft default of 1024 is far below what a load balancer needs), and one descriptor is kept
//! spare so an accept loop out of descriptors can still take a waiting client and close it
//! (see `proxy::accept_backoff`). Does I/O (getrlimit/setrlimit, opening /dev/null).

use std::fs::File;
use std::sync::Mutex;

use rustix::process::{getrlimit, setrlimit, Resource};

/// The spare descriptor, `None` while an accept loop has given it up.
static SPARE: Mutex<Option<File>> = Mutex::new(None);

/// Raises the soft open-file limit to the hard one; returns (old, new) soft limits when it
/// changed. `None` limits mean unlimited.
pub fn raise_nofile() -> std::io::Result<Option<(Option<u64>, Option<u64>)>> {
    let lim = getrlimit(Resource::Nofile);
    if lim.current == lim.maximum {
        return Ok(None);
    }
    let old = lim.current;
    let new = rustix::process::Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    setrlimit(Resource::Nofile, new)?;
    Ok(Some((old, lim.maximum)))
}

/// The soft open-file limit now (`None`: unlimited).
pub fn nofile() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Opens the spare descriptor (once; later calls keep the one there is).
pub fn keep_spare() {
    restore_spare();
}

/// Takes the spare descriptor, if there is one, to close it and free its slot.
pub fn take_spare() -> Option<File> {
    SPARE.lock().ok()?.take()
}

/// Opens the spare descriptor again if it was taken (it may fail while descriptors are
/// still short; an accept loop tries again when it accepts after failures).
pub fn restore_spare() {
    if let Ok(mut s) = SPARE.lock() {
        if s.is_none() {
            *s = File::open("/dev/null").ok();
        }
    }
}

/// Tests that take or restore the process-wide spare hold this, so they do not race.
#[cfg(test)]
pub static TEST_LOCK: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spare_is_taken_once_and_restored() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        keep_spare();
        let f = take_spare();
        assert!(f.is_some());
        assert!(take_spare().is_none(), "only one spare");
        drop(f);
        restore_spare();
        assert!(take_spare().is_some());
        restore_spare();
    }

    #[test]
    fn raising_twice_changes_nothing_the_second_time() {
        let _ = raise_nofile();
        assert!(matches!(raise_nofile(), Ok(None)));
        assert_eq!(nofile(), getrlimit(Resource::Nofile).maximum);
    }
}
