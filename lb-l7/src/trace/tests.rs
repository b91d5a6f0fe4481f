use proptest::prelude::*;

use super::*;

const GOOD: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[test]
fn the_specs_example_is_read_and_written_back() {
    let p = parse(GOOD).expect("valid");
    assert_eq!(p.flags, 1);
    assert_eq!(
        p.parent_id,
        [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
    );
    assert_eq!(&p.format()[..], GOOD);
}

#[test]
fn hostile_or_malformed_values_are_refused() {
    let mut long = GOOD.to_vec();
    long.push(b'0');
    let upper = GOOD.to_ascii_uppercase();
    let bad: [&[u8]; 14] = [
        b"",
        &GOOD[..54],
        &long,
        &upper,
        b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
        b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        b"00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331_01",
        b"00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        b"0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0z",
        // A future version's extra part must be introduced by `-`.
        b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        b"00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ];
    for b in bad {
        assert_eq!(
            parse(b),
            None,
            "{:?} was accepted",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn future_versions_are_read_as_version_00() {
    let v = b"cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds";
    let p = parse(v).expect("read leniently");
    assert_eq!(&p.format()[..], GOOD);
    assert!(parse(&v[..LEN]).is_some());
}

#[test]
fn a_kept_trace_gets_a_new_span_whose_parent_is_the_clients() {
    let hop = decide(
        Claimed::One(GOOD),
        Claimed::One(b"congo=t61rcWkgMzE"),
        || 0x1234,
    );
    assert_eq!(
        &hop.traceparent()[..],
        b"00-0af7651916cd43dd8448eb211c80319c-0000000000001234-01"
    );
    assert_eq!(hop.parent, Some(parse(GOOD).expect("valid").parent_id));
    assert!(hop.keep_state);
    // Surrounding whitespace is the field's, not the value's.
    let mut spaced = b" ".to_vec();
    spaced.extend_from_slice(GOOD);
    spaced.push(b'\t');
    assert!(decide(Claimed::One(&spaced), Claimed::None, || 1)
        .parent
        .is_some());
}

#[test]
fn absent_invalid_or_repeated_parents_start_a_trace_and_drop_the_state() {
    let mut draws = [0x77u128, 0x99].into_iter();
    let hop = decide(Claimed::None, Claimed::One(b"a=b"), || {
        draws.next().expect("two draws")
    });
    assert_eq!(
        &hop.traceparent()[..],
        b"00-00000000000000000000000000000099-0000000000000077-01"
    );
    assert_eq!((hop.parent, hop.keep_state), (None, false));
    let many = Claimed::None.and(GOOD).and(GOOD);
    assert_eq!(decide(many, Claimed::One(b"a=b"), || 5).parent, None);
    let upper = GOOD.to_ascii_uppercase();
    assert_eq!(
        decide(Claimed::One(&upper), Claimed::None, || 5).parent,
        None
    );
    // Two tracestate fields: dropped, the trace kept.
    let hop = decide(
        Claimed::One(GOOD),
        Claimed::None.and(b"a=1").and(b"b=2"),
        || 5,
    );
    assert!(hop.parent.is_some() && !hop.keep_state);
    // Zero draws still give valid ids.
    let zero = decide(Claimed::None, Claimed::None, || 0);
    assert!(parse(&zero.traceparent()).is_some());
}

#[test]
fn tracestate_is_bounded() {
    let members = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert!(state_ok(members(32).as_bytes()));
    assert!(!state_ok(members(33).as_bytes()));
    assert!(state_ok(format!("k={}", "v".repeat(510)).as_bytes()));
    assert!(!state_ok(format!("k={}", "v".repeat(511)).as_bytes()));
    assert!(state_ok(b"rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,"));
    for bad in [&b"novalue"[..], b"=v", b"k=", b"a=b\r\nx: y", b"a=\x80"] {
        assert!(!state_ok(bad), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn whatever_is_parsed_formats_to_a_value_that_parses_the_same(
        value in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        if let Some(p) = parse(&value) {
            prop_assert_eq!(parse(&p.format()), Some(p));
            if value.len() == LEN && value.starts_with(b"00") {
                prop_assert_eq!(&p.format()[..], &value[..]);
            }
        }
    }

    #[test]
    fn valid_fields_round_trip(
        trace in any::<[u8; 16]>(), parent in any::<[u8; 8]>(), flags in any::<u8>(),
    ) {
        let p = TraceParent { trace_id: trace, parent_id: parent, flags };
        let text = p.format();
        let ok = trace != [0; 16] && parent != [0; 8];
        prop_assert_eq!(parse(&text), ok.then_some(p));
    }

    #[test]
    fn the_forwarded_traceparent_is_always_valid_and_keeps_a_valid_clients_trace(
        value in proptest::collection::vec(any::<u8>(), 0..80),
        bits in any::<u128>(),
    ) {
        let hop = decide(Claimed::One(&value), Claimed::None, || bits);
        let fwd = parse(&hop.traceparent()).expect("lb's traceparent is valid");
        if let Some(p) = parse(&value) {
            prop_assert_eq!(fwd.trace_id, p.trace_id);
            prop_assert_eq!(hop.parent, Some(p.parent_id));
        }
    }
}
