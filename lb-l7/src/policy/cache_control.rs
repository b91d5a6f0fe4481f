//! What a response's `Cache-Control` (and `Expires`) let a shared cache do with it (RFC 9111
//! §3, §5.2, §5.3), pure: whether it may be stored, for how long under the policy's `ttl`, and
//! whether it may answer authenticated requests.

use std::time::Duration;

use http::{header, HeaderMap, StatusCode};

use super::cache_key;

/// The directives of every `Cache-Control` line, trimmed and lowercase.
pub fn directives(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect()
}

fn seconds(dirs: &[String], name: &str) -> Option<u64> {
    dirs.iter().find_map(|d| {
        d.strip_prefix(name)?
            .strip_prefix('=')?
            .trim_matches('"')
            .parse()
            .ok()
    })
}

/// Seconds until the response's `Expires` (RFC 9111 §5.3), counted from its `Date` (or now):
/// `Some(0)` for a date in the past or one that does not parse ("0", "-1"), which say the
/// response is already stale; `None` without `Expires`. Read only without `max-age`.
fn expires_in(headers: &HeaderMap) -> Option<u64> {
    let date = |name| {
        let v = headers.get(name)?.to_str().ok()?;
        httpdate::parse_http_date(v.trim()).ok()
    };
    headers.get(header::EXPIRES)?;
    let Some(expires) = date(header::EXPIRES) else {
        return Some(0);
    };
    let from = date(header::DATE).unwrap_or_else(std::time::SystemTime::now);
    Some(expires.duration_since(from).map_or(0, |d| d.as_secs()))
}

