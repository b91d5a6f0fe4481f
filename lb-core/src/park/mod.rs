//! Parked idle connections. A connection with nothing to do for a while (an HTTP keep-alive
//! connection between requests) is kept as a few words in a table instead of as a task with
//! its future and its timers: its socket stays registered with tokio, but the waker tokio
//! holds for it is a tiny one naming its slot. When bytes (or the peer's close) arrive, that
//! waker queues the slot for the worker's parker, which hands the connection back to its
//! owner to serve on a new task. When its deadline passes, or its group ends (the listener
//! drains, or shutdown's grace period is over), it is closed. Parking and waking make no
//! system call. nginx's keep-alive handler and HAProxy's idle connections likewise keep only
//! the connection and free the request's state.

mod table;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use table::{Table, Token};

/// What a parked connection's owner keeps beside its socket.
pub trait Parked: Send + 'static {
    /// The socket is readable again, or the peer closed it: serve it on (`deadline`: the one
    /// it was parked with). Called on the parker's runtime (a task may be spawned there).
    fn wake(self, stream: TcpStream, deadline: Instant);
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
    stream: TcpStream,
    payload: P,
}

struct Shared<P> {
    table: Mutex<Table<Parkable<P>>>,
    /// Slots whose sockets became ready, for the parker to wake (their own lock: tokio may
    /// call a waker on another thread while a connection is being parked).
    ready: Mutex<Vec<Token>>,
    /// The earliest deadline the parker's timer is set for (`None`: none); locked after
    /// `table`, never alone before it.
    armed: Mutex<Option<Instant>>,
    /// Wakes the parker: a slot is ready, or an entry's deadline is earlier than its timer.
    notify: Notify,
    /// The parker's task ended (its runtime shut down): nothing more may be parked here.
    dead: AtomicBool,
}

/// The waker tokio keeps for a parked socket: it names the slot.
struct SlotWaker<P> {
    shared: Weak<Shared<P>>,
    token: Token,
}

impl<P: Parked> Wake for SlotWaker<P> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(sh) = self.shared.upgrade() {
            lock(&sh.ready).push(self.token);
            sh.notify.notify_one();
        }
    }
}

impl<P: Parked> Parker<P> {
    /// A parker whose task runs on the current tokio runtime.
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            ready: Mutex::new(Vec::new()),
            armed: Mutex::new(None),
            notify: Notify::new(),
            dead: AtomicBool::new(false),
        });
        tokio::spawn(run(shared.clone()));
        Self { shared }
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
    /// `group` share the same `ends`; the first one parked in a group names them.
    ///
    /// `Err` gives the connection back: it is readable already (or its socket failed, which
    /// its next read reports), so the caller serves on. A connection whose `ends` are reached
    /// is closed at once (`Ok`).
    pub fn park(
        &self,
        stream: TcpStream,
        payload: P,
        deadline: Instant,
        group: usize,
        ends: &[CancellationToken],
    ) -> Result<(), (TcpStream, P)> {
        let sh = &self.shared;
        let watch = {
            let mut table = lock(&sh.table);
            // Checked under the lock a group's watcher takes to close the group: a connection
            // parked after its end was seen would be missed by it.
            if sh.dead.load(Ordering::Acquire) || ends.iter().any(|e| e.is_cancelled()) {
                return Ok(());
            }
            let (token, watch) = table.insert(Parkable { stream, payload }, deadline, group);
            // In the table before tokio holds the waker: a wake on another thread finds it.
            let waker = Waker::from(Arc::new(SlotWaker {
                shared: Arc::downgrade(sh),
                token,
            }));
            let stream = &table.get(token).expect("just parked").stream;
            if stream
                .poll_read_ready(&mut Context::from_waker(&waker))
                .is_ready()
            {
                let p = table.take(token).expect("just parked");
                return Err((p.stream, p.payload));
            }
            // Under the table's lock, where the parker's task reads the earliest deadline and
            // arms its timer: compared with a value it is about to replace, an earlier
            // deadline would go unannounced and be kept past its time.
            let mut armed = lock(&sh.armed);
            if armed.is_none_or(|a| deadline < a) {
                *armed = Some(deadline);
                sh.notify.notify_one();
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
        Ok(())
    }
}

/// On any end of the parker's task (its runtime shutting down included): every parked
/// connection is closed and nothing more is parked here.
struct Dead<P>(Arc<Shared<P>>);

impl<P> Drop for Dead<P> {
    fn drop(&mut self) {
        let entries = {
            let mut table = lock(&self.0.table);
            self.0.dead.store(true, Ordering::Release);
            table.clear()
        };
        drop(entries);
    }
}

/// The parker's task: wakes connections whose sockets are ready and closes those whose
/// deadline passed. Not an `async fn`: its guard must be owned by the future from the start,
/// since a runtime that shuts down before the task's first poll drops it unpolled, and an
/// `async fn` body (a guard made in it included) only begins at that first poll.
fn run<P: Parked>(shared: Arc<Shared<P>>) -> impl Future<Output = ()> + Send {
    let dead = Dead(shared);
    async move { serve(&dead.0).await }
}

async fn serve<P: Parked>(shared: &Shared<P>) {
    let mut woken = Vec::new();
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        std::mem::swap(&mut woken, &mut *lock(&shared.ready));
        for token in woken.drain(..) {
            let Some((p, deadline)) = lock(&shared.table).take_timed(token) else {
                continue;
            };
            p.payload.wake(p.stream, deadline);
        }
        let next = {
            // One step under the table's lock, as `park` checks it (see there).
            let table = lock(&shared.table);
            let next = table.next_deadline();
            *lock(&shared.armed) = next;
            next
        };
        if let Some(at) = next {
            if at != timer.deadline() {
                timer.as_mut().reset(at);
            }
        }
        tokio::select! {
            () = &mut timer, if next.is_some() => {
                let expired = lock(&shared.table).expire(Instant::now());
                drop(expired);
            }
            () = shared.notify.notified() => {}
        }
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
        let closed = {
            let mut table = lock(&sh.table);
            // Checked under the lock: a group emptied meanwhile (its `gone` cancelled) may
            // have been made anew under the same key, by another gateway at the same address.
            if gone.is_cancelled() {
                return;
            }
            table.close_group(group)
        };
        drop(closed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves plain data: carry on with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
