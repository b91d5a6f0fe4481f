//! Who may use the admin API, decided from a request's head alone. Pure; no I/O.
//!
//! Browsers are the threat: any page a developer opens can send a "simple" cross-origin POST
//! (a form, or `fetch` with `mode: "no-cors"`) to a loopback admin port, and a DNS-rebound
//! name can even read the answers. So a request that changes state must come from the admin
//! API's own origin (browsers always send `Origin` on such POSTs; curl and scripts send none),
//! and, unless a token guards the API, `Host` must be an IP literal, `localhost` or a name in
//! `admin.hosts`: a rebound name is none of those.

use std::net::{Ipv4Addr, Ipv6Addr};

use hyper::header::{HeaderMap, HOST, ORIGIN, REFERER};
use hyper::Method;

/// Why a request was refused before its handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` is not a name this API answers to (421).
    Host(String),
    /// A state-changing request from another origin (403).
    Origin(String),
}

/// What the admin config says about access.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// `admin.hosts`, lowercase, no trailing dot.
    pub hosts: &'a [String],
    /// Whether `Host` is checked: without a token, or with `hosts` set.
    pub check_host: bool,
}

/// `Ok` when the request may go on to the token check and its handler.
pub fn check(
    rules: Rules<'_>,
    method: &Method,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let host = headers
        .get(HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| authority.map(str::to_string));
    if rules.check_host {
        // No Host at all (HTTP/1.0) cannot be a browser's rebound request.
        if let Some(h) = &host {
            if !host_allowed(h, rules.hosts) {
                return Err(Refusal::Host(h.clone()));
            }
        }
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    // Fetch metadata, where the browser sends it, says the same thing more directly.
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(Refusal::Origin(format!(
                "Sec-Fetch-Site: {}",
                String::from_utf8_lossy(site.as_bytes())
            )));
        }
    }
    let (what, claimed) = match (headers.get(ORIGIN), headers.get(REFERER)) {
        (Some(o), _) => ("Origin", o),
        // Old browsers send a Referer but no Origin on a form POST.
        (None, Some(r)) => ("Referer", r),
        (None, None) => return Ok(()),
    };
    let claimed = String::from_utf8_lossy(claimed.as_bytes()).into_owned();
    let same = host.as_deref().is_some_and(|h| same_origin(&claimed, h));
    if same {
        Ok(())
    } else {
        Err(Refusal::Origin(format!("{what}: {claimed}")))
    }
}

/// A `Host` value split into its host and port; `None` when it is not `host[:port]`.
fn split_host(value: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&value[..v6.len() + 2], port)
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// An IP literal, `localhost`, or one of `hosts` (case and one trailing dot ignored).
pub fn host_allowed(value: &str, hosts: &[String]) -> bool {
    let Some((host, _)) = split_host(value) else {
        return false;
    };
    if host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    name == "localhost" || hosts.contains(&name)
}

