use super::*;
use proptest::prelude::*;

/// Inspects a head given as `(name, value)` pairs.
fn check(
    method: &Method,
    target: &str,
    version: Version,
    pairs: &[(&str, &str)],
) -> Result<Facts<'static>, Refusal> {
    let uri: &'static Uri = Box::leak(Box::new(target.parse().expect("target")));
    let method: &'static Method = Box::leak(Box::new(method.clone()));
    let fields: &'static [(String, Vec<u8>)] = Box::leak(
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let head = Head {
        method,
        version,
        uri,
        fields: fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        protocol: None,
        end_stream: true,
        local: "192.0.2.1:8080",
    };
    inspect(head, &Limits::default())
}

fn check11(pairs: &[(&str, &str)]) -> Result<Facts<'static>, Refusal> {
    check(&Method::POST, "/x", Version::HTTP_11, pairs)
}

#[test]
fn ordinary_requests_pass_with_their_framing() {
    let f = check11(&[("host", "a")]).expect("plain");
    assert_eq!(
        (f.authority, f.body, f.close),
        (Some("a"), Body::None, false)
    );
    let f = check11(&[("Host", "a:8080"), ("Content-Length", "5")]).expect("length");
    assert_eq!((f.authority, f.body), (Some("a:8080"), Body::Length(5)));
    let f = check11(&[("host", "a"), ("transfer-encoding", "gzip, chunked")]).expect("chunked");
    assert_eq!(f.body, Body::Chunked);
    for same in [
        &[("content-length", "5"), ("content-length", "5")][..],
        &[("content-length", "5, 5")],
    ] {
        let mut pairs = vec![("host", "a")];
        pairs.extend_from_slice(same);
        assert_eq!(check11(&pairs).expect("agreeing").body, Body::Length(5));
    }
}

#[test]
fn smuggling_shapes_are_refused() {
    let cases: &[(&[(&str, &str)], Refusal)] = &[
        (
            &[
                ("host", "a"),
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
            ],
            Refusal::LengthAndChunked,
        ),
        (
            &[
                ("host", "a"),
                ("transfer-encoding", "chunked"),
                ("content-length", "5"),
            ],
            Refusal::LengthAndChunked,
        ),
        (
            &[
                ("host", "a"),
                ("content-length", "5"),
                ("content-length", "6"),
            ],
            Refusal::BadContentLength,
        ),
        (
            &[("host", "a"), ("content-length", "5, 6")],
            Refusal::BadContentLength,
        ),
        (
            &[("host", "a"), ("content-length", "+5")],
            Refusal::BadContentLength,
        ),
        (
            &[("host", "a"), ("content-length", "")],
            Refusal::BadContentLength,
        ),
        (
            &[("host", "a"), ("transfer-encoding", "chunked, gzip")],
            Refusal::BadTransferEncoding,
        ),
        (
            &[("host", "a"), ("transfer-encoding", "xchunked")],
            Refusal::BadTransferEncoding,
        ),
        (
            &[
                ("host", "a"),
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "identity"),
            ],
            Refusal::BadTransferEncoding,
        ),
        (&[("host", "a"), ("host", "b")], Refusal::BadHost),
        (&[], Refusal::BadHost),
        (&[("host", "")], Refusal::BadHost),
        (&[("host", "a b")], Refusal::BadHost),
        (&[("host", "user@a")], Refusal::BadHost),
        (&[("host", "a/x")], Refusal::BadHost),
    ];
    for (pairs, want) in cases {
        assert_eq!(check11(pairs).as_ref().err(), Some(want), "{pairs:?}");
        assert_eq!(want.status(), 400);
    }
    let chunked_10 = check(
        &Method::POST,
        "/",
        Version::HTTP_10,
        &[("host", "a"), ("transfer-encoding", "chunked")],
    );
    assert_eq!(chunked_10, Err(Refusal::BadTransferEncoding));
}

