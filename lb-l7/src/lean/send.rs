//! The way out of an exchange on the lean path: the request sent to a backend picked by the
//! pool's algorithm (on an idle connection or a new one), its body streamed, retried where
//! that is safe, and lb's own answer when no backend gives one.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use lb_core::pool::Attempt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::reply::write_answer;
use super::{head, pool, Answer, Failed, Next, Plan, Session, CHUNK, RESPONSE};
use crate::balance;
use crate::policy;

impl Session<'_> {
    /// Sends one request (retried where that is safe) and relays its response.
    pub(super) async fn exchange<IO>(&mut self, io: &mut IO, mut plan: Plan<'_>) -> Next
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
                p.info.query.as_deref(),
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
            (plan.sticky != Some(i)).then(|| balance::sticky_cookie(name, &values[i]))
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
}

pub(super) fn bad(why: &str) -> Failed {
    Failed::Exchange {
        status: 502,
        why: why.to_string(),
        kind: RESPONSE,
    }
}
