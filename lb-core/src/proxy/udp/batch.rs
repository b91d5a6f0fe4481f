//! Datagram batches: one `recvmmsg` reads up to [`BATCH`] datagrams and one `sendmmsg` writes a
//! run of them, so a busy socket pays one system call (and one readiness round) per batch
//! rather than per datagram. Through nix's safe wrappers, so the crate stays free of `unsafe`.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::ops::{Deref, Range};
use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per system call. Under load a DNS-like stream fills a batch; when idle a call
/// returns what is there, so latency never waits for a batch to fill.
pub const BATCH: usize = 16;

/// Room for the largest UDP payload of either family (65,535 − 8 for IPv6, less for IPv4),
/// plus one byte so a (theoretically impossible) truncation would show.
pub const SLOT: usize = 65_536;

thread_local! {
    // nix's message headers hold raw pointers, so they are not `Send` and cannot live in a
    // task; one set per thread, used only inside a system call, keeps the allocator off the
    // datagram path.
    static RECV_HEADERS: RefCell<MultiHeaders<SockaddrStorage>> =
        RefCell::new(MultiHeaders::preallocate(BATCH, None));
    static SEND_HEADERS: RefCell<MultiHeaders<SockaddrStorage>> =
        RefCell::new(MultiHeaders::preallocate(BATCH, None));
}

/// Up to [`BATCH`] datagrams of one [`RecvBatch`], on the stack.
pub struct Datagrams<'a> {
    refs: [&'a [u8]; BATCH],
    len: usize,
}

impl<'a> Deref for Datagrams<'a> {
    type Target = [&'a [u8]];

    fn deref(&self) -> &Self::Target {
        &self.refs[..self.len]
    }
}

/// Receive buffers for one batch. The slots are allocated zeroed and untouched, so the
/// resident cost is only the pages that datagrams actually filled (a page per small datagram).
pub struct RecvBatch {
    buf: Vec<u8>,
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            buf: vec![0u8; BATCH * SLOT],
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// Reads what the socket has (up to [`BATCH`]) without waiting; `WouldBlock` when nothing.
    pub fn try_recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let Self { buf, got } = self;
        got.clear();
        let r = sock.try_io(Interest::READABLE, || {
            RECV_HEADERS.with(|h| {
                let mut headers = h.borrow_mut();
                let mut slots = buf.chunks_mut(SLOT);
                let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                    std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or(&mut []))]);
                let res = recvmmsg(
                    sock.as_raw_fd(),
                    &mut headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                )
                .map_err(io::Error::from)?;
                for m in res {
                    let addr = m.address.and_then(|a| to_std(&a));
                    let len = if m.flags.contains(MsgFlags::MSG_TRUNC) {
                        usize::MAX
                    } else {
                        m.bytes
                    };
                    got.push((len, addr));
                }
                // Fewer than a batch: the queue is empty now. Saying so clears tokio's
                // readiness, so the next wait skips a receive that would only say EAGAIN.
                if got.len() < BATCH {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            })
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !got.is_empty() => {}
            r => r?,
        }
        Ok(got.len())
    }

    /// The `i`th datagram of the last batch and its sender; `None` for a truncated one.
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        let (len, addr) = *self.got.get(i)?;
        if len == usize::MAX {
            return None;
        }
        Some((&self.buf[i * SLOT..i * SLOT + len], addr))
    }

    /// The datagrams `range` of the last batch (truncated ones left out).
    pub fn slices(&self, range: Range<usize>) -> Datagrams<'_> {
        let mut out = Datagrams {
            refs: [&[]; BATCH],
            len: 0,
        };
        for i in range {
            if let Some((d, _)) = self.get(i) {
                out.refs[out.len] = d;
                out.len += 1;
            }
        }
        out
    }

    /// The run of consecutive datagrams from one sender that starts at `i`: the sender and
    /// the index just past the run. `None` when datagram `i` is truncated or has no sender.
    pub fn run_from(&self, i: usize) -> Option<(SocketAddr, usize)> {
        let (_, Some(from)) = self.get(i)? else {
            return None;
        };
        let mut end = i + 1;
        while matches!(self.get(end), Some((_, Some(a))) if a == from) {
            end += 1;
        }
        Some((from, end))
    }

    /// How many datagrams the last batch held.
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// True when the last batch held nothing.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Sends `datagrams` in order with as few `sendmmsg` calls as the socket allows, to `to` (or to
/// the connected peer when `None`). Does not wait: returns how many went out before the send
/// buffer filled, and the first error only if nothing went out (`WouldBlock` then means "await
/// `writable()` and call again").
pub fn try_send_all(
    sock: &UdpSocket,
    datagrams: &[&[u8]],
    to: Option<SocketAddr>,
) -> io::Result<usize> {
    let addr: Option<SockaddrStorage> = to.map(|a| match a {
        SocketAddr::V4(v4) => SockaddrStorage::from(v4),
        SocketAddr::V6(v6) => SockaddrStorage::from(v6),
    });
    let mut sent = 0;
    while sent < datagrams.len() {
        let chunk = &datagrams[sent..datagrams.len().min(sent + BATCH)];
        match send_chunk(sock, chunk, addr) {
            Ok(n) if n > 0 => sent += n,
            Ok(_) => break,
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    // The socket is sent to directly, not through tokio's readiness (a new
                    // socket's first send would otherwise wait a reactor turn); on a full buffer,
                    // clear tokio's idea of readiness so `writable()` really waits.
                    let _ = sock.try_io(Interest::WRITABLE, || {
                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                    });
                }
                if sent == 0 {
                    return Err(e);
                }
                break;
            }
        }
    }
    Ok(sent)
}

