//! The config: TOML text → raw serde structs → validated typed model, with every error found
//! reported compiler-style. Pure but for one step: [`load`] reads the TLS files the config
//! names (callers read the config file itself and hand over its text).

mod diag;
mod duration;
mod model;
mod parse;
mod policy_model;
mod raw;
mod size;
mod validate;

pub use diag::{Diagnostic, Severity, Source};
pub use duration::{format_duration, parse_duration};
pub use model::*;
pub use size::parse_size;
pub use validate::{parse_sha256, MAX_WEIGHT};

use std::fmt;

use sha2::{Digest, Sha256};

/// A config that passed validation, with its warnings and the text it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    pub source: Source,
    /// `sha256:<hex>` of the file's bytes, shown in `/api/status`.
    pub hash: String,
    /// The rustls configs built from the TLS files named, read at load time.
    pub tls: crate::tls::TlsMaterial,
    /// What the HTTP side read at load time (policy key files), if it is registered.
    pub http: Option<crate::proxy::handoff::Prepared>,
}

/// A config that failed validation: every diagnostic found, errors and warnings.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub source: Source,
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{}", d.render(&self.source))?;
        }
        let n = self.error_count();
        write!(
            f,
            "{}: {n} error{} found; the config was not used",
            self.source.name,
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Invalid {}

/// Parses and validates a config text, then reads and checks the TLS files it names.
pub fn load(source: Source) -> Result<Loaded, Invalid> {
    let mut diagnostics = Vec::new();
    let raw = parse::parse(&source.text, &mut diagnostics);
    let config = validate::validate(raw, &mut diagnostics);
    let tls = match &config {
        Some(c) => crate::tls::material::build(c, &mut diagnostics),
        None => Default::default(),
    };
    let http = config
        .as_ref()
        .and_then(|c| crate::proxy::handoff::prepare_http(c, &mut diagnostics));
    // Report in file order, as a reader goes through the file.
    diagnostics.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
    match config {
        Some(config) if !diagnostics.iter().any(Diagnostic::is_error) => {
            let hash = format!("sha256:{:x}", Sha256::digest(source.text.as_bytes()));
            Ok(Loaded {
                config,
                warnings: diagnostics,
                source,
                hash,
                tls,
                http,
            })
        }
        _ => Err(Invalid {
            source,
            diagnostics,
        }),
    }
}

/// Parses and validates a config given as a string (tests, `lb demo`).
pub fn load_str(name: &str, text: &str) -> Result<Loaded, Invalid> {
    load(Source {
        name: name.to_string(),
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests;
