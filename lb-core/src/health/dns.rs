//! DNS health-check messages, sans I/O: build a query for a name (RFC 1035 §4.1) and judge a
//! response: the right ID, a response bit, and RCODE NOERROR. The response comes from a
//! backend, so the parser takes untrusted bytes (fuzzed: `fuzz/fuzz_targets/dns_response.rs`).

/// Why a name cannot be put in a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("label \"{0}\" is longer than 63 bytes")]
    LabelTooLong(String),
    #[error("empty label in \"{0}\"")]
    EmptyLabel(String),
    #[error("name is longer than 253 bytes")]
    TooLong,
}

/// The verdict on a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Verdict {
    #[error("answer too short ({0} bytes)")]
    Short(usize),
    #[error("answer to another query (id {got:#06x}, sent {sent:#06x})")]
    WrongId { got: u16, sent: u16 },
    #[error("not a response")]
    NotAResponse,
    #[error("RCODE {0} ({name})", name = rcode_name(*.0))]
    Rcode(u8),
}

fn rcode_name(r: u8) -> &'static str {
    match r {
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "error",
    }
}

/// A standard recursive query for `name`, type A, class IN.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 253 {
        return Err(NameError::TooLong);
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QDCOUNT 1
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel(name.to_string()));
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong(label.to_string()));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]); // QTYPE A, QCLASS IN
    Ok(q)
}

/// Judges a response to the query with `id`. Ok carries the answer count.
pub fn check_response(id: u16, msg: &[u8]) -> Result<u16, Verdict> {
    if msg.len() < 12 {
        return Err(Verdict::Short(msg.len()));
    }
    let got = u16::from_be_bytes([msg[0], msg[1]]);
    if got != id {
        return Err(Verdict::WrongId { got, sent: id });
    }
    if msg[2] & 0x80 == 0 {
        return Err(Verdict::NotAResponse);
    }
    match msg[3] & 0x0f {
        0 => Ok(u16::from_be_bytes([msg[6], msg[7]])),
        r => Err(Verdict::Rcode(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_wire_format() {
        let q = query(0xbeef, "health.example.").expect("valid");
        assert_eq!(
            q,
            [
                0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 6, b'h', b'e', b'a', b'l', b't', b'h', 7,
                b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1
            ]
        );
        assert_eq!(query(1, ""), Err(NameError::Empty));
        assert_eq!(query(1, "a..b"), Err(NameError::EmptyLabel("a..b".into())));
        assert!(matches!(
            query(1, &"x".repeat(64)),
            Err(NameError::LabelTooLong(_))
        ));
    }

    #[test]
    fn verdicts() {
        let mut r = query(7, "a.example").expect("valid");
        assert_eq!(check_response(7, &r), Err(Verdict::NotAResponse));
        r[2] |= 0x80;
        r[7] = 1;
        assert_eq!(check_response(7, &r), Ok(1));
        assert_eq!(
            check_response(8, &r),
            Err(Verdict::WrongId { got: 7, sent: 8 })
        );
        r[3] = 3;
        assert_eq!(check_response(7, &r), Err(Verdict::Rcode(3)));
        assert_eq!(Verdict::Rcode(3).to_string(), "RCODE 3 (NXDOMAIN)");
        assert_eq!(check_response(7, &r[..5]), Err(Verdict::Short(5)));
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), id in any::<u16>()) {
            let _ = check_response(id, &bytes);
        }

        #[test]
        fn every_valid_name_makes_a_well_formed_query(labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..6), id in any::<u16>()) {
            let name = labels.join(".");
            let q = query(id, &name).expect("valid name");
            prop_assert_eq!(q.len(), 12 + name.len() + 2 + 4);
            prop_assert_eq!(u16::from_be_bytes([q[0], q[1]]), id);
        }
    }
}
