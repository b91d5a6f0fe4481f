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
pub mod pool;
pub mod spare;

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use lb_core::pool::Attempt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::balance::{self, Keys};
use crate::chunked::{Chunked, Scan};
use crate::exchange::ConnInfo;
use crate::forward::Trust;
use crate::gateway::{Gateway, PoolTarget, RouteTarget};
use crate::policy::{self, RequestInfo};
use crate::respond::LogLine;
use crate::router::RequestHead;
use deadline::Deadline;
use head::{Framing, MAX_HEADERS};

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
    /// Normalised (and rewritten).
    path: String,
    query: Option<String>,
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

/// Why an attempt on one backend failed; what the client gets if no other succeeds.
enum Failed {
    /// Nothing was sent; any request may go elsewhere.
    Connect(String),
    /// Sent, and no usable answer came.
    Exchange {
        status: u16,
        why: String,
        kind: usize,
    },
    /// The client went away, or its body broke off: nothing to answer.
    Client,
}

/// `lb_http_upstream_errors_total` kinds, as indexes of [`PoolTarget::errors`].
const TIMEOUT: usize = 1;
const RESPONSE: usize = 2;

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
        let policies = gw.lean_policies;
        let headers = if gw.lean_needs_headers || policies {
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
                info: RequestInfo {
                    client: self.info.client.ip(),
                    method: method.clone(),
                    host: Some(crate::router::host_of(req.host)),
                    path: path.to_string(),
                    query: req.query.map(str::to_string),
                    route: target.name.clone(),
                    consumer: None,
                    origin: None,
                    rate: None,
                    claims: None,
                },
                headers,
                path: forwarded_path.into_owned(),
                query: req.query.map(str::to_string),
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

    /// Sends one request (retried where that is safe) and relays its response.
    async fn exchange<IO>(&mut self, io: &mut IO, mut plan: Plan<'_>) -> Next
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let (target, pt) = (plan.target, plan.pt);
        if let Some(p) = plan.policed.as_mut() {
            // Policies first: what they refuse costs no backend anything.
            if let Err(resp) =
                policy::on_request(&target.policies, &mut p.info, &mut p.headers).await
            {
                return self.refused(io, &plan, *resp).await;
            }
            head::write_mapped_request(
                &mut self.out,
                &plan.method,
                &p.path,
                p.query.as_deref(),
                &mut p.headers,
                &p.lines,
            );
        }
        let pool = &pt.pool;
        // A body that arrived with its head goes out in the same write.
        let in_buf = (self.buf.len() - plan.head_len) as u64;
        let body_now = plan.body.min(in_buf) as usize;
        let used = plan.head_len + body_now;
        self.out.extend_from_slice(&self.buf[plan.head_len..used]);
        self.buf.drain(..used);
        let mut body_left = plan.body - body_now as u64;
        let mut attempt = Attempt::default();
        let mut last: Option<(u16, String)> = None;
        for tries in 0..=target.retries {
            let pick = match (tries, plan.sticky) {
                (0, Some(i)) => Some(i),
                _ => balance::next(pool, plan.key, &mut attempt),
            };
            let Some(i) = pick else { break };
            let b = &pool.backends[i];
            b.active.fetch_add(1, Relaxed);
            b.total.fetch_add(1, Relaxed);
            // Only the access log wants the backend's own time.
            let sent_at = self.gw.access_log.then(Instant::now);
            let deadline = tokio::time::Instant::from_std(plan.start + target.timeout);
            let result = self.attempt(io, &plan, i, &mut body_left, deadline).await;
            let (conn, answer) = match result {
                Ok(r) => r,
                Err(Failed::Connect(e)) => {
                    b.active.fetch_sub(1, Relaxed);
                    b.record_traffic(false, pool.config.passive.as_ref(), &e);
                    pt.errors[i][0].increment(1);
                    tracing::debug!(listener = %self.gw.listener, route = %target.name, backend = %b.id, "connect failed: {e}");
                    last = Some((502, format!("backend {} failed: {e}", b.id)));
                    continue;
                }
                Err(Failed::Exchange { status, why, kind }) => {
                    b.active.fetch_sub(1, Relaxed);
                    pt.errors[i][kind].increment(1);
                    last = Some((status, format!("backend {} {why}", b.id)));
                    if plan.replayable {
                        continue;
                    }
                    break;
                }
                Err(Failed::Client) => {
                    b.active.fetch_sub(1, Relaxed);
                    return Next::Close;
                }
            };
            if matches!(answer.status, 502 | 503) && plan.replayable && tries < target.retries {
                b.active.fetch_sub(1, Relaxed);
                last = Some((answer.status, String::new()));
                continue;
            }
            b.record_traffic(true, pool.config.passive.as_ref(), "");
            let upstream_ms = sent_at.map_or(0, |t| t.elapsed().as_millis() as u64);
            return self.relay(io, &plan, i, conn, answer, upstream_ms).await;
        }
        // No backend answered: lb does, and the connection goes on if the client's body was
        // read whole.
        let (status, msg) = match last {
            Some((status, msg)) if !msg.is_empty() => (status, msg),
            Some((status, _)) => (status, "every backend tried answered with an error".into()),
            None => (503, "no healthy backend".into()),
        };
        let close = plan.close || body_left > 0;
        self.gw.note_answer(
            Some(target),
            status,
            &plan.method,
            plan.log_path.as_deref(),
            self.info.client,
            plan.start,
        );
        self.reply.clear();
        write_answer(&mut self.reply, status, &msg, close);
        if io.write_all(&self.reply).await.is_err() || io.flush().await.is_err() || close {
            return Next::Close;
        }
        Next::KeepAlive
    }

    /// One backend's attempt: the request sent (on an idle connection, or a new one if that
    /// turns out closed) and the response head read and rewritten.
    async fn attempt<IO>(
        &mut self,
        io: &mut IO,
        plan: &Plan<'_>,
        i: usize,
        body_left: &mut u64,
        deadline: tokio::time::Instant,
    ) -> Result<(TcpStream, Answer), Failed>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let pt = plan.pt;
        let b = &pt.pool.backends[i];
        let idle = pt.upstream.lean_idle(i);
        let cookie = pt.sticky.as_ref().and_then(|(name, values)| {
            (plan.sticky != Some(i)).then(|| format!("{name}={}; Path=/; HttpOnly", values[i]))
        });
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                idle.and_then(pool::Idle::take)
            };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => {
                    let connect = pt.upstream.connect_tcp(b.addr);
                    match tokio::time::timeout_at(deadline, Box::pin(connect)).await {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => return Err(Failed::Connect(e)),
                        Err(_) => return Err(Failed::Connect("connect timeout".into())),
                    }
                }
            };
            if let Err(e) = conn.write_all(&self.out).await {
                // An idle connection the backend had closed: the request did not leave.
                if reused {
                    fresh_only = true;
                    continue;
                }
                return Err(Failed::Connect(e.to_string()));
            }
            if *body_left > 0 {
                self.stream_body(io, &mut conn, body_left).await?;
            }
            match self
                .read_head(&mut conn, plan, cookie.as_deref(), deadline)
                .await
            {
                Ok(answer) => return Ok((conn, answer)),
                // Closed before answering on a reused connection: the usual race with the
                // backend's keep-alive timer. Safe to send again where nothing can repeat.
                Err(Failed::Exchange { kind: RESPONSE, .. })
                    if reused && plan.replayable && self.rbuf.is_empty() =>
                {
                    fresh_only = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Relays the rest of a `Content-Length` request body (`left` bytes) to the backend.
    async fn stream_body<IO>(
        &mut self,
        io: &mut IO,
        conn: &mut TcpStream,
        left: &mut u64,
    ) -> Result<(), Failed>
    where
        IO: AsyncRead + Unpin,
    {
        // The backend's buffer is free until the response: it carries the body.
        let mut chunk = std::mem::take(&mut self.rbuf);
        chunk.resize(CHUNK, 0);
        let result = self.stream_through(io, conn, left, &mut chunk).await;
        chunk.clear();
        self.rbuf = chunk;
        result
    }

    async fn stream_through<IO>(
        &mut self,
        io: &mut IO,
        conn: &mut TcpStream,
        left: &mut u64,
        chunk: &mut [u8],
    ) -> Result<(), Failed>
    where
        IO: AsyncRead + Unpin,
    {
        while *left > 0 {
            let want = (*left).min(chunk.len() as u64) as usize;
            let deadline = tokio::time::Instant::now() + self.gw.idle_timeout;
            self.client_timer.set(deadline);
            let n = tokio::select! {
                biased;
                r = io.read(&mut chunk[..want]) => match r {
                    Ok(0) | Err(_) => return Err(Failed::Client),
                    Ok(n) => n,
                },
                () = self.client_timer.passed() => return Err(Failed::Client),
            };
            *left -= n as u64;
            if let Err(e) = conn.write_all(&chunk[..n]).await {
                return Err(Failed::Exchange {
                    status: 502,
                    why: format!("failed while the request body was sent: {e}"),
                    kind: RESPONSE,
                });
            }
        }
        Ok(())
    }

    /// Reads a final response head into `rbuf` and writes the client's head into `reply`.
    /// Interim answers (100, 103) are read past: the lean path never sends `Expect`, and
    /// hints are only hints.
    async fn read_head(
        &mut self,
        conn: &mut TcpStream,
        plan: &Plan<'_>,
        cookie: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, Failed> {
        self.rbuf.clear();
        self.backend_timer.set(deadline);
        loop {
            if !self.rbuf.is_empty() {
                let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
                let mut parsed = httparse::Response::new(&mut []);
                let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                    &mut parsed,
                    &self.rbuf,
                    &mut fields,
                );
                match parsing {
                    Ok(httparse::Status::Complete(n)) => match parsed.code {
                        Some(101) => return Err(bad("switched protocols unasked")),
                        Some(c) if c < 200 => {
                            self.rbuf.drain(..n);
                            continue;
                        }
                        _ => {
                            let resp = head::response(&parsed, plan.method == Method::HEAD)
                                .map_err(|why| {
                                    bad(&format!("sent a response lb cannot forward: {why}"))
                                })?;
                            // Draining: this response is the connection's last, and says so.
                            let close = plan.close
                                || resp.framing == Framing::UntilClose
                                || self.drain.is_cancelled();
                            self.reply.clear();
                            let via = self.gw.via.as_deref();
                            match &plan.policed {
                                None => resp.write(&mut self.reply, via, cookie, close),
                                Some(p) => {
                                    let mut map = resp.end_to_end();
                                    policy::on_response(&plan.target.policies, &p.info, &mut map);
                                    resp.write_mapped(&mut self.reply, &map, via, cookie, close);
                                }
                            }
                            return Ok(Answer {
                                status: resp.status,
                                framing: resp.framing,
                                reusable: resp.reusable,
                                close,
                                head_len: n,
                            });
                        }
                    },
                    Ok(httparse::Status::Partial) if self.rbuf.len() < MAX_HEAD => {}
                    Ok(httparse::Status::Partial) => return Err(bad("sent a head too large")),
                    Err(e) => return Err(bad(&format!("sent a malformed head: {e}"))),
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < HEAD_ROOM / 4 {
                self.rbuf.reserve(HEAD_ROOM);
            }
            let read = tokio::select! {
                biased;
                r = conn.read_buf(&mut self.rbuf) => r,
                () = self.backend_timer.passed() => {
                    return Err(Failed::Exchange {
                        status: 504,
                        why: "did not answer in time".into(),
                        kind: TIMEOUT,
                    })
                }
            };
            match read {
                Ok(0) => return Err(bad("closed the connection before answering")),
                Ok(_) => {}
                Err(e) => return Err(bad(&format!("failed: {e}"))),
            }
        }
    }

    /// Sends the response to the client, relays its body, and pools the backend connection
    /// if the exchange ended cleanly.
    async fn relay<IO>(
        &mut self,
        io: &mut IO,
        plan: &Plan<'_>,
        i: usize,
        mut conn: TcpStream,
        answer: Answer,
        upstream_ms: u64,
    ) -> Next
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let (target, pt) = (plan.target, plan.pt);
        let b = &pt.pool.backends[i];
        target.metrics.count(answer.status);
        let line = plan.log_path.clone().map(|path| LogLine {
            client: self.info.client,
            listener: self.gw.listener.clone(),
            route: target.name.clone(),
            method: plan.method.clone(),
            path,
            status: answer.status,
            backend: b.id.clone(),
            upstream_ms,
        });
        let relayed = self
            .relay_body(io, &mut conn, answer.head_len, answer.framing)
            .await;
        // `exact`: the backend ended its message where its framing said, and sent no more.
        let (sent, exact, broken) = match relayed {
            Ok((sent, exact)) => (sent, exact, false),
            Err(sent) => (sent, false, true),
        };
        let flushed = io.flush().await.is_ok();
        b.active.fetch_sub(1, Relaxed);
        b.bytes_in.fetch_add(plan.body, Relaxed);
        b.bytes_out.fetch_add(sent, Relaxed);
        let end = Instant::now();
        target
            .metrics
            .duration
            .record((end - plan.start).as_secs_f64());
        self.idle_from = Some(end);
        if let Some(l) = line {
            l.emit(plan.body, sent, plan.start);
        }
        if exact && answer.reusable {
            if let Some(idle) = pt.upstream.lean_idle(i) {
                idle.put(conn);
            }
        }
        if broken || !flushed || answer.close {
            return Next::Close;
        }
        Next::KeepAlive
    }

    /// Writes the head in `reply` and relays the body that follows `rbuf[..head_end]`; the
    /// body bytes sent, and whether the backend ended the message exactly (nothing after
    /// it). `Err(sent)` when either side broke off.
    async fn relay_body<IO>(
        &mut self,
        io: &mut IO,
        conn: &mut TcpStream,
        head_end: usize,
        framing: Framing,
    ) -> Result<(u64, bool), u64>
    where
        IO: AsyncWrite + Unpin,
    {
        let mut sent = 0u64;
        let mut scanner = Chunked::default();
        let mut left = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        // `rbuf[at..]` holds body bytes not yet relayed.
        let mut at = head_end;
        loop {
            let avail = &self.rbuf[at..];
            let (take, done) = match framing {
                Framing::Empty => (0, true),
                Framing::Length(_) => {
                    let take = left.min(avail.len() as u64) as usize;
                    (take, take as u64 == left)
                }
                Framing::Chunked => match scanner.scan(avail) {
                    Ok(Scan::Done(n)) => (n, true),
                    Ok(Scan::More) => (avail.len(), false),
                    Err(_) => return Err(sent),
                },
                Framing::UntilClose => (avail.len(), false),
            };
            let extra = done && take < avail.len();
            if self.reply.len() + take <= COALESCE {
                self.reply.extend_from_slice(&avail[..take]);
                if io.write_all(&self.reply).await.is_err() {
                    return Err(sent);
                }
            } else {
                if !self.reply.is_empty() && io.write_all(&self.reply).await.is_err() {
                    return Err(sent);
                }
                if io.write_all(&self.rbuf[at..at + take]).await.is_err() {
                    return Err(sent);
                }
            }
            self.reply.clear();
            sent += take as u64;
            if let Framing::Length(_) = framing {
                left -= take as u64;
            }
            if done {
                // Bytes past the end of the message: the connection cannot be trusted.
                return Ok((sent, !extra));
            }
            self.rbuf.clear();
            at = 0;
            if self.rbuf.capacity() < CHUNK {
                self.rbuf.reserve(CHUNK);
            }
            let deadline = tokio::time::Instant::now() + self.gw.idle_timeout;
            self.backend_timer.set(deadline);
            let read = tokio::select! {
                biased;
                r = conn.read_buf(&mut self.rbuf) => r,
                () = self.backend_timer.passed() => return Err(sent),
            };
            match read {
                Ok(0) if framing == Framing::UntilClose => return Ok((sent, false)),
                Ok(0) | Err(_) => return Err(sent),
                Ok(_) => {}
            }
        }
    }
}

impl Session<'_> {
    /// Answers a request the route's policies refused (or answered, as a CORS preflight).
    /// A body the client is still sending is not read: the connection closes after.
    async fn refused<IO>(
        &mut self,
        io: &mut IO,
        plan: &Plan<'_>,
        resp: http::Response<crate::upstream::Body>,
    ) -> Next
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let status = resp.status();
        let close = plan.close || plan.body > 0;
        self.gw.note_answer(
            Some(plan.target),
            status.as_u16(),
            &plan.method,
            plan.log_path.as_deref(),
            self.info.client,
            plan.start,
        );
        let (parts, body) = resp.into_parts();
        let body = match http_body_util::BodyExt::collect(body).await {
            Ok(b) => b.to_bytes(),
            Err(_) => bytes::Bytes::new(),
        };
        self.reply.clear();
        let body = if plan.method == Method::HEAD {
            &[][..]
        } else {
            &body[..]
        };
        write_own(&mut self.reply, status, &parts.headers, body, close);
        if io.write_all(&self.reply).await.is_err() || io.flush().await.is_err() || close {
            return Next::Close;
        }
        // The head (and any body bytes) of the refused request are used up.
        let used = plan.head_len;
        self.buf.drain(..used.min(self.buf.len()));
        Next::KeepAlive
    }
}

fn bad(why: &str) -> Failed {
    Failed::Exchange {
        status: 502,
        why: why.to_string(),
        kind: RESPONSE,
    }
}

/// lb's own answer (SPEC §2's JSON error), as bytes.
fn write_answer(out: &mut Vec<u8>, status: u16, message: &str, close: bool) {
    let body = crate::body::answer_json(status, message);
    let mut fields = HeaderMap::new();
    fields.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    write_own(out, status, &fields, body.as_bytes(), close);
}

/// An answer of lb's own, framed by its length.
fn write_own(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    fields: &HeaderMap,
    body: &[u8],
    close: bool,
) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in fields {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
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
