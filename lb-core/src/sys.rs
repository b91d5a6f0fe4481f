//! The only `unsafe` in lb: `malloc_trim`, which gives glibc's free heap pages back to the
//! kernel (why and when: [`crate::reclaim`]), and `SIOCOUTQ`, how much a socket still has to
//! deliver. No I/O beyond that one query.

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

/// Bytes written to the TCP socket `fd` that its peer has not acknowledged yet (`SIOCOUTQ`,
/// tcp(7)): above zero while the kernel is still delivering what lb wrote, seconds after lb's
/// last write when the peer reads slowly. 0 when it cannot be asked (not a socket, closed).
#[cfg(target_os = "linux")]
pub fn unacked(fd: std::os::fd::RawFd) -> u32 {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (== TIOCOUTQ) writes one c_int through the pointer, which points at
    // `n`, alive for the call. Any fd value is memory-safe here: a wrong one only fails with
    // EBADF/ENOTTY, answered as 0.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if r == 0 {
        n.max(0) as u32
    } else {
        0
    }
}

/// Other platforms: unknown, so never reported as still delivering.
#[cfg(not(target_os = "linux"))]
pub fn unacked(_fd: std::os::fd::RawFd) -> u32 {
    0
}