/// How long a response may be stored under a cache's `ttl`, if at all, and whether it may
/// answer authenticated requests.
pub fn storable(
    ttl: Duration,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<(Duration, bool)> {
    if status != StatusCode::OK || headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    // A `Cache-Control` line lb cannot read might forbid storing: it is not taken as
    // saying nothing.
    if headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_err())
    {
        return None;
    }
    let dirs = directives(headers);
    // `private="field"` and `no-cache="field"` forbid storing those fields; lb stores
    // whole responses, so it stores none of these (however spaced around `=`).
    let forbids = |d: &str| {
        let name = d.split_once('=').map_or(d, |(n, _)| n).trim_end();
        ["no-store", "private", "no-cache"].contains(&name)
    };
    if dirs.iter().any(|d| forbids(d)) {
        return None;
    }
    // `Vary: *`: no request can be shown to match (the names are read again on fill).
    cache_key::vary_names(headers)?;
    let said = seconds(&dirs, "s-maxage")
        .or_else(|| seconds(&dirs, "max-age"))
        .or_else(|| expires_in(headers));
    let ttl = said.map_or(ttl, |s| ttl.min(Duration::from_secs(s)));
    // Only these say the answer is the same for every user; RFC 9111 §3.5 also lets
    // `must-revalidate` through, but lb does not revalidate, so it would not help.
    let for_authorized = dirs.iter().any(|d| d == "public") || seconds(&dirs, "s-maxage").is_some();
    (!ttl.is_zero()).then_some((ttl, for_authorized))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TTL: Duration = Duration::from_secs(600);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn what_may_be_stored_and_for_how_long() {
        let ok = StatusCode::OK;
        assert_eq!(
            storable(TTL, ok, &HeaderMap::new()),
            Some((Duration::from_secs(600), false))
        );
        assert_eq!(
            storable(TTL, ok, &headers(&[("cache-control", "max-age=60")])),
            Some((Duration::from_secs(60), false))
        );
        assert_eq!(
            storable(
                TTL,
                ok,
                &headers(&[("cache-control", "max-age=60, s-maxage=30")])
            ),
            Some((Duration::from_secs(30), true))
        );
        assert_eq!(
            storable(TTL, ok, &headers(&[("cache-control", "max-age=99999")])),
            Some((Duration::from_secs(600), false)),
            "the policy's ttl caps it"
        );
        assert_eq!(
            storable(
                TTL,
                ok,
                &headers(&[("cache-control", "public, max-age=60")])
            ),
            Some((Duration::from_secs(60), true))
        );
        assert_eq!(
            storable(TTL, ok, &headers(&[("cache-control", "s-maxage=soon")])),
            Some((Duration::from_secs(600), false)),
            "an s-maxage that says no time says nothing"
        );
        assert_eq!(
            storable(TTL, ok, &headers(&[("cache-control", "must-revalidate")])),
            Some((Duration::from_secs(600), false)),
            "only public or s-maxage let an entry answer authenticated requests"
        );
        for no in [
            "no-store",
            "private",
            "no-cache",
            "max-age=0",
            "s-maxage=0",
            "s-maxage=0, max-age=60",
            "private, public",
            "public, PRIVATE",
            "public, private=\"x-token\"",
            "no-cache=\"x-token\", max-age=60",
        ] {
            assert_eq!(
                storable(TTL, ok, &headers(&[("cache-control", no)])),
                None,
                "{no}"
            );
        }
        assert_eq!(
            storable(TTL, StatusCode::NOT_FOUND, &HeaderMap::new()),
            None
        );
        assert_eq!(storable(TTL, ok, &headers(&[("set-cookie", "a=b")])), None);
        assert_eq!(
            storable(TTL, ok, &headers(&[("vary", "Accept-Language")])).map(|s| s.0),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            storable(TTL, ok, &headers(&[("vary", "Cookie")])).map(|s| s.0),
            Some(Duration::from_secs(600)),
            "a Vary the key does not hold: stored, and matched on lookup"
        );
        assert_eq!(storable(TTL, ok, &headers(&[("vary", "*")])), None);
        assert_eq!(storable(TTL, ok, &headers(&[("vary", "accept, *")])), None);
    }

    /// Review of issue 15: a `Cache-Control` lb cannot read (a byte past ASCII), or one
    /// spaced around `=`, still forbids: reading it as absent would store a `private` answer.
    #[test]
    fn a_cache_control_lb_cannot_read_forbids_storing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"private, ext=\"\xff\"").expect("obs-text is a value"),
        );
        assert_eq!(storable(TTL, StatusCode::OK, &h), None);
        for cc in ["private =\"x-token\"", "no-cache =\"x\"", " PRIVATE "] {
            assert_eq!(
                storable(TTL, StatusCode::OK, &headers(&[("cache-control", cc)])),
                None,
                "{cc}"
            );
        }
    }

    /// Review of issue 15, open (and on main): an `Expires` in the past (or invalid, which
    /// RFC 9111 §5.3 reads as in the past) is an explicit expiry, which the policy's `ttl`
    /// (heuristic freshness, §4.2.2) must not override; a backend that marks a per-user page
    /// only with `Expires: 0` (HTTP/1.0 style) has it stored for everyone for the whole ttl.
    #[test]
    fn an_expires_in_the_past_is_not_stored() {
        for expires in ["0", "-1", "Thu, 01 Jan 1970 00:00:00 GMT"] {
            assert_eq!(
                storable(TTL, StatusCode::OK, &headers(&[("expires", expires)])),
                None,
                "{expires}"
            );
        }
        let date = "Thu, 03 Dec 2026 10:00:00 GMT";
        let later = "Thu, 03 Dec 2026 10:01:00 GMT";
        assert_eq!(
            storable(
                TTL,
                StatusCode::OK,
                &headers(&[("date", date), ("expires", later)])
            ),
            Some((Duration::from_secs(60), false)),
            "counted from Date"
        );
        assert_eq!(
            storable(
                TTL,
                StatusCode::OK,
                &headers(&[("expires", "0"), ("cache-control", "max-age=60")])
            ),
            Some((Duration::from_secs(60), false)),
            "max-age overrides Expires"
        );
    }
}
