//! Pausing a plain relay at a quiet point so its two sockets can move to a new lb process
//! (binary upgrade hand-over), and what of the relay moves with them. A pump observes the
//! pause only where it waits: before a read (nothing held) or while its peer's send buffer is
//! full (then the bytes it read but could not write are given back, and a splice pipe is
//! drained into them). Nothing already read from a socket is ever dropped. I/O only on the
//! sockets and pipe it is handed.

use std::future::Future;
use std::io;
use std::task::{Context, Poll};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::relay::Side;

/// What of a relay moves between processes: the bytes read from each side so far, the bytes
/// read but not yet written to the other side, and which directions had already ended (their
/// FIN relayed as a write shutdown). `Default` is a fresh connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayState {
    /// Bytes read from the client (all of them, written or still carried).
    pub from_client: u64,
    /// Bytes read from the backend.
    pub from_backend: u64,
    /// Read from the client, not yet written to the backend: written first on resume.
    pub to_backend: Vec<u8>,
    /// Read from the backend, not yet written to the client.
    pub to_client: Vec<u8>,
    /// The client's direction has ended (its FIN was passed on).
    pub client_done: bool,
    /// The backend's direction has ended.
    pub backend_done: bool,
}

/// How one direction's pump stopped without an error.
#[derive(Debug)]
pub enum Stop {
    /// The source sent FIN.
    Eof,
    /// Paused for a hand-over, holding these bytes for the destination.
    Paused(Vec<u8>),
}

/// Which readiness of a socket a pump waits for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    Read,
    Write,
}

/// Waits until `sock` is ready for `want` unless a pause is asked for first; `Ok(true)` =
/// paused. A pause already asked wins over readiness, so no read happens after it.
///
/// Polls the socket's readiness in place rather than holding tokio's `readable()` or
/// `writable()` future (152 B each, and `select!` kept a second copy): an idle relay's task
/// carries one of these per direction for its whole life.
pub(crate) async fn or_pause(
    sock: &TcpStream,
    want: Want,
    pause: Option<&CancellationToken>,
) -> io::Result<bool> {
    let ready = |cx: &mut Context<'_>| match want {
        Want::Read => sock.poll_read_ready(cx),
        Want::Write => sock.poll_write_ready(cx),
    };
    match pause {
        None => std::future::poll_fn(ready).await.map(|()| false),
        Some(p) => {
            let mut paused = std::pin::pin!(p.cancelled());
            std::future::poll_fn(|cx| {
                if paused.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(true));
                }
                ready(cx).map(|r| r.map(|()| false))
            })
            .await
        }
    }
}

/// Writes all of `bytes` to `to`, waiting for room; if a pause is asked for while waiting,
/// gives back what is left unwritten (`Some`, possibly all of it).
pub(crate) async fn write_or_pause(
    to: &TcpStream,
    bytes: &[u8],
    to_side: Side,
    pause: Option<&CancellationToken>,
) -> Result<Option<Vec<u8>>, (Side, io::Error)> {
    let mut off = 0;
    while off < bytes.len() {
        match to.try_write(&bytes[off..]) {
            Ok(k) => off += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if or_pause(to, Want::Write, pause)
                    .await
                    .map_err(|e| (to_side, e))?
                {
                    return Ok(Some(bytes[off..].to_vec()));
                }
            }
            Err(e) => return Err((to_side, e)),
        }
    }
    Ok(None)
}

/// Reads the `left` bytes a splice pipe still holds (its write end is ours alone, so they
/// are all there).
#[cfg(target_os = "linux")]
pub(crate) fn drain_pipe(r: &std::os::fd::OwnedFd, left: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; left];
    let mut got = 0;
    while got < left {
        match rustix::io::read(r, &mut out[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.truncate(got);
    if got < left {
        return Err(io::Error::other(
            "splice pipe held fewer bytes than were spliced in",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::relay::tests::pair;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_pause_asked_first_wins_over_readiness() {
        let (mut a, b) = pair().await;
        a.write_all(b"x").await.expect("write");
        b.readable().await.expect("readable");
        let p = CancellationToken::new();
        p.cancel();
        assert!(or_pause(&b, Want::Read, Some(&p)).await.expect("ok"));
        assert!(!or_pause(&b, Want::Read, None).await.expect("ok"));
    }

    #[tokio::test]
    async fn a_blocked_write_gives_back_exactly_what_it_did_not_write() {
        let (mut a, b) = pair().await;
        let p = CancellationToken::new();
        // Nobody reads `a`: writing to `b` fills both socket buffers and then blocks.
        let big = (0..32 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
        let writer = async {
            let r = write_or_pause(&b, &big, Side::Client, Some(&p)).await;
            r.expect("no error")
        };
        let (rest, ()) = tokio::join!(writer, async {
            // Asked once the writer has certainly blocked (it cannot finish: nothing reads).
            tokio::task::yield_now().await;
            p.cancel();
        });
        let rest = rest.expect("paused with bytes left");
        assert!(!rest.is_empty() && rest.len() < big.len());
        // What arrived plus what was given back is the whole, in order.
        drop(b);
        let mut got = Vec::new();
        a.read_to_end(&mut got).await.expect("read");
        got.extend_from_slice(&rest);
        assert_eq!(got, big);
    }
}
