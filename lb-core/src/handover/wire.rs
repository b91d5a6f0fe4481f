//! The hand-over messages of a binary upgrade, sans I/O: what the old process sends about each
//! open TCP connection and UDP flow after the new one said READY. Each frame is
//! `[u32 BE body length][body]`, sent with its sockets attached (SCM_RIGHTS); the body is a
//! small fixed binary layout (below). Everything read is checked: lengths are bounded, names
//! are UTF-8, flags have no unknown bits, nothing trails — the peer is another lb, but a
//! mismatched version or a corrupt stream must become an error, never a panic.
//!
//! ```text
//! body     = version:u8 (=1) kind:u8 fields
//! kind 1   tcp: listener:str pool:str backend:str sni:str client:addr started_unix_ms:u64
//!              from_client:u64 from_backend:u64 done:u8 to_backend:bytes to_client:bytes
//!              (2 sockets: client, backend)
//! kind 2   udp: listener:str socket:u32 pool:str backend:str client:addr idle_ms:u64
//!              age_ms:u64 bytes_in:u64 replied:u8   (1 socket: the flow's upstream)
//! kind 3   udp_done: no fields: every UDP flow has been sent   (no socket)
//! str      = len:u16 BE, UTF-8, at most MAX_NAME bytes
//! bytes    = len:u32 BE, at most MAX_CARRY bytes
//! addr     = 4 ip:4 port:u16 BE | 6 ip:16 port:u16 BE
//! done     = bit 0: the client's direction had ended, bit 1: the backend's
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::proxy::pause::RelayState;

/// The only layout this lb speaks.
pub const VERSION: u8 = 1;
/// Longest listener, pool, backend or SNI name accepted (config names are far shorter; an
/// SNI name is at most 255 bytes).
pub const MAX_NAME: usize = 1024;
/// Most bytes carried per direction: a relay holds at most one splice pipe (64 KiB) or copy
/// buffer (16 KiB) per direction; 1 MiB leaves room and still bounds a corrupt length.
pub const MAX_CARRY: usize = 1 << 20;
/// Largest body: two carries and four names with room to spare.
pub const MAX_BODY: usize = 2 * MAX_CARRY + 8 * MAX_NAME;

const KIND_TCP: u8 = 1;
const KIND_UDP: u8 = 2;
const KIND_UDP_DONE: u8 = 3;

/// An open TCP connection as it moves: where it belongs, and its relay's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConn {
    pub listener: String,
    pub pool: String,
    /// The backend's identity (`Backend::id`).
    pub backend: String,
    /// The ClientHello's SNI it was routed by; empty when none.
    pub sni: String,
    pub client: SocketAddr,
    /// When the connection was accepted, in ms since the Unix epoch (the access log's
    /// duration spans both processes).
    pub started_unix_ms: u64,
    pub relay: RelayState,
}

/// A UDP flow as it moves: its client, its backend, and how long it has been silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFlow {
    pub listener: String,
    /// Which of the listener's sockets (in hand-over order) the flow's client lands on.
    pub socket: u32,
    pub pool: String,
    pub backend: String,
    pub client: SocketAddr,
    /// Since the flow was last active either way.
    pub idle_ms: u64,
    /// Since the flow started.
    pub age_ms: u64,
    /// Bytes the client sent through it so far.
    pub bytes_in: u64,
    /// The backend has answered at least once (passive health judges silent flows).
    pub replied: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Tcp(Box<TcpConn>),
    Udp(Box<UdpFlow>),
    /// Every UDP flow has been sent: the new process may start reading its UDP sockets.
    UdpDone,
}

