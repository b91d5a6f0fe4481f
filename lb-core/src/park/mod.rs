//! Parked idle connections. A connection with nothing to do for a while (an HTTP keep-alive
//! connection between requests) is kept as a few words in a table, its socket watched by one
//! epoll set per worker, instead of as a task with its future, a tokio registration and its
//! timers. When bytes (or the peer's close) arrive it is woken: handed back to its owner,
//! which serves it on a new task. When its deadline passes, or its group ends (the listener
//! drains, or shutdown's grace period is over), it is closed. nginx's keep-alive handler and
//! HAProxy's idle connections likewise keep only the connection and free the request's state.

mod table;

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::sys::EpollSet;
use table::{Table, Token};

/// What a parked connection's owner keeps beside its socket.
pub trait Parked: Send + 'static {
    /// The socket is readable again, or the peer closed it: serve it on. Called on the
    /// parker's runtime (a task may be spawned there); the stream is in non-blocking mode.
    fn wake(self, stream: std::net::TcpStream);
}

/// One worker's parked connections (cheap to clone: a handle).
pub struct Parker<P: Parked> {
    shared: Arc<Shared<P>>,
}

impl<P: Parked> Clone for Parker<P> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Parkable<P> {
    stream: std::net::TcpStream,
    payload: P,
}

struct Shared<P> {
    epoll: AsyncFd<EpollSet>,
    table: Mutex<Table<Parkable<P>>>,
    /// The earliest deadline the parker's timer is set for (`None`: none).
    armed: Mutex<Option<Instant>>,
    /// Wakes the parker when an entry's deadline is earlier than its timer.
    sooner: Notify,
    /// The parker's task ended (its runtime shut down): nothing more may be parked here.
    dead: AtomicBool,
}

impl<P: Parked> Parker<P> {
    /// A parker whose task runs on the current tokio runtime.
    pub fn start() -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let shared = Arc::new(Shared {
            epoll: crate::sys::watch_epoll(EpollSet(epoll))?,
            table: Mutex::new(Table::default()),
            armed: Mutex::new(None),
            sooner: Notify::new(),
            dead: AtomicBool::new(false),
        });
        tokio::spawn(run(shared.clone()));
        Ok(Self { shared })
    }

    /// Whether its task still runs (not once its runtime has shut down).
    pub fn alive(&self) -> bool {
        !self.shared.dead.load(Ordering::Acquire)
    }

    /// How many connections are parked.
    pub fn len(&self) -> usize {
        lock(&self.shared.table).len()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.shared.table).is_empty()
    }

    /// Parks `stream` until it is readable (then `payload.wake`), `deadline` passes or one of
    /// `ends` is cancelled (then both are dropped: the connection closes). Connections of one
    /// `group` share the same `ends`; the first one parked in a group names them. An error
    /// (or an end already reached) closes the connection at once.
    pub fn park(
        &self,
        stream: std::net::TcpStream,
        payload: P,
        deadline: Instant,
        group: usize,
        ends: &[CancellationToken],
    ) -> io::Result<()> {
        let sh = &self.shared;
        let watch = {
            let mut table = lock(&sh.table);
            // Checked under the lock a group's watcher takes to close the group: a connection
            // parked after its end was seen would be missed by it.
            if sh.dead.load(Ordering::Acquire) || ends.iter().any(|e| e.is_cancelled()) {
                return Err(io::Error::other("the connection's listener is closing"));
            }
            let (token, watch) = table.insert(Parkable { stream, payload }, deadline, group);
            let fd = table.get(token).expect("just parked").stream.as_fd();
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
            if let Err(e) = sh.epoll.get_ref().0.add(fd, EpollEvent::new(flags, token)) {
                drop(table.take(token));
                return Err(e.into());
            }
            watch
        };
        if let Some(gone) = watch {
            let ends = ends
                .iter()
                .map(|e| Box::pin(e.clone().cancelled_owned()))
                .collect();
            tokio::spawn(watch_group(Arc::downgrade(sh), group, ends, gone));
        }
        let mut armed = lock(&sh.armed);
        if armed.is_none_or(|a| deadline < a) {
            *armed = Some(deadline);
            sh.sooner.notify_one();
        }
        Ok(())
    }
}

/// The parker's task: wakes connections whose sockets are ready and closes those whose
/// deadline passed.
async fn run<P: Parked>(shared: Arc<Shared<P>>) {
    /// On any end of the task (its runtime shutting down included): every parked connection
    /// is closed and nothing more is parked here.
    struct Dead<'a, P>(&'a Shared<P>);
    impl<P> Drop for Dead<'_, P> {
        fn drop(&mut self) {
            let entries = {
                let mut table = lock(&self.0.table);
                self.0.dead.store(true, Ordering::Release);
                table.clear()
            };
            drop(entries);
        }
    }
    let _dead = Dead(&shared);
    let mut events = vec![EpollEvent::empty(); 256];
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let next = lock(&shared.table).next_deadline();
        *lock(&shared.armed) = next;
        if let Some(at) = next {
            if at != timer.deadline() {
                timer.as_mut().reset(at);
            }
        }
        tokio::select! {
            ready = shared.epoll.readable() => {
                let Ok(mut guard) = ready else { return };
                let polled = guard.try_io(|e| match e.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
                    Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                    Ok(n) => Ok(n),
                    Err(nix::errno::Errno::EINTR) => Ok(0),
                    Err(e) => Err(e.into()),
                });
                match polled {
                    Ok(Ok(n)) => wake(&shared, &events[..n]),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "parked connections: epoll_wait failed; closing them");
                        return;
                    }
                    Err(_would_block) => {}
                }
            }
            () = &mut timer, if next.is_some() => {
                let expired = lock(&shared.table).expire(Instant::now());
                drop(expired);
            }
            () = shared.sooner.notified() => {}
        }
    }
}

fn wake<P: Parked>(shared: &Shared<P>, events: &[EpollEvent]) {
    for ev in events {
        let Some(p) = lock(&shared.table).take(ev.data() as Token) else {
            continue;
        };
        // Out of this set before tokio's takes it; one-shot, so it reported nothing since.
        let _ = shared.epoll.get_ref().0.delete(p.stream.as_fd());
        p.payload.wake(p.stream);
    }
}

/// Closes a group's connections once one of its ends is reached; stops once it has none.
async fn watch_group<P: Parked>(
    shared: Weak<Shared<P>>,
    group: usize,
    mut ends: Vec<Pin<Box<WaitForCancellationFutureOwned>>>,
    gone: CancellationToken,
) {
    let ended = std::future::poll_fn(|cx| {
        for e in &mut ends {
            if e.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    });
    tokio::select! {
        () = ended => {}
        () = gone.cancelled() => return,
    }
    if let Some(sh) = shared.upgrade() {
        let closed = lock(&sh.table).close_group(group);
        drop(closed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves plain data: carry on with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
