//! One admin connection under time limits: hyper's HTTP/1 server with a header timeout (the
//! wait for a request head, including the next one on a kept-alive connection), and an idle
//! clock the stream keeps, so a connection that neither sends nor reads (a stalled body
//! upload, a client that stops reading `/metrics`) is closed too.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::activity::Activity;

/// How long an admin client has to send a whole request head (slowloris), and how long a
/// kept-alive admin connection may wait for its next one.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// An admin connection with no bytes moving either way for this long is closed; the
/// dashboard polls every second.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one admin connection with `svc` until it ends or goes idle.
pub async fn serve<IO, S>(io: IO, peer: SocketAddr, svc: S)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
        Request<Incoming>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
    >,
{
    let clock = Activity::new();
    let io = Watched {
        io,
        clock: clock.clone(),
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = clock.idle_for(IDLE_TIMEOUT) => {
            tracing::debug!(client = %peer, "idle admin connection closed");
        }
    }
}

/// A stream that touches its [`Activity`] whenever bytes move.
#[derive(Debug)]
pub struct Watched<IO> {
    pub io: IO,
    pub clock: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    type Answer = Response<Full<Bytes>>;

    /// A 1 MiB answer to any request: more than the test pipe holds.
    fn big_answer() -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Answer,
        Error = Infallible,
        Future = std::future::Ready<Result<Answer, Infallible>>,
    > {
        hyper::service::service_fn(|_req| {
            std::future::ready(Ok(Response::new(Full::new(Bytes::from(vec![
                b'x';
                1 << 20
            ])))))
        })
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().expect("addr")
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_let_go_after_the_idle_timeout() {
        let (client, server) = tokio::io::duplex(4096);
        let (_r, mut w) = tokio::io::split(client);
        w.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("write");
        let start = Instant::now();
        // The answer (1 MiB) fills the pipe and the client never reads: only the idle clock
        // can end this.
        let ended =
            tokio::time::timeout(IDLE_TIMEOUT * 4, serve(server, peer(), big_answer())).await;
        assert!(ended.is_ok(), "still open after {:?}", IDLE_TIMEOUT * 4);
        assert_eq!(start.elapsed(), IDLE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_sent_head_is_cut_at_the_header_timeout_even_if_it_trickles() {
        let (mut client, server) = tokio::io::duplex(4096);
        let start = Instant::now();
        let serving = tokio::spawn(serve(server, peer(), big_answer()));
        // One byte a second keeps the idle clock happy but not the header timeout.
        for b in b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n".iter() {
            if client.write_all(&[*b]).await.is_err() || serving.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        serving.await.expect("served");
        assert!(start.elapsed() <= HEADER_TIMEOUT + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_either_way_move_the_idle_deadline() {
        let limit = Duration::from_secs(30);
        let (a, mut b) = tokio::io::duplex(64);
        let clock = Activity::new();
        let start = Instant::now();
        let mut w = Watched {
            io: a,
            clock: clock.clone(),
        };
        assert_eq!(clock.idle_at(limit), start + limit);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        w.read_exact(&mut one).await.expect("read");
        assert_eq!(clock.idle_at(limit), start + Duration::from_secs(40));
        tokio::time::advance(Duration::from_secs(5)).await;
        w.write_all(b"y").await.expect("write");
        assert_eq!(clock.idle_at(limit), start + Duration::from_secs(45));
    }
}
