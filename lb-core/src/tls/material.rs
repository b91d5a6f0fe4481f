//! Reads the certificates, keys and CA bundles a config names and builds the rustls configs
//! from them, once per load or reload. Every problem becomes a config diagnostic that names
//! the file and points at the key naming it; an expired certificate is a warning.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::sni::SniMap;
use super::x509;
use crate::config::{BackendTls, CertPair, Config, Diagnostic, FileRef, TlsSettings};

/// The TLS configs of one loaded config, by listener and pool index.
#[derive(Debug, Clone, Default)]
pub struct TlsMaterial {
    pub listeners: Vec<Option<Arc<ServerConfig>>>,
    pub pools: Vec<Option<Arc<Backends>>>,
}

/// How lb speaks TLS to one pool's backends.
#[derive(Debug)]
pub struct Backends {
    pub config: Arc<ClientConfig>,
    /// The name sent and verified; `None` = each backend's IP address.
    pub server_name: Option<ServerName<'static>>,
}

/// TLS 1.2 and 1.3 only; older versions are refused in the handshake.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds every TLS config `config` asks for, pushing a diagnostic per problem.
pub fn build(config: &Config, diags: &mut Vec<Diagnostic>) -> TlsMaterial {
    let provider = provider();
    let listeners = config
        .listeners
        .iter()
        .map(|l| {
            let t = l.tls.as_ref()?;
            reported(diags, &l.name, |d| server_config(t, &provider, d))
        })
        .collect();
    let pools = config
        .pools
        .iter()
        .map(|p| {
            let t = p.backend_tls.as_ref()?;
            reported(diags, &p.name, |d| backends(t, &provider, d))
        })
        .collect();
    TlsMaterial { listeners, pools }
}

/// Runs one builder and keeps the invariant the runtime relies on: a config that asks for TLS
/// and got none has an error on record, so the load fails rather than serving in the clear.
fn reported<T>(
    diags: &mut Vec<Diagnostic>,
    owner: &str,
    build: impl FnOnce(&mut Vec<Diagnostic>) -> Option<T>,
) -> Option<T> {
    let errors_before = diags.iter().filter(|d| d.is_error()).count();
    let built = build(diags);
    if built.is_none() && diags.iter().filter(|d| d.is_error()).count() == errors_before {
        diags.push(Diagnostic::error(format!(
            "cannot build the TLS configuration of \"{owner}\""
        )));
    }
    built
}

fn file_error(f: &FileRef, msg: String) -> Diagnostic {
    Diagnostic::error(msg).at(f.span.clone()).key(f.key.clone())
}

fn read(f: &FileRef, what: &str, diags: &mut Vec<Diagnostic>) -> Option<Vec<u8>> {
    match std::fs::read(&f.path) {
        Ok(b) => Some(b),
        Err(e) => {
            diags.push(file_error(
                f,
                format!("cannot read {what} file {}: {e}", f.path),
            ));
            None
        }
    }
}

fn certs(
    f: &FileRef,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<CertificateDer<'static>>> {
    let bytes = read(f, what, diags)?;
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match parsed {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => {
            diags.push(file_error(
                f,
                format!(
                    "{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
                    f.path
                ),
            ));
            None
        }
        Err(e) => {
            diags.push(file_error(f, format!("{} is not valid PEM: {e}", f.path)));
            None
        }
    }
}

