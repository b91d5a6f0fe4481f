//! The bytes an HTTP/1.1 backend connection of the general path moves, heads included: hyper
//! writes and reads the heads itself, so the connection is counted where its bytes pass
//! ([`Metered`]) and an exchange takes the difference between its start and its end
//! ([`Mark`]). One exchange at a time uses an HTTP/1.1 connection, so the difference is that
//! exchange's own. The lean path counts the same bytes from its own buffers. No I/O of its
//! own: a wrapper of a stream.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's byte counts: `written` to the backend, `read` from it.
#[derive(Debug, Default)]
pub struct Wire {
    written: AtomicU64,
    read: AtomicU64,
}

impl Wire {
    /// Where the connection's counts stand now, for [`Mark::moved`].
    pub fn mark(self: &Arc<Self>) -> Mark {
        Mark {
            written: self.written.load(Relaxed),
            read: self.read.load(Relaxed),
            wire: self.clone(),
        }
    }
}

/// A connection's counts at the start of one exchange.
#[derive(Debug)]
pub struct Mark {
    wire: Arc<Wire>,
    written: u64,
    read: u64,
}

impl Mark {
    /// Bytes written to and read from the backend since the mark: `(to_backend, from_backend)`.
    pub fn moved(&self) -> (u64, u64) {
        (
            self.wire.written.load(Relaxed) - self.written,
            self.wire.read.load(Relaxed) - self.read,
        )
    }
}

/// A stream whose bytes are added to a [`Wire`] as they pass.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    wire: Arc<Wire>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, wire: Arc<Wire>) -> Self {
        Self { inner, wire }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.wire.read.fetch_add(n as u64, Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.wire.written.fetch_add(n as u64, Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.wire.written.fetch_add(n as u64, Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_mark_sees_only_the_bytes_after_it() {
        let (a, mut b) = tokio::io::duplex(64);
        let wire = Arc::new(Wire::default());
        let mut m = Metered::new(a, wire.clone());
        m.write_all(b"before").await.expect("write");
        let mark = wire.mark();
        m.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        b.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .expect("write");
        let mut got = [0u8; 64];
        let n = m.read(&mut got).await.expect("read");
        assert_eq!(mark.moved(), (18, n as u64));
        assert_eq!(n, 27);
    }
}
