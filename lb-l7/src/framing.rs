//! A second, independent look at the framing of HTTP/1.1 requests as they arrive, for the
//! one ambiguity the HTTP parser resolves before lb can see it: a request with both
//! `Content-Length` and `Transfer-Encoding`. hyper follows RFC 9112 §6.1's lenient option
//! (drop the length, decode chunked, close after); lb takes the strict one, as nginx does:
//! the request is answered 400 and never forwarded, since a server behind a less careful
//! proxy might frame it by the length and read a smuggled request out of its body.
//!
//! [`Tracker`] follows the byte stream of one connection: request heads (parsed with
//! httparse for their framing headers only), bodies by length, chunked bodies chunk by
//! chunk, trailers. For each head it records whether it carried both fields, in order, and
//! the gateway takes one record per request. It stops following (records nothing more) at
//! an HTTP/2 preface, a CONNECT, a switch of protocols the gateway reports
//! ([`Tracker::stop`]), or anything it cannot frame; the parser proper then decides as
//! before. Pure.

use std::collections::VecDeque;

use crate::chunked::{Chunked, Scan};

/// Longest request head followed; the gateway's parser refuses longer ones anyway.
pub const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Head(Vec<u8>),
    Body {
        left: u64,
    },
    Chunked(Chunked),
    /// No longer following (h2, CONNECT, switched protocols, unframeable).
    Off,
}

/// Follows one HTTP/1.1 client connection's request framing.
#[derive(Debug)]
pub struct Tracker {
    state: State,
    /// Per request head seen, in order: whether it had both Content-Length and
    /// Transfer-Encoding.
    records: VecDeque<bool>,
    /// The connection switched protocols ([`Tracker::stop`]).
    switched: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            state: State::Head(Vec::new()),
            records: VecDeque::new(),
            switched: false,
        }
    }
}

/// What a request head says about the bytes after it.
enum Next {
    Body(u64),
    Chunked,
    Off,
}

impl Tracker {
    /// Whether bytes still need to be fed.
    pub fn following(&self) -> bool {
        self.state != State::Off
    }

    /// Whether part of a request head has arrived and not the rest.
    pub fn in_head(&self) -> bool {
        matches!(&self.state, State::Head(buf) if !buf.is_empty())
    }

    /// The connection switched protocols: what follows is not HTTP.
    pub fn stop(&mut self) {
        self.state = State::Off;
        self.switched = true;
    }

    /// Whether [`Tracker::stop`] was called.
    pub fn switched(&self) -> bool {
        self.switched
    }

    /// The record of the oldest request not yet taken: `Some(true)` if it carried both
    /// framing fields, `None` when the tracker no longer knows.
    pub fn take(&mut self) -> Option<bool> {
        self.records.pop_front()
    }

    /// Feeds bytes read from the client, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (used, head_done) = match &mut self.state {
                State::Off => return,
                State::Head(buf) if buf.is_empty() && matches!(bytes[0], b'\r' | b'\n') => {
                    // Empty lines before a request line are allowed (RFC 9112 §2.2): they
                    // start no head.
                    let blank = bytes
                        .iter()
                        .position(|&b| b != b'\r' && b != b'\n')
                        .unwrap_or(bytes.len());
                    (blank, false)
                }
                State::Head(buf) => {
                    // Only the part of `bytes` up to the head's end belongs to the head; the
                    // terminator may straddle two reads.
                    let start = buf.len().saturating_sub(3);
                    let take = bytes.len().min(MAX_HEAD + 1 - buf.len().min(MAX_HEAD));
                    buf.extend_from_slice(&bytes[..take]);
                    match find_end(&buf[start..]) {
                        Some(end) => {
                            let head_len = start + end;
                            let used = take - (buf.len() - head_len);
                            buf.truncate(head_len);
                            (used, true)
                        }
                        None if buf.len() > MAX_HEAD => {
                            self.state = State::Off;
                            return;
                        }
                        None => (take, false),
                    }
                }
                State::Body { left } => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                    (n as usize, false)
                }
                State::Chunked(c) => match c.scan(bytes) {
                    Ok(Scan::Done(used)) => {
                        self.state = State::Head(Vec::new());
                        (used, false)
                    }
                    Ok(Scan::More) => (bytes.len(), false),
                    Err(_) => {
                        self.state = State::Off;
                        return;
                    }
                },
            };
            if head_done {
                let head = match std::mem::replace(&mut self.state, State::Off) {
                    State::Head(buf) => buf,
                    _ => Vec::new(),
                };
                self.state = match self.head_done(&head) {
                    Next::Body(0) => State::Head(Vec::new()),
                    Next::Body(n) => State::Body { left: n },
                    Next::Chunked => State::Chunked(Chunked::default()),
                    Next::Off => State::Off,
                };
            }
            bytes = &bytes[used..];
        }
    }

    /// Parses a whole request head; records it; says what follows it.
    fn head_done(&mut self, head: &[u8]) -> Next {
        // Blank lines before a request line are allowed (RFC 9112 §2.2).
        let trimmed = head
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(head.len());
        let head = &head[trimmed..];
        if head.starts_with(b"PRI * HTTP/2.0") {
            return Next::Off;
        }
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
            return Next::Off;
        }
        let (mut length, mut chunked, mut te) = (None, false, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                // Lists and repeats of one value are one length, as the parser reads them.
                let mut values = h.value.split(|&b| b == b',').map(|v| {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                });
                let first = values.next().flatten();
                let agree = first.is_some()
                    && values.all(|v| v == first)
                    && length.is_none_or(|l| Some(l) == first);
                if !agree {
                    self.records.push_back(false);
                    return Next::Off;
                }
                length = first;
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        self.records.push_back(te && length.is_some());
        // An upgrade request is followed as any other: if the gateway switches the connection
        // to another protocol it stops the tracker ([`Tracker::stop`]) before answering 101,
        // and until then what follows is HTTP. CONNECT is refused with the connection closed.
        if req.method == Some("CONNECT") {
            return Next::Off;
        }
        match (te, chunked, length) {
            (true, true, _) => Next::Chunked,
            (true, false, _) => Next::Off,
            (false, _, Some(n)) => Next::Body(n),
            (false, _, None) => Next::Body(0),
        }
    }
}

