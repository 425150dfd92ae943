//! Interop harness: drives the real RocketMQ client (`rocketmq-client-rust` 1.0.0 from
//! crates.io) against a RaftMQ cluster that `raftmq_tests::cluster::TestCluster` starts.
//!
//! Start reading at `tests/scenarios/mod.rs` (the scenarios, which the test binaries
//! `interop` and `interop_rocketmq_headers` run with JSON and binary request headers); this
//! library holds what they share:
//! - [`runtime::ClientHarness`]: the runtime, telemetry and client runtime the real client
//!   needs, built and shut down in the order it expects, with its logs kept quiet and its
//!   header encoding fixed.
//! - [`history`]: what was sent (every send result, or an unknown outcome) and what was
//!   delivered, with [`history::Recorder`] to wait on deliveries and [`history::check_stream`]
//!   to judge them: every acknowledged message arrives, nothing arrives that nobody sent,
//!   each stored position holds one message, per-queue order equals send order.

pub mod history;
pub mod runtime;
