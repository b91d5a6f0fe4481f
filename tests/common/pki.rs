//! A throwaway PKI for TLS tests: a CA, leaf certificates it signs, PEM files on disk, and
//! rustls clients and servers built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use super::backends::Backend;

pub struct Pki {
    pub dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf's files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "lb test CA");
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        Pki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `names`, signed by the CA, written as `<file>.pem` / `<file>.key`.
    pub fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, file.to_string());
        let cert = params.signed_by(&key, &self.ca).expect("sign leaf");
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
        }
    }

    /// A client trusting this CA, offering `alpn`, presenting `client_cert` if given.
    pub fn client(&self, alpn: &[&str], client_cert: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut cfg = match client_cert {
            None => builder.with_no_client_auth(),
            Some(leaf) => builder
                .with_client_auth_cert(vec![leaf.der.clone()], load_key(&leaf.key))
                .expect("client cert"),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(cfg)
    }
}

pub fn load_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("key file")
}

/// Connects to `addr` with TLS, asking for (and verifying) `name`.
pub async fn connect(
    addr: std::net::SocketAddr,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?;
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake"))?
}

/// Reads everything the server sends until it closes (bounded: 5 s).
pub async fn read_all<S: AsyncReadExt + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    Ok(String::from_utf8_lossy(&buf).trim().to_string())
}

/// What a TLS server answered on a session: `None` when the handshake failed, or the server
/// closed without a word (TLS 1.3 clients learn of a refused client certificate on read).
pub async fn answer(session: std::io::Result<TlsStream<TcpStream>>) -> Option<String> {
    let mut s = session.ok()?;
    read_all(&mut s).await.ok().filter(|a| !a.is_empty())
}

/// A TLS backend that completes the handshake itself and answers `name\n`.
pub async fn tls_named(leaf: &Leaf, name: &str) -> Backend {
    let certs = vec![leaf.der.clone()];
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, load_key(&leaf.key))
        .expect("server cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let name = format!("{name}\n");
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, name) = (acceptor.clone(), name.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.write_all(name.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    Backend::from_task(addr, task)
}
