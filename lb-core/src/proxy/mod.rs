//! TCP proxying: accept → pick → connect (with retry) → relay until both sides close.

mod buffers;
pub mod relay;
#[cfg(target_os = "linux")]
mod splice;
pub mod tcp;
pub mod udp;

pub use relay::{End, Outcome, RelayMode};
