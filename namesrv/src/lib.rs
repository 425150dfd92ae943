//! The RaftMQ NameServer: who serves which topic, and who leads each broker group.
//!
//! Brokers register with every NameServer (every 30 s, and at once when leadership changes);
//! clients ask any NameServer for a topic's route. NameServers share nothing: each holds the
//! same data because every broker registers with every one. Nothing here is replicated.
//!
//! Start reading at [`route_table`]: the pure logic of registration, cached group leadership
//! with term fencing (the Raft leader with the highest term sits in brokerId 0, the slot every
//! RocketMQ producer writes to) and expiry. Then [`processor`] (one file per request code),
//! and [`server`], which runs the remoting server, the admin HTTP server ([`admin`]) and the
//! expiry scanner together. The `mqnamesrv` binary (`src/bin`) only parses flags, sets up
//! logging and signals, and calls [`NameServer::run`].

pub mod admin;
pub mod kv_config;
pub mod metrics;
pub mod processor;
pub mod route_table;
pub mod server;
pub mod state;

pub use server::{DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, NameServer, NamesrvError};
pub use state::NameServerState;
