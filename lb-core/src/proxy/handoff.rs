//! Handing a client connection to a protocol lb-core does not speak itself. lb-core accepts,
//! admits, reads the PROXY header and terminates TLS exactly as for a tcp listener; then a
//! [`Handler`] built for the listener (lb-l7's HTTP gateway, registered by the binary) owns the
//! connection. lb-core stays free of HTTP this way, and an http listener inherits every L4
//! feature: limits, PROXY protocol, TLS with SNI certificates and ALPN, reloads, upgrades.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::prefixed::Prefixed;
use crate::config::{Config, Diagnostic, Loaded};
use crate::pool::Pool;

/// The client side of a handed-over connection: plain (with any bytes lb read ahead), or the
/// TLS session lb terminated.
pub enum ClientStream {
    Plain(Prefixed<TcpStream>),
    Tls(Box<server::TlsStream<Prefixed<TcpStream>>>),
}

impl fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "ClientStream::Plain",
            Self::Tls(_) => "ClientStream::Tls",
        })
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            ClientStream::Plain($s) => $e,
            ClientStream::Tls($s) => $e,
        }
    };
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// One accepted connection, ready for its protocol.
#[derive(Debug)]
pub struct Conn {
    pub io: ClientStream,
    /// The client (from the PROXY header when the listener accepts one).
    pub client: SocketAddr,
    /// lb's own address on the connection (what a PROXY header to a backend names as the
    /// destination).
    pub local: SocketAddr,
    /// The TLS server name the client asked for.
    pub sni: Option<String>,
    /// The ALPN protocol agreed in the TLS handshake.
    pub alpn: Option<Vec<u8>>,
    /// Cancelled when the listener stops accepting (shutdown, or a reload removed it): finish
    /// what is in flight and close, e.g. `Connection: close` / HTTP/2 GOAWAY.
    pub drain: CancellationToken,
    /// Cancelled when the shutdown grace period is over: close now.
    pub cancel: CancellationToken,
    /// Shutdown waits for the tasks spawned here (e.g. a WebSocket tunnel that outlives the
    /// HTTP exchange that opened it).
    pub tracker: TaskTracker,
    /// `max_connection_age`: when this connection is old (then drained like a reload drains
    /// it) and the quiet time a tunnel it carries must show before it is closed.
    pub old_at: Option<(std::time::Instant, std::time::Duration)>,
    /// The connection's place in its listener's and the global connection limits: whoever
    /// serves the connection keeps it until the connection ends.
    pub slot: Slot,
}

/// A connection's admission (see [`Conn::slot`]): dropping it frees the place.
#[derive(Default)]
pub struct Slot {
    _held: Option<super::tcp::Admission>,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self._held.is_some() {
            "Slot(held)"
        } else {
            "Slot(none)"
        })
    }
}

impl Slot {
    pub(crate) fn held(admission: super::tcp::Admission) -> Self {
        Self {
            _held: Some(admission),
        }
    }
}

impl Conn {
    pub fn is_tls(&self) -> bool {
        matches!(self.io, ClientStream::Tls(_))
    }
}

/// Serves the connections of one listener (one build per config generation).
pub trait Handler: Send + Sync + fmt::Debug + 'static {
    /// Takes the connection: serves it on a task of its own, spawned on `conn.tracker` (one
    /// task per connection, not a handler's future boxed inside lb-core's task).
    fn serve(self: Arc<Self>, conn: Conn);

    /// Empties the listener's response caches (admin `POST /api/cache/purge`); how many.
    fn purge_cache(&self) -> usize {
        0
    }
}

/// The HTTP side of lb, which lb-core does not speak itself: the binary passes lb-l7's in
/// (never a process-wide registry), and every config load (start-up, `lb check`, reloads)
/// asks it to prepare.
pub trait HttpSide: Send + Sync + fmt::Debug + 'static {
    /// Reads and checks what a validated config names beyond itself (policy key files and
    /// the like); every problem goes to `diags`, so a bad file fails the load like a bad key
    /// does.
    fn prepare(&self, config: &Config, diags: &mut Vec<Diagnostic>) -> Arc<dyn HttpPrepared>;
}

/// What the HTTP side prepared for one config: it builds each http listener's [`Handler`]
/// over the running pools (`pools[i]` is the config's pool `i`), at start-up and on every
/// reload that keeps the config.
pub trait HttpPrepared: Send + Sync + fmt::Debug {
    fn build(&self, loaded: &Loaded, listener: usize, pools: &[Arc<Pool>]) -> Arc<dyn Handler>;
}
