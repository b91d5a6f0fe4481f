//! UDP load balancing. So far the sans-I/O flow table; the socket shell comes next.

pub mod flow;
