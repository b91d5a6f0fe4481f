//! The parker against real sockets on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Parked, Parker};

/// Sends its label and the woken stream to the test.
struct Wake(u32, mpsc::UnboundedSender<(u32, tokio::net::TcpStream)>);

impl Parked for Wake {
    fn wake(self, stream: tokio::net::TcpStream, _deadline: Instant) {
        let _ = self.1.send((self.0, stream));
    }
}

/// A connected pair: (the test's blocking client end, the served end, registered with tokio).
fn pair(l: &TcpListener) -> (TcpStream, tokio::net::TcpStream) {
    let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (s, _) = l.accept().expect("accept");
    s.set_nonblocking(true).expect("nonblocking");
    (c, tokio::net::TcpStream::from_std(s).expect("register"))
}

/// Reads until the socket would block: tokio then knows it is not readable (a socket read
/// only up to what was asked still counts as readable, and would be given straight back).
fn emptied(s: &tokio::net::TcpStream) {
    while s.try_read(&mut [0u8; 64]).is_ok_and(|n| n > 0) {}
}

fn park(
    parker: &Parker<Wake>,
    s: tokio::net::TcpStream,
    w: Wake,
    at: Instant,
    group: usize,
    ends: &[CancellationToken],
) {
    assert!(parker.park(s, w, at, group, ends).is_ok(), "given back");
}

/// Whether the client end sees the served end closed (EOF) within a few seconds.
async fn closed(mut c: TcpStream) -> bool {
    tokio::task::spawn_blocking(move || {
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        matches!(c.read(&mut [0u8; 8]), Ok(0))
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn bytes_wake_the_right_connection_and_nothing_else_is_touched() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let parker = Parker::start();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let far = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::new();
    for i in 0..3 {
        let (c, s) = pair(&l);
        park(&parker, s, Wake(i, tx.clone()), far, 1, &[]);
        clients.push(c);
    }
    assert_eq!(parker.len(), 3);
    clients[1].write_all(b"GET").expect("write");
    let (which, mut s) = rx.recv().await.expect("woken");
    assert_eq!(which, 1);
    // Handed back whole: the bytes are still there to read.
    let mut got = [0u8; 3];
    s.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"GET");
    emptied(&s);
    assert_eq!(parker.len(), 2);
    // A peer's close wakes too (the owner reads the EOF and closes).
    clients[2].shutdown(std::net::Shutdown::Write).expect("fin");
    let (which, _) = rx.recv().await.expect("woken by FIN");
    assert_eq!(which, 2);
    // Parked again after a wake: the same socket may come back any number of times.
    park(&parker, s, Wake(1, tx.clone()), far, 1, &[]);
    clients[1].write_all(b"!").expect("write");
    assert_eq!(rx.recv().await.expect("woken again").0, 1);
    assert_eq!(parker.len(), 1);
}

#[tokio::test]
async fn a_deadline_closes_only_its_own_connection_when_it_passes() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let parker = Parker::start();
    let (tx, _rx) = mpsc::unbounded_channel();
    let (soon, s) = pair(&l);
    let start = Instant::now();
    park(
        &parker,
        s,
        Wake(0, tx.clone()),
        start + Duration::from_millis(300),
        1,
        &[],
    );
    let (late, s) = pair(&l);
    park(
        &parker,
        s,
        Wake(1, tx.clone()),
        start + Duration::from_secs(60),
        1,
        &[],
    );
    assert!(closed(soon).await);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(parker.len(), 1);
    drop(late);
}

#[tokio::test]
async fn a_group_closes_when_one_of_its_ends_is_reached_and_refuses_after() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let parker = Parker::start();
    let (tx, _rx) = mpsc::unbounded_channel();
    let far = Instant::now() + Duration::from_secs(60);
    let (drain, cancel) = (CancellationToken::new(), CancellationToken::new());
    let ends = [drain.clone(), cancel.clone()];
    let (a, s) = pair(&l);
    park(&parker, s, Wake(0, tx.clone()), far, 7, &ends);
    let (b, s) = pair(&l);
    park(&parker, s, Wake(1, tx.clone()), far, 7, &ends);
    let (other, s) = pair(&l);
    park(&parker, s, Wake(2, tx.clone()), far, 8, &[]);
    cancel.cancel();
    assert!(closed(a).await);
    assert!(closed(b).await);
    assert_eq!(parker.len(), 1, "another group stays parked");
    // Its end reached, the group takes no one more: closed at once.
    let (c, s) = pair(&l);
    park(&parker, s, Wake(3, tx.clone()), far, 7, &ends);
    assert!(closed(c).await);
    assert_eq!(parker.len(), 1);
    drop(other);
}