#[test]
fn connection_cannot_remove_what_lb_writes() {
    let f = check11(&[
        ("host", "a"),
        ("content-length", "4"),
        (
            "connection",
            "content-length, Host, transfer-encoding, x-forwarded-for, te, X-Secret, keep-alive",
        ),
        ("x-secret", "1"),
    ])
    .expect("valid");
    assert_eq!(f.named, ["X-Secret"]);
    assert_eq!(f.body, Body::Length(4));
    assert!(!f.passes("x-secret") && !f.passes("X-SECRET"));
    assert!(f.passes("x-kept"));
    // The framing field is lb's to write, whoever names it.
    assert!(!f.passes("content-length") && !f.passes("transfer-encoding"));
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "trailer",
        "te",
    ] {
        assert!(!f.passes(name), "{name}");
    }
}

#[test]
fn the_target_authority_replaces_host() {
    let f = check(
        &Method::GET,
        "http://a.example/x",
        Version::HTTP_11,
        &[("host", "b.example")],
    )
    .expect("valid");
    assert_eq!(f.authority, Some("a.example"));
    // HTTP/1.1 still needs its Host.
    assert_eq!(
        check(&Method::GET, "http://a.example/x", Version::HTTP_11, &[]),
        Err(Refusal::BadHost)
    );
    assert_eq!(
        check(
            &Method::GET,
            "http://u@a.example/x",
            Version::HTTP_11,
            &[("host", "a.example")]
        ),
        Err(Refusal::BadHost)
    );
}