/// Whether `claimed` (an Origin, or a Referer URL) is `http://` + this request's `Host`.
fn same_origin(claimed: &str, host: &str) -> bool {
    let Some(rest) = claimed
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
    else {
        // `null`, https, file: and anything else is another origin: the API is plain HTTP.
        return false;
    };
    let rest = &claimed[rest.len()..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    if authority.contains('@') {
        return false;
    }
    match (split_host(authority), split_host(host)) {
        (Some((a, ap)), Some((b, bp))) => {
            a.eq_ignore_ascii_case(b) && ap.unwrap_or(80) == bp.unwrap_or(80)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    const OPEN: Rules<'static> = Rules {
        hosts: &[],
        check_host: true,
    };

    #[test]
    fn hosts_an_ip_literal_localhost_or_a_listed_name() {
        let listed = ["lb.example".to_string()];
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9900",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:9900",
            "localhost",
            "LOCALHOST:9900",
            "localhost.:9900",
            "lb.example",
            "LB.Example.:8080",
        ] {
            assert!(host_allowed(ok, &listed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9900",
            "localhost.evil.example",
            "lb.example.evil",
            "127.0.0.1.nip.io",
            "2130706433",
            "[::1",
            "[evil]:80",
            "::1",
            "127.0.0.1:",
            "127.0.0.1:x",
            "127.0.0.1:99999",
            "",
            ":80",
            "lb.example@evil",
        ] {
            assert!(!host_allowed(bad, &listed), "{bad}");
        }
    }

    #[test]
    fn a_foreign_host_is_refused_only_when_hosts_are_checked() {
        let h = headers(&[("host", "rebound.example:9900")]);
        assert!(matches!(
            check(OPEN, &Method::GET, None, &h),
            Err(Refusal::Host(_))
        ));
        let token = Rules {
            hosts: &[],
            check_host: false,
        };
        assert_eq!(check(token, &Method::GET, None, &h), Ok(()));
        // No Host at all (HTTP/1.0, curl -H 'Host:'): not a browser.
        assert_eq!(check(OPEN, &Method::GET, None, &HeaderMap::new()), Ok(()));
        // Absolute-form target without a Host header.
        assert!(check(OPEN, &Method::GET, Some("evil.example"), &HeaderMap::new()).is_err());
    }

    #[test]
    fn a_post_from_its_own_origin_passes() {
        for (host, origin) in [
            ("127.0.0.1:9900", "http://127.0.0.1:9900"),
            ("localhost:9900", "http://LOCALHOST:9900"),
            ("[::1]:9900", "http://[::1]:9900"),
            ("127.0.0.1", "http://127.0.0.1:80"),
            ("127.0.0.1:80", "http://127.0.0.1"),
        ] {
            let h = headers(&[("host", host), ("origin", origin)]);
            assert_eq!(check(OPEN, &Method::POST, None, &h), Ok(()), "{origin}");
        }
        let h = headers(&[
            ("host", "127.0.0.1:9900"),
            ("referer", "http://127.0.0.1:9900/?x"),
        ]);
        assert_eq!(check(OPEN, &Method::POST, None, &h), Ok(()));
        let h = headers(&[
            ("host", "127.0.0.1:9900"),
            ("origin", "http://127.0.0.1:9900"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(check(OPEN, &Method::POST, None, &h), Ok(()));
        // Scripts send neither.
        let h = headers(&[("host", "127.0.0.1:9900")]);
        assert_eq!(check(OPEN, &Method::POST, None, &h), Ok(()));
    }

    #[test]
    fn a_post_from_any_other_origin_is_refused() {
        for (host, extra) in [
            ("127.0.0.1:9900", ("origin", "http://evil.example")),
            ("127.0.0.1:9900", ("origin", "null")),
            ("127.0.0.1:9900", ("origin", "http://127.0.0.1:9901")),
            ("127.0.0.1:9900", ("origin", "https://127.0.0.1:9900")),
            ("127.0.0.1:9900", ("origin", "http://127.0.0.1")),
            ("127.0.0.1:9900", ("origin", "http://localhost:9900")),
            (
                "127.0.0.1:9900",
                ("origin", "http://127.0.0.1:9900@evil.example"),
            ),
            ("127.0.0.1:9900", ("origin", "file://")),
            ("127.0.0.1:9900", ("referer", "http://evil.example/page")),
            (
                "127.0.0.1:9900",
                ("referer", "http://127.0.0.1:9900.evil.example/"),
            ),
            ("127.0.0.1:9900", ("sec-fetch-site", "cross-site")),
            ("127.0.0.1:9900", ("sec-fetch-site", "same-site")),
        ] {
            let h = headers(&[("host", host), extra]);
            assert!(
                matches!(
                    check(OPEN, &Method::POST, None, &h),
                    Err(Refusal::Origin(_))
                ),
                "{extra:?}"
            );
            // A token does not lift the Origin check.
            let token = Rules {
                hosts: &[],
                check_host: false,
            };
            assert!(check(token, &Method::POST, None, &h).is_err(), "{extra:?}");
            assert!(
                check(token, &Method::DELETE, None, &h).is_err(),
                "{extra:?}"
            );
        }
        // An Origin but no Host to compare it with.
        let h = headers(&[("origin", "http://127.0.0.1:9900")]);
        assert!(check(OPEN, &Method::POST, None, &h).is_err());
        // GETs may come from anywhere the Host allows: the browser keeps the answer from a
        // foreign page (no CORS headers), and a GET changes nothing.
        let h = headers(&[
            ("host", "127.0.0.1:9900"),
            ("origin", "http://evil.example"),
        ]);
        assert_eq!(check(OPEN, &Method::GET, None, &h), Ok(()));
    }

    #[test]
    fn a_rebound_name_is_refused_even_from_its_own_origin() {
        let h = headers(&[
            ("host", "rebound.example:9900"),
            ("origin", "http://rebound.example:9900"),
        ]);
        assert!(matches!(
            check(OPEN, &Method::POST, None, &h),
            Err(Refusal::Host(_))
        ));
    }
}
