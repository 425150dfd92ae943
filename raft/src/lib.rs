//! openraft glue for RaftMQ (openraft `=0.10.0-alpha.37`): the type config, the redb log store
//! with group commit, the state-machine adapter, the TCP transport and the member lifecycle.
//! Every broker group is one Raft group; this crate knows nothing about messages (entry payloads
//! are opaque bytes).
//!
//! Start reading at [`node`] (what the broker calls: [`RaftNode::start`], `initialize`,
//! `raft().client_write(..)`, `log_reader()`, `transfer_leader`, `storage_failure`,
//! `shutdown`), then follow a write:
//!
//! ```text
//! Raft::client_write(AppRequest)                     openraft, on the leader
//!   -> log_store::LogStore::append                   entries readable at once (memory tail)
//!   |    -> log_store/flusher.rs                     one redb transaction + fsync per batch
//!   |    -> IOFlushed callback                       only after the fsync: the leader counts
//!   |                                                itself toward the quorum from here
//!   -> network::client -> network::server            replicated at once, from the memory tail,
//!                                                    while the leader's own fsync runs;
//!                                                    followers append + fsync, then answer
//!   -> a majority has fsynced = committed
//!   -> sm_adapter::StateMachineStore::apply          the committed entries with their
//!                                                    responders, on the blocking pool
//!   -> StateMachine::apply (the broker's)            one transaction per batch
//! ```
//!
//! Elections use pre-vote (a member cut off and healed does not raise the term), leadership
//! moves with openraft's transfer ([`node::transfer_leader`]), and the transport has its own
//! timeouts sized by TCP's retransmission timers ([`network`]).
//!
//! The log is the commit log: message bodies live only in it, the broker reads them back with
//! [`LogReader`], and nothing is ever purged for now (see [`node`]). Storage errors say what
//! kind of failure they are (full disk, I/O, corruption, earlier failure; [`storage_fault`]).
//!
//! Modules: [`types`] (the openraft type config and aliases), [`state_machine`] (the trait the
//! broker implements), [`codec`] (the one binary encoding), [`log_store`], [`sm_adapter`],
//! [`network`], [`node`], [`storage_fault`], and [`testing`] (small state machines for tests and
//! benchmarks).

pub mod codec;
pub mod disk_space;
pub mod log_store;
pub mod network;
pub mod node;
pub mod segment;
pub mod sm_adapter;
pub mod snapshot;
pub mod state_machine;
pub mod storage_fault;
pub mod testing;
pub mod types;

pub use log_store::{
    DEFAULT_SCRUB_BYTES_PER_SEC, LogReader, LogStoreError, LogStoreMetricsSnapshot, ScrubConfig,
};
pub use network::RaftTls;
pub use node::{InitializeOutcome, NodeConfig, NodeError, RaftNode, RaftTimers};
pub use state_machine::{StateMachine, StateMachineError};
pub use storage_fault::{FailureKind, StorageFailure};
pub use types::*;
