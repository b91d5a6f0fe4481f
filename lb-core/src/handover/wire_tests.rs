use super::*;
use proptest::prelude::*;

fn tcp() -> Frame {
    Frame::Tcp(Box::new(TcpConn {
        listener: "main".into(),
        pool: "p".into(),
        backend: "127.0.0.1:9001".into(),
        sni: String::new(),
        client: "127.0.0.1:40000".parse().expect("addr"),
        started_unix_ms: 1_700_000_000_000,
        relay: RelayState {
            from_client: 5,
            from_backend: 3,
            to_backend: b"lo".to_vec(),
            to_client: Vec::new(),
            client_done: false,
            backend_done: true,
        },
    }))
}

fn udp() -> Frame {
    Frame::Udp(Box::new(UdpFlow {
        listener: "dns".into(),
        socket: 1,
        pool: "p".into(),
        backend: "[::1]:53".into(),
        client: "[::1]:5353".parse().expect("addr"),
        idle_ms: 20,
        age_ms: 900,
        bytes_in: 64,
        replied: true,
    }))
}

#[test]
fn frames_round_trip_with_their_socket_counts() {
    for (f, sockets) in [(tcp(), 2), (udp(), 1), (Frame::UdpDone, 0)] {
        let bytes = encode(&f);
        let n = body_len([bytes[0], bytes[1], bytes[2], bytes[3]]).expect("len");
        assert_eq!(n, bytes.len() - 4);
        let back = decode(&bytes[4..]).expect("decodes");
        assert_eq!(back, f);
        assert_eq!(back.sockets(), sockets);
    }
}

#[test]
fn the_layout_is_as_documented() {
    assert_eq!(encode(&Frame::UdpDone), vec![0, 0, 0, 2, VERSION, 3]);
    let b = encode(&tcp());
    // version, kind, then "main" as a u16-prefixed string.
    assert_eq!(&b[4..12], &[1, 1, 0, 4, b'm', b'a', b'i', b'n']);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for f in [tcp(), udp()] {
        let b = encode(&f);
        for cut in 0..b.len() - 4 {
            assert_eq!(
                decode(&b[4..4 + cut]),
                Err(WireError::Short),
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn bad_fields_are_named() {
    let mut b = encode(&Frame::UdpDone);
    b[4] = 2;
    assert_eq!(decode(&b[4..]), Err(WireError::Version(2)));
    b[4] = VERSION;
    b[5] = 9;
    assert_eq!(decode(&b[4..]), Err(WireError::Kind(9)));
    let mut b = encode(&Frame::UdpDone);
    b.push(0);
    assert_eq!(decode(&b[4..]), Err(WireError::Trailing(1)));
    assert_eq!(
        body_len(u32::MAX.to_be_bytes()),
        Err(WireError::TooLong(u32::MAX as usize))
    );
    // Both directions ended: such a relay is never moved, so the frame is refused.
    let Frame::Tcp(mut c) = tcp() else {
        unreachable!("tcp() is a Tcp frame")
    };
    c.relay.client_done = true;
    c.relay.backend_done = true;
    let b = encode(&Frame::Tcp(c));
    assert_eq!(decode(&b[4..]), Err(WireError::Flags(3)));
    // A name whose bytes are not UTF-8.
    let mut b = encode(&udp());
    b[8] = 0xff;
    assert_eq!(decode(&b[4..]), Err(WireError::Utf8));
}

#[test]
fn an_oversized_carry_is_refused_before_it_is_read() {
    let mut b = vec![VERSION, 1];
    for _ in 0..4 {
        b.extend([0, 0]);
    }
    b.extend([4, 127, 0, 0, 1, 0, 80]);
    b.extend([0u8; 24]);
    b.push(0);
    b.extend(((MAX_CARRY + 1) as u32).to_be_bytes());
    assert_eq!(
        decode(&b),
        Err(WireError::Field("to_backend", MAX_CARRY + 1))
    );
}

#[test]
fn a_stream_of_frames_decodes_in_order() {
    let mut s = encode(&udp());
    s.extend(encode(&Frame::UdpDone));
    s.extend(encode(&tcp()));
    let got: Vec<_> = decode_stream(&s).into_iter().collect();
    assert_eq!(got, vec![Ok(udp()), Ok(Frame::UdpDone), Ok(tcp())]);
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    let name = "[a-z0-9.:\\[\\]-]{0,40}";
    let tcp = (
        (name, name, name, name),
        addr(),
        any::<[u64; 3]>(),
        0u8..3,
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|((l, p, b, s), client, [t, c, k], done, up, down)| {
            Frame::Tcp(Box::new(TcpConn {
                listener: l,
                pool: p,
                backend: b,
                sni: s,
                client,
                started_unix_ms: t,
                relay: RelayState {
                    from_client: c,
                    from_backend: k,
                    to_backend: up,
                    to_client: down,
                    client_done: done == 1,
                    backend_done: done == 2,
                },
            }))
        });
    let udp = (
        (name, name, name),
        any::<u32>(),
        addr(),
        any::<[u64; 3]>(),
        any::<bool>(),
    )
        .prop_map(|((l, p, b), socket, client, [i, a, n], replied)| {
            Frame::Udp(Box::new(UdpFlow {
                listener: l,
                socket,
                pool: p,
                backend: b,
                client,
                idle_ms: i,
                age_ms: a,
                bytes_in: n,
                replied,
            }))
        });
    prop_oneof![tcp, udp, Just(Frame::UdpDone)]
}

proptest! {
    /// Whatever is encoded decodes to itself, one frame after another.
    #[test]
    fn round_trip(frames in proptest::collection::vec(frame(), 0..6)) {
        let mut s = Vec::new();
        for f in &frames {
            s.extend(encode(f));
        }
        let got: Vec<Frame> = decode_stream(&s).into_iter().map(|r| r.expect("decodes")).collect();
        prop_assert_eq!(got, frames);
    }

    /// Arbitrary bytes never panic the decoder, and whatever decodes encodes back to the
    /// same bytes (the fuzz target's checks).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_stream(&bytes);
        if let Ok(f) = decode(&bytes) {
            prop_assert_eq!(&encode(&f)[4..], &bytes[..]);
        }
    }

    /// A flipped byte in a valid frame is either still a valid frame or an error.
    #[test]
    fn corruption_is_an_error_or_a_frame(f in frame(), at in any::<prop::sample::Index>(), x in 1u8..) {
        let mut b = encode(&f);
        let i = 4 + at.index(b.len() - 4);
        b[i] ^= x;
        if let Ok(g) = decode(&b[4..]) {
            prop_assert_eq!(&encode(&g)[4..], &b[4..]);
        }
    }
}
