//! `grpc_transcode`: a route that answers JSON/HTTP requests by calling unary gRPC methods,
//! mapped by their `google.api.http` options. The descriptor set is read and every rule
//! checked when the config loads ([`load`], [`rules`]); per request, a rule is picked by
//! method and path ([`Transcoder::select`], [`template`]), the request message is built
//! ([`message`]), and the answer and its gRPC status become JSON and an HTTP status
//! ([`status`]). All pure; the exchange with the backend is [`call`].
//!
//! Such routes take the general path only: the lean path moves HTTP/1.1 bytes and has no
//! place to rewrite a body (their pool is HTTP/2, which the lean path never serves either).

pub mod call;
pub mod message;
pub mod rules;
pub mod status;
pub mod template;
pub mod wire;

use http::Method;
use lb_core::config::{Diagnostic, GrpcTranscode};
use prost_reflect::DescriptorPool;

pub use rules::Rule;

/// A route's transcoding: its rules, most specific first.
#[derive(Debug)]
pub struct Transcoder {
    pub rules: Vec<Rule>,
}

/// A template's variables as a request bound them: `(field path, decoded value)`.
pub type Bindings<'t> = Vec<(&'t [String], String)>;

/// Why no rule takes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// No rule has this path (404).
    Path,
    /// Rules have this path, for other methods (405).
    Method,
}

impl Transcoder {
    /// The rule for `method` and `path` (normalised, without query and `;parameters`),
    /// with its variables' values.
    pub fn select<'t>(
        &'t self,
        method: &Method,
        path: &str,
    ) -> Result<(&'t Rule, Bindings<'t>), Unmatched> {
        let mut other_method = false;
        for r in &self.rules {
            if let Some(vars) = r.template.matches(path) {
                if r.method == *method {
                    return Ok((r, vars));
                }
                other_method = true;
            }
        }
        Err(if other_method {
            Unmatched::Method
        } else {
            Unmatched::Path
        })
    }
}

/// Reads a route's descriptor set and builds its rules; problems go to `diags`, at the
/// config keys that named them.
pub fn load(t: &GrpcTranscode, diags: &mut Vec<Diagnostic>) -> Option<Transcoder> {
    let f = &t.descriptor_set;
    let err = |diags: &mut Vec<Diagnostic>, m: String| {
        diags.push(Diagnostic::error(m).at(f.span.clone()).key(f.key.clone()));
    };
    let bytes = match std::fs::read(&f.path) {
        Ok(b) => b,
        Err(e) => {
            err(diags, format!("{}: cannot read: {e}", f.path));
            return None;
        }
    };
    from_bytes(&bytes, &t.services)
        .map_err(|errors| {
            for e in errors {
                let d = Diagnostic::error(format!("{}: {e}", f.path))
                    .at(t.services_span.clone())
                    .key(f.key.replace(".descriptor_set", ".services"));
                diags.push(d);
            }
        })
        .ok()
}

/// The transcoder of `services` in an encoded `FileDescriptorSet`.
pub fn from_bytes(bytes: &[u8], services: &[String]) -> Result<Transcoder, Vec<String>> {
    let pool =
        DescriptorPool::decode(bytes).map_err(|e| vec![format!("not a FileDescriptorSet: {e}")])?;
    Ok(Transcoder {
        rules: rules::build(&pool, services)?,
    })
}

/// A path segment percent-decoded into UTF-8 (`None`: malformed or not UTF-8).
pub fn decode(s: &str) -> Option<String> {
    decode_with(s, false)
}

/// As [`decode`], but `%2F` stays encoded: a multi-segment variable keeps its segments.
pub fn decode_keeping_slash(s: &str) -> Option<String> {
    decode_with(s, true)
}

fn decode_with(s: &str, keep_slash: bool) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = crate::path::hex(*b.get(i + 1)?)?;
            let l = crate::path::hex(*b.get(i + 2)?)?;
            let c = h << 4 | l;
            if keep_slash && c == b'/' {
                out.extend_from_slice(&b[i..i + 3]);
            } else {
                out.push(c);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
