//! A refused GraphQL request's answer: a GraphQL error body
//! (`{"errors":[{"message":..,"extensions":{"code":..}}]}`) with the refusal's status, and
//! one count in `lb_graphql_refused_total{route,reason}`.

use http::{header, HeaderValue, Response, StatusCode};

use super::Refusal;
use crate::body::full;
use crate::upstream::Body;

/// The body of a GraphQL error answer.
pub fn error_json(r: &Refusal) -> String {
    serde_json::json!({
        "errors": [{ "message": r.to_string(), "extensions": { "code": r.code() } }]
    })
    .to_string()
}

/// Counts the refusal against `route` and answers it.
pub fn refuse(route: &str, r: &Refusal) -> Response<Body> {
    metrics::counter!(
        "lb_graphql_refused_total",
        "route" => route.to_string(),
        "reason" => r.code(),
    )
    .increment(1);
    let mut resp = Response::new(full(error_json(r)));
    *resp.status_mut() = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if *r == Refusal::Method {
        h.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_graphql_shaped() {
        let v: serde_json::Value =
            serde_json::from_str(&error_json(&Refusal::Introspection)).expect("json");
        assert_eq!(
            v["errors"][0]["extensions"]["code"],
            "INTROSPECTION_DISABLED"
        );
        assert_eq!(v["errors"][0]["message"], "introspection is disabled");
        let r = refuse("r", &Refusal::Method);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[header::ALLOW], "GET, POST, OPTIONS");
    }
}
