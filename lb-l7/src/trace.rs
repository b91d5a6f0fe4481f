//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` a client
//! sent, read strictly ([`parse`]), and the hop lb forwards ([`decide`]): the client's trace
//! with a new span id (lb's span, whose parent is the client's), or a new trace when the
//! client's field is absent, invalid or repeated; `tracestate` passed on when the
//! `traceparent` was kept and it is within the spec's bounds. Pure: the random bits are an
//! argument. Used only when `[tracing]` is configured; otherwise lb leaves both fields alone.

/// The fields' names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A version-00 `traceparent` is exactly this long (`00-` 32 `-` 16 `-` 2).
pub const LEN: usize = 55;

/// The spec's bounds on `tracestate`: list members and bytes ("Vendors SHOULD propagate at
/// least 512 characters"; "at most 32 list-members"). A longer one is dropped, not cut.
pub const MAX_STATE_MEMBERS: usize = 32;
pub const MAX_STATE_BYTES: usize = 512;

/// A parsed `traceparent` (its version-00 part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// Reads a `traceparent` value as the spec's §3.2 and §4.3 say: version 00 exactly 55
/// characters; a later version (not `ff`) at least 55, read as version 00 when its 55th
/// character is followed by `-` or nothing; lowercase hex only; all-zero ids invalid.
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    if value.len() < LEN {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    match version {
        0 if value.len() != LEN => return None,
        // A future version: what follows the version-00 part must start with `-`.
        1.. if value.len() > LEN && value[LEN] != b'-' => return None,
        _ => {}
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut parent_id = [0u8; 8];
    for (i, b) in parent_id.iter_mut().enumerate() {
        *b = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some(nibble(two[0])? << 4 | nibble(two[1])?)
}

/// Lowercase hex only: the spec's `HEXDIGLC`.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out` (twice as long).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

impl TraceParent {
    /// The version-00 field, whatever version it was read from (lb speaks version 00).
    pub fn format(&self) -> [u8; LEN] {
        let mut out = [b'-'; LEN];
        out[0..2].copy_from_slice(b"00");
        hex_into(&self.trace_id, &mut out[3..35]);
        hex_into(&self.parent_id, &mut out[36..52]);
        hex_into(&[self.flags], &mut out[53..55]);
        out
    }
}

/// What a client's head carried as `traceparent` or `tracestate`.
pub type Claimed<'a> = crate::request_id::Claimed<'a>;

/// The trace context of one request through lb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub trace_id: [u8; 16],
    /// lb's span for this request: the forwarded `traceparent`'s parent id.
    pub span_id: [u8; 8],
    /// The client's span (its `traceparent`'s parent id), when it sent a valid one.
    pub parent: Option<[u8; 8]>,
    /// Only `sampled` (bit 0) is defined; the client's are kept, a new trace is sampled.
    pub flags: u8,
    /// The client's one `tracestate` goes on as it came (its `traceparent` was kept and the
    /// state is within bounds); otherwise lb drops the field.
    pub keep_state: bool,
}

impl Hop {
    /// Whether lb writes (or drops) the client's field `name` itself: its `traceparent`
    /// always, its `tracestate` unless kept. The rule [`Hop::write`] follows, for the lean
    /// path's head writer.
    pub fn replaces(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(TRACEPARENT)
            || (!self.keep_state && name.eq_ignore_ascii_case(TRACESTATE))
    }

    /// Puts lb's `traceparent` in `headers` in place of the client's, and drops the client's
    /// `tracestate` unless it is kept (the general path's fields; the lean path writes the
    /// same in `lean::head::Out`).
    pub fn write(&self, headers: &mut http::HeaderMap) {
        headers.remove(TRACEPARENT);
        if !self.keep_state {
            headers.remove(TRACESTATE);
        }
        if let Ok(v) = http::HeaderValue::from_bytes(&self.traceparent()) {
            headers.insert(TRACEPARENT, v);
        }
    }

    /// The `traceparent` lb forwards.
    pub fn traceparent(&self) -> [u8; LEN] {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: self.span_id,
            flags: self.flags,
        }
        .format()
    }
}

/// The hop for a request whose head carried `parent` and `state`, with new ids from
/// `random()` (called once for a span id, twice when a trace starts here). A zero draw
/// (1 in 2^64) is made non-zero: an all-zero id is invalid.
pub fn decide(parent: Claimed<'_>, state: Claimed<'_>, mut random: impl FnMut() -> u128) -> Hop {
    let span_id = nonzero((random() as u64).to_be_bytes());
    match parent {
        Claimed::One(v) => {
            if let Some(p) = parse(v.trim_ascii()) {
                return Hop {
                    trace_id: p.trace_id,
                    span_id,
                    parent: Some(p.parent_id),
                    flags: p.flags,
                    keep_state: matches!(state, Claimed::One(s) if state_ok(s)),
                };
            }
        }
        Claimed::None | Claimed::Many => {}
    }
    Hop {
        trace_id: nonzero(random().to_be_bytes()),
        span_id,
        parent: None,
        flags: 1,
        keep_state: false,
    }
}

fn nonzero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|&b| b == 0) {
        id[N - 1] = 1;
    }
    id
}

/// Whether a `tracestate` may be passed on: at most [`MAX_STATE_BYTES`] bytes of visible
/// ASCII, at most [`MAX_STATE_MEMBERS`] non-empty members, each `key=value`.
pub fn state_ok(s: &[u8]) -> bool {
    if s.len() > MAX_STATE_BYTES || !s.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t') {
        return false;
    }
    let mut members = 0;
    for m in s.split(|&b| b == b',') {
        let m = m.trim_ascii();
        if m.is_empty() {
            continue;
        }
        members += 1;
        if members > MAX_STATE_MEMBERS {
            return false;
        }
        match m.iter().position(|&b| b == b'=') {
            Some(eq) if eq > 0 && eq + 1 < m.len() => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests;
