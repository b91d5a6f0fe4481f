//! lb-l7: the HTTP side of lb (not yet wired into the binary). Pure pieces: request-head
//! checks against smuggling and oversize requests ([`guard`]), request-path normalisation
//! ([`path`]), the route table ([`router`]) and the forwarding header rewrite ([`forward`]).
//! On top of them, the proxy core ([`proxy`]) and backend picking over lb-core's pools
//! ([`pools`]).

pub mod forward;
pub mod guard;
pub mod path;
pub mod pools;
pub mod proxy;
pub mod router;
