//! What a connection says before its payload: a PROXY header (when the listener requires
//! one) and, for routing TLS without terminating it, the ClientHello. Both are read into one
//! buffer; what follows the header stays in it as the payload's first bytes.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::proxy_protocol::{self, HeaderError, Parsed};
use crate::tls::client_hello::{self, HelloError, Peek, MAX_HELLO};

/// The connection as the rest of the data path sees it.
#[derive(Debug)]
pub struct Front {
    /// The real client: the PROXY header's source, or the socket's peer.
    pub client: SocketAddr,
    /// Bytes read past the PROXY header (the ClientHello among them): the payload's start.
    pub prefix: Vec<u8>,
    /// The ClientHello's server name, when it was read.
    pub sni: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("{0}")]
    Proxy(#[from] HeaderError),
    #[error("{0}")]
    Hello(#[from] HelloError),
    #[error("client closed the connection before {0}")]
    Closed(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Why a connection was refused before any backend was involved: the `reason` label of
/// `lb_rejected_connections_total` and the access log's `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    BadProxyHeader,
    /// A peer outside the listener's `trusted_proxies`.
    UntrustedProxy,
    BadClientHello,
    TlsHandshake,
    HandshakeTimeout,
}

impl Reject {
    pub const ALL: [Reject; 5] = [
        Self::BadProxyHeader,
        Self::UntrustedProxy,
        Self::BadClientHello,
        Self::TlsHandshake,
        Self::HandshakeTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadProxyHeader => "bad_proxy_header",
            Self::UntrustedProxy => "untrusted_proxy",
            Self::BadClientHello => "bad_client_hello",
            Self::TlsHandshake => "tls_handshake",
            Self::HandshakeTimeout => "handshake_timeout",
        }
    }
}

impl FrontError {
    /// The rejection for malformed input; `None` when the client just went away.
    pub fn reject(&self) -> Option<Reject> {
        match self {
            Self::Proxy(_) => Some(Reject::BadProxyHeader),
            Self::Hello(_) => Some(Reject::BadClientHello),
            Self::Closed(_) | Self::Io(_) => None,
        }
    }
}

/// Reads the PROXY header (if `proxy`) and then peeks the ClientHello (if `hello`).
pub async fn read(
    sock: &TcpStream,
    peer: SocketAddr,
    proxy: bool,
    hello: bool,
) -> Result<Front, FrontError> {
    let mut buf = Vec::new();
    let mut client = peer;
    if proxy {
        loop {
            match proxy_protocol::parse(&buf)? {
                Parsed::Done(h, n) => {
                    client = h.source.unwrap_or(peer);
                    buf.drain(..n);
                    break;
                }
                Parsed::NeedMore => read_more(sock, &mut buf, Stage::ProxyHeader).await?,
            }
        }
    }
    let mut sni = None;
    if hello {
        loop {
            match client_hello::peek(&buf)? {
                Peek::Done(h) => {
                    sni = h.sni;
                    break;
                }
                Peek::NeedMore => read_more(sock, &mut buf, Stage::ClientHello).await?,
            }
        }
    }
    Ok(Front {
        client,
        prefix: buf,
        sni,
    })
}

/// What is being read before the payload.
#[derive(Debug, Clone, Copy)]
enum Stage {
    ProxyHeader,
    ClientHello,
}

impl Stage {
    /// Bytes buffered at most while the parser still wants more.
    fn limit(self) -> usize {
        match self {
            Self::ProxyHeader => proxy_protocol::MAX_HEADER,
            // Room for record headers around a maximal hello.
            Self::ClientHello => MAX_HELLO + 1024,
        }
    }

    fn too_large(self) -> FrontError {
        match self {
            Self::ProxyHeader => HeaderError::TooLarge.into(),
            Self::ClientHello => HelloError::TooLarge.into(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::ProxyHeader => "the PROXY header",
            Self::ClientHello => "the ClientHello",
        }
    }
}

/// Appends what the socket has; fails once `buf` holds the stage's limit and the parser still
/// wants more.
async fn read_more(sock: &TcpStream, buf: &mut Vec<u8>, stage: Stage) -> Result<(), FrontError> {
    let limit = stage.limit();
    if buf.len() >= limit {
        return Err(stage.too_large());
    }
    let mut chunk = [0u8; 4096];
    let want = chunk.len().min(limit - buf.len());
    loop {
        sock.readable().await?;
        match sock.try_read(&mut chunk[..want]) {
            Ok(0) => return Err(FrontError::Closed(stage.name())),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
