//! The way out of an exchange on the lean path: the request sent to a backend picked by the
//! pool's algorithm (on an idle connection or a new one), its body streamed, retried where
//! that is safe, and lb's own answer when no backend gives one.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::deadline::Deadline;
use super::reply::write_answer;
use super::{head, Answer, Failed, Next, Plan, Session, CHUNK};
use crate::balance;
use crate::idle;
use crate::policy;
use crate::tries::{Failure, Tries, Try};

impl Session<'_> {
    /// Sends one request (retried where that is safe) and relays its response.
    pub(super) async fn exchange<IO>(&mut self, io: &mut IO, mut plan: Plan<'_>) -> Next
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let (target, pt) = (plan.target, plan.pt);
        if let Some(p) = plan.policed.as_mut() {
            // Policies first: what they refuse costs no backend anything.
            if let Err((i, resp)) =
                policy::on_request(&target.policies, &mut p.info, &mut p.headers).await
            {
                target.metrics.stats.refused(i, resp.status().as_u16());
                return self.refused(io, &plan, *resp).await;
            }
            let out = head::Out {
                method: plan.method.as_str(),
                path: &p.path,
                query: p.info.query.as_deref(),
                authority: &p.authority,
                te_trailers: p.te_trailers,
                length: p.length,
                lines: &p.lines,
                request_id: plan.request_id.as_ref().map(|id| id.as_str()),
                trace: plan.trace,
            };
            out.write_mapped(&mut self.out, &p.headers);
        }
        plan.out_head = self.out.len() as u64;
        // A body that arrived with its head goes out in the same write.
        let in_buf = (self.buf.len() - plan.head_len) as u64;
        let body_now = plan.body.min(in_buf) as usize;
        let used = plan.head_len + body_now;
        self.out.extend_from_slice(&self.buf[plan.head_len..used]);
        self.buf.drain(..used);
        let mut body_left = plan.body - body_now as u64;
        let mut tries = Tries::new(
            pt,
            &self.gw.listener,
            &target.name,
            plan.key,
            plan.sticky,
            plan.replayable,
            target.retries,
            target.timeout,
        );
        while let Some(t) = tries.pick() {
            // Only the access log wants the backend's own time.
            let sent_at = self.gw.access_log.then(Instant::now);
            let stale = tries.may_resend_stale();
            let (conn, answer) = match self.attempt(io, &plan, &t, &mut body_left, stale).await {
                Ok(r) => r,
                Err(Failed::Backend(failure)) => {
                    if tries.failed(t, failure) {
                        continue;
                    }
                    break;
                }
                // The client went away, or its body broke off: no verdict on the backend.
                Err(Failed::Client) => return Next::Close,
            };
            if !tries.answered(&t, answer.status) {
                continue;
            }
            let upstream_ms = sent_at.map_or(0, |s| s.elapsed().as_millis() as u64);
            return self.relay(io, &plan, t, conn, answer, upstream_ms).await;
        }
        // No backend answered: lb does, and the connection goes on if the client's body was
        // read whole.
        let (status, msg) = tries.answer();
        let close = plan.close || body_left > 0;
        self.gw.note_answer(
            Some(target),
            status,
            &plan.method,
            plan.log_path.as_deref(),
            self.info.client,
            &plan.began(),
        );
        self.reply.clear();
        write_answer(
            &mut self.reply,
            status,
            msg,
            close,
            plan.request_id.as_ref(),
        );
        if io.write_all(&self.reply).await.is_err() || io.flush().await.is_err() {
            return Next::Close;
        }
        if body_left > 0 {
            return Next::Linger;
        }
        if close {
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
        t: &Try,
        body_left: &mut u64,
        resend_stale: bool,
    ) -> Result<(TcpStream, Answer), Failed>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let (pt, i) = (plan.pt, t.index);
        let b = &pt.pool.backends[i];
        let upstream = self.gw.upstream(pt, self.info);
        let idle = upstream.lean_idle(i);
        let cookie = pt.sticky.as_ref().and_then(|(name, values)| {
            (plan.sticky != Some(i)).then(|| balance::sticky_cookie(name, &values[i]))
        });
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                idle.and_then(|p| p.take(idle::stream_open))
            };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => {
                    let connect = upstream.connect_tcp(b.addr);
                    match tokio::time::timeout_at(t.answer_by(t.started), Box::pin(connect)).await {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => return Err(Failed::Backend(Failure::Connect(e))),
                        Err(_) => {
                            return Err(Failed::Backend(Failure::Connect("connect timeout".into())))
                        }
                    }
                }
            };
            // The connection's timer, moved rather than made anew (see `Deadline`).
            self.backend_timer
                .set(t.answer_by(tokio::time::Instant::now()));
            // The backend may answer before the body is over (a 413 or 401, say): then the
            // rest of it is not sent, and both connections close after the answer.
            let early = match write_watching(&mut conn, &self.out, &mut self.backend_timer).await {
                // Boxed: only bodies longer than their first read come here, and its state
                // should not size every connection's task.
                Wrote::All => {
                    *body_left > 0
                        && Box::pin(self.stream_body(io, &mut conn, body_left, t)).await?
                }
                Wrote::Answered => true,
                Wrote::Late => {
                    return Err(Failed::Backend(Failure::Timeout("took no request".into())))
                }
                // An idle connection the backend had closed: the request did not leave.
                Wrote::Failed(_) if reused => {
                    fresh_only = true;
                    continue;
                }
                Wrote::Failed(e) => return Err(Failed::Backend(Failure::Connect(e.to_string()))),
            };
            let answer_by = t.answer_by(tokio::time::Instant::now());
            match self
                .read_head(&mut conn, plan, cookie.as_deref(), answer_by, early)
                .await
            {
                Ok(answer) => return Ok((conn, answer)),
                // Closed before answering on a reused connection: the usual race with the
                // backend's keep-alive timer. Safe to send again where nothing can repeat.
                Err(Failed::Backend(Failure::Exchange(_)))
                    if reused && resend_stale && self.rbuf.is_empty() =>
                {
                    fresh_only = true;
                }
                // A new connection the backend closed without a byte of an answer.
                Err(Failed::Backend(Failure::Exchange(why)))
                    if !reused && self.rbuf.is_empty() && plan.body == 0 =>
                {
                    return Err(Failed::Backend(Failure::Unanswered(why)));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Relays the rest of a `Content-Length` request body (`left` bytes) to the backend;
    /// `true` if the backend started answering before it was over.
    async fn stream_body<IO>(
        &mut self,
        io: &mut IO,
        conn: &mut TcpStream,
        left: &mut u64,
        t: &Try,
    ) -> Result<bool, Failed>
    where
        IO: AsyncRead + Unpin,
    {
        // The backend's buffer is free until the response: it carries the body.
        let mut chunk = std::mem::take(&mut self.rbuf);
        chunk.resize(CHUNK, 0);
        let result = self.stream_through(io, conn, left, &mut chunk, t).await;
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
        t: &Try,
    ) -> Result<bool, Failed>
    where
        IO: AsyncRead + Unpin,
    {
        let mut peeked = [0u8; 1];
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
                // Bytes (or an end) from the backend before the body is over.
                _ = conn.peek(&mut peeked) => return Ok(true),
                () = self.client_timer.passed() => return Err(Failed::Client),
            };
            *left -= n as u64;
            // A backend that takes no byte of the body for the route's timeout is late
            // (nginx's proxy_send_timeout).
            self.backend_timer
                .set(tokio::time::Instant::now() + t.timeout);
            match write_watching(conn, &chunk[..n], &mut self.backend_timer).await {
                Wrote::All => {}
                Wrote::Answered => return Ok(true),
                Wrote::Late => {
                    let why = "took none of the request body in time";
                    return Err(Failed::Backend(Failure::Timeout(why.into())));
                }
                Wrote::Failed(e) => {
                    return Err(bad(&format!("failed while the request body was sent: {e}")))
                }
            }
        }
        Ok(false)
    }
}

/// How a write towards a backend ended.
enum Wrote {
    All,
    /// The backend started answering (or closed) while the write waited for room.
    Answered,
    /// The deadline passed first.
    Late,
    Failed(std::io::Error),
}

/// Writes `buf` to the backend, watching for its answer while the write waits: a backend
/// that refuses a request (a 413, a 401) may answer and stop reading it, and waiting on for
/// room it will never make would turn its answer into a timeout.
async fn write_watching(conn: &mut TcpStream, buf: &[u8], timer: &mut Deadline) -> Wrote {
    let (mut rd, mut wr) = conn.split();
    let mut peeked = [0u8; 1];
    tokio::select! {
        biased;
        r = wr.write_all(buf) => match r {
            Ok(()) => Wrote::All,
            Err(e) => Wrote::Failed(e),
        },
        _ = rd.peek(&mut peeked) => Wrote::Answered,
        () = timer.passed() => Wrote::Late,
    }
}

/// A failed exchange with backend (502, retried where replayable).
pub(super) fn bad(why: &str) -> Failed {
    Failed::Backend(Failure::Exchange(why.to_string()))
}
