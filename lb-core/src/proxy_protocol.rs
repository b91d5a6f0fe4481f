//! The PROXY protocol (HAProxy's spec, versions 1 and 2): parsing the header a client-side
//! balancer puts before the stream, and writing one for backends. The parser takes untrusted
//! bytes, works on whatever prefix has arrived (a header split across reads is fine) and is
//! bounded by [`MAX_HEADER`]. Pure; no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// v2's fixed signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// v1 headers are at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// The largest v2 header accepted (16-byte preamble plus addresses and TLVs). The spec allows
/// 64 KiB of TLVs; real ones (AWS, Azure, GCP, HAProxy's SSL TLVs) stay far below this.
pub const MAX_HEADER: usize = 16 + 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A parsed header. `source`/`destination` are `None` for v1 `UNKNOWN`, v2 `LOCAL` and
/// address families lb does not proxy (unix sockets): the connection's own addresses apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The header is not complete yet: read more and call again with everything.
    NeedMore,
    /// The header, and how many bytes of the input it took (the rest is stream data).
    Done(Header, usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY protocol header (the stream starts with {0:?})")]
    Missing(String),
    #[error("malformed PROXY v1 header: {0}")]
    BadV1(&'static str),
    #[error("malformed PROXY v2 header: {0}")]
    BadV2(&'static str),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLarge,
}

/// Looks at the first bytes of a connection that must start with a PROXY header.
pub fn parse(buf: &[u8]) -> Result<Parsed, HeaderError> {
    const V1_PREFIX: &[u8] = b"PROXY ";
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(Parsed::NeedMore)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return if n < V1_PREFIX.len() {
            Ok(Parsed::NeedMore)
        } else {
            parse_v1(buf)
        };
    }
    let shown: String = buf
        .iter()
        .take(16)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    Err(HeaderError::Missing(shown))
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if buf.len() >= V1_MAX {
            return Err(HeaderError::BadV1("no CRLF within 107 bytes"));
        }
        return Ok(Parsed::NeedMore);
    };
    match buf.get(cr + 1) {
        None => return Ok(Parsed::NeedMore),
        Some(b'\n') => {}
        Some(_) => return Err(HeaderError::BadV1("CR not followed by LF")),
    }
    let line = std::str::from_utf8(&buf[..cr]).map_err(|_| HeaderError::BadV1("not ASCII"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let family = parts.next().ok_or(HeaderError::BadV1("no protocol"))?;
    let header = |source, destination| Header {
        version: Version::V1,
        source,
        destination,
    };
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored.
        return Ok(Parsed::Done(header(None, None), cr + 2));
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(HeaderError::BadV1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let mut field = || parts.next().ok_or(HeaderError::BadV1("too few fields"));
    let (src, dst, sport, dport) = (field()?, field()?, field()?, field()?);
    if parts.next().is_some() {
        return Err(HeaderError::BadV1("too many fields"));
    }
    let ip = |s: &str| -> Result<IpAddr, HeaderError> {
        let ip: IpAddr = s.parse().map_err(|_| HeaderError::BadV1("bad address"))?;
        if ip.is_ipv6() != v6 {
            return Err(HeaderError::BadV1(
                "address family does not match the protocol",
            ));
        }
        Ok(ip)
    };
    let port = |s: &str| -> Result<u16, HeaderError> {
        // Decimal without leading zeros or signs, as the spec says.
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(HeaderError::BadV1("bad port"));
        }
        s.parse().map_err(|_| HeaderError::BadV1("bad port"))
    };
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, port(dport)?);
    Ok(Parsed::Done(
        header(Some(source), Some(destination)),
        cr + 2,
    ))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let Some(fixed) = buf.get(..16) else {
        return Ok(Parsed::NeedMore);
    };
    let (ver_cmd, family) = (fixed[12], fixed[13]);
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::BadV2("version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(HeaderError::BadV2("command is neither LOCAL nor PROXY")),
    };
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if 16 + len > MAX_HEADER {
        return Err(HeaderError::TooLarge);
    }
    let Some(body) = buf.get(16..16 + len) else {
        return Ok(Parsed::NeedMore);
    };
    let header = |source, destination| Header {
        version: Version::V2,
        source,
        destination,
    };
    // Family high nibble: 0 unspec, 1 inet, 2 inet6, 3 unix; low nibble: 0 unspec, 1 stream,
    // 2 dgram.
    let transport = family & 0x0f;
    if transport > 2 || family >> 4 > 3 {
        return Err(HeaderError::BadV2("unknown address family or transport"));
    }
    let addrs = match family >> 4 {
        1 => {
            let a = body
                .get(..12)
                .ok_or(HeaderError::BadV2("IPv4 addresses truncated"))?;
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        2 => {
            let a = body
                .get(..36)
                .ok_or(HeaderError::BadV2("IPv6 addresses truncated"))?;
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        // Unspecified or unix: the connection's own addresses stand.
        _ => None,
    };
    // LOCAL (health checks from the balancer itself) carries no client: use the connection's.
    let (source, destination) = match addrs {
        Some((s, d)) if !local => (Some(s), Some(d)),
        _ => (None, None),
    };
    Ok(Parsed::Done(header(source, destination), 16 + len))
}

/// Writes a header saying the stream comes from `source` to `destination`. Families that
/// differ (an IPv4 client on an IPv6 listener) are both written as IPv6, IPv4 mapped.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        Version::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.push(0x21); // version 2, PROXY
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&v6(s).octets());
                    out.extend_from_slice(&v6(d).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
            out
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let widen = |s: SocketAddr| SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port());
    (widen(a), widen(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn v1_round_trips_and_leaves_the_stream_alone() {
        let mut buf = encode(Version::V1, addr("192.0.2.7:51000"), addr("10.0.0.1:443"));
        assert_eq!(buf, b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n");
        let header_len = buf.len();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let Ok(Parsed::Done(h, n)) = parse(&buf) else {
            panic!("parse")
        };
        assert_eq!(n, header_len);
        assert_eq!(h.source, Some(addr("192.0.2.7:51000")));
        assert_eq!(h.destination, Some(addr("10.0.0.1:443")));
    }

    #[test]
    fn v2_round_trips_both_families() {
        for (s, d) in [
            ("192.0.2.7:51000", "10.0.0.1:443"),
            ("[2001:db8::1]:40000", "[2001:db8::2]:8443"),
        ] {
            let buf = encode(Version::V2, addr(s), addr(d));
            let Ok(Parsed::Done(h, n)) = parse(&buf) else {
                panic!("parse")
            };
            assert_eq!((h.version, n), (Version::V2, buf.len()));
            assert_eq!((h.source, h.destination), (Some(addr(s)), Some(addr(d))));
        }
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let buf = encode(Version::V1, addr("192.0.2.7:1"), addr("[::1]:2"));
        assert_eq!(buf, b"PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n");
    }

    #[test]
    fn every_prefix_needs_more() {
        for full in [
            encode(Version::V1, addr("192.0.2.7:1"), addr("10.0.0.1:2")),
            encode(Version::V2, addr("[2001:db8::1]:1"), addr("[::1]:2")),
        ] {
            for n in 0..full.len() {
                assert_eq!(parse(&full[..n]), Ok(Parsed::NeedMore), "prefix of {n}");
            }
        }
    }

    #[test]
    fn local_and_unknown_carry_no_address() {
        let Ok(Parsed::Done(h, 15)) = parse(b"PROXY UNKNOWN\r\nxyz") else {
            panic!("unknown")
        };
        assert_eq!(h.source, None);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let Ok(Parsed::Done(h, 16)) = parse(&local) else {
            panic!("local")
        };
        assert_eq!(h.source, None);
    }

    #[test]
    fn bad_headers_are_refused() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(HeaderError::Missing(_))
        ));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 ::1 ::2 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        ] {
            assert!(matches!(parse(bad), Err(HeaderError::BadV1(_))), "{bad:?}");
        }
        assert!(matches!(
            parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(20)),
            Err(HeaderError::BadV1(_))
        ));
        let mut v3 = V2_SIGNATURE.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert!(matches!(parse(&v3), Err(HeaderError::BadV2(_))));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(HeaderError::TooLarge));
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x21, 0, 12]);
        short.extend_from_slice(&[0; 12]);
        assert!(matches!(parse(&short), Err(HeaderError::BadV2(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn corrupted_v2_never_panics(at in 12usize..52, byte in any::<u8>()) {
            let mut buf = encode(Version::V2, addr("[2001:db8::1]:1"), addr("[::1]:2"));
            buf[at] = byte;
            let _ = parse(&buf);
        }

        #[test]
        fn any_address_round_trips(
            v6: bool, a in any::<[u8; 16]>(), b in any::<[u8; 16]>(),
            sp in any::<u16>(), dp in any::<u16>(), v2: bool,
        ) {
            let ip = |x: [u8; 16]| if v6 { IpAddr::from(x) } else { IpAddr::from([x[0], x[1], x[2], x[3]]) };
            let (s, d) = (SocketAddr::new(ip(a), sp), SocketAddr::new(ip(b), dp));
            let version = if v2 { Version::V2 } else { Version::V1 };
            let buf = encode(version, s, d);
            let parsed = parse(&buf);
            prop_assert_eq!(parsed, Ok(Parsed::Done(Header { version, source: Some(s), destination: Some(d) }, buf.len())));
        }
    }
}
