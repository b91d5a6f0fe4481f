//! Hand-over frames on the upgrade socket (a Unix stream): each frame is written with one
//! `sendmsg` carrying its sockets (SCM_RIGHTS), and read back as bytes plus the sockets
//! received, each tagged with the stretch of the stream read with it. Linux hands a
//! `sendmsg`'s descriptors to the receive that reads its first byte and ends that receive
//! within the same `sendmsg`, so a frame's sockets are those whose stretch holds the frame's
//! first byte and no later frame's. Any other number, or sockets that belong to no frame, is
//! an error (they are closed), never a socket given to the wrong connection. Blocking I/O, on
//! the upgrade threads. Through rustix's safe wrappers: no `unsafe`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketType,
};

use super::wire::{self, Frame};

/// Sockets one receive may carry: a frame has at most 2, and Linux never joins the
/// descriptors of two `sendmsg`s in one receive; room for more costs nothing.
const MAX_FDS: usize = 8;

/// Sends `frame` with its sockets.
pub fn send(conn: &UnixStream, frame: &Frame, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    debug_assert_eq!(fds.len(), frame.sockets());
    let msg = wire::encode(frame);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("hand-over: no room for the sockets"));
    }
    let sent = loop {
        match sendmsg(
            conn,
            &[IoSlice::new(&msg)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    // The sockets went with the first byte; the rest is plain bytes.
    if sent < msg.len() {
        (&*conn).write_all(&msg[sent..])?;
    }
    Ok(())
}

/// Whether `fd` is an IPv4 or IPv6 socket of type `ty` (a TCP connection's are
/// [`SocketType::STREAM`], a UDP flow's [`SocketType::DGRAM`]): what the old process sends is
/// checked before it is used as one.
pub fn is_inet_socket(fd: impl AsFd, ty: SocketType) -> bool {
    let fd = fd.as_fd();
    if rustix::net::sockopt::socket_type(fd).ok() != Some(ty) {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::net::AddressFamily;
        matches!(
            rustix::net::sockopt::socket_domain(fd),
            Ok(AddressFamily::INET | AddressFamily::INET6)
        )
    }
    #[cfg(not(target_os = "linux"))]
    true
}

/// Reads frames and their sockets from the upgrade socket.
pub struct Reader<'a> {
    conn: &'a UnixStream,
    buf: Vec<u8>,
    /// Where in the stream `buf` starts.
    at: u64,
    /// Sockets received, each with the stretch of the stream `[from, to)` it came with.
    fds: VecDeque<(u64, u64, OwnedFd)>,
}

impl<'a> Reader<'a> {
    pub fn new(conn: &'a UnixStream) -> Self {
        Self {
            conn,
            buf: Vec::new(),
            at: 0,
            fds: VecDeque::new(),
        }
    }

    /// Reads more; false at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            match recvmsg(
                self.conn,
                &mut [IoSliceMut::new(&mut chunk)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r?,
            }
        };
        let from = self.at + self.buf.len() as u64;
        let to = from + got.bytes as u64;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(it) = msg {
                self.fds.extend(it.map(|fd| (from, to, fd)));
            }
        }
        if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "hand-over: sockets were cut off (more than one frame's worth at once)",
            ));
        }
        self.buf.extend_from_slice(&chunk[..got.bytes]);
        Ok(got.bytes > 0)
    }

    /// The next frame with its sockets; `None` at a clean end of stream.
    pub fn next_frame(&mut self) -> io::Result<Option<(Frame, Vec<OwnedFd>)>> {
        let bad = |e: wire::WireError| io::Error::new(io::ErrorKind::InvalidData, e);
        while self.buf.len() < 4 {
            if !self.fill()? {
                return match self.buf.len() {
                    0 => Ok(None),
                    _ => Err(bad(wire::WireError::Short)),
                };
            }
        }
        let n =
            wire::body_len([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]).map_err(bad)?;
        while self.buf.len() < 4 + n {
            if !self.fill()? {
                return Err(bad(wire::WireError::Short));
            }
        }
        let frame = wire::decode(&self.buf[4..4 + n]).map_err(bad)?;
        self.buf.drain(..4 + n);
        let (start, end) = (self.at, self.at + 4 + n as u64);
        self.at = end;
        // This frame's sockets came with a stretch holding its first byte and ending within
        // it (a stretch reaching further holds a later frame's first byte: they are that
        // frame's). Any ending before it or starting within it belong to no frame (dropped
        // below: closed).
        let (mut fds, mut stray) = (Vec::new(), 0usize);
        while let Some(&(from, to, _)) = self.fds.front() {
            if to > end {
                break;
            }
            let (_, _, fd) = self.fds.pop_front().expect("front exists");
            match from <= start && start < to {
                true => fds.push(fd),
                false => stray += 1,
            }
        }
        let want = frame.sockets();
        if fds.len() != want || stray > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "hand-over: a frame announced {want} sockets, {} came with it and {stray} with no frame",
                    fds.len()
                ),
            ));
        }
        Ok(Some((frame, fds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::wire::UdpFlow;
    use std::io::Read;
    use std::os::fd::AsFd;

    fn flow(socket: u32) -> Frame {
        Frame::Udp(Box::new(UdpFlow {
            listener: "u".into(),
            socket,
            pool: "p".into(),
            backend: "127.0.0.1:1".into(),
            client: "127.0.0.1:2".parse().expect("addr"),
            idle_ms: 0,
            age_ms: 0,
            bytes_in: 0,
            replied: false,
        }))
    }

    #[test]
    fn frames_and_their_sockets_arrive_in_order() {
        let (a, b) = UnixStream::pair().expect("pair");
        // A connected pair: what is written on one end is read on the other.
        let (s1, s2) = UnixStream::pair().expect("pair");
        send(&a, &flow(0), &[s1.as_fd()]).expect("send");
        send(&a, &Frame::UdpDone, &[]).expect("send");
        send(&a, &flow(1), &[s2.as_fd()]).expect("send");
        drop(a);
        let mut r = Reader::new(&b);
        let (f, first) = r.next_frame().expect("read").expect("frame");
        assert_eq!((f, first.len()), (flow(0), 1));
        let (f, none) = r.next_frame().expect("read").expect("frame");
        assert_eq!((f, none.len()), (Frame::UdpDone, 0));
        let (f, second) = r.next_frame().expect("read").expect("frame");
        assert_eq!((f, second.len()), (flow(1), 1));
        assert!(
            r.next_frame().expect("read").is_none(),
            "clean end of stream"
        );
        // The descriptors received are the very sockets sent, in order: the first is s1's
        // socket, so it hears what the second (s2's) writes.
        let (one, two) = (first.into_iter().next(), second.into_iter().next());
        let (one, two) = (
            UnixStream::from(one.expect("fd")),
            UnixStream::from(two.expect("fd")),
        );
        (&two).write_all(b"hi").expect("write");
        let mut got = [0u8; 2];
        (&one).read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hi");
    }

    /// Sends `frame` with `fds`, however many (`send` insists on the right number).
    fn send_raw(conn: &UnixStream, frame: &Frame, fds: &[BorrowedFd<'_>]) {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(fds.is_empty() || control.push(SendAncillaryMessage::ScmRights(fds)));
        let msg = wire::encode(frame);
        let sent = sendmsg(
            conn,
            &[IoSlice::new(&msg)],
            &mut control,
            SendFlags::empty(),
        )
        .expect("sendmsg");
        assert_eq!(sent, msg.len());
    }

    #[test]
    fn sockets_that_came_with_no_frame_are_an_error_not_the_next_frames() {
        let (s1, s2) = UnixStream::pair().expect("pair");
        // A stray socket with a frame that has none, then a flow with its own: the flow must
        // not be given the stray one.
        let (a, b) = UnixStream::pair().expect("pair");
        send_raw(&a, &Frame::UdpDone, &[s1.as_fd()]);
        send_raw(&a, &flow(0), &[s2.as_fd()]);
        let mut r = Reader::new(&b);
        let err = r.next_frame().expect_err("a stray socket");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // More than announced: also refused whole.
        let (a, b) = UnixStream::pair().expect("pair");
        send_raw(&a, &flow(1), &[s1.as_fd(), s2.as_fd()]);
        let err = Reader::new(&b)
            .next_frame()
            .expect_err("one socket too many");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_peer_that_dies_mid_frame_ends_the_stream_with_an_error() {
        let (a, b) = UnixStream::pair().expect("pair");
        let msg = wire::encode(&flow(0));
        (&a).write_all(&msg[..msg.len() - 3]).expect("write");
        drop(a);
        let err = Reader::new(&b).next_frame().expect_err("cut short");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn only_inet_sockets_of_the_right_type_pass() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (unix, _) = UnixStream::pair().expect("pair");
        let (pipe_r, _pipe_w) = rustix::pipe::pipe().expect("pipe");
        assert!(is_inet_socket(&tcp, SocketType::STREAM));
        assert!(!is_inet_socket(&tcp, SocketType::DGRAM));
        assert!(is_inet_socket(&udp, SocketType::DGRAM));
        assert!(!is_inet_socket(&udp, SocketType::STREAM));
        assert!(!is_inet_socket(&unix, SocketType::STREAM));
        assert!(!is_inet_socket(&pipe_r, SocketType::STREAM));
    }

    #[test]
    fn a_frame_without_its_sockets_is_an_error() {
        let (a, b) = UnixStream::pair().expect("pair");
        (&a).write_all(&wire::encode(&flow(0))).expect("write");
        drop(a);
        let err = Reader::new(&b).next_frame().expect_err("no socket came");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