fn send_chunk(
    sock: &UdpSocket,
    chunk: &[&[u8]],
    addr: Option<SockaddrStorage>,
) -> io::Result<usize> {
    let n = chunk.len().min(BATCH);
    let iovs: [[IoSlice<'_>; 1]; BATCH] =
        std::array::from_fn(|i| [IoSlice::new(chunk.get(i).copied().unwrap_or(&[]))]);
    let addrs = [addr; BATCH];
    SEND_HEADERS.with(|h| {
        let mut headers = h.borrow_mut();
        let res = sendmmsg(
            sock.as_raw_fd(),
            &mut headers,
            &iovs[..n],
            &addrs[..n],
            [],
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        Ok(res.count())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind a");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind b");
        (a, b)
    }

    /// Reads batches until `want` datagrams arrived (bounded: 5 s).
    async fn recv_all(sock: &UdpSocket, want: usize) -> Vec<(Vec<u8>, Option<SocketAddr>)> {
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < want {
            tokio::time::timeout_at(deadline, sock.readable())
                .await
                .expect("datagrams in time")
                .expect("readable");
            match batch.try_recv(sock) {
                Ok(n) => {
                    assert!(n <= BATCH);
                    for i in 0..n {
                        let (d, from) = batch.get(i).expect("not truncated");
                        got.push((d.to_vec(), from));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn batches_keep_order_sender_and_every_byte() {
        let (a, b) = pair().await;
        let to = b.local_addr().expect("addr");
        // Sizes from empty to jumbo, more datagrams than one batch holds, all within the
        // receiver's default buffer (loopback drops what does not fit).
        let sizes = [0usize, 1, 512, 1500, 9000];
        let datagrams: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                (0..sizes[i % sizes.len()])
                    .map(|j| (i * 7 + j) as u8)
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
        let mut sent = 0;
        while sent < refs.len() {
            match try_send_all(&a, &refs[sent..], Some(to)) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    a.writable().await.expect("writable")
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        let got = recv_all(&b, datagrams.len()).await;
        let from = a.local_addr().expect("addr");
        for (i, (d, sender)) in got.iter().enumerate() {
            assert_eq!(*sender, Some(from), "datagram {i}");
            assert_eq!(d, &datagrams[i], "datagram {i} changed");
        }
    }

    #[tokio::test]
    async fn the_largest_datagrams_are_not_truncated() {
        let (a, b) = pair().await;
        let big: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            try_send_all(&a, &[&big], Some(b.local_addr().expect("addr"))).expect("send"),
            1
        );
        let got = recv_all(&b, 1).await;
        assert_eq!(got[0].0, big);
    }

    #[tokio::test]
    async fn connected_sockets_send_without_an_address() {
        let (a, b) = pair().await;
        a.connect(b.local_addr().expect("addr"))
            .await
            .expect("connect");
        let refs: [&[u8]; 3] = [b"one", b"two", b"three"];
        assert_eq!(try_send_all(&a, &refs, None).expect("send"), 3);
        let got = recv_all(&b, 3).await;
        let texts: Vec<&[u8]> = got.iter().map(|(d, _)| d.as_slice()).collect();
        assert_eq!(texts, refs);
    }

    #[tokio::test]
    async fn ipv6_senders_are_reported() {
        let Ok(b) = UdpSocket::bind("[::1]:0").await else {
            return;
        };
        let a = UdpSocket::bind("[::1]:0").await.expect("bind a");
        try_send_all(&a, &[b"v6"], Some(b.local_addr().expect("addr"))).expect("send");
        let got = recv_all(&b, 1).await;
        assert_eq!(got[0].1, Some(a.local_addr().expect("addr")));
    }

    #[tokio::test]
    async fn runs_group_consecutive_datagrams_of_one_sender() {
        // Loopback delivers in order, and queues a datagram before its send returns unless
        // the kernel defers the delivery: then the batch comes up short, and the round is
        // redone on fresh sockets (bounded) instead of pausing in the hope all four are there.
        for _ in 0..10 {
            let (a, b) = pair().await;
            let c = UdpSocket::bind("127.0.0.1:0").await.expect("bind c");
            let to = b.local_addr().expect("addr");
            for (sock, d) in [(&a, b"a1"), (&a, b"a2"), (&c, b"c1"), (&a, b"a3")] {
                sock.send_to(d, to).await.expect("send");
            }
            let mut batch = RecvBatch::default();
            b.readable().await.expect("readable");
            if batch.try_recv(&b).expect("recv") < 4 {
                continue;
            }
            assert_eq!(batch.len(), 4);
            let (from_a, from_c) = (a.local_addr().expect("a"), c.local_addr().expect("c"));
            assert_eq!(batch.run_from(0), Some((from_a, 2)));
            assert_eq!(batch.run_from(2), Some((from_c, 3)));
            assert_eq!(batch.run_from(3), Some((from_a, 4)));
            assert_eq!(batch.run_from(4), None);
            assert_eq!(&*batch.slices(0..2), &[&b"a1"[..], &b"a2"[..]]);
            return;
        }
        panic!("the four datagrams were never all queued for one batch");
    }

    #[tokio::test]
    async fn nothing_waiting_is_would_block() {
        let (_a, b) = pair().await;
        let mut batch = RecvBatch::default();
        let e = batch.try_recv(&b).expect_err("empty socket");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(batch.is_empty());
    }
}
