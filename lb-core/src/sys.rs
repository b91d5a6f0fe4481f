//! The only `unsafe` in lb: `malloc_trim`, which gives glibc's free heap pages back to the
//! kernel (why and when: [`crate::reclaim`]). No I/O.

/// Returns the free pages of every malloc arena to the kernel. Takes milliseconds for a heap
/// of hundreds of MB, holding each arena's lock in turn: call it off the workers.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim takes no pointers and only reorganises glibc's own free lists
    // under its arena locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl, macOS) return memory their own way; nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
