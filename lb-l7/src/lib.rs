//! lb-l7: the HTTP side of lb, served on `protocol = "http"` listeners through lb-core's
//! handoff (the binary registers [`gateway::Factory`]).
//!
//! Pure pieces: request-head checks against smuggling and oversize requests ([`guard`]),
//! request-path normalisation ([`path`]), the route table ([`router`]), the forwarding header
//! rewrite ([`forward`]) and backend picking by request ([`balance`]). On top of them: the
//! client to backends ([`upstream`]), streamed and counted bodies ([`body`]), one listener's
//! gateway ([`gateway`]) and the handling of one request ([`exchange`]).

pub mod balance;
pub mod body;
pub mod exchange;
pub mod forward;
pub mod framing;
pub mod gateway;
pub mod guard;
pub mod path;
pub mod policy;
pub mod respond;
pub mod router;
pub mod sniff;
pub mod transform;
pub mod upgrade;
pub mod upstream;