#[test]
fn h2_authority_and_host_must_agree() {
    let uri = "https://a.example/x";
    let f = check(&Method::GET, uri, Version::HTTP_2, &[("host", "A.example")]).expect("same");
    assert_eq!(f.authority, Some("a.example"));
    assert_eq!(
        check(&Method::GET, uri, Version::HTTP_2, &[("host", "b.example")]),
        Err(Refusal::AuthorityMismatch)
    );
    assert_eq!(
        check(
            &Method::GET,
            "/x",
            Version::HTTP_2,
            &[("host", "b.example")]
        )
        .expect("host only")
        .authority,
        Some("b.example")
    );
    for (n, v) in [
        ("connection", "close"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
        ("transfer-encoding", "chunked"),
        ("keep-alive", "1"),
    ] {
        assert_eq!(
            check(&Method::GET, uri, Version::HTTP_2, &[(n, v)]),
            Err(Refusal::ConnectionHeaderOverH2),
            "{n}"
        );
    }
    let f = check(&Method::POST, uri, Version::HTTP_2, &[("te", "trailers")]).expect("grpc");
    assert!(f.te_trailers);
}

#[test]
fn connection_close_keep_alive_and_upgrade() {
    let f = check11(&[
        ("host", "a"),
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket, h2c"),
    ])
    .expect("valid");
    assert_eq!((f.upgrade, f.close), (Some("websocket"), false));
    let f = check11(&[("host", "a"), ("upgrade", "websocket")]).expect("valid");
    assert_eq!(
        f.upgrade, None,
        "Upgrade without Connection: upgrade asks nothing"
    );
    let f = check11(&[("host", "a"), ("connection", "close")]).expect("valid");
    assert!(f.close);
    let f = check(&Method::GET, "/", Version::HTTP_10, &[("host", "a")]).expect("valid");
    assert!(f.close, "HTTP/1.0 closes unless asked to keep alive");
    let f = check(
        &Method::GET,
        "/",
        Version::HTTP_10,
        &[("host", "a"), ("connection", "keep-alive")],
    )
    .expect("valid");
    assert!(!f.close);
    let f = check(
        &Method::GET,
        "/",
        Version::HTTP_10,
        &[
            ("host", "a"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
        ],
    )
    .expect("valid");
    assert_eq!(f.upgrade, None, "no upgrades on HTTP/1.0");
}

#[test]
fn limits_answer_414_and_431() {
    let limits = Limits {
        max_uri_bytes: 16,
        max_headers: 2,
        max_header_bytes: 64,
    };
    let run = |target: &str, pairs: &[(&str, &str)]| {
        let uri: Uri = target.parse().expect("uri");
        let fields: Vec<(String, Vec<u8>)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        let head = Head {
            method: &Method::GET,
            version: Version::HTTP_11,
            uri: &uri,
            fields: fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            protocol: None,
            end_stream: true,
            local: "192.0.2.1:8080",
        };
        inspect(head, &limits).map(|_| ()).map_err(|e| e.status())
    };
    assert_eq!(run("/0123456789abcdefg", &[("host", "a")]), Err(414));
    let absolute: Uri = "http://a.example/x?y=1".parse().expect("uri");
    assert_eq!(uri_len(&absolute), absolute.to_string().len());
    assert_eq!(
        run("/", &[("host", "a"), ("x-1", "1"), ("x-2", "2")]),
        Err(431)
    );
    assert_eq!(run("/", &[("host", "a"), ("x", &"v".repeat(80))]), Err(431));
    assert_eq!(run("/", &[("host", "a")]), Ok(()));
}

proptest! {
    /// Any set of agreeing Content-Length values passes; any disagreement is refused.
    #[test]
    fn content_length_agreement(values in proptest::collection::vec(0u64..1000, 1..4)) {
        let mut pairs: Vec<(&str, String)> = vec![("host", "a".into())];
        pairs.extend(values.iter().map(|v| ("content-length", v.to_string())));
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let agree = values.iter().all(|v| *v == values[0]);
        let got = check11(&refs);
        prop_assert_eq!(got.is_ok(), agree);
        if agree {
            prop_assert_eq!(got.map(|f| f.body).ok(), Some(Body::Length(values[0])));
        }
    }

    /// Whatever a Connection field names, the facts never let it remove framing or Host.
    #[test]
    fn connection_never_names_lbs_fields(names in proptest::collection::vec("[a-zA-Z-]{1,18}", 0..6)) {
        let list = names.join(", ");
        let pairs = [("host", "a"), ("content-length", "3"), ("connection", list.as_str())];
        if let Ok(f) = check11(&pairs) {
            prop_assert_eq!(f.authority, Some("a"));
            prop_assert_eq!(f.body, Body::Length(3));
            prop_assert!(f.named.iter().all(|n| !is_lbs(n)));
        }
    }
}

#[test]
fn http10_without_host_goes_to_the_address_it_reached() {
    let f = check(&Method::GET, "/", Version::HTTP_10, &[]).expect("HTTP/1.0 may omit Host");
    assert_eq!(f.authority, Some("192.0.2.1:8080"));
    assert_eq!(
        check(&Method::GET, "/", Version::HTTP_11, &[]),
        Err(Refusal::BadHost)
    );
    assert_eq!(
        check(&Method::GET, "/x", Version::HTTP_2, &[]),
        Err(Refusal::BadHost),
        "HTTP/2 needs :authority or host"
    );
}

#[test]
fn hosts_with_bad_ports_and_repeated_credentials_are_refused() {
    for host in ["a:junk", "a:99999", "a:", "[::1]:x"] {
        assert_eq!(check11(&[("host", host)]), Err(Refusal::BadHost), "{host}");
    }
    for host in ["a:80", "[::1]:8443", "[::1]", "a"] {
        assert!(check11(&[("host", host)]).is_ok(), "{host}");
    }
    assert_eq!(
        check11(&[
            ("host", "a"),
            ("authorization", "Bearer x"),
            ("Authorization", "Bearer y")
        ]),
        Err(Refusal::RepeatedAuthorization)
    );
}

#[test]
fn underscore_names_never_pass() {
    let f = check11(&[("host", "a")]).expect("valid");
    for name in ["X_Forwarded_For", "x_user", "content_length", "_"] {
        assert!(!f.passes(name), "{name}");
    }
    assert!(f.passes("x-user"));
}
