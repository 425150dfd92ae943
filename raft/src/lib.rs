//! openraft glue for RaftMQ: the type config, the redb log store with group commit, the
//! state-machine adapter and the TCP transport.
//!
//! Start reading at [`types`] (what an entry is) and [`state_machine`] (what the broker
//! implements).

pub mod codec;
pub mod log_store;
pub mod network;
pub mod sm_adapter;
pub mod state_machine;
pub mod testing;
pub mod types;

pub use state_machine::{StateMachine, StateMachineError};
pub use types::*;
