//! Relays bytes both ways between a client and a backend until both directions end, with
//! correct half-close (a FIN from one side becomes a write-shutdown on the other while the
//! reverse direction keeps flowing), an idle timeout, and cancellation for shutdown. A plain
//! relay can also pause for a binary upgrade's hand-over and resume in the new process
//! ([`super::pause`]).

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::buffers::Buf;
pub use super::pause::RelayState;
use super::pause::{or_pause, write_or_pause, Stop, Want};

/// How bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// read(2)/write(2) through a 16 KiB buffer taken only while data flows.
    Copy,
    /// splice(2) through a pipe (Linux).
    Splice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

impl Side {
    pub fn other(self) -> Self {
        match self {
            Self::Client => Self::Backend,
            Self::Backend => Self::Client,
        }
    }
}

/// Why a proxied connection ended (the access log's last field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent FIN first; the backend then finished too.
    ClientFin,
    /// The backend sent FIN first; the client then finished too.
    BackendFin,
    IdleTimeout,
    ClientError(io::ErrorKind),
    BackendError(io::ErrorKind),
    /// lb is shutting down and the grace period ran out.
    Shutdown,
    /// Past the listener's `max_connection_age`, the connection was quiet for `age_grace`.
    MaxAge,
    /// Paused for a binary upgrade: the sockets and [`Outcome::moved`] go to the new process.
    Handover,
}

impl End {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ClientFin => "client_fin",
            Self::BackendFin => "backend_fin",
            Self::IdleTimeout => "idle_timeout",
            Self::ClientError(_) => "client_error",
            Self::BackendError(_) => "backend_error",
            Self::Shutdown => "shutdown",
            Self::MaxAge => "max_age",
            Self::Handover => "handover",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    /// Bytes client → backend (with those counted before a hand-over).
    pub from_client: u64,
    /// Bytes backend → client.
    pub from_backend: u64,
    pub end: End,
    /// With [`End::Handover`]: what moves with the sockets.
    pub moved: Option<Box<RelayState>>,
}

/// When a relay gives up on a connection, besides its peers ending it.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// No bytes either way for this long ends it.
    pub idle: Duration,
    /// `max_connection_age`: from this instant on, the first `grace` without a byte either
    /// way ends it, so an old connection is closed between transfers, never during one.
    /// Bytes lb wrote that a socket has not delivered yet count as moving (see
    /// [`Delivering`]).
    pub old_at: Option<(Instant, Duration)>,
}

impl Deadlines {
    /// The listener's limits for a connection accepted at `start`, its age drawn from the
    /// listener's jitter (one place for every relay: tcp, tls, and http upgrades).
    pub fn of(l: &crate::config::Listener, start: Instant) -> Self {
        let old_at = l.max_age.map(|m| {
            let unit = fastrand::f64() * 2.0 - 1.0;
            (start + m.for_connection(unit), m.grace)
        });
        Self {
            idle: l.idle_timeout,
            old_at,
        }
    }
}

/// The sockets of a relay whose send queues say whether bytes are still moving when lb itself
/// has not read or written for a while: a slow reader drains megabytes of lb's send buffer
/// long after lb's last write (the kernel feeds it), and that is a transfer, not quiet.
/// Empty when the streams have no socket to ask (an HTTP upgrade's tunnel).
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivering {
    fds: [Option<std::os::fd::RawFd>; 2],
}

impl Delivering {
    /// Asks the sockets `client` and `backend` (each may be absent).
    pub fn of(client: Option<&TcpStream>, backend: Option<&TcpStream>) -> Self {
        use std::os::fd::AsRawFd;
        Self {
            fds: [
                client.map(AsRawFd::as_raw_fd),
                backend.map(AsRawFd::as_raw_fd),
            ],
        }
    }

    /// Whether either socket still holds bytes its peer has not acknowledged.
    fn busy(&self) -> bool {
        self.fds
            .iter()
            .flatten()
            .any(|&fd| crate::sys::unacked(fd) > 0)
    }
}

/// How soon an old connection whose sockets were still delivering is looked at again, at
/// the least.
const RECHECK: Duration = Duration::from_millis(100);

/// Byte counts and last activity, shared by the two directions of one connection. They run
/// in one task, so the atomics are never contended; they are atomics only so the task is
/// `Send` for the work-stealing runtime.
pub struct Activity {
    from_client: AtomicU64,
    from_backend: AtomicU64,
    /// `clock::now_ms` of the last bytes moved.
    last_ms: AtomicU64,
    /// The client's direction has ended (its FIN was relayed).
    client_done: AtomicBool,
}

