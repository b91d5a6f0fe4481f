//! Zero-copy relay with splice(2): socket → pipe → socket, the bytes never entering user
//! space. Used for bulk only: a direction switches here after a read filled a whole copy
//! buffer, so short exchanges never pay for creating a pipe, and idle connections hold none.
//! Uses rustix's safe wrappers, so no `unsafe` is needed.

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use tokio_util::sync::CancellationToken;

use super::pause::{drain_pipe, or_pause, Stop, Want};
use super::relay::{Activity, Side};

/// Bytes moved per splice call: the kernel's default pipe capacity. 256 KiB and 1 MiB pipes
/// (F_SETPIPE_SZ) measured 5–8% lower raw throughput on loopback with scripts/bench.sh, and
/// cost one more syscall per connection, so the default stays.
const PIPE_CAPACITY: usize = 64 * 1024;

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (r, w) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        Ok(Self { r, w })
    }
}

/// Moves bytes from `from` to `to` until `from` reaches EOF, or until `pause` is asked for
/// (then the pipe is drained into the bytes given back).
pub async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    act: &Activity,
    from_side: Side,
    pause: Option<&CancellationToken>,
) -> Result<Stop, (Side, io::Error)> {
    let to_side = from_side.other();
    let mut pipe: Option<Pipe> = None;
    loop {
        // The pipe is empty here: everything spliced in was spliced out.
        if or_pause(from, Want::Read, pause)
            .await
            .map_err(|e| (from_side, e))?
        {
            return Ok(Stop::Paused(Vec::new()));
        }
        let p = match &mut pipe {
            Some(p) => p,
            None => pipe.insert(Pipe::new().map_err(|e| (from_side, e))?),
        };
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        let n = match from.try_io(Interest::READABLE, || {
            splice(from, None, &p.w, None, PIPE_CAPACITY, flags).map_err(io::Error::from)
        }) {
            Ok(0) => return Ok(Stop::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err((from_side, e)),
        };
        act.moved(from_side, n as u64);
        let mut left = n;
        while left > 0 {
            if or_pause(to, Want::Write, pause)
                .await
                .map_err(|e| (to_side, e))?
            {
                return drain_pipe(&p.r, left)
                    .map(Stop::Paused)
                    .map_err(|e| (from_side, e));
            }
            match to.try_io(Interest::WRITABLE, || {
                splice(&p.r, None, to, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(k) => left -= k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err((to_side, e)),
            }
        }
    }
}
