//! The lean path: HTTP/1.1 keep-alive proxying to plain HTTP/1.1 backends, without the
//! general machinery of the full path. A request head is parsed in place, routed, and
//! written on to a pooled backend connection with its fields copied as bytes; the response
//! head likewise; bodies are relayed as they come (length or chunked framing followed, never
//! re-encoded). About what nginx does per request.
//!
//! A route's policies run here too, on the request's fields as a map (then written from the
//! map), and on the response's; their refusals are answered here.
//!
//! Anything else — HTTP/2, HTTP/1.0, upgrades, `Expect`, chunked uploads, a request lb must
//! refuse or answer itself (400, 404, 413, 414, 431), a route with a `cache` or `transform`
//! policy, an HTTP/2 or TLS pool — is not the lean path's: the connection, from that request
//! on (its bytes included), goes to the full path ([`crate::exchange`]), which behaves as it
//! always did. So both paths give a client the same answers; only the cost differs.

pub mod deadline;
pub mod head;
mod reply;
pub mod response;
mod send;
pub mod spare;

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::conn_info::ConnInfo;
use crate::forward::Trust;
use crate::gateway::{Gateway, PoolTarget, RouteTarget};
use crate::policy::RequestInfo;
use crate::tries::Failure;
use deadline::Deadline;
use head::MAX_HEADERS;
use response::Framing;

/// How the lean path left a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// It is closed: by either side, a timeout, shutdown, or a broken exchange.
    Closed,
    /// It is done, but the client may still be sending a body lb did not read: closing at
    /// once would reset the connection and could destroy the answer before the client read
    /// it, so the caller lingers ([`linger`]).
    Linger,
    /// [`Session::pending`] starts a request the full path must take, with the rest of the
    /// connection.
    FullPath,
    /// It has idled [`crate::parked::PARK_AFTER`] since the instant given, with nothing
    /// buffered: the caller parks it ([`crate::parked`]).
    Park(Instant),
}

/// A request head over this many bytes is the full path's (which refuses it).
const MAX_HEAD: usize = 64 * 1024;
/// Read room for heads: most fit many times over.
const HEAD_ROOM: usize = spare::ROOM;
/// What an idle connection reads its next request's first bytes into (in place, not lent).
const FIRST_READ: usize = 512;
/// Read size for bodies that take more than one read.
const CHUNK: usize = 16 * 1024;
/// Bodies up to this size go out in the same write as their head.
const COALESCE: usize = 16 * 1024;

/// One client connection on the lean path.
pub(crate) struct Session<'g> {
    gw: &'g Gateway,
    info: &'g ConnInfo,
    /// Cancelled when the listener stops accepting.
    drain: &'g CancellationToken,
    /// Client bytes read and not yet used.
    buf: Vec<u8>,
    /// The backend's request head (and what goes in the same write); kept for retries.
    out: Vec<u8>,
    /// The client's response head (and what goes in the same write).
    reply: Vec<u8>,
    /// Backend bytes.
    rbuf: Vec<u8>,
    /// When the head being read must be complete.
    head_deadline: Option<tokio::time::Instant>,
    /// When the last exchange ended (the clock was read for its metrics anyway).
    idle_from: Option<Instant>,
    /// The forwarding lines for the last Host, when client claims are replaced.
    forwarding: Option<(String, Vec<u8>)>,
    /// One timer per side, moved on rather than made anew per wait: moving a deadline later
    /// is one atomic operation, a new timer a trip through the timer wheel's lock.
    client_timer: Deadline,
    backend_timer: Deadline,
    /// Its idle waits end in [`End::Park`] (a plain connection, when it may be parked).
    park: bool,
    /// When a parked connection was woken: its first wait does not park it again within
    /// [`crate::parked::PARK_AFTER`] of the wake, so a wake that finds no bytes (readiness
    /// tokio reported but a read does not confirm) cannot turn into a park-wake loop.
    woken: Option<Instant>,
}

