//! Reads the server name (SNI) and ALPN list out of a TLS ClientHello without terminating TLS,
//! for routing passthrough connections. The bytes are untrusted: every length is checked
//! against what is there, the handshake message is bounded by [`MAX_HELLO`], and the parser
//! works on whatever prefix has arrived so far (a ClientHello split over several TCP
//! segments or several TLS records is fine). Pure; no I/O.

/// The largest ClientHello accepted (the handshake message, header included). Real ones are
/// under 2 KiB, post-quantum key shares included.
pub const MAX_HELLO: usize = 16 * 1024;

/// What routing needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// The `host_name` of the server_name extension, lowercased, without a trailing dot.
    pub sni: Option<String>,
    /// Protocols offered with ALPN, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

/// The result of looking at the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// The ClientHello is not complete yet: read more and call again with everything.
    NeedMore,
    Done(Hello),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("not a TLS handshake (first byte {0:#04x})")]
    NotTls(u8),
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
/// A TLS record carries at most 2^14 bytes of plaintext.
const MAX_RECORD: usize = 16 * 1024;

/// Looks at the first bytes a client sent.
pub fn peek(buf: &[u8]) -> Result<Peek, HelloError> {
    if let Some(&first) = buf.first() {
        if first != RECORD_HANDSHAKE {
            return Err(HelloError::NotTls(first));
        }
    }
    // Reassemble the handshake message from as many records as it spans.
    let mut msg: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + 5) else {
            return Ok(Peek::NeedMore);
        };
        if header[0] != RECORD_HANDSHAKE {
            return Err(HelloError::Malformed(
                "a record inside the ClientHello is not a handshake record",
            ));
        }
        if header[1] != 3 {
            return Err(HelloError::Malformed("record version is not 3.x"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Err(HelloError::Malformed("record length out of range"));
        }
        let end = pos + 5 + len;
        let available = &buf[pos + 5..end.min(buf.len())];
        // Judge the handshake header as soon as its four bytes are in, not once a (possibly
        // huge) record is complete.
        if msg.len() < 4 {
            let mut head = msg.clone();
            head.extend(available.iter().take(4 - msg.len()));
            if head.len() == 4 {
                if head[0] != HANDSHAKE_CLIENT_HELLO {
                    return Err(HelloError::Malformed(
                        "first handshake message is not a ClientHello",
                    ));
                }
                if handshake_len(&head) + 4 > MAX_HELLO {
                    return Err(HelloError::TooLarge);
                }
            }
        }
        if end > buf.len() {
            return Ok(Peek::NeedMore);
        }
        msg.extend_from_slice(available);
        pos = end;
        if msg.len() >= 4 {
            let body_len = handshake_len(&msg);
            if msg.len() >= 4 + body_len {
                return parse_body(&msg[4..4 + body_len]).map(Peek::Done);
            }
        }
    }
}

