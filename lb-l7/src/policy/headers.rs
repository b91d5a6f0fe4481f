//! `kind = "headers"`: set, add and remove request and response headers, with values that
//! may name the request: `${client_ip}`, `${host}`, `${method}`, `${path}`, `${consumer}`
//! (the API-key name), `${route}`. A variable with no value expands to nothing.

use http::{HeaderMap, HeaderName, HeaderValue};
use lb_core::config::HeaderOps;

use super::{Policy, Refusal, RequestInfo};

#[derive(Debug)]
pub struct Headers {
    request: HeaderOps,
    response: HeaderOps,
}

impl Headers {
    pub fn new(request: HeaderOps, response: HeaderOps) -> Self {
        Self { request, response }
    }
}

/// `template` with its `${...}` variables replaced from `info`.
pub fn expand(template: &str, info: &RequestInfo) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        match &after[..end] {
            "client_ip" => out.push_str(&info.client.to_string()),
            "host" => out.push_str(info.host.as_deref().unwrap_or("")),
            "method" => out.push_str(info.method.as_str()),
            "path" => out.push_str(&info.path),
            "consumer" => out.push_str(info.consumer.as_deref().unwrap_or("")),
            "route" => out.push_str(&info.route),
            claim if claim.starts_with("jwt.") => {
                if let Some(v) = info.claims.as_ref().and_then(|c| c.get(&claim[4..])) {
                    out.push_str(&super::jwt::claim_text(v));
                }
            }
            other => {
                out.push_str("${");
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn apply(ops: &HeaderOps, info: &RequestInfo, headers: &mut HeaderMap) {
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    let value = |t: &str| HeaderValue::from_str(&expand(t, info)).ok();
    for (name, template) in &ops.set {
        if let (Ok(n), Some(v)) = (HeaderName::from_bytes(name.as_bytes()), value(template)) {
            headers.insert(n, v);
        }
    }
    for (name, template) in &ops.add {
        if let (Ok(n), Some(v)) = (HeaderName::from_bytes(name.as_bytes()), value(template)) {
            headers.append(n, v);
        }
    }
}

impl Policy for Headers {
    fn request(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        apply(&self.request, info, headers);
        Ok(())
    }

    fn response(&self, info: &RequestInfo, headers: &mut HeaderMap) {
        apply(&self.response, info, headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_known_variables() {
        let info = RequestInfo {
            client: "192.0.2.7".parse().expect("ip"),
            method: http::Method::POST,
            host: Some("api.example.com".into()),
            path: "/v1/x".into(),
            query: None,
            route: "api".into(),
            consumer: Some("mobile".into()),
            origin: None,
            rate: None,
            claims: None,
        };
        assert_eq!(
            expand(
                "${client_ip} ${method} ${host}${path} by ${consumer} on ${route}",
                &info
            ),
            "192.0.2.7 POST api.example.com/v1/x by mobile on api"
        );
        assert_eq!(
            expand("${nope} and ${unclosed", &info),
            "${nope} and ${unclosed"
        );
        let mut h = HeaderMap::new();
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-tag", HeaderValue::from_static("a"));
        let ops = HeaderOps {
            set: vec![("x-user".into(), "${consumer}".into())],
            add: vec![("x-tag".into(), "b".into())],
            remove: vec!["x-secret".into()],
        };
        apply(&ops, &info, &mut h);
        assert_eq!(h.get("x-user").map(|v| v.as_bytes()), Some(&b"mobile"[..]));
        assert_eq!(h.get_all("x-tag").iter().count(), 2);
        assert!(!h.contains_key("x-secret"));
    }
}