/// What one request's head decided, before any I/O.
pub(crate) struct Plan<'g> {
    target: &'g RouteTarget,
    pt: &'g PoolTarget,
    start: Instant,
    head_len: usize,
    body: u64,
    /// The length of the head written to the backend (set once it is written).
    out_head: u64,
    /// The client asked to close after this exchange.
    close: bool,
    method: Method,
    log_path: Option<String>,
    key: u64,
    sticky: Option<usize>,
    replayable: bool,
    /// The `X-Request-Id` forwarded, returned and logged.
    request_id: Option<crate::request_id::RequestId>,
    /// The trace context forwarded (and exported).
    trace: Option<crate::trace::Hop>,
    /// The route's policies see the request (and its answer) as a map of fields; its head is
    /// written only once they let it pass.
    pub(crate) policed: Option<Box<Policed>>,
}

impl Plan<'_> {
    /// When the request began and its ID, for lb's own answers.
    pub(crate) fn began(&self) -> crate::exchange::Began {
        crate::exchange::Began {
            start: self.start,
            id: self.request_id,
            trace: self.trace,
        }
    }
}

/// A request held for the route's policies.
pub(crate) struct Policed {
    info: RequestInfo,
    /// The fields that passed, for the policies to read and change.
    headers: HeaderMap,
    /// Normalised (and rewritten); the query is the policies' own `info.query`.
    path: String,
    authority: String,
    te_trailers: bool,
    length: Option<u64>,
    /// lb's forwarding fields.
    lines: Vec<u8>,
}

/// A response head read from a backend, already rewritten into [`Session::reply`].
struct Answer {
    status: u16,
    framing: Framing,
    /// The backend connection may carry another exchange once the body is over.
    reusable: bool,
    /// The client connection closes after this response.
    close: bool,
    /// Where the body starts in `rbuf`.
    head_len: usize,
    /// Bytes of interim (1xx) heads read before this one.
    interim: usize,
    /// The backend answered before the request's body was over; the rest is unread.
    cut_short: bool,
}

/// What an exchange left of the client connection.
enum Next {
    KeepAlive,
    Close,
    /// Close, but the client may still be sending a body lb did not read: it must get to
    /// read the answer first ([`End::Linger`]).
    Linger,
}

/// Why an attempt on one backend ended without an answer to relay.
enum Failed {
    /// The backend's fault (what [`Tries`](crate::tries::Tries) counts and may retry).
    Backend(Failure),
    /// The client went away, or its body broke off: nothing to answer.
    Client,
}

impl<'g> Session<'g> {
    /// A session whose idle waits may end in [`End::Park`] if `park`; `idle_from`: a parked
    /// connection's, carried on (its idle time counts from its last exchange, not its wake).
    pub(crate) fn new(
        gw: &'g Gateway,
        info: &'g ConnInfo,
        drain: &'g CancellationToken,
        park: bool,
        idle_from: Option<Instant>,
    ) -> Self {
        Self {
            gw,
            info,
            drain,
            buf: Vec::new(),
            out: Vec::new(),
            reply: Vec::new(),
            rbuf: Vec::new(),
            head_deadline: None,
            idle_from,
            forwarding: None,
            client_timer: Deadline::default(),
            backend_timer: Deadline::default(),
            park,
            woken: idle_from.map(|_| Instant::now()),
        }
    }

    /// The client bytes read and not used: the start of what the full path takes on.
    pub(crate) fn pending(mut self) -> Vec<u8> {
        let pending = std::mem::take(&mut self.buf);
        self.release();
        pending
    }

    /// From now on its idle waits last until the idle timeout.
    pub(crate) fn stop_parking(&mut self) {
        self.park = false;
    }

    /// Gives the buffers back while the connection idles.
    fn release(&mut self) {
        for b in [
            &mut self.buf,
            &mut self.out,
            &mut self.reply,
            &mut self.rbuf,
        ] {
            spare::give(b);
        }
    }

    /// Takes buffers for a request.
    fn lend(&mut self) {
        for b in [
            &mut self.buf,
            &mut self.out,
            &mut self.reply,
            &mut self.rbuf,
        ] {
            if b.capacity() == 0 {
                *b = spare::take();
            }
        }
    }