impl Frame {
    /// How many sockets travel with this frame.
    pub fn sockets(&self) -> usize {
        match self {
            Self::Tcp(_) => 2,
            Self::Udp(_) => 1,
            Self::UdpDone => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("hand-over frame of {0} bytes exceeds the {MAX_BODY}-byte bound")]
    TooLong(usize),
    #[error("hand-over frame ends early")]
    Short,
    #[error("hand-over frame version {0} (this lb speaks {VERSION})")]
    Version(u8),
    #[error("unknown hand-over frame kind {0}")]
    Kind(u8),
    #[error("{0} of {1} bytes exceeds its bound")]
    Field(&'static str, usize),
    #[error("a name in a hand-over frame is not UTF-8")]
    Utf8,
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("bad flags {0:#04x}")]
    Flags(u8),
    #[error("{0} bytes after the end of a hand-over frame")]
    Trailing(usize),
}

/// The body length a frame header announces, checked against [`MAX_BODY`].
pub fn body_len(head: [u8; 4]) -> Result<usize, WireError> {
    let n = u32::from_be_bytes(head) as usize;
    if n > MAX_BODY {
        return Err(WireError::TooLong(n));
    }
    Ok(n)
}

/// The frame with its length prefix, ready to send.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0, VERSION];
    match frame {
        Frame::Tcp(c) => {
            b.push(KIND_TCP);
            for s in [&c.listener, &c.pool, &c.backend, &c.sni] {
                put_str(&mut b, s);
            }
            put_addr(&mut b, c.client);
            for v in [c.started_unix_ms, c.relay.from_client, c.relay.from_backend] {
                b.extend(v.to_be_bytes());
            }
            b.push(u8::from(c.relay.client_done) | u8::from(c.relay.backend_done) << 1);
            put_bytes(&mut b, &c.relay.to_backend);
            put_bytes(&mut b, &c.relay.to_client);
        }
        Frame::Udp(f) => {
            b.push(KIND_UDP);
            put_str(&mut b, &f.listener);
            b.extend(f.socket.to_be_bytes());
            put_str(&mut b, &f.pool);
            put_str(&mut b, &f.backend);
            put_addr(&mut b, f.client);
            for v in [f.idle_ms, f.age_ms, f.bytes_in] {
                b.extend(v.to_be_bytes());
            }
            b.push(u8::from(f.replied));
        }
        Frame::UdpDone => b.push(KIND_UDP_DONE),
    }
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    // Names longer than the bound are cut at a char boundary rather than sent unreadable.
    let mut end = s.len().min(MAX_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    b.extend((end as u16).to_be_bytes());
    b.extend(&s.as_bytes()[..end]);
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend((v.len() as u32).to_be_bytes());
    b.extend(v);
}

fn put_addr(b: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            b.push(4);
            b.extend(ip.octets());
        }
        IpAddr::V6(ip) => {
            b.push(6);
            b.extend(ip.octets());
        }
    }
    b.extend(a.port().to_be_bytes());
}

/// Parses one frame body (without its length prefix).
pub fn decode(body: &[u8]) -> Result<Frame, WireError> {
    if body.len() > MAX_BODY {
        return Err(WireError::TooLong(body.len()));
    }
    let mut r = Reader(body);
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let frame = match r.u8()? {
        KIND_TCP => {
            let (listener, pool, backend, sni) = (r.str()?, r.str()?, r.str()?, r.str()?);
            let client = r.addr()?;
            let (started_unix_ms, from_client, from_backend) = (r.u64()?, r.u64()?, r.u64()?);
            let done = r.u8()?;
            if done > 0b10 {
                // Unknown bits, or both directions ended (such a relay never moves).
                return Err(WireError::Flags(done));
            }
            let relay = RelayState {
                from_client,
                from_backend,
                client_done: done & 1 != 0,
                backend_done: done & 2 != 0,
                to_backend: r.bytes("to_backend")?,
                to_client: r.bytes("to_client")?,
            };
            Frame::Tcp(Box::new(TcpConn {
                listener,
                pool,
                backend,
                sni,
                client,
                started_unix_ms,
                relay,
            }))
        }
        KIND_UDP => {
            let listener = r.str()?;
            let socket = u32::from_be_bytes(r.array()?);
            let (pool, backend) = (r.str()?, r.str()?);
            let client = r.addr()?;
            let (idle_ms, age_ms, bytes_in) = (r.u64()?, r.u64()?, r.u64()?);
            let replied = match r.u8()? {
                0 => false,
                1 => true,
                other => return Err(WireError::Flags(other)),
            };
            Frame::Udp(Box::new(UdpFlow {
                listener,
                socket,
                pool,
                backend,
                client,
                idle_ms,
                age_ms,
                bytes_in,
                replied,
            }))
        }
        KIND_UDP_DONE => Frame::UdpDone,
        other => return Err(WireError::Kind(other)),
    };
    match r.0.len() {
        0 => Ok(frame),
        n => Err(WireError::Trailing(n)),
    }
}

/// A cursor over a body; every read checks what is left.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Short);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn str(&mut self) -> Result<String, WireError> {
        let n = u16::from_be_bytes(self.array()?) as usize;
        if n > MAX_NAME {
            return Err(WireError::Field("name", n));
        }
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Utf8)?;
        Ok(s.to_string())
    }

    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, WireError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        if n > MAX_CARRY {
            return Err(WireError::Field(what, n));
        }
        Ok(self.take(n)?.to_vec())
    }

    fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            other => return Err(WireError::Family(other)),
        };
        Ok(SocketAddr::new(ip, u16::from_be_bytes(self.array()?)))
    }
}

/// Decodes whatever bytes it is given, as a stream of frames; the fuzz target and the
/// property tests run it. Never panics; stops at the first error.
pub fn decode_stream(mut bytes: &[u8]) -> Vec<Result<Frame, WireError>> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let head = [bytes[0], bytes[1], bytes[2], bytes[3]];
        let n = match body_len(head) {
            Ok(n) if bytes.len() - 4 >= n => n,
            Ok(_) => {
                out.push(Err(WireError::Short));
                break;
            }
            Err(e) => {
                out.push(Err(e));
                break;
            }
        };
        let r = decode(&bytes[4..4 + n]);
        let stop = r.is_err();
        out.push(r);
        if stop {
            break;
        }
        bytes = &bytes[4 + n..];
    }
    out
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
