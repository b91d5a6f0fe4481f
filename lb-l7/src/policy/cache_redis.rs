//! A cache entry as kept in Redis, where every lb on it can read it: pure bytes both ways.

use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::cache::Stored;

/// An entry as kept in Redis: a line `lb-cache-2 STATUS STORED_MS EXPIRES_MS AUTH VARIED`
/// (wall clock, so any lb can judge its age), VARIED lines `name HEX` (the SHA-256 of the
/// value, never the value: see [`super::cache_key::Varied`]; or `name -` for a
/// field the request lacked) of the fields the response varies by, a `name: value` line per
/// header, an empty line, the body. (Entries of the first format, which knew no `Vary`, are
/// not read.)
pub(super) fn encode(s: &Stored) -> Vec<u8> {
    let wall = |t: Instant| {
        let now = Instant::now();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i128);
        (unix + (t.saturating_duration_since(now).as_millis() as i128)
            - (now.saturating_duration_since(t).as_millis() as i128)) as u64
    };
    let mut out = format!(
        "lb-cache-2 {} {} {} {} {}\n",
        s.status.as_u16(),
        wall(s.stored_at),
        wall(s.expires),
        u8::from(s.for_authorized),
        s.varied.len()
    )
    .into_bytes();
    for (n, v) in &s.varied {
        let v = v.as_ref().map_or_else(
            || "-".to_string(),
            |v| v.iter().map(|b| format!("{b:02x}")).collect(),
        );
        out.extend_from_slice(format!("{n} {v}\n").as_bytes());
    }
    for (n, v) in &s.headers {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(&s.body);
    out
}

/// An entry read back from Redis; `None` for anything malformed or already expired.
pub(super) fn decode(bytes: &[u8]) -> Option<Stored> {
    let end = bytes.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split('\n');
    let first: Vec<&str> = lines.next()?.split(' ').collect();
    let [magic, status, stored, expires, auth, varied] = first.as_slice() else {
        return None;
    };
    if *magic != "lb-cache-2" {
        return None;
    }
    let mut selecting = Vec::new();
    for _ in 0..varied.parse::<usize>().ok()? {
        let (n, v) = lines.next()?.split_once(' ')?;
        let v = match v {
            "-" => None,
            hex => Some(unhex(hex)?),
        };
        selecting.push((HeaderName::from_bytes(n.as_bytes()).ok()?, v));
    }
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    let (stored, expires): (u64, u64) = (stored.parse().ok()?, expires.parse().ok()?);
    let left = expires.checked_sub(now_unix).filter(|l| *l > 0)?;
    let age = now_unix.saturating_sub(stored);
    let now = Instant::now();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (n, v) = line.split_once(": ")?;
        headers.append(
            HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_str(v).ok()?,
        );
    }
    Some(Stored {
        status: StatusCode::from_u16(status.parse().ok()?).ok()?,
        headers,
        body: Bytes::copy_from_slice(&bytes[end + 2..]),
        stored_at: now.checked_sub(Duration::from_millis(age)).unwrap_or(now),
        expires: now + Duration::from_millis(left),
        for_authorized: *auth == "1",
        varied: selecting,
    })
}

fn unhex(hex: &str) -> Option<Bytes> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn entries_survive_the_trip_through_redis_bytes() {
        let now = Instant::now();
        let s = Stored {
            status: StatusCode::OK,
            headers: headers(&[("content-type", "text/plain"), ("x-a", "1"), ("x-a", "2")]),
            body: Bytes::from_static(b"line\n\nwith blank lines\n"),
            stored_at: now,
            expires: now + Duration::from_secs(60),
            for_authorized: true,
            varied: vec![
                (
                    HeaderName::from_static("accept-encoding"),
                    Some(Bytes::from_static(b"gzip,br")),
                ),
                (HeaderName::from_static("accept-language"), None),
                (HeaderName::from_static("x-empty"), Some(Bytes::new())),
            ],
        };
        let back = decode(&encode(&s)).expect("decodes");
        assert_eq!(
            (back.status, back.body.clone(), back.for_authorized),
            (s.status, s.body.clone(), true)
        );
        assert_eq!(back.varied, s.varied);
        assert_eq!(back.headers.get_all("x-a").iter().count(), 2);
        assert!(back.expires > now + Duration::from_secs(58));
        assert!(decode(b"garbage").is_none());
        assert!(
            decode(b"lb-cache-2 200 1 2 0 0\n\nbody").is_none(),
            "expired long ago"
        );
        let far = u64::MAX / 2;
        assert!(decode(format!("lb-cache-2 200 1 {far} 0 0\n\nbody").as_bytes()).is_some());
        assert!(
            decode(format!("lb-cache-1 200 1 {far} 0\n\nbody").as_bytes()).is_none(),
            "the first format knew no Vary"
        );
        assert!(decode(format!("lb-cache-2 200 1 {far} 0 1\nx 0\n\nbody").as_bytes()).is_none());
    }
}