    /// Serves requests until the connection closes or one is the full path's.
    pub(crate) async fn run<IO>(&mut self, io: &mut IO) -> End
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let drained = self.drain.cancelled();
        tokio::pin!(drained);
        loop {
            let plan = loop {
                if !self.buf.is_empty() {
                    match self.plan() {
                        Ok(Some(plan)) => break plan,
                        Ok(None) if self.buf.len() < MAX_HEAD => {}
                        Ok(None) => return End::FullPath,
                        Err(why) => {
                            tracing::trace!(listener = %self.gw.listener, "to the full path: {why}");
                            return End::FullPath;
                        }
                    }
                }
                let idle = self.buf.is_empty();
                if idle {
                    self.release();
                } else if self.buf.capacity() - self.buf.len() < HEAD_ROOM / 4 {
                    self.buf.reserve(HEAD_ROOM);
                }
                // Between requests the connection may idle; once a head has begun it must be
                // complete within `header_timeout` (slowloris), as hyper's timer does.
                let mut idle_since = None;
                let deadline = match (idle, self.head_deadline) {
                    (true, _) => {
                        let from = self.idle_from.take().unwrap_or_else(Instant::now);
                        idle_since = Some(from);
                        tokio::time::Instant::from_std(from) + self.gw.idle_timeout
                    }
                    (false, Some(d)) => d,
                    (false, None) => {
                        let d = tokio::time::Instant::now() + self.gw.header_timeout;
                        self.head_deadline = Some(d);
                        d
                    }
                };
                // A connection that idles on is parked before its deadline: the wait ends
                // then, unless bytes came.
                let park_at = idle_since
                    .filter(|_| self.park)
                    .map(|from| from.max(self.woken.take().unwrap_or(from)))
                    .map(|from| tokio::time::Instant::from_std(from + crate::parked::PARK_AFTER))
                    .filter(|&at| at < deadline);
                self.client_timer.set(park_at.unwrap_or(deadline));
                let reading = async {
                    if idle {
                        first_read(io, &mut self.buf).await
                    } else {
                        io.read_buf(&mut self.buf).await
                    }
                };
                let read = tokio::select! {
                    biased;
                    r = reading => r,
                    () = self.client_timer.passed() => {
                        if let (Some(_), Some(from)) = (park_at, idle_since) {
                            return End::Park(from);
                        }
                        if !idle {
                            self.gw.cut(self.info.client, 408, &"request head not received in time");
                        }
                        return End::Closed;
                    }
                    () = &mut drained, if idle => return End::Closed,
                };
                match read {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(_) if idle => {
                        // `first_read` put the bytes into a lent `buf`; the rest follow it.
                        self.lend();
                    }
                    Ok(_) => {}
                }
            };
            self.head_deadline = None;
            match Box::pin(self.exchange(io, plan)).await {
                Next::KeepAlive => {}
                Next::Close => return End::Closed,
                Next::Linger => return End::Linger,
            }
        }
    }

    /// Parses the head in `buf`: `Ok(None)` while incomplete, `Err` when it is not the lean
    /// path's; a plan writes the backend's head into `out`.
    fn plan(&mut self) -> Result<Option<Plan<'g>>, head::Unusual> {
        let peer = Peer {
            client: self.info.client,
            // Read only for HTTP/1.0 without Host, which the lean path leaves to the general
            // one; an empty authority would be refused there anyway.
            local: "",
            tls: self.info.tls,
            sni: self.info.sni.as_deref(),
        };
        planned(
            self.gw,
            peer,
            &self.buf,
            &mut self.out,
            &mut self.forwarding,
        )
    }
}

/// An idle connection's wait for its next request: its first bytes are read into a buffer
/// on the stack of each poll, and only bytes that came are copied into a lent `buf`. The
/// wait itself holds no buffer, so an idle connection's task carries none.
async fn first_read<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut read = tokio::io::ReadBuf::uninit(&mut first);
        std::task::ready!(std::pin::Pin::new(&mut *io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n > 0 {
            if buf.capacity() == 0 {
                *buf = spare::take();
            }
            buf.extend_from_slice(read.filled());
        }
        std::task::Poll::Ready(Ok(n))
    })
    .await
}

/// Who a client connection is, as plans and forwarding fields need it.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub client: std::net::SocketAddr,
    /// lb's address on the connection, as text.
    pub local: &'a str,
    pub tls: bool,
    pub sni: Option<&'a str>,
}

