//! What an introspection policy reads when the config loads: the client secret from its
//! environment variable (missing or empty: a config error naming the variable) and, for an
//! https endpoint, the roots that verify it (the `ca` file, or the system's). I/O.

use std::sync::Arc;

use lb_core::config::{Diagnostic, FileRef, Introspection};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::Settings;

fn file_error(f: &FileRef, message: String) -> Diagnostic {
    Diagnostic::error(message)
        .at(f.span.clone())
        .key(f.key.clone())
}

/// The roots of `ca`, or the system's; problems go to `diags`.
fn roots(ca: Option<&FileRef>, diags: &mut Vec<Diagnostic>) -> Option<RootCertStore> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(f) => {
            let certs: Result<Vec<CertificateDer<'static>>, _> =
                match CertificateDer::pem_file_iter(&f.path) {
                    Ok(it) => it.collect(),
                    Err(e) => {
                        diags.push(file_error(f, format!("{}: cannot read: {e}", f.path)));
                        return None;
                    }
                };
            let certs = match certs {
                Ok(c) if !c.is_empty() => c,
                Ok(_) => {
                    diags.push(file_error(
                        f,
                        format!("{}: holds no PEM certificate", f.path),
                    ));
                    return None;
                }
                Err(e) => {
                    diags.push(file_error(
                        f,
                        format!("{}: not PEM certificates: {e}", f.path),
                    ));
                    return None;
                }
            };
            let (_, refused) = store.add_parsable_certificates(certs);
            if store.is_empty() {
                diags.push(file_error(
                    f,
                    format!(
                        "{}: none of its {refused} certificate(s) is a usable CA",
                        f.path
                    ),
                ));
                return None;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                diags.push(Diagnostic::error(
                    "an https introspection endpoint needs CA certificates: the system has none (set `ca`)",
                ));
                return None;
            }
        }
    }
    Some(store)
}

/// The TLS client config of an https endpoint: TLS 1.2/1.3, ring, HTTP/1.1 by ALPN.
fn tls(i: &Introspection, diags: &mut Vec<Diagnostic>) -> Option<Arc<rustls::ClientConfig>> {
    let roots = roots(i.ca.as_ref(), diags)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Arc::new(cfg))
}

/// The settings of policy `i`, or `None` with the problems in `diags`.
pub fn settings(i: &Introspection, diags: &mut Vec<Diagnostic>) -> Option<Settings> {
    let env = &i.client_secret_env;
    let secret = match std::env::var(&env.var) {
        Ok(s) if !s.is_empty() => s,
        _ => {
            diags.push(
                Diagnostic::error(format!(
                    "environment variable {} is not set (or empty): the introspection client secret",
                    env.var
                ))
                .at(env.span.clone())
                .key(env.key.clone()),
            );
            return None;
        }
    };
    let tls = match i.endpoint.tls {
        true => Some(tls(i, diags)?),
        false => None,
    };
    Some(Settings { secret, tls })
}
