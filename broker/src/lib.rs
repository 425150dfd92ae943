//! The RaftMQ broker: one member of a broker group, which is a Raft group.
//!
//! Start reading at [`command`] (what a Raft entry carries), then [`state_machine`] (what
//! applying it does).

pub mod batcher;
pub mod clients;
pub mod command;
pub mod config;
pub mod error;
pub mod leadership;
pub mod message_reader;
pub mod state_machine;
pub mod topic;