#[test]
fn a_runtime_shutting_down_closes_what_its_parker_holds() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (c, parker) = rt.block_on(async {
        let (c, s) = pair(&l);
        let parker = Parker::start();
        let (tx, _rx) = mpsc::unbounded_channel();
        let far = Instant::now() + Duration::from_secs(60);
        park(&parker, s, Wake(0, tx), far, 1, &[]);
        // Let the parker's task start.
        tokio::task::yield_now().await;
        (c, parker)
    });
    drop(rt);
    assert!(!parker.alive());
    assert!(parker.is_empty());
    let mut c = c;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(matches!(c.read(&mut [0u8; 8]), Ok(0)));
}

#[tokio::test]
async fn bytes_already_there_give_the_connection_back_and_a_stale_wake_takes_nothing() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let parker = Parker::start();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let far = Instant::now() + Duration::from_secs(60);
    let (mut c, s) = pair(&l);
    c.write_all(b"x").expect("write");
    // Once tokio has seen the byte, parking gives the connection straight back.
    s.readable().await.expect("readable");
    let Err((s, w)) = parker.park(s, Wake(5, tx.clone()), far, 1, &[]) else {
        panic!("parked a readable connection");
    };
    assert_eq!(w.0, 5);
    assert!(parker.is_empty());
    // Read it empty: then it parks, and a slot used again under a new token is not woken
    // by the old one's socket.
    let mut s = s;
    s.read_exact(&mut [0u8; 1]).await.expect("read");
    emptied(&s);
    park(&parker, s, Wake(6, tx.clone()), far, 1, &[]);
    c.write_all(b"y").expect("write");
    let (which, s) = rx.recv().await.expect("woken");
    assert_eq!(which, 6);
    let (mut c2, s2) = pair(&l);
    park(&parker, s2, Wake(7, tx.clone()), far, 1, &[]);
    // The first socket (read by no one) says more; it is not parked, so nothing wakes.
    c.write_all(b"z").expect("write");
    drop(s);
    c2.write_all(b"!").expect("write");
    assert_eq!(rx.recv().await.expect("woken").0, 7);
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_runtime_shutting_down_before_its_parker_ever_ran_still_closes_what_it_holds() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `block_on` returns as soon as this block is done: the parker's task is spawned but
    // never polled before the runtime drops it.
    let (mut c, parker) = rt.block_on(async {
        let (c, s) = pair(&l);
        let parker = Parker::start();
        let (tx, _rx) = mpsc::unbounded_channel();
        let far = Instant::now() + Duration::from_secs(60);
        park(&parker, s, Wake(0, tx), far, 1, &[]);
        (c, parker)
    });
    drop(rt);
    assert!(!parker.alive(), "a parker whose runtime is gone takes more");
    assert!(
        parker.is_empty(),
        "its connections stay open, held by its handles"
    );
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(matches!(c.read(&mut [0u8; 8]), Ok(0)));
}

/// Wakes fired on another thread race parking (lb's work-stealing runtime: the reactor runs
/// on whichever worker polls it): every byte written wakes its connection exactly once,
/// whether it came before, during or after the park.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_on_other_threads_racing_parks_are_neither_lost_nor_doubled() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let parker = Parker::start();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let far = Instant::now() + Duration::from_secs(60);
    let n = 32;
    let mut clients = Vec::new();
    for i in 0..n {
        let (c, s) = pair(&l);
        park(&parker, s, Wake(i, tx.clone()), far, 1, &[]);
        clients.push(c);
    }
    for round in 0..200 {
        // The clients write from a thread of their own while last round's connections are
        // parked again on the runtime's workers.
        let writer = std::thread::spawn(move || {
            for c in &mut clients {
                c.write_all(b"x").expect("write");
            }
            clients
        });
        let mut seen = vec![0u32; n as usize];
        for _ in 0..n {
            let (i, mut s) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("round {round}: a wake was lost ({seen:?})"))
                .expect("woken");
            seen[i as usize] += 1;
            s.read_exact(&mut [0u8; 1]).await.expect("read");
            emptied(&s);
            let (parker, tx) = (parker.clone(), tx.clone());
            tokio::spawn(async move {
                if let Err((s, w)) = parker.park(s, Wake(i, tx), far, 1, &[]) {
                    w.wake(s, far);
                }
            });
        }
        clients = writer.join().expect("writer");
        assert!(seen.iter().all(|&k| k == 1), "round {round}: {seen:?}");
    }
}
