//! `[tracing]`: the OTLP endpoint (plain `http://` only: lb has no client TLS for it) and the
//! service name. Pure; no I/O.

use super::{valid_host_name, Ctx};
use crate::config::diag::Diagnostic;
use crate::config::model::{OtlpEndpoint, Tracing};
use crate::config::raw::RawTracing;

pub(super) fn tracing(cx: &mut Ctx<'_>, t: &RawTracing) -> Tracing {
    let otlp_endpoint = t.otlp_endpoint.as_ref().and_then(|e| {
        let found = endpoint(e.get_ref());
        if let Err(why) = &found {
            cx.push(
                Diagnostic::error(format!("tracing.otlp_endpoint: {why}"))
                    .at(e.span())
                    .key("tracing.otlp_endpoint")
                    .help("write the collector's OTLP/HTTP base URL, e.g. \"http://127.0.0.1:4318\" (spans go to /v1/traces under it)"),
            );
        }
        found.ok()
    });
    let service_name = match &t.service_name {
        None => "lb".to_string(),
        Some(n) => {
            let v = n.get_ref();
            if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
                cx.push(
                    Diagnostic::error(
                        "tracing.service_name must be 1 to 128 characters, no control characters",
                    )
                    .at(n.span())
                    .key("tracing.service_name"),
                );
            }
            v.clone()
        }
    };
    Tracing {
        otlp_endpoint,
        service_name,
    }
}

/// Reads `http://host[:port][/prefix]`.
pub fn endpoint(url: &str) -> Result<OtlpEndpoint, String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!("scheme \"{scheme}\" is not supported; use http://"))
        }
        None => return Err(format!("\"{url}\" is not a URL")),
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if prefix.contains(['?', '#']) || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the path may have no query, fragment, space or control".into());
    }
    if authority.contains('@') {
        return Err("user information is not supported".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (ip, after) = v6.split_once(']').ok_or("unclosed [")?;
        (ip, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    if host.is_empty() || !(ip || valid_host_name(host)) {
        return Err(format!("\"{host}\" is not a host name or IP address"));
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("\"{p}\" is not a port")),
        },
    };
    Ok(OtlpEndpoint {
        host: host.to_string(),
        port,
        path: format!("{}/v1/traces", prefix.trim_end_matches('/')),
    })
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_are_read_or_refused() {
        let e = endpoint("http://127.0.0.1:4318").expect("valid");
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 4318, "/v1/traces")
        );
        let e = endpoint("http://otel.internal/prefix/").expect("valid");
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("otel.internal", 80, "/prefix/v1/traces")
        );
        let e = endpoint("http://[::1]:4318").expect("valid");
        assert_eq!((e.host.as_str(), e.port), ("::1", 4318));
        for bad in [
            "https://x:4318",
            "127.0.0.1:4318",
            "http://:4318",
            "http://x:0",
            "http://x:99999",
            "http://u@x:1",
            "http://x:1/a?b",
            "http://x y:1",
            "http://[::1:1",
        ] {
            assert!(endpoint(bad).is_err(), "{bad} was accepted");
        }
    }
}
