//! An aggregate answer put together from its parts' outcomes: each part's body checked as
//! JSON and embedded as it came, a failed part as `{"error": ..., "status": N}` in its place,
//! the parts in config order; and the verdict on the whole (200, or the status a failed
//! required part gives it). Pure; no I/O.

use serde_json::value::RawValue;

/// Largest body lb reads of one part, in bytes. With at most
/// [`lb_core::config::MAX_PARTS`] parts, an answer holds at most 16 MiB of part bodies.
pub const MAX_PART_BODY: usize = 1 << 20;

/// What went wrong with a part, and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The backend answered with a status other than 2xx.
    Status,
    /// No answer in time.
    Timeout,
    /// No backend could be reached, or every exchange failed.
    Unreachable,
    /// The answer was not JSON, or was over [`MAX_PART_BODY`].
    Invalid,
    /// The request lacks what the part's template reads (the client's doing).
    Unfilled,
    /// Too many parts in flight on this route (the request never sent its parts).
    Busy,
}

impl Kind {
    /// The `outcome` label of `lb_aggregate_parts_total`; "ok" is index 0.
    pub const LABELS: [&'static str; 7] = [
        "ok",
        "status",
        "timeout",
        "unreachable",
        "invalid",
        "unfilled",
        "busy",
    ];

    pub fn index(self) -> usize {
        match self {
            Self::Status => 1,
            Self::Timeout => 2,
            Self::Unreachable => 3,
            Self::Invalid => 4,
            Self::Unfilled => 5,
            Self::Busy => 6,
        }
    }
}

/// A failed part, as it stands in the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartError {
    pub kind: Kind,
    pub status: u16,
    /// Says what failed, naming no backend address.
    pub error: String,
}

impl PartError {
    pub fn new(kind: Kind, status: u16, error: impl Into<String>) -> Self {
        Self {
            kind,
            status,
            error: error.into(),
        }
    }
}

pub type Outcome = Result<Box<RawValue>, PartError>;

/// A part's answer as an outcome: a 2xx body that is whole JSON (`null` when empty), else
/// an error.
pub fn decode(status: u16, body: &[u8]) -> Outcome {
    if !(200..300).contains(&status) {
        return Err(PartError::new(
            Kind::Status,
            status,
            format!("the backend answered {status}"),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        // A 2xx without content (204) has nothing to say: `null` in its place.
        return Ok(RawValue::from_string("null".into()).expect("null is JSON"));
    }
    let invalid = |why: &str| PartError::new(Kind::Invalid, 502, why);
    // Checked as JSON without building it (a raw value is kept as it came); serde_json does
    // not bound the nesting of what it skips, so lb does: a client's parser gets nothing
    // deeper than serde_json would build.
    if depth(body) > MAX_DEPTH {
        return Err(invalid("the backend's answer nests too deep"));
    }
    serde_json::from_slice::<Box<RawValue>>(body)
        .map_err(|_| invalid("the backend's answer is not JSON"))
}

/// Deepest nesting of arrays and objects a part's body may have (serde_json's own limit
/// when it builds values).
pub const MAX_DEPTH: usize = 128;

/// The deepest nesting of `[` and `{` outside strings in `json` (which need not be valid).
fn depth(json: &[u8]) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for b in crate::json_scan::outside_strings(json) {
        match b {
            b'[' | b'{' => {
                now += 1;
                max = max.max(now);
            }
            b']' | b'}' => now = now.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The answer's JSON object: `{"name": outcome, ...}` in the order given.
pub fn body<'a>(parts: impl IntoIterator<Item = (&'a str, &'a Outcome)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    for (i, (name, outcome)) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Names are config-checked (letters, digits, `_`, `-`), but escaped all the same.
        let _ = serde_json::to_writer(&mut out, name);
        out.push(b':');
        match outcome {
            Ok(v) => out.extend_from_slice(v.get().as_bytes()),
            Err(e) => {
                let _ = serde_json::to_writer(
                    &mut out,
                    &serde_json::json!({ "error": e.error, "status": e.status }),
                );
            }
        }
    }
    out.push(b'}');
    out
}

/// The whole answer's fate: `Ok` (200) unless a required part failed; then the status and
/// message of lb's answer: 400 when the request lacked what the part reads, else 502.
pub fn verdict<'a>(
    parts: impl IntoIterator<Item = (&'a str, bool, &'a Outcome)>,
) -> Result<(), (u16, String)> {
    for (name, required, outcome) in parts {
        if let (true, Err(e)) = (required, outcome) {
            let status = if e.kind == Kind::Unfilled { 400 } else { 502 };
            return Err((
                status,
                format!("required part \"{name}\" failed: {}", e.error),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_in_order_with_errors_in_place() {
        let user = decode(200, br#"{"id": 1, "name": "a"}"#);
        let orders = decode(503, b"down");
        let junk = decode(200, b"<html>");
        let parts = [("user", &user), ("orders", &orders), ("junk", &junk)];
        let v: serde_json::Value = serde_json::from_slice(&body(parts)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "user": { "id": 1, "name": "a" },
                "orders": { "error": "the backend answered 503", "status": 503 },
                "junk": { "error": "the backend's answer is not JSON", "status": 502 },
            })
        );
        let text = String::from_utf8(body(parts)).expect("utf-8");
        assert!(text.starts_with("{\"user\":"), "{text}");
        assert_eq!(
            verdict([("user", true, &user), ("orders", false, &orders)]),
            Ok(())
        );
        assert_eq!(
            verdict([("orders", true, &orders)]),
            Err((
                502,
                "required part \"orders\" failed: the backend answered 503".into()
            ))
        );
        let unfilled = Err(PartError::new(Kind::Unfilled, 400, "the request has no x"));
        assert_eq!(verdict([("u", true, &unfilled)]).map_err(|e| e.0), Err(400));
    }

    #[test]
    fn deep_or_broken_json_is_an_error() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(
            decode(200, deep.as_bytes()).err().map(|e| e.kind),
            Some(Kind::Invalid)
        );
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(decode(200, ok.as_bytes()).is_ok());
        let quoted = format!("{{\"a\": \"{}\\\"[[\"}}", "[".repeat(1000));
        assert!(
            decode(200, quoted.as_bytes()).is_ok(),
            "brackets in strings count not"
        );
        assert!(decode(200, b"{\"a\": 1} trailing").is_err());
        assert!(decode(200, b"\xff").is_err());
        assert_eq!(
            decode(204, b"").map(|v| v.get().to_string()),
            Ok("null".into())
        );
        let spaced = decode(200, b" 42 \n");
        let v: serde_json::Value = serde_json::from_slice(&body([("n", &spaced)])).expect("json");
        assert_eq!(v, serde_json::json!({ "n": 42 }));
    }
}
