//! A tcp or tls listener's connection to its backend: the socket, what must precede the
//! relay (PROXY header, TLS to the backend, the bytes already read from the client), and
//! what a failed connect records.

use std::net::SocketAddr;

use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::{client, TlsConnector};

use super::front::Front;
use super::route::{Route, Target};
use super::tcp::ClientIo;
use crate::config;
use crate::pool::Pool;
use crate::proxy_protocol;

/// The backend side: the socket, or lb's TLS session to the backend.
pub(super) enum BackendIo {
    Plain(TcpStream),
    Tls(Box<client::TlsStream<TcpStream>>),
}

impl BackendIo {
    /// The socket under the stream.
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(t) => t.get_ref().0,
        }
    }
}

/// Connects to a backend and sends what must precede the relay: the PROXY header, TLS to the
/// backend, and the bytes already read from a plain client.
pub(super) async fn connect(
    addr: SocketAddr,
    front: &Front,
    target: &Target,
    route: &Route,
    io: &ClientIo,
) -> std::io::Result<BackendIo> {
    let mut sock = TcpStream::connect(addr).await?;
    let _ = sock.set_nodelay(true);
    if let Some(version) = route.listener.proxy_protocol {
        let local = super::tcp::local_of(io.tcp(), &route.listener);
        sock.write_all(&proxy_protocol::encode(version, front.client, local))
            .await?;
    }
    let mut upstream = match &target.backend_tls {
        None => BackendIo::Plain(sock),
        Some(t) => {
            let name = t
                .server_name
                .clone()
                .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
            let tls = TlsConnector::from(t.config.clone())
                .connect(name, sock)
                .await
                .map_err(|e| std::io::Error::other(format!("backend TLS: {e}")))?;
            BackendIo::Tls(Box::new(tls))
        }
    };
    if matches!(io, ClientIo::Plain(_)) && !front.prefix.is_empty() {
        match &mut upstream {
            BackendIo::Plain(s) => s.write_all(&front.prefix).await?,
            BackendIo::Tls(s) => {
                s.write_all(&front.prefix).await?;
                s.flush().await?;
            }
        }
    }
    Ok(upstream)
}

pub(crate) fn connect_failed(
    b: &crate::backend::Backend,
    passive: Option<&config::Passive>,
    l: &config::Listener,
    pool: &Pool,
    err: Option<&str>,
) {
    let err = err.unwrap_or("");
    b.record_traffic(false, passive, err);
    tracing::debug!(listener = %l.name, pool.name = %pool.name(), error = %err, "backend failed; trying the next one");
}
