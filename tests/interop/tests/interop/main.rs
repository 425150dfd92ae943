//! The real RocketMQ client (`rocketmq-client-rust` 1.0.0) against a three-member RaftMQ
//! group: one cluster and one client runtime, then the scenarios in turn, each on its own
//! topic and groups.
//!
//! - `produce_consume`: sync and batch sends to an auto-created topic, consumed by a
//!   clustering push consumer from the first offset.
//! - `send_back`: a callback that fails once; the message returns through the retry topic.

// The client's futures are deeply nested types; its own examples raise the limit too.
#![recursion_limit = "512"]

mod clients;
mod produce_consume;
mod send_back;

use anyhow::Context;
use raftmq_interop::runtime::ClientHarness;
use raftmq_tests::cluster::{START_TIMEOUT, TestCluster};

use crate::clients::Env;

#[test]
fn real_rocketmq_client_against_a_raft_group() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3, &[])?;
    let leader = cluster.wait_for_registered_leader(START_TIMEOUT)?;
    let harness = ClientHarness::start("interop")?;
    let env = Env {
        client_runtime: harness.client_runtime(),
        namesrv_addr: cluster.namesrv_addr.to_string(),
        namesrv_admin: cluster.namesrv_admin,
    };
    let outcome = harness.block_on(async {
        produce_consume::run(&env)
            .await
            .context("scenario produce_consume")?;
        send_back::run(&env).await.context("scenario send_back")
    });
    drop(env);
    let shutdown = harness.shutdown();
    outcome.with_context(|| {
        let logs: Vec<String> = cluster
            .members
            .iter()
            .filter_map(|m| {
                m.process
                    .as_ref()
                    .map(|p| format!("member {}: {}", m.node_id, p.log_path().display()))
            })
            .collect();
        format!(
            "leader at start: member {leader}; NameServer log: {}; broker logs: {}",
            cluster.namesrv.log_path().display(),
            logs.join(", ")
        )
    })?;
    shutdown
}
