//! Binary upgrade without losing a connection (SPEC §5), as HAProxy's seamless reload: the
//! running lb serves its listening sockets over a Unix socket (`--upgrade-socket PATH`). A new
//! lb started with the same flag finds it there, receives every listening socket
//! (SCM_RIGHTS), starts accepting on them, and says READY; only then does the old one stop
//! accepting and drain. Sockets are never closed in between, so nothing queued in the kernel
//! is lost. If the new process dies before READY, the old one simply goes on.
//!
//! Wire: client "TAKEOVER\n" → server [u32 BE length][JSON listeners] + fds → client
//! "READY\n" → server shuts down gracefully. With `global.upgrade_handover` on in both, the
//! client says "READY handover\n" instead, and the server then sends its open plain TCP
//! connections and UDP flows as hand-over frames (`crate::handover`) before it closes the
//! connection and exits.

/// What the new process says once it runs.
const READY: &str = "READY";
const READY_HANDOVER: &str = "READY handover";

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use super::bind::Sock;
use super::Shared;

/// SCM_RIGHTS carries at most this many descriptors per message (Linux SCM_MAX_FD).
const MAX_FDS: usize = 253;
/// How long the old process waits for the new one to say READY.
const READY_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    name: String,
    /// The bind address as configured (may have port 0).
    bind: SocketAddr,
    /// The address actually bound.
    addr: SocketAddr,
    fds: usize,
    /// UDP sockets (absent = TCP).
    #[serde(default)]
    udp: bool,
}

/// Listening sockets received from the previous process, by listener name and configured bind.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: HashMap<(String, SocketAddr), (Vec<Sock>, SocketAddr)>,
    /// Where to say READY once running.
    conn: Option<UnixStream>,
}

impl Inherited {
    /// Takes the sockets of listener `name` bound as `bind`, if the old process had them.
    pub(crate) fn take(&mut self, name: &str, bind: SocketAddr) -> Option<(Vec<Sock>, SocketAddr)> {
        self.sockets.remove(&(name.to_string(), bind))
    }

    pub fn is_upgrade(&self) -> bool {
        self.conn.is_some()
    }

    /// The sockets no listener of the new config wanted.
    pub fn leftovers(&self) -> Vec<String> {
        self.sockets
            .keys()
            .map(|(n, b)| format!("{n} ({b})"))
            .collect()
    }

    /// Tells the old process to stop accepting and drain; with hand-over accepted (decided
    /// in `bind`), to send its connections and flows, which a thread of ours then places.
    pub fn ready(&mut self, shared: &Arc<Shared>) {
        let Some(mut c) = self.conn.take() else {
            return;
        };
        let handover = shared.handover.inbox.accepts();
        let word = if handover { READY_HANDOVER } else { READY };
        match c.write_all(format!("{word}\n").as_bytes()) {
            Ok(()) => tracing::info!(
                handover,
                "binary upgrade: took over the listening sockets; the old process now drains"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "binary upgrade: could not tell the old process to drain");
                shared.handover.inbox.udp_done();
                return;
            }
        }
        if !handover {
            return;
        }
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("lb-inherit".into())
            .spawn(move || super::handover::receive(c, shared.clone()));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "binary upgrade: cannot take the hand-over");
        }
    }
}

/// Asks a running lb at `path` for its listening sockets. No one there (or a stale socket
/// file) means a fresh start: an empty [`Inherited`].
pub fn take_over(path: &Path) -> io::Result<Inherited> {
    let mut conn = match UnixStream::connect(path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(Inherited::default())
        }
        Err(e) => return Err(e),
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"TAKEOVER\n")?;
    let mut head = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        &conn,
        &mut [IoSliceMut::new(&mut head)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = msg {
            fds.extend(it);
        }
    }
    if got.bytes < 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "upgrade: short answer from the old process",
        ));
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "upgrade: answer too large",
        ));
    }
    let mut body = head[4..got.bytes].to_vec();
    if body.len() < len {
        let mut rest = vec![0u8; len - body.len()];
        conn.read_exact(&mut rest)?;
        body.extend(rest);
    }
    let offers: Vec<Offer> = serde_json::from_slice(&body[..len]).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("upgrade: bad answer: {e}"),
        )
    })?;
    let mut fds = fds.into_iter();
    let mut inherited = Inherited::default();
    for o in offers {
        let owned: Vec<OwnedFd> = fds.by_ref().take(o.fds).collect();
        if owned.len() != o.fds {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "upgrade: fewer descriptors than announced",
            ));
        }
        let socks = owned
            .into_iter()
            .map(|fd| Sock::from_fd(fd, o.udp))
            .collect::<io::Result<Vec<_>>>()?;
        inherited.sockets.insert((o.name, o.bind), (socks, o.addr));
    }
    conn.set_read_timeout(None)?;
    inherited.conn = Some(conn);
    Ok(inherited)
}