fn certified_key(
    pair: &CertPair,
    provider: &CryptoProvider,
    diags: &mut Vec<Diagnostic>,
) -> Option<Arc<CertifiedKey>> {
    let chain = certs(&pair.cert, "certificate", diags);
    let key_bytes = read(&pair.key, "private key", diags)?;
    let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
        Ok(k) => k,
        Err(e) => {
            diags.push(file_error(
                &pair.key,
                format!(
                    "{} holds no usable private key (PKCS#8, RSA or EC PEM): {e}",
                    pair.key.path
                ),
            ));
            return None;
        }
    };
    let chain = chain?;
    let signing = match provider.key_provider.load_private_key(key) {
        Ok(s) => s,
        Err(e) => {
            diags.push(file_error(
                &pair.key,
                format!("{}: unsupported private key: {e}", pair.key.path),
            ));
            return None;
        }
    };
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            diags.push(
                file_error(
                    &pair.key,
                    format!(
                        "the private key in {} does not match the certificate in {}",
                        pair.key.path, pair.cert.path
                    ),
                )
                .help("the first certificate of the chain must be the one this key signs for"),
            );
            return None;
        }
    }
    if let Some((not_before, not_after)) = ck.cert.first().and_then(|c| x509::validity(c)) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let f = &pair.cert;
        let problem = if not_after < now {
            Some(format!(
                "expired on {}; clients will refuse it",
                x509::date(not_after)
            ))
        } else if not_before > now {
            Some(format!("is not valid before {}", x509::date(not_before)))
        } else {
            None
        };
        if let Some(problem) = problem {
            diags.push(
                Diagnostic::warning(format!("the certificate in {} {problem}", f.path))
                    .at(f.span.clone())
                    .key(f.key.clone()),
            );
        }
    }
    Some(Arc::new(ck))
}

fn roots(f: &FileRef, diags: &mut Vec<Diagnostic>) -> Option<RootCertStore> {
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs(f, "CA", diags)?);
    if added == 0 {
        diags.push(file_error(
            f,
            format!("{} holds no usable CA certificate", f.path),
        ));
        return None;
    }
    Some(store)
}

/// Picks the certificate for a handshake by SNI, falling back to the default.
#[derive(Debug)]
struct Certs {
    by_name: SniMap<Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello.server_name().and_then(|n| self.by_name.get(n));
        Some(named.unwrap_or(&self.default).clone())
    }
}

fn server_config(
    t: &TlsSettings,
    provider: &Arc<CryptoProvider>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Arc<ServerConfig>> {
    let default = certified_key(&t.default, provider, diags);
    let mut named = Vec::new();
    for pair in &t.sni {
        if let (Some(ck), Some(name)) = (certified_key(pair, provider, diags), &pair.server_name) {
            named.push((name.clone(), ck));
        }
    }
    let client_roots = match &t.client_ca {
        Some(f) => Some(roots(f, diags)?),
        None => None,
    };
    let certs = Certs {
        by_name: SniMap::new(named),
        default: default?,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .ok()?;
    let builder = match (client_roots, &t.client_ca) {
        (Some(r), Some(f)) => {
            match WebPkiClientVerifier::builder_with_provider(Arc::new(r), provider.clone()).build()
            {
                Ok(v) => builder.with_client_cert_verifier(v),
                Err(e) => {
                    diags.push(file_error(
                        f,
                        format!("{}: cannot verify clients with it: {e}", f.path),
                    ));
                    return None;
                }
            }
        }
        _ => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(certs));
    cfg.alpn_protocols = t.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Some(Arc::new(cfg))
}

fn backends(
    t: &BackendTls,
    provider: &Arc<CryptoProvider>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Arc<Backends>> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .ok()?;
    let config = if t.verify {
        let f = t.ca.as_ref()?;
        builder
            .with_root_certificates(roots(f, diags)?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    };
    let server_name = match &t.server_name {
        None => None,
        Some(n) => match ServerName::try_from(n.clone()) {
            Ok(name) => Some(name),
            Err(e) => {
                diags.push(Diagnostic::error(format!(
                    "backend_tls.server_name \"{n}\" is not a name TLS can verify: {e}"
                )));
                return None;
            }
        },
    };
    Some(Arc::new(Backends {
        config: Arc::new(config),
        server_name,
    }))
}

/// `verify = false`: encrypt without authenticating the backend. Signatures are still
/// checked, so the handshake itself is sound; only the chain of trust is skipped.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_failure_still_fails_the_load() {
        let mut diags = Vec::new();
        let built: Option<()> = reported(&mut diags, "web", |_| None);
        assert!(built.is_none());
        assert!(diags
            .iter()
            .any(|d| d.is_error() && d.message.contains("\"web\"")));
        // A failure that explained itself is not reported twice.
        let mut diags = Vec::new();
        let _: Option<()> = reported(&mut diags, "web", |d| {
            d.push(Diagnostic::error("bad key"));
            None
        });
        assert_eq!(diags.len(), 1);
    }
}
