//! Finding where a chunked body ends (RFC 9112 §7.1) without decoding it: the lean path
//! relays chunked bodies byte for byte, and the framing tracker follows clients' chunked
//! uploads; both need only the body's last byte, so that the connection can carry the next
//! message. Pure; fed by whatever reads arrive.
//!
//! Strict where framing is at stake: a size is hex digits (at most 16), lines end in CRLF
//! (a bare LF or CR is an error, as in hyper and HAProxy), a chunk's data ends in CRLF.
//! Extensions and trailer fields are passed over, not interpreted.

/// Where the scanner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk size; `digits` so far, `size` their value.
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: optional whitespace and `;extension`s up to CR.
    Extension {
        size: u64,
    },
    /// The CR of a size line was seen.
    SizeLf {
        size: u64,
    },
    /// `left` bytes of chunk data to go.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

/// Scans one chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

/// What a scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Every byte given belongs to the body, which goes on.
    More,
    /// The body ends after this many of the bytes given.
    Done(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("malformed chunk size line")]
    Size,
    #[error("chunk size over 16 hex digits")]
    TooBig,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("malformed trailer section")]
    Trailer,
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `bytes`, the next bytes of the body.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<Scan, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                State::Size { size, digits } => match crate::path::hex(b) {
                    Some(d) if digits < 16 => State::Size {
                        size: size << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(ChunkError::TooBig),
                    None if digits == 0 => return Err(ChunkError::Size),
                    None if b == b'\r' => State::SizeLf { size },
                    None if matches!(b, b';' | b' ' | b'\t') => State::Extension { size },
                    None => return Err(ChunkError::Size),
                },
                State::Extension { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(ChunkError::Size),
                    _ => State::Extension { size },
                },
                State::SizeLf { size } => match b {
                    b'\n' if size == 0 => State::TrailerStart,
                    b'\n' => State::Data { left: size },
                    _ => return Err(ChunkError::Size),
                },
                State::Data { left } => {
                    // Data is skipped in one step, however long.
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = match left - take {
                        0 => State::DataCr,
                        left => State::Data { left },
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0 },
                State::DataCr | State::DataLf => return Err(ChunkError::DataEnd),
                State::TrailerStart => match b {
                    b'\r' => State::FinalLf,
                    b'\n' => return Err(ChunkError::Trailer),
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError::Trailer),
                    _ => State::TrailerLine,
                },
                State::TrailerLf | State::FinalLf if b != b'\n' => return Err(ChunkError::Trailer),
                State::TrailerLf => State::TrailerStart,
                State::FinalLf => State::Done,
                State::Done => return Ok(Scan::Done(i)),
            };
            i += 1;
        }
        Ok(if self.state == State::Done {
            Scan::Done(i)
        } else {
            Scan::More
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(body: &[u8]) -> Result<Scan, ChunkError> {
        Chunked::default().scan(body)
    }

    #[test]
    fn finds_the_end_of_a_body() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        assert_eq!(whole(body), Ok(Scan::Done(body.len())));
        let mut next = body.to_vec();
        next.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(whole(&next), Ok(Scan::Done(body.len())));
        let trailers = b"1\r\na\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\n";
        assert_eq!(whole(trailers), Ok(Scan::Done(trailers.len())));
        assert_eq!(whole(b"A\r\n0123456789\r\n"), Ok(Scan::More));
    }

    #[test]
    fn refuses_what_could_be_framed_two_ways() {
        assert_eq!(whole(b"5\nhello\r\n"), Err(ChunkError::Size));
        assert_eq!(whole(b"\r\n"), Err(ChunkError::Size));
        assert_eq!(whole(b"x\r\n"), Err(ChunkError::Size));
        assert_eq!(whole(b"-1\r\n"), Err(ChunkError::Size));
        assert_eq!(whole(b"2\r\nabc\r\n"), Err(ChunkError::DataEnd));
        assert_eq!(whole(b"2\r\nab\n"), Err(ChunkError::DataEnd));
        assert_eq!(whole(b"0\r\nx\n"), Err(ChunkError::Trailer));
        assert_eq!(whole(b"0\r\n\n"), Err(ChunkError::Trailer));
        assert_eq!(whole(b"10000000000000000\r\n"), Err(ChunkError::TooBig));
        assert_eq!(whole(b"ffffffffffffffff;x\r\n"), Ok(Scan::More));
    }

    fn encode(chunks: &[Vec<u8>], trailer: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"x-sum: 7\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        /// However the bytes arrive, the end is found exactly where the encoder put it.
        #[test]
        fn any_split_finds_the_same_end(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            trailer in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut body = encode(&chunks, trailer);
            let end = body.len();
            body.extend_from_slice(b"NEXT");
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(body.len())).collect();
            at.push(0);
            at.push(body.len());
            at.sort_unstable();
            let mut scanner = Chunked::default();
            let mut found = None;
            for w in at.windows(2) {
                match scanner.scan(&body[w[0]..w[1]]) {
                    Ok(Scan::Done(n)) => { found = Some(w[0] + n); break; }
                    Ok(Scan::More) => {}
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
            prop_assert_eq!(found, Some(end));
        }

        /// Arbitrary bytes never panic, and an end found is within the input.
        #[test]
        fn arbitrary_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Scan::Done(n)) = Chunked::default().scan(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }
    }
}
