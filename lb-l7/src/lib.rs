//! lb-l7: the HTTP side of lb, served on `protocol = "http"` listeners through lb-core's
//! handoff (the binary registers [`gateway::Factory`]).
//!
//! Pure pieces: request-head checks against smuggling and oversize requests ([`guard`]), a
//! second look at HTTP/1 framing for what the parser hides ([`framing`], fed by [`sniff`];
//! chunked bodies followed by [`chunked`]), request-path normalisation ([`path`]), the route
//! table ([`router`]) and routes compiled from the config ([`compile`]), the forwarding header
//! rewrite ([`forward`]), connection upgrades ([`upgrade`]) and backend picking by request
//! ([`balance`]). On top of them: the client to backends ([`upstream`]), streamed and counted
//! bodies ([`body`]), one listener's gateway ([`gateway`]), the handling of one request
//! ([`exchange`]) and of its response ([`respond`]), and the gateway policies ([`policy`],
//! with body transforms in [`transform`]). Most HTTP/1.1 traffic skips that general
//! machinery: the lean path ([`lean`]) relays it as bytes, and hands a connection to the
//! general path when a request needs more.

pub mod balance;
pub mod body;
pub mod chunked;
pub mod compile;
pub mod exchange;
pub mod forward;
pub mod framing;
pub mod gateway;
pub mod guard;
pub mod idle;
pub mod lean;
pub mod path;
pub mod policy;
pub mod respond;
pub mod router;
pub mod sniff;
pub mod transform;
pub mod tries;
pub mod upgrade;
pub mod upstream;
