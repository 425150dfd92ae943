//! The Rust producer and consumer: route refresh, retries, rebalance, offset commits.
//!
//! Being built under issue "Broker data plane on Raft". The [`remoting`] module is the
//! transport every RaftMQ server and client shares: start there for how frames travel.

pub mod remoting;
