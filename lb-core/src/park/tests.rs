//! The parker against real sockets on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Parked, Parker};

/// Sends its label and the woken stream to the test.
struct Wake(u32, mpsc::UnboundedSender<(u32, std::net::TcpStream)>);

impl Parked for Wake {
    fn wake(self, stream: std::net::TcpStream) {
        let _ = self.1.send((self.0, stream));
    }
}

/// A connected pair: (the test's client end, the served end, non-blocking as tokio leaves it).
fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (s, _) = l.accept().expect("accept");
    s.set_nonblocking(true).expect("nonblocking");
    (c, s)
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
    let parker = Parker::start().expect("parker");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let far = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::new();
    for i in 0..3 {
        let (c, s) = pair(&l);
        parker
            .park(s, Wake(i, tx.clone()), far, 1, &[])
            .expect("park");
        clients.push(c);
    }
    assert_eq!(parker.len(), 3);
    clients[1].write_all(b"GET").expect("write");
    let (which, mut s) = rx.recv().await.expect("woken");
    assert_eq!(which, 1);
    // Handed back whole: the bytes are still there to read.
    let mut got = [0u8; 3];
    s.set_nonblocking(false).expect("blocking");
    s.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"GET");
    assert_eq!(parker.len(), 2);
    // A peer's close wakes too (the owner reads the EOF and closes).
    clients[2].shutdown(std::net::Shutdown::Write).expect("fin");
    let (which, _) = rx.recv().await.expect("woken by FIN");
    assert_eq!(which, 2);
    // Parked again after a wake: the same socket may come back any number of times.
    parker
        .park(s, Wake(1, tx.clone()), far, 1, &[])
        .expect("park again");
    clients[1].write_all(b"!").expect("write");
    assert_eq!(rx.recv().await.expect("woken again").0, 1);
    assert_eq!(parker.len(), 1);
}

#[tokio::test]
async fn a_deadline_closes_only_its_own_connection_when_it_passes() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let parker = Parker::start().expect("parker");
    let (tx, _rx) = mpsc::unbounded_channel();
    let (soon, s) = pair(&l);
    let start = Instant::now();
    parker
        .park(
            s,
            Wake(0, tx.clone()),
            start + Duration::from_millis(300),
            1,
            &[],
        )
        .expect("park");
    let (late, s) = pair(&l);
    parker
        .park(
            s,
            Wake(1, tx.clone()),
            start + Duration::from_secs(60),
            1,
            &[],
        )
        .expect("park");
    assert!(closed(soon).await);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(parker.len(), 1);
    drop(late);
}

#[tokio::test]
async fn a_group_closes_when_one_of_its_ends_is_reached_and_refuses_after() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let parker = Parker::start().expect("parker");
    let (tx, _rx) = mpsc::unbounded_channel();
    let far = Instant::now() + Duration::from_secs(60);
    let (drain, cancel) = (CancellationToken::new(), CancellationToken::new());
    let ends = [drain.clone(), cancel.clone()];
    let (a, s) = pair(&l);
    parker
        .park(s, Wake(0, tx.clone()), far, 7, &ends)
        .expect("park");
    let (b, s) = pair(&l);
    parker
        .park(s, Wake(1, tx.clone()), far, 7, &ends)
        .expect("park");
    let (other, s) = pair(&l);
    parker
        .park(s, Wake(2, tx.clone()), far, 8, &[])
        .expect("park");
    cancel.cancel();
    assert!(closed(a).await);
    assert!(closed(b).await);
    assert_eq!(parker.len(), 1, "another group stays parked");
    // Its end reached, the group takes no one more.
    let (c, s) = pair(&l);
    assert!(parker.park(s, Wake(3, tx.clone()), far, 7, &ends).is_err());
    assert!(closed(c).await);
    drop(other);
}

#[test]
fn a_runtime_shutting_down_closes_what_its_parker_holds() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (c, s) = pair(&l);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let parker = rt.block_on(async {
        let parker = Parker::start().expect("parker");
        let (tx, _rx) = mpsc::unbounded_channel();
        let far = Instant::now() + Duration::from_secs(60);
        parker.park(s, Wake(0, tx), far, 1, &[]).expect("park");
        // Let the parker's task start.
        tokio::task::yield_now().await;
        parker
    });
    drop(rt);
    assert!(!parker.alive());
    assert!(parker.is_empty());
    let mut c = c;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(matches!(c.read(&mut [0u8; 8]), Ok(0)));
}