impl Activity {
    /// Counts starting where `start` left them (zero for a fresh connection).
    fn new(start: &RelayState) -> Self {
        Self {
            from_client: AtomicU64::new(start.from_client),
            from_backend: AtomicU64::new(start.from_backend),
            last_ms: AtomicU64::new(crate::clock::now_ms()),
            client_done: AtomicBool::new(start.client_done),
        }
    }

    /// The backend closed before a byte moved either way while the client was still open:
    /// the client must be left untouched so it can be retried on another backend. The one
    /// rule both `drive` and the stream pumps follow.
    fn backend_close_is_retryable(&self) -> bool {
        !self.client_done.load(Relaxed)
            && self.from_client.load(Relaxed) == 0
            && self.from_backend.load(Relaxed) == 0
    }

    pub fn moved(&self, from: Side, n: u64) {
        let c = match from {
            Side::Client => &self.from_client,
            Side::Backend => &self.from_backend,
        };
        c.fetch_add(n, Relaxed);
        self.last_ms.store(crate::clock::now_ms(), Relaxed);
    }
}

/// Runs the relay between two sockets to its end, or until `pause` is cancelled (then it ends
/// with [`End::Handover`] and what must move). `start` is where a handed-over relay resumes
/// (its carried bytes are written first); `RelayState::default()` for a new connection.
pub async fn relay(
    client: &TcpStream,
    backend: &TcpStream,
    mode: RelayMode,
    limits: Deadlines,
    cancel: &CancellationToken,
    pause: Option<&CancellationToken>,
    mut start: RelayState,
) -> Outcome {
    let act = Activity::new(&start);
    let (to_backend, to_client) = (
        std::mem::take(&mut start.to_backend),
        std::mem::take(&mut start.to_client),
    );
    // Pinned here and lent to `drive`: passed by value, each pump's state would be stored
    // twice in the connection's task (the argument and drive's pinned copy).
    let up = std::pin::pin!(pump(
        client,
        backend,
        &act,
        Side::Client,
        mode,
        pause,
        to_backend
    ));
    let down = std::pin::pin!(pump(
        backend,
        client,
        &act,
        Side::Backend,
        mode,
        pause,
        to_client
    ));
    // A FIN from one side becomes a write-shutdown towards the other.
    let half_close = |from: Side| {
        let to = match from {
            Side::Client => backend,
            Side::Backend => client,
        };
        let _ = SockRef::from(to).shutdown(Shutdown::Write);
    };
    let delivering = Delivering::of(Some(client), Some(backend));
    let ends = (limits, delivering);
    drive(up, down, &act, ends, cancel, half_close, &start).await
}

/// Runs the relay between two byte streams (TLS on either side) to its end. Each direction
/// holds a 16 KiB buffer while the relay lives: a TLS stream may have decrypted bytes ready
/// without the socket being readable, so the buffer cannot be taken per burst.
pub async fn relay_streams<C, B>(
    client: &mut C,
    backend: &mut B,
    limits: Deadlines,
    delivering: Delivering,
    cancel: &CancellationToken,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let act = Activity::new(&RelayState::default());
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut backend_r, mut backend_w) = tokio::io::split(backend);
    let up = std::pin::pin!(pump_stream(
        &mut client_r,
        &mut backend_w,
        &act,
        Side::Client
    ));
    let down = std::pin::pin!(pump_stream(
        &mut backend_r,
        &mut client_w,
        &act,
        Side::Backend
    ));
    // The pumps shut their writers down themselves (a TLS close_notify, then FIN).
    let ends = (limits, delivering);
    drive(up, down, &act, ends, cancel, |_| {}, &RelayState::default()).await
}

async fn pump_stream<R, W>(
    r: &mut R,
    w: &mut W,
    act: &Activity,
    side: Side,
) -> Result<Stop, (Side, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; super::buffers::BUF_SIZE];
    loop {
        let n = r.read(&mut buf).await.map_err(|e| (side, e))?;
        if n == 0 {
            if !(side == Side::Backend && act.backend_close_is_retryable()) {
                let _ = w.shutdown().await;
            }
            return Ok(Stop::Eof);
        }
        act.moved(side, n as u64);
        w.write_all(&buf[..n])
            .await
            .map_err(|e| (side.other(), e))?;
        w.flush().await.map_err(|e| (side.other(), e))?;
    }
}

