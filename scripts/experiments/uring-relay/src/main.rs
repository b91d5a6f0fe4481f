//! The cheapest user-space L4 relay io_uring allows, to measure what io_uring would save lb's
//! relay (issue 19 asked for it to be tried where the measurement says it pays).
//!
//! One thread, one ring (`SINGLE_ISSUER | DEFER_TASKRUN`: completions are run only when this
//! thread waits, in batches), no parsing, no timers, no limits, no accounting. Per direction
//! one recv into a 16 KiB buffer, then one send of what came (resent until whole), then the
//! next recv; every operation of a turn goes in with one `io_uring_enter`. The backend is
//! connected with a blocking `connect` (instant on loopback). End of stream or an error on
//! either side shuts both sockets down; once the other direction's operation has come back
//! too, both are closed and the pair's buffers serve the next connection. Whatever this spends per request is a floor for an io_uring lb:
//! lb would add its decisions on top.
//!
//! usage: uring-relay LISTEN=BACKEND [LISTEN=BACKEND ...]
//! e.g.   uring-relay 127.0.0.1:18207=127.0.0.1:18101 127.0.0.1:18257=127.0.0.1:18102

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

const BUF: usize = 16 * 1024;

/// One direction of a relayed connection: bytes read from `from` are written to `to`.
struct Dir {
    from: RawFd,
    to: RawFd,
    buf: Box<[u8]>,
    len: usize,
    sent: usize,
}

impl Dir {
    fn new(from: RawFd, to: RawFd) -> Dir {
        Dir {
            from,
            to,
            buf: vec![0; BUF].into_boxed_slice(),
            len: 0,
            sent: 0,
        }
    }
}

struct Pair {
    dirs: [Dir; 2],
    open: bool,
    /// Operations still in the ring after the pair was shut down.
    pending: u8,
}

/// What a completion is for: bit 0 send (else recv), bit 1 the direction, the rest the pair.
/// Accepts use the top values, one per listener.
fn token(pair: usize, dir: usize, send: bool) -> u64 {
    ((pair as u64) << 2) | ((dir as u64) << 1) | u64::from(send)
}
const ACCEPT: u64 = u64::MAX - 1024;

fn push(ring: &mut IoUring, e: squeue::Entry) {
    // SAFETY: every buffer an entry points at lives in a `Pair`, whose buffers are never freed
    // while the ring runs and are reused only once none of its operations is in the ring;
    // accepts pass null addresses.
    unsafe {
        while ring.submission().push(&e).is_err() {
            ring.submit().expect("submit");
        }
    }
}

fn accept(fd: RawFd, listener: usize) -> squeue::Entry {
    opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
        .build()
        .user_data(ACCEPT + listener as u64)
}

fn recv(d: &mut Dir, pair: usize, dir: usize) -> squeue::Entry {
    opcode::Recv::new(types::Fd(d.from), d.buf.as_mut_ptr(), BUF as u32)
        .build()
        .user_data(token(pair, dir, false))
}

fn send(d: &Dir, pair: usize, dir: usize) -> squeue::Entry {
    let rest = &d.buf[d.sent..d.len];
    opcode::Send::new(types::Fd(d.to), rest.as_ptr(), rest.len() as u32)
        .build()
        .user_data(token(pair, dir, true))
}

fn nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            4,
        );
    }
}

fn main() {
    let routes: Vec<(TcpListener, String)> = std::env::args()
        .skip(1)
        .map(|a| {
            let (listen, backend) = a.split_once('=').expect("LISTEN=BACKEND");
            (
                TcpListener::bind(listen).expect("bind"),
                backend.to_string(),
            )
        })
        .collect();
    assert!(
        !routes.is_empty(),
        "usage: uring-relay LISTEN=BACKEND [LISTEN=BACKEND ...]"
    );
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(4096)
        .expect("io_uring (Linux 6.1+)");
    for (i, (l, _)) in routes.iter().enumerate() {
        push(&mut ring, accept(l.as_raw_fd(), i));
    }
    let mut pairs: Vec<Pair> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    loop {
        ring.submit_and_wait(1).expect("io_uring_enter");
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (what, res) in done {
            if what >= ACCEPT {
                let (l, backend) = &routes[(what - ACCEPT) as usize];
                if res >= 0 {
                    let client = res;
                    match TcpStream::connect(backend) {
                        Ok(b) => {
                            let b = b.into_raw_fd();
                            nodelay(b);
                            nodelay(client);
                            let i = match free.pop() {
                                Some(i) => {
                                    let p = &mut pairs[i];
                                    (p.dirs[0].from, p.dirs[0].to) = (client, b);
                                    (p.dirs[1].from, p.dirs[1].to) = (b, client);
                                    p.open = true;
                                    i
                                }
                                None => {
                                    let dirs = [Dir::new(client, b), Dir::new(b, client)];
                                    pairs.push(Pair {
                                        dirs,
                                        open: true,
                                        pending: 0,
                                    });
                                    pairs.len() - 1
                                }
                            };
                            for dir in 0..2 {
                                let e = recv(&mut pairs[i].dirs[dir], i, dir);
                                push(&mut ring, e);
                            }
                        }
                        // SAFETY: the accepted descriptor is ours alone.
                        Err(_) => unsafe {
                            libc::close(client);
                        },
                    }
                }
                push(&mut ring, accept(l.as_raw_fd(), (what - ACCEPT) as usize));
                continue;
            }
            let (i, dir, is_send) = (
                (what >> 2) as usize,
                ((what >> 1) & 1) as usize,
                what & 1 == 1,
            );
            let p = &mut pairs[i];
            if !p.open {
                p.pending -= 1;
            } else if res <= 0 {
                // The other direction's operation is still in the ring: shutting the sockets
                // down ends it, and its buffer is not reused before it comes back.
                p.open = false;
                p.pending = 1;
                // SAFETY: both descriptors belong to this open pair.
                unsafe {
                    libc::shutdown(p.dirs[0].from, libc::SHUT_RDWR);
                    libc::shutdown(p.dirs[0].to, libc::SHUT_RDWR);
                }
            }
            if !p.open {
                if p.pending == 0 {
                    // SAFETY: nothing in the ring refers to them any more; closed once.
                    unsafe {
                        libc::close(p.dirs[0].from);
                        libc::close(p.dirs[0].to);
                    }
                    free.push(i);
                }
                continue;
            }
            let d = &mut p.dirs[dir];
            let next = if is_send {
                d.sent += res as usize;
                if d.sent < d.len {
                    send(d, i, dir)
                } else {
                    recv(d, i, dir)
                }
            } else {
                d.len = res as usize;
                d.sent = 0;
                send(d, i, dir)
            };
            push(&mut ring, next);
        }
    }
}
