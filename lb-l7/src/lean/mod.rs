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

use crate::balance::{self, Keys};
use crate::exchange::ConnInfo;
use crate::forward::Trust;
use crate::gateway::{Gateway, PoolTarget, RouteTarget};
use crate::policy::RequestInfo;
use crate::router::RequestHead;
use crate::tries::Failure;
use deadline::Deadline;
use head::MAX_HEADERS;
use response::Framing;

/// How the lean path left a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// It is closed: by either side, a timeout, shutdown, or a broken exchange.
    Closed,
    /// [`Session::pending`] starts a request the full path must take, with the rest of the
    /// connection.
    FullPath,
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
}

/// What one request's head decided, before any I/O.
struct Plan<'g> {
    target: &'g RouteTarget,
    pt: &'g PoolTarget,
    start: Instant,
    head_len: usize,
    body: u64,
    /// The client asked to close after this exchange.
    close: bool,
    method: Method,
    log_path: Option<String>,
    key: u64,
    sticky: Option<usize>,
    replayable: bool,
    /// The route's policies see the request (and its answer) as a map of fields; its head is
    /// written only once they let it pass.
    policed: Option<Box<Policed>>,
}

/// A request held for the route's policies.
struct Policed {
    info: RequestInfo,
    headers: HeaderMap,
    /// Normalised (and rewritten); the query is the policies' own `info.query`.
    path: String,
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
}

/// What an exchange left of the client connection.
enum Next {
    KeepAlive,
    Close,
}

/// Why an attempt on one backend ended without an answer to relay.
enum Failed {
    /// The backend's fault (what [`Tries`](crate::tries::Tries) counts and may retry).
    Backend(Failure),
    /// The client went away, or its body broke off: nothing to answer.
    Client,
}

impl<'g> Session<'g> {
    pub(crate) fn new(gw: &'g Gateway, info: &'g ConnInfo, drain: &'g CancellationToken) -> Self {
        Self {
            gw,
            info,
            drain,
            buf: Vec::new(),
            out: Vec::new(),
            reply: Vec::new(),
            rbuf: Vec::new(),
            head_deadline: None,
            idle_from: None,
            forwarding: None,
            client_timer: Deadline::default(),
            backend_timer: Deadline::default(),
        }
    }

    /// The client bytes read and not used: the start of what the full path takes on.
    pub(crate) fn pending(mut self) -> Vec<u8> {
        let pending = std::mem::take(&mut self.buf);
        self.release();
        pending
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
                let deadline = match (idle, self.head_deadline) {
                    (true, _) => {
                        let from = self.idle_from.take().unwrap_or_else(Instant::now);
                        tokio::time::Instant::from_std(from) + self.gw.idle_timeout
                    }
                    (false, Some(d)) => d,
                    (false, None) => {
                        let d = tokio::time::Instant::now() + self.gw.header_timeout;
                        self.head_deadline = Some(d);
                        d
                    }
                };
                self.client_timer.set(deadline);
                let mut first = [0u8; FIRST_READ];
                let reading = async {
                    if idle {
                        io.read(&mut first).await
                    } else {
                        io.read_buf(&mut self.buf).await
                    }
                };
                let read = tokio::select! {
                    biased;
                    r = reading => r,
                    () = self.client_timer.passed() => {
                        if !idle {
                            self.gw.cut(self.info.client, 408, &"request head not received in time");
                        }
                        return End::Closed;
                    }
                    () = &mut drained, if idle => return End::Closed,
                };
                match read {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(n) if idle => {
                        self.lend();
                        self.buf.extend_from_slice(&first[..n]);
                    }
                    Ok(_) => {}
                }
            };
            self.head_deadline = None;
            match self.exchange(io, plan).await {
                Next::KeepAlive => {}
                Next::Close => return End::Closed,
            }
        }
    }

    /// Parses the head in `buf`: `Ok(None)` while incomplete, `Err` when it is not the lean
    /// path's. A plan writes the backend's head into `out`.
    fn plan(&mut self) -> Result<Option<Plan<'g>>, head::Unusual> {
        let gw = self.gw;
        // Not zeroed first: the parser writes what it returns.
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let head_len = match parsed.parse_with_uninit_headers(&self.buf, &mut fields) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("unparsable head"),
        };
        let start = Instant::now();
        let req = head::request(&parsed, &gw.limits)?;
        let path = crate::path::normalized(req.path).map_err(|_| "path to refuse")?;
        let method = Method::from_bytes(req.method.as_bytes()).map_err(|_| "method")?;
        // Fields as a map only for what looks at them: routing or picking here, a route's
        // policies below.
        let headers = if gw.lean_needs_headers {
            header_map(req.headers)
        } else {
            HeaderMap::new()
        };
        let routed = gw.router.route(&RequestHead {
            method: &method,
            host: Some(req.host),
            path: &path,
            headers: &headers,
        });
        let target = routed
            .map(|&i| &gw.routes[i])
            .or(gw.default.as_ref())
            .ok_or("no route")?;
        if !target.lean {
            return Err("route not lean");
        }
        let Some(Some(pt)) = gw.pools.get(target.pool) else {
            return Err("no pool");
        };
        if target.max_body.is_some_and(|max| req.body > max) {
            return Err("body over the limit");
        }
        let sticky = pt
            .sticky
            .as_ref()
            .and_then(|(name, values)| balance::sticky_backend(&pt.pool, values, &headers, name));
        let key = balance::key(
            &pt.pool,
            &Keys {
                client: self.info.client.ip(),
                sni: self.info.sni.as_deref(),
                path: &path,
                headers: &headers,
            },
        );
        let forwarded_path = match &target.rewrite {
            Some(r) => Cow::Owned(r.apply(&path)),
            None => Cow::Borrowed(&*path),
        };
        let lines = match (&self.forwarding, gw.trust) {
            (Some((host, lines)), Trust::Replace) if host == req.host => Cow::Borrowed(lines),
            _ => {
                let fwd = req.forwarding(self.info.client.ip(), self.info.tls, gw.trust);
                let lines = head::forwarding_lines(&fwd, gw.via.as_deref());
                if gw.trust == Trust::Replace {
                    self.forwarding = Some((req.host.to_string(), lines.clone()));
                }
                Cow::Owned(lines)
            }
        };
        self.out.clear();
        let policed = if target.policies.is_empty() {
            req.write(&mut self.out, &forwarded_path, &lines);
            None
        } else {
            Some(Box::new(Policed {
                info: RequestInfo::new(
                    self.info.client.ip(),
                    method.clone(),
                    Some(req.host),
                    &path,
                    req.query,
                    &target.name,
                ),
                headers: if headers.is_empty() {
                    header_map(req.headers)
                } else {
                    headers
                },
                path: forwarded_path.into_owned(),
                lines: lines.into_owned(),
            }))
        };
        Ok(Some(Plan {
            policed,
            target,
            pt,
            start,
            head_len,
            body: req.body,
            close: req.close,
            replayable: method.is_idempotent() && req.body == 0,
            log_path: gw.access_log.then(|| path.to_string()),
            method,
            key,
            sticky,
        }))
    }
}

/// The head's fields as a map, for routes and pools that look at fields.
fn header_map(fields: &[httparse::Header<'_>]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) {
            map.append(n, v);
        }
    }
    map
}