/// Where `\r\n\r\n` ends in `bytes`, if it does.
fn find_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records(stream: &[u8], split: usize) -> (Vec<bool>, bool) {
        let mut t = Tracker::default();
        let split = split.min(stream.len());
        t.feed(&stream[..split]);
        t.feed(&stream[split..]);
        let following = t.following();
        (std::iter::from_fn(|| t.take()).collect(), following)
    }

    const GET: &str = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";

    #[test]
    fn finds_length_and_chunked_together_in_either_order() {
        let both = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let reversed = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n";
        for smuggle in [both, reversed] {
            let stream = format!("{GET}{smuggle}{GET}");
            for split in [0, 10, 40, 80, stream.len()] {
                assert_eq!(
                    records(stream.as_bytes(), split),
                    (vec![false, true, false], true),
                    "{split}"
                );
            }
        }
    }

    #[test]
    fn follows_bodies_by_length_and_by_chunks_with_trailers() {
        // A body that looks like a request head must not be taken for one.
        let fake = "GET /fake HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body = format!(
            "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{fake}",
            fake.len()
        );
        let chunked = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;ext=1\r\nhello\r\n1A\r\nGET / HTTP/1.1\r\nA: b\r\n\r\nxx\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let stream = format!("{body}{chunked}{GET}");
        for split in 0..stream.len() {
            assert_eq!(
                records(stream.as_bytes(), split),
                (vec![false, false, false], true),
                "split at {split}"
            );
        }
    }

    #[test]
    fn blank_lines_and_agreeing_length_lists_keep_it_following() {
        let stream = format!(
            "\r\n\r\n{GET}POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc\r\n{GET}"
        );
        for split in 0..stream.len() {
            assert_eq!(
                records(stream.as_bytes(), split),
                (vec![false, false, false], true),
                "{split}"
            );
        }
        let t = &mut Tracker::default();
        t.feed(b"GET /a HT");
        assert!(t.in_head());
        t.feed(b"TP/1.1\r\nHost: h\r\n\r\n");
        assert!(!t.in_head());
    }

    #[test]
    fn stops_following_where_it_cannot_frame() {
        let (r, following) = records(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 5);
        assert_eq!((r, following), (vec![], false));
        // An upgrade that did not happen leaves HTTP on the connection, followed as before;
        // one the gateway made stops the tracker.
        let upgrade = format!(
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n{GET}"
        );
        assert_eq!(records(upgrade.as_bytes(), 3), (vec![false, false], true));
        let mut t = Tracker::default();
        t.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n");
        t.stop();
        t.feed(b"\x81\x05hello");
        assert!(!t.following() && t.switched() && !t.in_head());
        let connect = format!("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n{GET}");
        assert_eq!(records(connect.as_bytes(), 3), (vec![false], false));
        let bad_chunk = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{GET}");
        assert_eq!(records(bad_chunk.as_bytes(), 7), (vec![false], false));
        let not_chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert!(!records(not_chunked.as_bytes(), 9).1);
        let huge = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(records(&huge, 100), (vec![], false));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), split in 0usize..512) {
            let _ = records(&bytes, split);
        }

        /// Random sequences of requests with random bodies, cut anywhere: one record per
        /// request, the smuggling ones found.
        #[test]
        fn one_record_per_request_however_the_bytes_arrive(
            reqs in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..64)), 1..6),
            cut in proptest::collection::vec(1usize..40, 0..20),
        ) {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for (kind, body) in &reqs {
                match kind {
                    0 => stream.extend_from_slice(GET.as_bytes()),
                    1 => {
                        stream.extend_from_slice(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
                        stream.extend_from_slice(body);
                    }
                    2 => {
                        stream.extend_from_slice(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
                        for part in body.chunks(7) {
                            stream.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                            stream.extend_from_slice(part);
                            stream.extend_from_slice(b"\r\n");
                        }
                        stream.extend_from_slice(b"0\r\n\r\n");
                    }
                    _ => {
                        stream.extend_from_slice(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n");
                    }
                }
                want.push(*kind == 3);
            }
            let mut t = Tracker::default();
            let mut at = 0usize;
            for c in cut.iter().chain(std::iter::repeat(&usize::MAX)) {
                let end = at.saturating_add(*c).min(stream.len());
                t.feed(&stream[at..end]);
                at = end;
                if at == stream.len() {
                    break;
                }
            }
            let got: Vec<bool> = std::iter::from_fn(|| t.take()).collect();
            prop_assert_eq!(got, want);
            prop_assert!(t.following());
        }
    }
}
