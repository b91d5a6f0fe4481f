//! systemd's readiness protocol (sd_notify(3), `Type=notify`): newline-separated `KEY=VALUE`
//! assignments in one datagram to the Unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name when it starts with '@'). Message building and the environment's parsing are
//! pure; [`Notifier`] alone does I/O. Written here rather than taken from a crate: it is
//! twenty lines of protocol, and lb needs `MONOTONIC_USEC` and `MAINPID` exactly as below.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// One assignment of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Startup finished, or a reload finished (whatever its outcome).
    Ready,
    /// A reload started; systemd wants `MONOTONIC_USEC` beside it (CLOCK_MONOTONIC, µs) to
    /// match it with the `ExecReload=` it ran.
    Reloading { monotonic_usec: u64 },
    /// Shutdown started.
    Stopping,
    /// Free text for `systemctl status`; made one line here.
    Status(String),
    /// Keep-alive for `WatchdogSec=`.
    Watchdog,
    /// This process is now the service's main process (binary upgrade).
    MainPid(u32),
}

/// The datagram for `fields`. A `STATUS=` text loses its control characters: a newline in
/// it (a pool name, say) would otherwise start a second assignment such as `STOPPING=1`.
pub fn message(fields: &[Field]) -> String {
    let mut out = String::new();
    for f in fields {
        match f {
            Field::Ready => out.push_str("READY=1"),
            Field::Reloading { monotonic_usec } => {
                out.push_str(&format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}"))
            }
            Field::Stopping => out.push_str("STOPPING=1"),
            Field::Status(s) => {
                out.push_str("STATUS=");
                out.extend(s.chars().map(|c| if c.is_control() { ' ' } else { c }));
            }
            Field::Watchdog => out.push_str("WATCHDOG=1"),
            Field::MainPid(pid) => out.push_str(&format!("MAINPID={pid}")),
        }
        out.push('\n');
    }
    out
}

