//! The client connection as the HTTP parser reads it, with every byte also shown to a
//! [`Tracker`] (until it stops following), so the gateway learns what the parser hides:
//! whether a request head carried both `Content-Length` and `Transfer-Encoding`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::framing::Tracker;

/// A client stream whose reads feed a shared [`Tracker`].
#[derive(Debug)]
pub struct Sniffed<IO> {
    io: IO,
    tracker: Arc<Mutex<Tracker>>,
    /// The tracker stopped following: reads pass straight through.
    off: bool,
}

impl<IO> Sniffed<IO> {
    pub fn new(io: IO, tracker: Arc<Mutex<Tracker>>) -> Self {
        Self {
            io,
            tracker,
            off: false,
        }
    }
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
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if !self.off {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let mut t = lock(&self.tracker);
                t.feed(new);
                let off = !t.following();
                drop(t);
                self.off = off;
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
