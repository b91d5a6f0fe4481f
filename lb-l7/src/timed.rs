//! A client connection with lb's time limits on it, for both HTTP paths: a write the client
//! does not let finish within the listener's `idle_timeout` fails (a client that stops reading
//! cannot hold a connection, its buffers and its backend forever, as nginx's `send_timeout`),
//! and, once the general path serves it, the time of the last byte moved either way, which
//! its idle check reads (HTTP/2 connections have no request head to time).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub use lb_core::activity::Activity;

/// A stream whose writes may stall for at most `limit`.
#[derive(Debug)]
pub struct Timed<IO> {
    io: IO,
    limit: Duration,
    /// Armed while a write waits for the client to read.
    stall: Option<Pin<Box<Sleep>>>,
    /// Set once the general path serves the connection.
    activity: Option<Arc<Activity>>,
}

impl<IO> Timed<IO> {
    pub fn new(io: IO, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stall: None,
            activity: None,
        }
    }

    /// The stream, its limits dropped.
    pub fn into_inner(self) -> IO {
        self.io
    }

    /// How long a write may stall.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// From now on, records when bytes move.
    pub fn track(&mut self, activity: Arc<Activity>) {
        activity.touch();
        self.activity = Some(activity);
    }

    fn moved(&mut self) {
        self.stall = None;
        if let Some(a) = &self.activity {
            a.touch();
        }
    }

    /// A write that returned `Pending`: fails once it has waited `limit`.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let timer = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {limit:?}"),
        ))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Timed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            if let Some(a) = &self.activity {
                a.touch();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Timed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.moved();
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.moved();
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(r) => {
                self.stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
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

    #[tokio::test(start_paused = true)]
    async fn a_write_the_reader_never_takes_fails_after_the_limit() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = Timed::new(a, Duration::from_secs(30));
        let start = Instant::now();
        let chunk = vec![7u8; 4096];
        let err = w.write_all(&chunk).await.expect_err("stalls");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // A reader that keeps taking: no error, however long it all takes.
        let mut w = Timed::new(w.io, Duration::from_secs(30));
        let mut sink = vec![0u8; 1024];
        // What the failed write left in the pipe.
        b.read_exact(&mut sink).await.expect("drain");
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while got < 64 * 1024 {
                tokio::time::sleep(Duration::from_secs(10)).await;
                got += b.read(&mut sink).await.expect("read");
            }
        });
        w.write_all(&vec![1u8; 64 * 1024])
            .await
            .expect("a slow reader is fine");
        reader.await.expect("reader");
    }

    #[tokio::test(start_paused = true)]
    async fn activity_moves_with_bytes_either_way() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = Timed::new(a, Duration::from_secs(30));
        let activity = Activity::new();
        io.track(activity.clone());
        let limit = Duration::from_secs(60);
        let start = Instant::now();
        assert_eq!(activity.idle_at(limit), start + limit);
        tokio::time::advance(Duration::from_secs(5)).await;
        b.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        io.read_exact(&mut one).await.expect("read");
        assert_eq!(activity.idle_at(limit), start + Duration::from_secs(65));
        tokio::time::advance(Duration::from_secs(5)).await;
        io.write_all(b"y").await.expect("write");
        assert_eq!(activity.idle_at(limit), start + Duration::from_secs(70));
    }
}