fn handshake_len(msg: &[u8]) -> usize {
    (usize::from(msg[1]) << 16) | (usize::from(msg[2]) << 8) | usize::from(msg[3])
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if self.buf.len() < n {
            return Err(HelloError::Malformed(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u8(what)?);
        self.take(n, what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn parse_body(body: &[u8]) -> Result<Hello, HelloError> {
    let mut r = Reader { buf: body };
    r.take(2, "truncated legacy_version")?;
    r.take(32, "truncated random")?;
    let session_id = r.vec8("truncated session id")?;
    if session_id.len() > 32 {
        return Err(HelloError::Malformed("session id longer than 32 bytes"));
    }
    let suites = r.vec16("truncated cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("bad cipher suite list"));
    }
    if r.vec8("truncated compression methods")?.is_empty() {
        return Err(HelloError::Malformed("no compression method"));
    }
    let mut hello = Hello::default();
    // Extensions are optional (a bare TLS 1.2 hello has none).
    if r.is_empty() {
        return Ok(hello);
    }
    let mut exts = Reader {
        buf: r.vec16("truncated extensions")?,
    };
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after the extensions"));
    }
    let mut seen_sni = false;
    let mut seen_alpn = false;
    while !exts.is_empty() {
        let kind = exts.u16("truncated extension type")?;
        let data = exts.vec16("truncated extension")?;
        match kind {
            EXT_SERVER_NAME => {
                if std::mem::replace(&mut seen_sni, true) {
                    return Err(HelloError::Malformed("two server_name extensions"));
                }
                hello.sni = server_name(data)?;
            }
            EXT_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err(HelloError::Malformed("two ALPN extensions"));
                }
                let mut list = Reader {
                    buf: Reader { buf: data }.vec16("truncated ALPN list")?,
                };
                while !list.is_empty() {
                    let p = list.vec8("truncated ALPN protocol")?;
                    if p.is_empty() {
                        return Err(HelloError::Malformed("empty ALPN protocol"));
                    }
                    hello.alpn.push(p.to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(hello)
}

fn server_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut outer = Reader { buf: data };
    let mut list = Reader {
        buf: outer.vec16("truncated server name list")?,
    };
    if !outer.is_empty() {
        return Err(HelloError::Malformed("bytes after the server name list"));
    }
    let mut name = None;
    while !list.is_empty() {
        let kind = list.u8("truncated server name type")?;
        let value = list.vec16("truncated server name")?;
        // Only host_name (0) is defined; RFC 6066 allows one name per type.
        if kind == 0 {
            if name.is_some() {
                return Err(HelloError::Malformed("two host names"));
            }
            name = Some(host_name(value)?);
        }
    }
    Ok(name)
}

fn host_name(raw: &[u8]) -> Result<String, HelloError> {
    let trimmed = raw.strip_suffix(b".").unwrap_or(raw);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return Err(HelloError::Malformed("host name length out of range"));
    }
    if !trimmed
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
    {
        return Err(HelloError::Malformed(
            "host name has characters DNS does not allow",
        ));
    }
    Ok(String::from_utf8_lossy(trimmed).to_ascii_lowercase())
}

/// Builds ClientHello records: for the tests here, the end-to-end suite and the fuzz seeds.
#[doc(hidden)]
pub mod build {
    /// A ClientHello with `sni` (if any) and `alpn`, split into records of at most
    /// `record_size` bytes of handshake data each, offering TLS 1.2 and the one suite
    /// TLS_AES_128_GCM_SHA256 (enough to be parsed, not to complete a handshake).
    pub fn client_hello(sni: Option<&str>, alpn: &[&str], record_size: usize) -> Vec<u8> {
        hello_with_version(sni, alpn, record_size, [3, 3])
    }

    /// As [`client_hello`] with the given legacy_version (e.g. `[3, 2]` for TLS 1.1).
    pub fn hello_with_version(
        sni: Option<&str>,
        alpn: &[&str],
        record_size: usize,
        version: [u8; 2],
    ) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0u8];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend_from_slice(&entry);
            exts.extend_from_slice(&0u16.to_be_bytes());
            exts.extend_from_slice(&(list.len() as u16).to_be_bytes());
            exts.extend_from_slice(&list);
        }
        if !alpn.is_empty() {
            let mut protos = Vec::new();
            for p in alpn {
                protos.push(p.len() as u8);
                protos.extend_from_slice(p.as_bytes());
            }
            let mut data = (protos.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&protos);
            exts.extend_from_slice(&16u16.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(&data);
        }
        let mut body = version.to_vec();
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
                      // TLS_AES_128_GCM_SHA256 and TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2f]);
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        let mut out = Vec::new();
        for chunk in msg.chunks(record_size.max(1)) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::client_hello;
    use super::*;
    use proptest::prelude::*;

    fn done(buf: &[u8]) -> Hello {
        match peek(buf) {
            Ok(Peek::Done(h)) => h,
            other => panic!("expected a hello, got {other:?}"),
        }
    }

    #[test]
    fn reads_sni_and_alpn() {
        let h = done(&client_hello(
            Some("API.Example.com."),
            &["h2", "http/1.1"],
            16_384,
        ));
        assert_eq!(h.sni.as_deref(), Some("api.example.com"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn no_sni_is_none() {
        assert_eq!(done(&client_hello(None, &[], 16_384)), Hello::default());
    }

    #[test]
    fn every_prefix_needs_more_and_never_fails() {
        let full = client_hello(Some("a.example"), &["h2"], 16_384);
        for n in 0..full.len() {
            assert_eq!(peek(&full[..n]), Ok(Peek::NeedMore), "prefix of {n}");
        }
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        for size in [1, 7, 40, 100] {
            let h = done(&client_hello(Some("split.example"), &["h2"], size));
            assert_eq!(h.sni.as_deref(), Some("split.example"), "records of {size}");
        }
    }

    #[test]
    fn oversized_and_foreign_input_is_refused() {
        assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls(b'G')));
        // A handshake header announcing 20 KiB.
        let big = [22, 3, 1, 0x40, 0, 1, 0, 0x50, 0];
        assert_eq!(peek(&big), Err(HelloError::TooLarge));
        let zero_record = [22, 3, 1, 0, 0];
        assert!(matches!(peek(&zero_record), Err(HelloError::Malformed(_))));
        let mut bad_name = client_hello(Some("a.example"), &[], 16_384);
        let at = bad_name
            .windows(9)
            .position(|w| w == b"a.example")
            .expect("name");
        bad_name[at] = b' ';
        assert!(matches!(peek(&bad_name), Err(HelloError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = peek(&bytes);
        }

        #[test]
        fn corrupting_one_byte_never_panics(
            name in "[a-z]{1,20}(\\.[a-z]{1,10}){0,3}",
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            record in 1usize..300,
        ) {
            let mut hello = client_hello(Some(&name), &["h2"], record);
            let i = at.index(hello.len());
            hello[i] = byte;
            let _ = peek(&hello);
        }

        #[test]
        fn any_split_finds_the_name(name in "[a-z0-9-]{1,30}(\\.[a-z]{2,8}){1,3}", record in 1usize..400) {
            let h = done(&client_hello(Some(&name), &[], record));
            prop_assert_eq!(h.sni, Some(name));
        }
    }
}
