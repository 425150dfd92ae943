//! jepsen-lite: fault injection, histories and checkers that prove nothing acknowledged is lost,
//! reordered or invented (the reliability contract at the end of ARCHITECTURE.md).
//!
//! Where to start reading:
//! - [`history`]: the JSON-lines history every client and the nemesis write, and its reader.
//! - [`nemesis`]: the fault vocabulary and how a fault resolves to nodes.
//! - [`checker`]: one pure function per anomaly over a parsed history; [`checker::all`] runs
//!   them and builds the [`summary::Summary`] (JSON, table, exit code).
//! - [`net`]: the [`net::Network`] trait with two implementations: Linux network namespaces
//!   with nftables rules ([`net::netns`]) and per-link TCP proxies ([`net::proxy`]).
//! - [`schedule`]: the seeded fault schedule and the run profiles; [`executor`] carries a
//!   schedule out through the [`nemesis::Cluster`] and [`net::Network`] traits and records it.
//! - [`cluster`]: the cluster under test as processes (`mqnamesrv` + a group of `mqbroker`),
//!   in namespaces or behind proxies, implementing [`nemesis::Cluster`]; it talks to the
//!   members' admin endpoints with `raftmq_client::AdminHttpClient`.
//! - [`workload`]: the clients (W1 send/poll/commit/reassign, W2 ordered producers, W3 a
//!   consumer group under churn, W4 the final drain) that record the history.
//! - [`run`]: `jepsen-lite run`: per scenario, cluster + workloads + schedule, heal, drain,
//!   check, summaries; [`run::ack_loss`] is the scripted proof that the suite can fail.
//! - [`lazyfs`]: the lazy filesystem for power-loss faults (FUSE; unsynced data in memory).
//! - [`pki`]: TLS on every link of a run (a throwaway CA, certificates per process).

pub mod checker;
pub mod cluster;
pub mod executor;
pub mod history;
pub mod lazyfs;
pub mod nemesis;
pub mod net;
pub mod pki;
pub mod run;
pub mod schedule;
pub mod summary;
pub mod workload;
