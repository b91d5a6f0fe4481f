//! What every request of one client connection shares, and the connection's age: the one
//! `max_connection_age` decision both HTTP paths read.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Response, Version};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::upstream::Upstream;

/// What every request of one client connection shares.
#[derive(Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    /// lb's address on the connection (a PROXY header's destination).
    pub local: SocketAddr,
    /// The same as text: the authority of HTTP/1.0 requests that name none (made when one
    /// first needs it).
    pub local_authority: std::sync::OnceLock<String>,
    pub tls: bool,
    pub sni: Option<String>,
    /// Ends WebSocket tunnels when the shutdown grace period is over.
    pub cancel: CancellationToken,
    /// `max_connection_age`: when this connection is old, and the quiet time the tunnels it
    /// opens must show before they are closed once old.
    pub old_at: Option<(std::time::Instant, std::time::Duration)>,
    /// This connection's own drain (a child of the listener's), with `max_connection_age`.
    pub own_drain: Option<CancellationToken>,
    pub tracker: TaskTracker,
    /// What the connection's request heads carried that the parser does not show: made
    /// when the general path first serves the connection (the lean path reads heads itself).
    pub framing: std::sync::OnceLock<Arc<std::sync::Mutex<crate::framing::Tracker>>>,
    /// With `proxy_protocol`: this connection's own clients to the backends, by pool, which
    /// send its PROXY header and are never shared with another client connection.
    pub own: Option<Box<[std::sync::OnceLock<Upstream>]>>,
    /// The connection's place in the connection limits, held by whatever still uses the
    /// connection: its task, and a tunnel it was upgraded to (which outlives the HTTP task).
    pub(crate) _slot: lb_core::proxy::handoff::Slot,
}

impl ConnInfo {
    /// The connection's framing record ([`ConnInfo::framing`]).
    pub fn framing(&self) -> &Arc<std::sync::Mutex<crate::framing::Tracker>> {
        self.framing.get_or_init(Default::default)
    }

    /// lb's address on the connection as an authority.
    pub fn local_authority(&self) -> &str {
        self.local_authority.get_or_init(|| self.local.to_string())
    }

    /// Past `max_connection_age`: the one decision both paths read.
    pub fn is_old(&self) -> bool {
        self.old_at
            .is_some_and(|(at, _)| std::time::Instant::now() >= at)
    }

    /// The general path's answer on an old connection: HTTP/1 says `Connection: close` (hyper
    /// closes after it, as the lean path does); HTTP/2 is drained (GOAWAY, streams finish).
    pub fn retire_if_old<B>(&self, version: Version, resp: &mut Response<B>) {
        if !self.is_old() || resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        if version < Version::HTTP_2 {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        } else if let Some(d) = &self.own_drain {
            d.cancel();
        }
    }
}