/// Plans the request whose head starts `buf`: `Ok(None)` while the head is incomplete, `Err`
/// when it is not the lean path's. The decisions are [`crate::request`]'s and
/// [`crate::plan`]'s, as on the general path. The backend's head goes into `out` (unless the
/// route's policies must see it first); `forwarding` keeps the forwarding lines of the last
/// authority when client claims are replaced, as they are the same for every request of a
/// connection to it.
pub(crate) fn planned<'g>(
    gw: &'g Gateway,
    peer: Peer<'_>,
    buf: &[u8],
    out_buf: &mut Vec<u8>,
    forwarding: &mut Option<(String, Vec<u8>)>,
) -> Result<Option<Plan<'g>>, head::Unusual> {
    // Not zeroed first: the parser writes what it returns.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_len = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("unparsable head"),
    };
    let start = Instant::now();
    let req = head::request(&parsed)?;
    let facts = crate::request::inspect(req.head(peer.local), &gw.limits).map_err(|_| "refused")?;
    head::carried(&facts)?;
    // Fields as a map only for what looks at them: routing or picking here, a route's
    // policies below.
    let headers = if gw.lean_needs_headers {
        header_map(req.fields, &facts)
    } else {
        HeaderMap::new()
    };
    let plan = gw
        .plan(
            crate::plan::Request {
                method: &req.method,
                uri: &req.uri,
                headers: &headers,
                client: peer.client,
                sni: peer.sni,
                graphql: None,
            },
            &facts,
        )
        .map_err(|_| "refused")?;
    let target = plan.target;
    let request_id = plan.request_id;
    if !target.lean {
        return Err("route not lean");
    }
    let authority = plan.authority.ok_or("no authority")?;
    let lines = match (&*forwarding, gw.trust) {
        (Some((host, lines)), Trust::Replace) if host == authority => Cow::Borrowed(lines),
        _ => {
            let fwd = req.forwarding(authority, peer.client.ip(), peer.tls, gw.trust);
            let lines = head::forwarding_lines(&fwd, gw.via.as_deref());
            if gw.trust == Trust::Replace {
                *forwarding = Some((authority.to_string(), lines.clone()));
            }
            Cow::Owned(lines)
        }
    };
    out_buf.clear();
    let length = match facts.body {
        crate::request::Body::Length(n) => Some(n),
        _ => None,
    };
    let out = head::Out {
        method: req.method.as_str(),
        path: plan.forward_path(),
        query: plan.query,
        authority,
        te_trailers: facts.te_trailers,
        length,
        lines: &lines,
        request_id: request_id.as_ref().map(|id| id.as_str()),
        trace: plan.trace,
    };
    let trace = plan.trace;
    let policed = if target.policies.is_empty() {
        out.write(out_buf, req.fields, &facts);
        None
    } else {
        Some(Box::new(Policed {
            info: RequestInfo::new(
                peer.client.ip(),
                req.method.clone(),
                Some(authority),
                &plan.path,
                plan.query,
                &target.name,
            ),
            headers: if headers.is_empty() {
                header_map(req.fields, &facts)
            } else {
                headers
            },
            path: out.path.to_string(),
            authority: authority.to_string(),
            te_trailers: facts.te_trailers,
            length,
            lines: lines.into_owned(),
        }))
    };
    let body = facts.body.len().unwrap_or(0);
    Ok(Some(Plan {
        policed,
        target,
        // Lean routes have a pool (aggregate routes are never lean).
        pt: plan.pt.ok_or("no pool")?,
        start,
        head_len,
        body,
        out_head: 0,
        request_id,
        trace,
        close: plan.close,
        replayable: plan.replayable,
        log_path: gw.access_log.then(|| plan.path.to_string()),
        method: req.method.clone(),
        key: plan.key,
        sticky: plan.sticky,
    }))
}

/// Lets a client that may still be sending read the answer lb wrote before the connection
/// goes: the write side is shut, then what the client sends is read and dropped until it
/// closes, pauses for 2 s, or 10 s have passed (nginx's `lingering_close`).
pub(crate) async fn linger<IO>(io: &mut IO)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let _ = io.shutdown().await;
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut sink = [0u8; 4096];
    loop {
        let pause = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        match tokio::time::timeout_at(pause.min(until), io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// The head's fields that pass ([`crate::request::Facts::passes`]) as a map, for routes and
/// pools that look at fields and for policies.
fn header_map(fields: &[httparse::Header<'_>], facts: &crate::request::Facts<'_>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields.iter().filter(|f| facts.passes(f.name)) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) {
            map.append(n, v);
        }
    }
    map
}
