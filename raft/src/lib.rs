//! openraft glue for RaftMQ: the type config, the redb log store with group commit, the
//! state-machine adapter, the TCP transport and the member lifecycle. Every broker group is one
//! Raft group; this crate knows nothing about messages (entry payloads are opaque bytes).
//!
//! Start reading at [`node`] (what the broker calls: [`RaftNode::start`], `initialize`,
//! `raft().client_write(..)`, `log_reader()`, `shutdown`), then follow a write:
//!
//! ```text
//! Raft::client_write(AppRequest)                     openraft, on the leader
//!   -> log_store::LogStore::append                   entries readable at once (memory tail)
//!   -> log_store/flusher.rs                          one redb transaction + fsync per batch
//!   -> LogFlushed callback                           only after the fsync
//!   -> network::client -> network::server            followers append + fsync the same way
//!   -> majority durable = committed
//!   -> sm_adapter::StateMachineStore::apply          on the blocking pool
//!   -> StateMachine::apply (the broker's)            one durable transaction per batch
//! ```
//!
//! The log is the commit log: message bodies live only in it, the broker reads them back with
//! [`LogReader`], and nothing is ever purged for now (see [`node`]).
//!
//! Modules: [`types`] (the openraft type config), [`state_machine`] (the trait the broker
//! implements), [`codec`] (the one binary encoding), [`log_store`], [`sm_adapter`], [`network`],
//! [`node`], and [`testing`] (a small key-value state machine for tests and benchmarks).

pub mod codec;
pub mod log_store;
pub mod network;
pub mod node;
pub mod sm_adapter;
pub mod state_machine;
pub mod storage_fault;
pub mod testing;
pub mod types;

pub use log_store::{LogReader, LogStoreError, LogStoreMetricsSnapshot};
pub use node::{InitializeOutcome, NodeConfig, NodeError, RaftNode, RaftTimers};
pub use state_machine::{StateMachine, StateMachineError};
pub use storage_fault::{FailureKind, StorageFailure};
pub use types::*;