/// Where `$NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// Parses `$NOTIFY_SOCKET`: an absolute path, or '@' and an abstract name. Anything else
/// (empty, relative, a `vsock:` address lb does not speak) is `None`.
pub fn parse_target(value: &OsStr) -> Option<Target> {
    let b = value.as_bytes();
    match b.first()? {
        b'/' => Some(Target::Path(PathBuf::from(value))),
        b'@' if b.len() > 1 => Some(Target::Abstract(b[1..].to_vec())),
        _ => None,
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` (sd_watchdog_enabled(3)'s
/// advice), and only when `$WATCHDOG_PID` is unset or names this process.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads its own clock.
pub fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(t.tv_nsec as u64 / 1_000)
}

/// A connection to systemd's notify socket, from the environment lb was started with.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    target: SocketAddr,
    /// Half of `WatchdogSec=`, when systemd watches this process.
    pub watchdog: Option<Duration>,
    /// The last send failed: the next failures are not logged again until one succeeds (a
    /// watchdog pinging every few milliseconds would otherwise flood the log).
    failing: AtomicBool,
}

impl Notifier {
    /// `None` when lb was not started by systemd with `Type=notify` (no `$NOTIFY_SOCKET`), or
    /// the variable cannot be used (then says why once).
    pub fn from_env() -> Option<Self> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match Self::connect(&value, watchdog) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY_SOCKET={value:?} is set but unusable; systemd will not hear from lb");
                None
            }
        }
    }

    /// A notifier sending to `value` (a `$NOTIFY_SOCKET` value).
    pub fn connect(value: &OsStr, watchdog: Option<Duration>) -> std::io::Result<Self> {
        let invalid =
            || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a path or @name");
        let target = match parse_target(value).ok_or_else(invalid)? {
            Target::Path(p) => SocketAddr::from_pathname(p)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
        };
        // Non-blocking: lb sends from its control thread (admin API, signals, health checks),
        // and a reader that stops reading would otherwise block that thread for good once its
        // queue (net.unix.max_dgram_qlen, 10 by default) is full.
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock,
            target,
            watchdog,
            failing: AtomicBool::new(false),
        })
    }

    /// Sends one notification. A full queue (a burst, systemd busy) is waited on for up to
    /// [`SEND_PATIENCE`], then the notification is dropped; while sends keep failing none
    /// waits, so a reader that never reads costs lb's control thread that wait once, not a
    /// hang (a blocking send would wait for good). Failing is logged once until a send
    /// succeeds, never fatal: lb serving matters more than systemd hearing about it.
    pub fn send(&self, fields: &[Field]) {
        let msg = message(fields);
        let deadline = std::time::Instant::now() + SEND_PATIENCE;
        loop {
            match self.sock.send_to_addr(msg.as_bytes(), &self.target) {
                Ok(_) => return self.failing.store(false, Relaxed),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && !self.failing.load(Relaxed)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) if !self.failing.swap(true, Relaxed) => {
                    return tracing::warn!(error = %e, "cannot notify systemd ({}); dropped, and further failures are not logged until one succeeds", msg.trim_end().replace('\n', " "));
                }
                Err(e) => return tracing::debug!(error = %e, "cannot notify systemd"),
            }
        }
    }
}

/// How long one notification may wait for room in systemd's queue (net.unix.max_dgram_qlen,
/// 10 datagrams by default) before it is dropped.
const SEND_PATIENCE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_newline_separated_assignments() {
        assert_eq!(
            message(&[
                Field::Ready,
                Field::MainPid(42),
                Field::Status("ready: 1".into())
            ]),
            "READY=1\nMAINPID=42\nSTATUS=ready: 1\n"
        );
        assert_eq!(
            message(&[Field::Reloading { monotonic_usec: 7 }]),
            "RELOADING=1\nMONOTONIC_USEC=7\n"
        );
        assert_eq!(message(&[Field::Stopping]), "STOPPING=1\n");
        assert_eq!(message(&[Field::Watchdog]), "WATCHDOG=1\n");
    }

    #[test]
    fn a_status_cannot_smuggle_another_assignment() {
        let m = message(&[Field::Status("pool a\nSTOPPING=1\r\u{0}x".into())]);
        assert_eq!(m, "STATUS=pool a STOPPING=1  x\n");
        assert_eq!(m.lines().count(), 1);
    }

    #[test]
    fn targets_are_paths_or_abstract_names() {
        assert_eq!(
            parse_target(OsStr::new("/run/systemd/notify")),
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_target(OsStr::new("@lb-test")),
            Some(Target::Abstract(b"lb-test".to_vec()))
        );
        for bad in ["", "@", "relative/sock", "vsock:2:1234"] {
            assert_eq!(parse_target(OsStr::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn watchdog_is_half_the_timeout_and_only_for_the_named_pid() {
        let half = Some(Duration::from_millis(1500));
        assert_eq!(watchdog_interval(Some("3000000"), None, 9), half);
        assert_eq!(watchdog_interval(Some("3000000"), Some("9"), 9), half);
        assert_eq!(watchdog_interval(Some("3000000"), Some("10"), 9), None);
        assert_eq!(watchdog_interval(Some("3000000"), Some("x"), 9), None);
        for bad in ["0", "", "-5", "1e6", "18446744073709551616"] {
            assert_eq!(watchdog_interval(Some(bad), None, 9), None, "{bad}");
        }
        assert_eq!(watchdog_interval(None, Some("9"), 9), None);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }

    /// A socket in a fresh directory named from `prefix`, and a notifier sending to it.
    fn listening(prefix: &str) -> (std::path::PathBuf, UnixDatagram, Notifier) {
        let dir = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::connect(path.as_os_str(), None).expect("connect");
        (dir, server, n)
    }

    #[test]
    fn sends_a_datagram_to_a_path_socket() {
        let (dir, server, n) = listening("lb-notify-");
        n.send(&[Field::Ready]);
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reader_that_never_reads_does_not_block_the_sender() {
        let (dir, server, n) = listening("lb-notify-full-");
        // Far more than any queue holds (net.unix.max_dgram_qlen is 10 by default).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                n.send(&[Field::Watchdog]);
            }
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "sending to a full notify socket blocked"
        );
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("the first ones were queued");
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
