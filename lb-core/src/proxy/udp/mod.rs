//! UDP load balancing: the sans-I/O flow table and the socket shell around it.

pub mod batch;
pub mod flow;
mod moved;
pub mod relay;
