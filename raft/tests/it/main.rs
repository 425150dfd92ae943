//! Integration tests of the raft crate, built as one test binary with a module per scenario.

mod cluster;
mod crash;
mod failover;
mod prevote;
mod replication;
mod snapshot;
mod storage_suite;
mod tls;
mod transfer;
mod transport;
