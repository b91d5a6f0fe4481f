//! Relay buffers, taken only while data flows and returned right after, so an idle
//! connection holds no buffer (HAProxy's model). A small per-thread free list keeps the
//! allocator out of the steady state.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// 16 KiB, HAProxy's default `tune.bufsize`: large enough for bulk reads, small enough to
/// keep memory per busy connection low.
pub const BUF_SIZE: usize = 16 * 1024;

/// Free buffers kept per thread; beyond this they go back to the allocator.
const MAX_FREE: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer on loan from the thread's free list.
pub struct Buf(Option<Box<[u8]>>);

impl Buf {
    pub fn take() -> Self {
        let b = FREE
            .with(|f| f.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        Self(Some(b))
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            FREE.with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < MAX_FREE {
                    f.push(b);
                }
            });
        }
    }
}
