//! lb-l7: the HTTP side of lb, served on `protocol = "http"` listeners through lb-core's
//! handoff (the binary passes [`gateway::Factory`] in as lb-core's `HttpSide`).
//!
//! One pipeline for every request, whichever path moves its bytes. Pure decisions: what a
//! request head says and whether it is refused ([`request`]), its path normalised and as
//! routes see it ([`path`]), the route table ([`router`]) and routes compiled from the config
//! ([`compile`]), the request's plan — route, pool, limits, upgrade, key, forwarded path and
//! Host, replay safety ([`plan`]) — the forwarding fields ([`forward`]), backend picking by
//! request ([`balance`]), and a second look at HTTP/1 framing for what hyper's parser hides
//! ([`framing`], fed by [`sniff`]; chunked bodies followed by [`chunked`]). The attempts on
//! backends, with their deadlines, failover and in-flight counts, are [`tries`] for both
//! paths. How bytes move: the general path is hyper's server ([`exchange`], with [`respond`]
//! for the way back, [`upstream`] for the client to backends, [`body`] for streamed and
//! counted bodies, [`upgrade`] for tunnels); the lean path ([`lean`]) relays plain HTTP/1.1 as
//! bytes and hands a connection to the general path when a request needs more. Both run under
//! [`timed`]'s limits on the client connection. One listener's gateway is [`gateway`], built by [`factory`]; the
//! route policies are [`policy`], with body transforms in [`transform`]; GraphQL routes'
//! reading, operation picking and limits are [`graphql`].
//! route policies are [`policy`], with body transforms in [`transform`]; `grpc_transcode`
//! routes answer JSON/HTTP by calling gRPC methods ([`transcode`]).

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod balance;
pub mod body;
pub mod chunked;
pub mod compile;
pub mod conn_info;
pub mod exchange;
mod exchange_fault;
pub mod factory;
pub mod forward;
pub mod framing;
pub mod gateway;
pub mod graphql;
pub mod idle;
mod json_scan;
pub mod kept_conns;
pub mod lean;
mod parked;
pub mod path;
pub mod plan;
pub mod policy;
pub mod request;
mod request_body;
pub mod request_id;
pub mod respond;
pub mod router;
pub mod sniff;
pub mod spans;
pub mod targets;
pub mod timed;
pub mod trace;
pub mod transcode;
pub mod transform;
pub mod tries;
pub mod twin;
pub mod upgrade;
pub mod upstream;
pub mod wire;
