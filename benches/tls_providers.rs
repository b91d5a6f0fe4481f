//! rustls's two crypto providers side by side, on what a TLS-terminating lb spends its CPU
//! on: the server's handshake crypto (one ECDSA P-256 signature, one X25519 key pair and
//! agreement), a whole TLS 1.3 handshake in memory (both sides, the client's certificate
//! check included), and AES-256-GCM records (seal and open of 16 KiB records).
//!
//! Times are the measuring thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time:
//! the figures hold on a machine busy with other work, where criterion's wall-clock samples
//! do not. Each round measures both providers; the best round of each is reported.
//! Run: `cargo bench -p lb-core --bench tls_providers`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// The calling thread's CPU time so far.
fn cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Mean CPU time of `f` over `n` runs, in microseconds.
fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    let start = cpu();
    for _ in 0..n {
        f();
    }
    (cpu() - start).as_secs_f64() * 1e6 / f64::from(n)
}

struct Material {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Material {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

fn configs(p: &Arc<CryptoProvider>, m: &Material) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let server = ServerConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![m.cert.clone()], m.key())
        .expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(m.cert.clone()).expect("root");
    let client = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(client), Arc::new(server))
}

/// Moves everything `from` has to send into `to`.
fn pass(from: &mut impl WriteTls, to: &mut impl ReadTls, wire: &mut Vec<u8>) {
    wire.clear();
    while from.wants() {
        from.write(wire);
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read(&mut rest);
    }
}

trait WriteTls {
    fn wants(&self) -> bool;
    fn write(&mut self, wire: &mut Vec<u8>);
}
trait ReadTls {
    fn read(&mut self, rest: &mut &[u8]);
}

macro_rules! tls_io {
    ($t:ty) => {
        impl WriteTls for $t {
            fn wants(&self) -> bool {
                self.wants_write()
            }
            fn write(&mut self, wire: &mut Vec<u8>) {
                self.write_tls(wire).expect("write_tls");
            }
        }
        impl ReadTls for $t {
            fn read(&mut self, rest: &mut &[u8]) {
                self.read_tls(rest).expect("read_tls");
                self.process_new_packets().expect("process");
            }
        }
    };
}
tls_io!(ClientConnection);
tls_io!(ServerConnection);

fn handshake(c: &Arc<ClientConfig>, s: &Arc<ServerConfig>) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from("bench.example").expect("name");
    let mut client = ClientConnection::new(c.clone(), name).expect("client");
    let mut server = ServerConnection::new(s.clone()).expect("server");
    let mut wire = Vec::with_capacity(16 * 1024);
    while client.is_handshaking() || server.is_handshaking() {
        pass(&mut client, &mut server, &mut wire);
        pass(&mut server, &mut client, &mut wire);
    }
    (client, server)
}

#[derive(Clone, Copy)]
struct Figures {
    sign_us: f64,
    x25519_us: f64,
    handshake_us: f64,
    records_gbps: f64,
}

fn measure(p: &Arc<CryptoProvider>, m: &Material) -> Figures {
    let (c, s) = configs(p, m);
    let signer = p
        .key_provider
        .load_private_key(m.key())
        .expect("key")
        .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .expect("P-256 signer");
    let sign_us = per_op(2000, || {
        black_box(
            signer
                .sign(b"the handshake transcript's hash!")
                .expect("sign"),
        );
    });
    let x25519 = p
        .kx_groups
        .iter()
        .find(|g| g.name() == rustls::NamedGroup::X25519)
        .expect("X25519");
    let peer = x25519.start().expect("peer").pub_key().to_vec();
    let x25519_us = per_op(2000, || {
        let mine = x25519.start().expect("key pair");
        black_box(mine.complete(&peer).expect("agree"));
    });
    let handshake_us = per_op(500, || {
        black_box(handshake(&c, &s));
    });
    let (mut client, mut server) = handshake(&c, &s);
    assert_eq!(
        server.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
    let record = vec![7u8; 16 * 1024];
    let mut out = vec![0u8; record.len()];
    let mut wire = Vec::with_capacity(20 * 1024);
    let n = 4096u32;
    let us = per_op(n, || {
        client.writer().write_all(&record).expect("seal");
        pass(&mut client, &mut server, &mut wire);
        let mut got = 0;
        while got < record.len() {
            got += server.reader().read(&mut out).expect("open");
        }
    });
    let records_gbps = record.len() as f64 * 8.0 / (us * 1e3);
    Figures {
        sign_us,
        x25519_us,
        handshake_us,
        records_gbps,
    }
}

fn best(a: Figures, b: Figures) -> Figures {
    Figures {
        sign_us: a.sign_us.min(b.sign_us),
        x25519_us: a.x25519_us.min(b.x25519_us),
        handshake_us: a.handshake_us.min(b.handshake_us),
        records_gbps: a.records_gbps.max(b.records_gbps),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["bench.example".into()])
        .expect("params")
        .self_signed(&pair)
        .expect("cert");
    let m = Material {
        cert: CertificateDer::from(cert.der().to_vec()),
        key: pair.serialize_der(),
    };
    let providers = [
        ("ring", Arc::new(rustls::crypto::ring::default_provider())),
        (
            "aws-lc-rs",
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        ),
    ];
    let rounds = if quick { 1 } else { 5 };
    let mut found: [Option<Figures>; 2] = [None, None];
    for _ in 0..rounds {
        for (i, (_, p)) in providers.iter().enumerate() {
            let f = measure(p, &m);
            found[i] = Some(found[i].map_or(f, |b| best(b, f)));
        }
    }
    println!("CPU time per operation (best of {rounds} rounds; lower is better but for Gbit/s)");
    println!(
        "{:10} {:>12} {:>14} {:>22} {:>20}",
        "provider", "P-256 sign", "X25519 kx", "TLS 1.3 handshake", "AES-256-GCM records"
    );
    for ((name, _), f) in providers.iter().zip(found.iter().flatten()) {
        println!(
            "{name:10} {:>9.1} µs {:>11.1} µs {:>19.1} µs {:>13.2} Gbit/s",
            f.sign_us, f.x25519_us, f.handshake_us, f.records_gbps
        );
    }
    if let [Some(r), Some(a)] = found {
        println!(
            "aws-lc-rs / ring speed: sign {:.2}x, X25519 {:.2}x, handshake {:.2}x, records {:.2}x",
            r.sign_us / a.sign_us,
            r.x25519_us / a.x25519_us,
            r.handshake_us / a.handshake_us,
            a.records_gbps / r.records_gbps
        );
    }
}
