//! `kind = "transform"`: what a gateway translates or checks in bodies: JSON request bodies
//! against a JSON Schema ([`schema`], 400 with the first violation), and backend XML answers
//! into JSON ([`xml`]). Both read the body whole, up to `max_object_size`.

pub mod schema;
pub mod xml;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use lb_core::config::{Diagnostic, FileRef};

use crate::policy::{Policy, Refusal, RequestInfo};

#[derive(Debug)]
pub struct Transform {
    pub xml_to_json: bool,
    pub schema: Option<schema::Schema>,
    pub max: u64,
}

/// Reads and checks a schema file when the config loads.
pub fn load_schema(f: &FileRef, diags: &mut Vec<Diagnostic>) -> Option<schema::Schema> {
    let err = |diags: &mut Vec<Diagnostic>, m: String| {
        diags.push(Diagnostic::error(m).at(f.span.clone()).key(f.key.clone()));
    };
    let text = match std::fs::read_to_string(&f.path) {
        Ok(t) => t,
        Err(e) => {
            err(diags, format!("{}: cannot read: {e}", f.path));
            return None;
        }
    };
    let value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            err(diags, format!("{}: not JSON: {e}", f.path));
            return None;
        }
    };
    match schema::Schema::new(value) {
        Ok(s) => Some(s),
        Err(e) => {
            err(diags, format!("{}: {e}", f.path));
            None
        }
    }
}

/// The media type of `Content-Type`, lowercase, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

fn is_media(headers: &HeaderMap, kinds: &[&str], suffix: &str) -> bool {
    media_type(headers).is_some_and(|m| kinds.contains(&m.as_str()) || m.ends_with(suffix))
}

impl Transform {
    /// Whether a request's body must be checked before it goes on: there is a schema and a
    /// body (a GET or HEAD without one is left alone).
    pub fn checks(&self, method: &Method, has_body: bool) -> bool {
        self.schema.is_some() && (has_body || !matches!(*method, Method::GET | Method::HEAD))
    }

    /// Checks a whole request body: `Err(message)` is the 400's.
    pub fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        if !is_media(headers, &["application/json"], "+json") {
            return Err("expected a JSON body (Content-Type: application/json)".into());
        }
        let doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        schema
            .validate(&doc)
            .map_err(|v| format!("the body does not match the schema at {v}"))
    }

    /// Whether a response is XML to turn into JSON.
    pub fn converts(&self, headers: &HeaderMap) -> bool {
        self.xml_to_json && is_media(headers, &["application/xml", "text/xml"], "+xml")
    }

    /// The JSON form of an XML answer, with its headers adjusted.
    pub fn convert(&self, headers: &mut HeaderMap, body: &[u8]) -> Result<Bytes, String> {
        let json = xml::to_json(body).map_err(|e| e.to_string())?;
        let out = Bytes::from(json.to_string());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::ETAG);
        Ok(out)
    }
}

impl Policy for Transform {
    /// Works on bodies around the backend exchange (see the gateway); as a step of the chain
    /// it does nothing.
    fn request(&self, _info: &mut RequestInfo, _headers: &mut HeaderMap) -> Result<(), Refusal> {
        Ok(())
    }
}
