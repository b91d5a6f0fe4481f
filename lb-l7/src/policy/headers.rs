//! `kind = "headers"`: set, add and remove request and response headers, with values that
//! may name the request: `${client_ip}`, `${host}`, `${method}`, `${path}`, `${consumer}`
//! (the API-key name), `${route}`, `${jwt.CLAIM}`. A variable with no value expands to
//! nothing; a value that is no valid field value removes the field (fails closed).

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

/// Applies `ops`. A template that expands to no valid field value (a claim holding a line
/// break, say) removes the field instead: keeping the copy the client (or backend) sent
/// would pass it off as lb's own. That goes for `add` too, whose other copies would
/// otherwise stand alone.
fn apply(ops: &HeaderOps, info: &RequestInfo, headers: &mut HeaderMap) {
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    let value = |t: &str| HeaderValue::from_str(&expand(t, info)).ok();
    for (name, template) in &ops.set {
        let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        match value(template) {
            Some(v) => headers.insert(n, v),
            None => headers.remove(n),
        };
    }
    for (name, template) in &ops.add {
        let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        match value(template) {
            Some(v) => headers.append(n, v),
            None => headers.remove(n).is_some(),
        };
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
            graphql: None,
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

    #[test]
    fn a_template_that_makes_no_field_value_removes_the_field() {
        let claims =
            serde_json::json!({ "name": "eve\r\nx-admin: 1", "nul": "a\u{0}b", "del": "\u{7f}" });
        let info = RequestInfo {
            claims: Some(std::sync::Arc::new(claims)),
            ..RequestInfo::new(
                "192.0.2.7".parse().expect("ip"),
                http::Method::GET,
                None,
                "/",
                None,
                "r",
            )
        };
        for claim in ["name", "nul", "del"] {
            let mut h = HeaderMap::new();
            h.insert("x-user", HeaderValue::from_static("mallory"));
            h.append("x-tag", HeaderValue::from_static("mallory"));
            h.append("x-tag", HeaderValue::from_static("root"));
            let ops = HeaderOps {
                set: vec![("x-user".into(), format!("${{jwt.{claim}}}"))],
                add: vec![("x-tag".into(), format!("by ${{jwt.{claim}}}"))],
                remove: vec![],
            };
            apply(&ops, &info, &mut h);
            assert!(h.is_empty(), "{claim}: {h:?}");
        }
    }
}
