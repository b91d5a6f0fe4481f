//! UDP load balancing: the sans-I/O flow table and the socket shell around it.

pub mod batch;
pub mod flow;
pub mod relay;