/// Waits for both directions to end (or an error, the idle timeout, or shutdown), or to have
/// paused for a hand-over. A direction `start` says had ended is not run.
async fn drive<U, D>(
    mut up: std::pin::Pin<&mut U>,
    mut down: std::pin::Pin<&mut D>,
    act: &Activity,
    (limits, delivering): (Deadlines, Delivering),
    cancel: &CancellationToken,
    half_close: impl Fn(Side),
    start: &RelayState,
) -> Outcome
where
    U: std::future::Future<Output = Result<Stop, (Side, io::Error)>>,
    D: std::future::Future<Output = Result<Stop, (Side, io::Error)>>,
{
    let (mut up_done, mut down_done) = (start.client_done, start.backend_done);
    let mut first_fin: Option<Side> = match (up_done, down_done) {
        (true, _) => Some(Side::Client),
        (false, true) => Some(Side::Backend),
        _ => None,
    };
    // Set when a direction paused: the bytes it holds for the other side.
    let (mut held_up, mut held_down): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    let idle = limits.idle;
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    // Only with `max_connection_age`: boxed, so a relay without one carries a pointer, not a
    // timer, for its whole life.
    let grace = limits.old_at.map_or(Duration::ZERO, |(_, g)| g);
    let mut age_timer = limits
        .old_at
        .map(|(at, _)| Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at))));
    let end = loop {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                match r {
                    Ok(Stop::Paused(held)) => held_up = Some(held),
                    Ok(Stop::Eof) => {
                        act.client_done.store(true, Relaxed);
                        first_fin.get_or_insert(Side::Client);
                        // The second FIN needs no shutdown: both sockets close right after.
                        if !down_done {
                            half_close(Side::Client);
                        }
                    }
                    Err((side, e)) => break error_end(side, e),
                }
            }
            r = &mut down, if !down_done => {
                down_done = true;
                match r {
                    Ok(Stop::Paused(held)) => held_down = Some(held),
                    Ok(Stop::Eof) if act.backend_close_is_retryable() => break End::BackendFin,
                    Ok(Stop::Eof) => {
                        first_fin.get_or_insert(Side::Backend);
                        if !up_done {
                            half_close(Side::Backend);
                        }
                    }
                    Err((side, e)) => break error_end(side, e),
                }
            }
            () = &mut idle_timer => {
                let deadline = crate::clock::instant_of(act.last_ms.load(Relaxed)) + idle;
                if Instant::now() >= deadline {
                    break End::IdleTimeout;
                }
                idle_timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
            }
            () = async { age_timer.as_mut().expect("checked").await }, if age_timer.is_some() => {
                let quiet_at = crate::clock::instant_of(act.last_ms.load(Relaxed)) + grace;
                let now = Instant::now();
                let next = if now < quiet_at {
                    quiet_at
                } else if delivering.busy() {
                    // lb has been idle, the kernel has not: look again a grace later (at
                    // least RECHECK, so a zero grace does not spin).
                    now + grace.max(RECHECK)
                } else {
                    break End::MaxAge;
                };
                if let Some(t) = age_timer.as_mut() {
                    t.as_mut().reset(tokio::time::Instant::from_std(next));
                }
            }
            () = cancel.cancelled() => break End::Shutdown,
        }
        if up_done && down_done {
            if held_up.is_some() || held_down.is_some() {
                break End::Handover;
            }
            break match first_fin {
                Some(Side::Backend) => End::BackendFin,
                _ => End::ClientFin,
            };
        }
    };
    let (from_client, from_backend) = (
        act.from_client.load(Relaxed),
        act.from_backend.load(Relaxed),
    );
    let moved = (end == End::Handover).then(|| {
        Box::new(RelayState {
            from_client,
            from_backend,
            client_done: held_up.is_none(),
            backend_done: held_down.is_none(),
            to_backend: held_up.unwrap_or_default(),
            to_client: held_down.unwrap_or_default(),
        })
    });
    Outcome {
        from_client,
        from_backend,
        end,
        moved,
    }
}

impl Outcome {
    /// The backend failed or closed before a single byte was read from either side while
    /// the client was still open: nothing was lost, so the client can be handed to another
    /// backend as if the connect had failed (a backend that dies resets or closes the
    /// connections still in its accept queue).
    pub fn retryable(&self) -> bool {
        self.from_client == 0
            && self.from_backend == 0
            && matches!(self.end, End::BackendError(_) | End::BackendFin)
    }
}

