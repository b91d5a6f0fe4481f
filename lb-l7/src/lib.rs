//! lb-l7: the HTTP side of lb. So far the pure pieces the proxy is built on: request-head
//! checks against smuggling and oversize requests ([`guard`]), request-path normalisation
//! ([`path`]), the route table ([`router`]) and the header rewriting of forwarding
//! ([`forward`]), the proxy core ([`proxy`]) and the backend picking over lb-core's pools
//! ([`pools`]).

pub mod forward;
pub mod guard;
pub mod path;
pub mod pools;
pub mod proxy;
pub mod router;
