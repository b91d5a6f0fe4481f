//! The config: TOML text → raw serde structs → validated typed model, with every error found
//! reported compiler-style, in stages: [`validate`] (pure: parse, then check into the typed
//! model) and [`prepare`] (reads the TLS files the config names, and takes what the HTTP side
//! prepared). [`load`] runs both; callers read the config file itself and hand over its text.

mod aggregate_model;
mod diag;
mod duration;
mod graphql_model;
mod model;
mod parse;
mod policy_model;
mod pool_model;
mod raw;
mod size;
mod validate;

pub use aggregate_model::*;
pub use diag::{Diagnostic, Severity, Source};
pub use duration::{format_duration, parse_duration};
pub use model::*;
pub use size::parse_size;
pub use validate::{parse_sha256, MAX_WEIGHT};

use std::fmt;

use sha2::{Digest, Sha256};

/// A config that passed validation, with its warnings and the text it came from; nothing
/// it names outside itself (TLS files, key files) has been read yet.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    pub source: Source,
}

/// A config ready to run: validated, and the files it names read and checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    pub source: Source,
    /// `sha256:<hex>` of the file's bytes, shown in `/api/status`.
    pub hash: String,
    /// The rustls configs built from the TLS files named, read at load time.
    pub tls: crate::tls::TlsMaterial,
    /// What the HTTP side prepared for this config (policy key files read), when the process
    /// serves http listeners.
    pub http: Option<std::sync::Arc<dyn crate::proxy::handoff::HttpPrepared>>,
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

/// Stage one and two, pure: parses the text and validates it into the typed model,
/// collecting every error.
pub fn validate(source: Source) -> Result<Validated, Invalid> {
    let mut diagnostics = Vec::new();
    let raw = parse::parse(&source.text, &mut diagnostics);
    let config = validate::validate(raw, &mut diagnostics);
    match config {
        Some(config) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(Validated {
            config,
            warnings: diagnostics,
            source,
        }),
        _ => Err(invalid(source, diagnostics)),
    }
}

/// Stage three: reads and checks the TLS files a validated config names, and takes what the
/// HTTP side prepared for it (`http`, with the problems it found in `http_diags`).
pub fn prepare(
    v: Validated,
    http: Option<std::sync::Arc<dyn crate::proxy::handoff::HttpPrepared>>,
    http_diags: Vec<Diagnostic>,
) -> Result<Loaded, Invalid> {
    let Validated {
        config,
        mut warnings,
        source,
    } = v;
    let mut diagnostics = http_diags;
    let tls = crate::tls::material::build(&config, &mut diagnostics);
    diagnostics.append(&mut warnings);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(invalid(source, diagnostics));
    }
    sort(&mut diagnostics);
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

/// All three stages; `http` prepares the HTTP side (the binary passes lb-l7's).
pub fn load(
    source: Source,
    http: Option<&dyn crate::proxy::handoff::HttpSide>,
) -> Result<Loaded, Invalid> {
    let v = validate(source)?;
    let mut diags = Vec::new();
    let prepared = http.map(|h| h.prepare(&v.config, &mut diags));
    prepare(v, prepared, diags)
}

/// Parses and validates a config given as a string, reading its TLS files but with no HTTP
/// side (tests, benches).
pub fn load_str(name: &str, text: &str) -> Result<Loaded, Invalid> {
    load(
        Source {
            name: name.to_string(),
            text: text.to_string(),
        },
        None,
    )
}

fn invalid(source: Source, mut diagnostics: Vec<Diagnostic>) -> Invalid {
    sort(&mut diagnostics);
    Invalid {
        source,
        diagnostics,
    }
}

/// Reports in file order, as a reader goes through the file.
fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_admin;
#[cfg(test)]
mod tests_proxy;
