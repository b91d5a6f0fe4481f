//! Proxying: accept → (PROXY header, ClientHello, TLS) → pick → connect (with retry) → relay
//! until both sides close; UDP flows beside it.

pub mod accept_backoff;
mod admission;
mod buffers;
mod connect;
pub mod front;
pub mod handoff;
pub mod moved;
pub mod pause;
pub mod prefixed;
pub mod relay;
pub mod route;
#[cfg(target_os = "linux")]
mod splice;
pub mod tcp;
pub mod udp;

pub use relay::{End, Outcome, RelayMode};
