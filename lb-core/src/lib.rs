//! lb-core: the layer-4 heart of lb — config model, balancing algorithms, health, TCP and UDP
//! proxying, TLS, the PROXY protocol, metrics and the admin API. The `lb` binary wires these together.

pub mod activity;
pub mod backend;
pub mod balance;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod fd_limit;
pub mod handover;
pub mod hash;
pub mod health;
pub mod park;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod reclaim;
pub mod runtime;
pub mod series;
pub mod stats;
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
