//! The Rust producer and consumer: route refresh, retries, rebalance, offset commits.
//!
//! Being built under issue "Broker data plane on Raft".
