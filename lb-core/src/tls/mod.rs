//! TLS: termination and re-encryption with rustls, and SNI routing without decryption.

pub mod client_hello;
pub mod material;
pub mod sni;
mod x509;

pub use material::TlsMaterial;