fn error_end(side: Side, e: io::Error) -> End {
    match side {
        Side::Client => End::ClientError(e.kind()),
        Side::Backend => End::BackendError(e.kind()),
    }
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    act: &Activity,
    side: Side,
    mode: RelayMode,
    pause: Option<&CancellationToken>,
    carry: Vec<u8>,
) -> Result<Stop, (Side, io::Error)> {
    let bulk = cfg!(target_os = "linux") && mode == RelayMode::Splice;
    match copy_pump(from, to, act, side, bulk, pause, carry).await? {
        Flow::Eof => Ok(Stop::Eof),
        Flow::Paused(held) => Ok(Stop::Paused(held)),
        // Splice for bulk only: small exchanges stay on the copy path (no pipe to create),
        // and a direction switches to splice once a read fills a whole buffer.
        #[cfg(target_os = "linux")]
        Flow::Bulk => super::splice::pump(from, to, act, side, pause).await,
        #[cfg(not(target_os = "linux"))]
        Flow::Bulk => unreachable!("bulk is reported only on the splice path"),
    }
}

/// Reads what `sock` has. A short read means its receive queue was empty at that moment, so
/// tokio's read readiness is cleared at once (nginx's `rev->ready = 0` after a short recv):
/// the next wait goes straight to epoll instead of costing a read that only says EAGAIN, one
/// system call per direction per request saved. tokio clears readiness only if no new event
/// arrived since it was set, so data landing meanwhile still wakes the pump.
pub(crate) fn read_draining(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    let r = sock.try_io(Interest::READABLE, || {
        let n = loop {
            match rustix::io::read(sock, &mut *buf) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r?,
            }
        };
        got = n;
        if n > 0 && n < buf.len() {
            // Not an error: the signal to tokio that the socket is drained.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        r => r,
    }
}

/// Why a copy pump returned.
enum Flow {
    Eof,
    /// A read filled the buffer: this direction carries bulk data.
    Bulk,
    /// Paused for a hand-over, holding these bytes for the destination.
    Paused(Vec<u8>),
}

/// Buffered copy: wait for data, then borrow a buffer for just this burst. With
/// `stop_on_bulk`, returns [`Flow::Bulk`] after forwarding the first read that filled the
/// buffer.
async fn copy_pump(
    from: &TcpStream,
    to: &TcpStream,
    act: &Activity,
    side: Side,
    stop_on_bulk: bool,
    pause: Option<&CancellationToken>,
    carry: Vec<u8>,
) -> Result<Flow, (Side, io::Error)> {
    let to_side = side.other();
    if let Some(held) = write_or_pause(to, &carry, to_side, pause).await? {
        return Ok(Flow::Paused(held));
    }
    drop(carry);
    loop {
        if or_pause(from, Want::Read, pause)
            .await
            .map_err(|e| (side, e))?
        {
            return Ok(Flow::Paused(Vec::new()));
        }
        let mut buf = Buf::take();
        let n = match read_draining(from, &mut buf) {
            Ok(0) => return Ok(Flow::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err((side, e)),
        };
        // Counted as soon as read: once bytes left the client's socket, a retry on another
        // backend would lose them, so the counts say whether a retry is safe.
        act.moved(side, n as u64);
        if let Some(held) = write_or_pause(to, &buf[..n], to_side, pause).await? {
            return Ok(Flow::Paused(held));
        }
        if stop_on_bulk && n == buf.len() {
            return Ok(Flow::Bulk);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Two ends of one loopback connection.
    pub(crate) async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (b, _) = l.accept().await.expect("accept");
        (a, b)
    }

    #[tokio::test]
    async fn a_short_read_clears_readiness_and_new_data_still_wakes() {
        let (mut a, b) = pair().await;
        let mut buf = [0u8; 64];
        a.write_all(b"first").await.expect("write");
        b.readable().await.expect("readable");
        assert_eq!(read_draining(&b, &mut buf).expect("read"), 5);
        // Drained: waiting now really waits (no read that would only say EAGAIN)…
        let idle = tokio::time::timeout(Duration::from_millis(100), b.readable()).await;
        assert!(idle.is_err(), "readiness was not cleared");
        // …and bytes arriving afterwards wake it again.
        a.write_all(b"second").await.expect("write");
        tokio::time::timeout(Duration::from_secs(5), b.readable())
            .await
            .expect("woken by new data")
            .expect("readable");
        assert_eq!(read_draining(&b, &mut buf).expect("read"), 6);
        assert_eq!(&buf[..6], b"second");
    }

    #[tokio::test]
    async fn a_full_read_keeps_readiness_and_eof_reads_zero() {
        let (mut a, b) = pair().await;
        let mut buf = [0u8; 4];
        a.write_all(b"12345678").await.expect("write");
        a.shutdown().await.expect("fin");
        let mut got = Vec::new();
        loop {
            b.readable().await.expect("readable");
            match read_draining(&b, &mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"12345678");
    }
}
