//! The RaftMQ broker: one member of a broker group, which is a Raft group. Clients speak the
//! RocketMQ remoting protocol to it; writes go through Raft and are answered once a majority has
//! them on disk; reads are served from the applied state, on the leader or a follower.
//!
//! Follow a send along the data path:
//!
//! ```text
//! remoting server (raftmq_remoting::server)
//!   -> processor::BrokerHandler           processor/mod.rs: route_of() decides Raft or not
//!   -> processor/send_message.rs          header, topic, queue, encode the stored message
//!   -> batcher::Proposer                  pack concurrent sends into one entry, pipeline
//!   -> raftmq_raft (openraft)             replicate, fsync on a majority, commit
//!   -> state_machine::BrokerStateMachine  apply: assign queue offsets, index, one txn
//!   -> answer with msgId / queueId / queueOffset
//! ```
//!
//! and a pull: `processor/pull_message.rs` -> `state_machine::state` (the index) ->
//! `message_reader` (entries from the Raft log, offsets patched in). Delayed messages and
//! retries take a detour through [`schedule`]. Start at [`broker`] for how the pieces are
//! wired ([`broker::Broker::start`] takes listeners the caller bound, [`broker::Broker::run`] a
//! shutdown future), [`config`] for the options (flags and TOML keys in one struct),
//! [`command`] for what an entry carries. Access control (`raftmq_protocol::acl`) is decided
//! in [`processor::BrokerHandler`] before any processor runs
//! ([`context::BrokerContext::check_remoting_acl`]); its configuration is replicated
//! ([`command::Command::Acl`]).

#[cfg(test)]
mod acl_tests;
pub mod admin;
pub mod batcher;
pub mod broker;
pub mod clients;
pub mod command;
pub mod config;
pub mod context;
pub mod error;
pub mod filter;
pub mod grpc;
pub mod leader_task;
pub mod leadership;
pub mod message_reader;
pub mod metrics;
pub mod pop;
pub mod processor;
pub mod queue_locks;
pub mod registration;
pub mod retention;
pub mod schedule;
pub mod state_machine;
#[cfg(test)]
pub(crate) mod testing;
pub mod timer;
pub mod topic;
pub mod transaction;
