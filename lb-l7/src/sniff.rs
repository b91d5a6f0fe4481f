//! The client connection as the HTTP parser reads it, with every byte also shown to a
//! [`Tracker`] (until it stops following), so the gateway learns what the parser hides:
//! whether a request head carried both `Content-Length` and `Transfer-Encoding`; and the
//! listener's `header_timeout`, counted from a head's first byte (an idle keep-alive
//! connection waits for its next request under `idle_timeout` instead).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::framing::Tracker;

/// A client stream whose reads feed a shared [`Tracker`].
#[derive(Debug)]
pub struct Sniffed<IO> {
    io: IO,
    tracker: Arc<Mutex<Tracker>>,
    /// The tracker stopped following: reads pass straight through.
    off: bool,
    header_timeout: Duration,
    /// Armed while a request head has begun and not ended.
    head: Option<Pin<Box<Sleep>>>,
}

/// What a read fails with when a head took longer than `header_timeout`.
pub const HEAD_TIMEOUT: &str = "request head not received in time";

impl<IO> Sniffed<IO> {
    pub fn new(io: IO, tracker: Arc<Mutex<Tracker>>, header_timeout: Duration) -> Self {
        Self {
            io,
            tracker,
            off: false,
            header_timeout,
            head: None,
        }
    }
}

/// Whether `e` is this module's head timeout.
pub fn is_head_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| {
        e.downcast_ref::<io::Error>().is_some_and(|io| {
            io.kind() == io::ErrorKind::TimedOut && io.to_string() == HEAD_TIMEOUT
        })
    })
}

/// The tracker's lock; a panic while it was held leaves plain data, so carry on with it.
pub fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<IO: AsyncRead + Unpin> AsyncRead for Sniffed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if Pin::new(&mut self.io).poll_read(cx, buf)?.is_pending() {
            if let Some(head) = self.head.as_mut() {
                ready!(head.as_mut().poll(cx));
                // A switch of protocols ends the head's clock: what follows is a tunnel.
                if lock(&self.tracker).switched() {
                    self.head = None;
                    return Poll::Pending;
                }
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, HEAD_TIMEOUT)));
            }
            return Poll::Pending;
        }
        if !self.off {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let mut t = lock(&self.tracker);
                t.feed(new);
                let (following, in_head) = (t.following(), t.in_head());
                drop(t);
                self.off = !following;
                match (in_head, self.head.is_some()) {
                    (true, false) => {
                        self.head = Some(Box::pin(tokio::time::sleep(self.header_timeout)));
                    }
                    // The head is over. (A tracker that gave up mid-head, on a head too large
                    // to follow, leaves the clock running for the rest of that head.)
                    (false, true) if following => self.head = None,
                    _ => {}
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Sniffed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