/// Serves upgrades at `path` until the process exits (a thread of its own: rare, blocking).
pub fn serve(path: PathBuf, shared: Arc<Shared>) -> io::Result<()> {
    // A previous process's socket file: it has handed over (or died), so it is ours now.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    tracing::info!("binary upgrade socket on {}", path.display());
    std::thread::Builder::new()
        .name("lb-upgrade".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match hand_over(conn, &shared) {
                    Ok(Some((conn, wants, udp_tasks))) => {
                        let g = &shared.state.load().loaded.config.global;
                        if !(wants && g.upgrade_handover) {
                            shared.shutdown.cancel();
                            return;
                        }
                        // Relays pause and UDP tasks give up their flows as they stop; all
                        // of it is sent from here until the last connection task ended.
                        let moving = &shared.handover.moving;
                        let rx = moving.open();
                        moving.request.cancel();
                        shared.shutdown.cancel();
                        super::handover::send_all(&conn, &rx, udp_tasks);
                        drop(conn);
                        moving.finished();
                        return;
                    }
                    Ok(None) => tracing::warn!(
                        "binary upgrade: the new process went away before READY; still serving"
                    ),
                    Err(e) => tracing::warn!(error = %e, "binary upgrade failed; still serving"),
                }
            }
        })?;
    Ok(())
}

/// Sends the sockets. Once the new process said READY: the connection, whether it asked for
/// the hand-over, and how many UDP socket tasks will give up their flows.
fn hand_over(conn: UnixStream, shared: &Shared) -> io::Result<Option<(UnixStream, bool, usize)>> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim() != "TAKEOVER" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected request {:?}", line.trim()),
        ));
    }
    let state = shared.state.load();
    let held: Vec<_> = state
        .listeners
        .iter()
        .map(|l| l.fds.lock().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let mut offers = Vec::new();
    let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
    for (l, own) in state.listeners.iter().zip(&held) {
        offers.push(Offer {
            name: l.shared.name.clone(),
            bind: l.shared.route.load().listener.bind,
            addr: l.addr,
            fds: own.len(),
            udp: l.shared.route.load().listener.protocol == crate::config::Protocol::Udp,
        });
        fds.extend(own.iter().map(AsFd::as_fd));
    }
    let admin = shared.admin_fd.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((fd, bind, addr)) = admin.as_ref() {
        offers.push(Offer {
            name: super::bind::ADMIN_LISTENER.to_string(),
            bind: *bind,
            addr: *addr,
            fds: 1,
            udp: false,
        });
        fds.push(fd.as_fd());
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!(
            "{} listening sockets exceed the {MAX_FDS} one message can carry",
            fds.len()
        )));
    }
    let body = serde_json::to_vec(&offers).map_err(io::Error::other)?;
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend(&body);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = sendmsg(
        &conn,
        &[IoSlice::new(&msg)],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent < msg.len() {
        (&conn).write_all(&msg[sent..])?;
    }
    tracing::info!(
        listeners = offers.len(),
        sockets = fds.len(),
        "binary upgrade: handed the listening sockets to a new process; waiting for READY"
    );
    drop(admin);
    drop(held);
    // After the locks above are released: it takes them again.
    let udp_tasks = super::handover::udp_tasks(shared);
    conn.set_read_timeout(Some(READY_WAIT))?;
    line.clear();
    if reader.read_line(&mut line).is_err() {
        return Ok(None);
    }
    conn.set_read_timeout(None)?;
    Ok(match line.trim() {
        READY => Some((conn, false, udp_tasks)),
        READY_HANDOVER => Some((conn, true, udp_tasks)),
        _ => None,
    })
}
