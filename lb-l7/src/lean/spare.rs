//! Buffers lent to a connection only while it has a request in hand: an idle keep-alive
//! connection holds none (as nginx and HAProxy release theirs), and a busy worker takes
//! them from its own small stock instead of the allocator.

use std::cell::RefCell;

/// What a lent buffer holds at least; larger ones are shrunk back when returned.
pub const ROOM: usize = 4 * 1024;
/// Buffers kept per thread; more are freed.
const KEEP: usize = 256;

thread_local! {
    static STOCK: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least [`ROOM`] bytes of capacity.
pub fn take() -> Vec<u8> {
    STOCK
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(ROOM))
}

/// Returns a buffer (its contents are dropped); leaves an empty, unallocated one behind.
pub fn give(buf: &mut Vec<u8>) {
    let mut buf = std::mem::take(buf);
    if buf.capacity() < ROOM {
        return;
    }
    buf.clear();
    buf.shrink_to(ROOM);
    STOCK.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEEP {
            s.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lent_buffers_come_back_empty_and_bounded() {
        let mut a = take();
        assert!(a.is_empty() && a.capacity() >= ROOM);
        a.extend_from_slice(&[7; 3 * ROOM]);
        give(&mut a);
        assert_eq!(a.capacity(), 0);
        let b = take();
        assert!(b.is_empty() && b.capacity() >= ROOM && b.capacity() < 3 * ROOM);
        let mut many: Vec<Vec<u8>> = (0..KEEP + 10).map(|_| take()).collect();
        for m in &mut many {
            give(m);
        }
        assert_eq!(STOCK.with(|s| s.borrow().len()), KEEP);
    }
}
