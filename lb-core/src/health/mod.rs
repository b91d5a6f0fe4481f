//! Backend health: the pure state machine (rise/fall, passive ejection, slow start) and the
//! active probes that feed it.

pub mod check;
pub mod dns;
pub mod payload;
pub mod state;

pub use state::{Change, HealthState};
