//! lb-l7: the HTTP side of lb. So far the pure pieces the proxy is built on: request-head
//! checks against smuggling and oversize requests ([`guard`]), request-path normalisation
//! ([`path`]) and the route table ([`router`]). Nothing here does I/O.

pub mod guard;
pub mod path;
pub mod router;
