//! The scenarios both interop test binaries run, one binary per header encoding (the
//! client fixes its encoding once per process): one cluster and one client runtime, then
//! each scenario in turn on its own topic and groups.
//!
//! - `produce_consume`: sync and batch sends to an auto-created topic, consumed by a
//!   clustering push consumer from the first offset.
//! - `send_back`: a callback that fails once; the message returns through the retry topic.
//! - `resume`: a consumer restarted in the same group continues from its committed offsets.
//! - `orderly`: keyed sends to one queue per key, read by an orderly (queue-locking) consumer.
//! - `semantics`: a transaction producer with its check listener, tag- and SQL92-filtered
//!   push consumers, and broadcasting consumers.

mod clients;
mod orderly;
mod produce_consume;
mod resume;
mod semantics;
mod send_back;

use std::time::Instant;

use anyhow::Context;
use raftmq_interop::runtime::{ClientHarness, HeaderEncoding};
use raftmq_tests::cluster::{START_TIMEOUT, TestCluster};

use self::clients::Env;

/// Runs one scenario, naming it in its error and printing how long it took.
async fn timed(
    name: &str,
    scenario: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let outcome = scenario.await.with_context(|| format!("scenario {name}"));
    println!("scenario {name}: {:?}", started.elapsed());
    outcome
}

/// Starts a three-member group and runs every scenario with the real client speaking
/// `encoding`.
pub fn run_all(encoding: HeaderEncoding) -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = TestCluster::start(3, &[])?;
    let leader = cluster.wait_for_registered_leader(START_TIMEOUT)?;
    println!("cluster up in {:?}", started.elapsed());
    let harness = ClientHarness::start("interop", encoding)?;
    let env = Env {
        client_runtime: harness.client_runtime(),
        namesrv_addr: cluster.namesrv_addr.to_string(),
        namesrv_admin: cluster.namesrv_admin,
    };
    // Each scenario's future is boxed: the client's futures are large, and unboxed they made
    // the future `block_on` holds on the test thread's stack overflow it in debug builds.
    let outcome = harness.block_on(Box::pin(async {
        timed("produce_consume", Box::pin(produce_consume::run(&env))).await?;
        timed("send_back", Box::pin(send_back::run(&env))).await?;
        timed("resume", Box::pin(resume::run(&env))).await?;
        timed("orderly", Box::pin(orderly::run(&env))).await?;
        timed("semantics", Box::pin(semantics::run(&env))).await
    }));
    drop(env);
    let stopping = Instant::now();
    let shutdown = harness.shutdown();
    println!("client runtime stopped in {:?}", stopping.elapsed());
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
            "{encoding:?} headers; leader at start: member {leader}; NameServer log: {}; broker logs: {}",
            cluster.namesrv.log_path().display(),
            logs.join(", ")
        )
    })?;
    shutdown
}
