//! The way back of an exchange on the lean path: the backend's response head read and
//! rewritten for the client, its body relayed by its framing, the backend connection pooled
//! when the message ended exactly; and the answers lb gives itself.

use std::mem::MaybeUninit;
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::head::MAX_HEADERS;
use super::response::{self, Framing};
use super::send::bad;
use super::{Answer, Failed, Next, Plan, Session, CHUNK, COALESCE, HEAD_ROOM, MAX_HEAD};
use crate::chunked::{Chunked, Scan};
use crate::idle::Idle;
use crate::policy;
use crate::respond::LogLine;
use crate::tries::{Failure, Try};

impl Session<'_> {
    /// Reads a final response head into `rbuf` and writes the client's head into `reply`.
    /// Interim answers (100, 103) are read past: the lean path never sends `Expect`, and
    /// hints are only hints.
    /// `cut_short`: the request's body was not sent whole (the backend answered first), so
    /// neither connection can carry another exchange.
    pub(super) async fn read_head(
        &mut self,
        conn: &mut TcpStream,
        plan: &Plan<'_>,
        cookie: Option<&str>,
        deadline: tokio::time::Instant,
        cut_short: bool,
    ) -> Result<Answer, Failed> {
        self.rbuf.clear();
        self.backend_timer.set(deadline);
        let mut interim = 0;
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
                            interim += n;
                            self.rbuf.drain(..n);
                            continue;
                        }
                        _ => {
                            let resp = response::response(&parsed, plan.method == Method::HEAD)
                                .map_err(|why| {
                                    bad(&format!("sent a response lb cannot forward: {why}"))
                                })?;
                            // Draining: this response is the connection's last, and says so.
                            let close = plan.close
                                || cut_short
                                || resp.framing == Framing::UntilClose
                                || self.drain.is_cancelled()
                                || self.info.is_old();
                            self.reply.clear();
                            let added = response::Added {
                                via: self.gw.via.as_deref(),
                                cookie,
                                request_id: plan.request_id.as_ref().map(|id| id.as_str()),
                                close,
                            };
                            match &plan.policed {
                                None => resp.write(&mut self.reply, added),
                                Some(p) => {
                                    let mut map = resp.end_to_end();
                                    policy::on_response(&plan.target.policies, &p.info, &mut map);
                                    resp.write_mapped(&mut self.reply, &map, added);
                                }
                            }
                            return Ok(Answer {
                                cut_short,
                                status: resp.status,
                                framing: resp.framing,
                                reusable: resp.reusable && !cut_short,
                                close,
                                head_len: n,
                                interim,
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
                    return Err(Failed::Backend(Failure::Timeout(
                        "did not answer in time".into(),
                    )))
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
    pub(super) async fn relay<IO>(
        &mut self,
        io: &mut IO,
        plan: &Plan<'_>,
        t: Try,
        conn: TcpStream,
        answer: Answer,
        upstream_ms: u64,
    ) -> Next
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let (target, pt, i) = (plan.target, plan.pt, t.index);
        let mut flight = t.flight;
        let b = &pt.pool.backends[i];
        target.metrics.count(answer.status);
        let span = self.gw.span(
            plan.trace,
            Some(target),
            &plan.method,
            &b.id,
            answer.status,
            upstream_ms,
            plan.request_id,
        );
        let line = plan.log_path.clone().map(|path| LogLine {
            client: self.info.client,
            listener: self.gw.listener.clone(),
            route: target.name.clone(),
            method: plan.method.clone(),
            path,
            status: answer.status,
            backend: b.id.clone(),
            upstream_ms,
            request_id: plan.request_id,
        });
        let upstream = self.gw.upstream(pt, self.info);
        let keep = upstream.lean_idle(i).filter(|_| answer.reusable);
        let relayed = self
            .relay_body(io, conn, keep, answer.head_len, answer.framing)
            .await;
        let (sent, broken) = match relayed {
            Ok(sent) => (sent, false),
            Err(sent) => (sent, true),
        };
        let flushed = io.flush().await.is_ok();
        // The backend's bytes, heads included, as the general path's connection counts them.
        let to_backend = plan.out_head + plan.body;
        let from_backend = (answer.interim + answer.head_len) as u64 + sent;
        flight.add_bytes(to_backend, from_backend);
        drop(flight);
        let end = Instant::now();
        target.metrics.took(end - plan.start);
        self.idle_from = Some(end);
        if let Some(l) = line {
            l.emit(to_backend, from_backend, plan.start);
        }
        if let Some(s) = span {
            s.finish(plan.start);
        }
        if broken || !flushed {
            return Next::Close;
        }
        if answer.cut_short {
            return Next::Linger;
        }
        if answer.close {
            return Next::Close;
        }
        Next::KeepAlive
    }

    /// Writes the head in `reply` and relays the body that follows `rbuf[..head_end]`; the
    /// body bytes sent, `Err(sent)` when either side broke off. A backend connection whose
    /// message ended exactly (nothing after it) goes back to `keep` as soon as it is read,
    /// before the client has the last bytes: the client's next request may come on another
    /// connection and should find it there.
    async fn relay_body<IO>(
        &mut self,
        io: &mut IO,
        conn: TcpStream,
        keep: Option<&Idle<TcpStream>>,
        head_end: usize,
        framing: Framing,
    ) -> Result<u64, u64>
    where
        IO: AsyncWrite + Unpin,
    {
        let mut conn = Some(conn);
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
            // Bytes past the end of the message: the connection cannot be trusted.
            if done && take == avail.len() {
                if let (Some(idle), Some(c)) = (keep, conn.take()) {
                    idle.put(c, crate::idle::stream_open);
                }
            }
            if self.reply.len() + take <= COALESCE {
                self.reply.extend_from_slice(&self.rbuf[at..at + take]);
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
            let Some(c) = conn.as_mut().filter(|_| !done) else {
                return Ok(sent);
            };
            self.rbuf.clear();
            at = 0;
            if self.rbuf.capacity() < CHUNK {
                self.rbuf.reserve(CHUNK);
            }
            let deadline = tokio::time::Instant::now() + self.gw.idle_timeout;
            self.backend_timer.set(deadline);
            let read = tokio::select! {
                biased;
                r = c.read_buf(&mut self.rbuf) => r,
                () = self.backend_timer.passed() => return Err(sent),
            };
            match read {
                Ok(0) if framing == Framing::UntilClose => return Ok(sent),
                Ok(0) | Err(_) => return Err(sent),
                Ok(_) => {}
            }
        }
    }

    /// Answers a request the route's policies refused (or answered, as a CORS preflight).
    /// A body the client is still sending is not read: the connection closes after.
    pub(super) async fn refused<IO>(
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
            &plan.began(),
        );
        let (mut parts, body) = resp.into_parts();
        if let Some(id) = &plan.request_id {
            parts
                .headers
                .insert(crate::request_id::FIELD, id.header_value());
        }
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
        if io.write_all(&self.reply).await.is_err() || io.flush().await.is_err() {
            return Next::Close;
        }
        if plan.body > 0 {
            return Next::Linger;
        }
        if close {
            return Next::Close;
        }
        // The head (and any body bytes) of the refused request are used up.
        let used = plan.head_len;
        self.buf.drain(..used.min(self.buf.len()));
        Next::KeepAlive
    }
}

/// lb's own answer (SPEC §2's JSON error), as bytes, stamped with the request's ID.
pub(super) fn write_answer(
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
    close: bool,
    request_id: Option<&crate::request_id::RequestId>,
) {
    let body = crate::body::answer_json(status, message);
    let mut fields = HeaderMap::new();
    fields.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = request_id {
        fields.insert(crate::request_id::FIELD, id.header_value());
    }
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
