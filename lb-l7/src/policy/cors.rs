//! `kind = "cors"`: cross-origin resource sharing (Fetch standard). A preflight (`OPTIONS`
//! with `Origin` and `Access-Control-Request-Method`) is answered by lb itself, never
//! reaching the backend; other requests from an allowed origin get the CORS headers on their
//! response. A disallowed origin gets no CORS headers at all, so the browser refuses.

use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::{Policy, Refusal, RequestInfo};
use crate::body::empty;

#[derive(Debug)]
pub struct Cors {
    origins: Vec<String>,
    any_origin: bool,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

fn joined(list: &[String]) -> Option<HeaderValue> {
    (!list.is_empty())
        .then(|| HeaderValue::from_str(&list.join(", ")).ok())
        .flatten()
}

impl Cors {
    pub fn new(
        origins: &[String],
        methods: &[String],
        headers: &[String],
        expose: &[String],
        credentials: bool,
        max_age: Option<Duration>,
    ) -> Self {
        Self {
            any_origin: origins.iter().any(|o| o == "*"),
            origins: origins.iter().map(|o| o.to_ascii_lowercase()).collect(),
            methods: joined(methods).unwrap_or(HeaderValue::from_static("GET, HEAD, POST")),
            headers: joined(headers),
            expose: joined(expose),
            credentials,
            max_age: max_age.map(|d| HeaderValue::from(d.as_secs())),
        }
    }

    /// Whether `origin` may read responses: listed exactly, under a `*.` wildcard (any
    /// subdomain, not the bare domain), or `*`.
    pub fn allows(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|o| match o.split_once("://*.") {
            Some((scheme, suffix)) => origin
                .strip_prefix(scheme)
                .and_then(|r| r.strip_prefix("://"))
                .is_some_and(|host| {
                    host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"))
                }),
            None => *o == origin,
        })
    }

    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    fn common(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

impl Policy for Cors {
    fn request(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        let origin = headers.get(header::ORIGIN).cloned();
        let preflight = info.method == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let allowed = origin
            .as_ref()
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| self.allows(o));
        info.origin = origin.filter(|_| allowed);
        if !preflight {
            return Ok(());
        }
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if let Some(o) = &info.origin {
            let h = resp.headers_mut();
            self.common(o, h);
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
            if let Some(v) = &self.headers {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            if let Some(v) = &self.max_age {
                h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
            }
        }
        // The preflight is the answer; later policies' response phase must not add to it.
        info.origin = None;
        Err(Box::new(resp))
    }

    fn response(&self, info: &RequestInfo, headers: &mut HeaderMap) {
        if let Some(o) = &info.origin {
            self.common(o, headers);
            if let Some(v) = &self.expose {
                headers.insert(
                    HeaderName::from_static("access-control-expose-headers"),
                    v.clone(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_subdomain_origins() {
        let c = Cors::new(
            &[
                "https://app.example.com".into(),
                "https://*.example.org".into(),
            ],
            &[],
            &[],
            &[],
            false,
            None,
        );
        assert!(c.allows("https://app.example.com"));
        assert!(c.allows("HTTPS://APP.example.com"));
        assert!(
            !c.allows("http://app.example.com"),
            "the scheme is part of the origin"
        );
        assert!(c.allows("https://a.b.example.org"));
        assert!(
            !c.allows("https://example.org"),
            "a wildcard takes subdomains only"
        );
        assert!(!c.allows("https://evilexample.org"));
        assert!(!c.allows("https://example.org.evil.com"));
        let any = Cors::new(&["*".into()], &[], &[], &[], false, None);
        assert!(any.allows("https://whatever.test"));
    }
}
