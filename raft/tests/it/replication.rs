//! A three-member group elects a leader and applies 10,000 proposals in the same order on every
//! member.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use raftmq_raft::InitializeOutcome;

use crate::cluster::{Cluster, put_many};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_a_leader_and_initialize_again_is_reported_not_a_crash() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    assert!(cluster.running().contains(&leader));
    for id in cluster.running() {
        let outcome = cluster.node(id)?.initialize(cluster.membership()).await?;
        assert_eq!(
            outcome,
            InitializeOutcome::AlreadyInitialized,
            "member {id}"
        );
    }
    assert_eq!(
        cluster.leader().await?,
        leader,
        "re-initializing changed nothing"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_proposals_apply_in_the_same_order_on_every_member() -> Result<()> {
    const PROPOSALS: u64 = 10_000;
    const IN_FLIGHT: u64 = 64;
    let cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let indexes = put_many(cluster.node(leader)?.raft(), "k", PROPOSALS, IN_FLIGHT).await?;
    let last = *indexes.iter().max().context("no writes")?;
    cluster.wait_applied(last).await?;

    let reference = cluster.kv(leader)?.history()?;
    assert_eq!(reference.len() as u64, PROPOSALS);
    // Each key was applied exactly at the log index its write reported.
    let applied_at: BTreeMap<String, u64> = reference
        .iter()
        .map(|(index, key)| (key.clone(), *index))
        .collect();
    for (i, index) in indexes.iter().enumerate() {
        assert_eq!(applied_at.get(&format!("k-{i:06}")), Some(index));
    }
    for id in cluster.running() {
        let kv = cluster.kv(id)?;
        assert_eq!(
            kv.history()?,
            reference,
            "member {id} applied in another order"
        );
        assert_eq!(kv.get("k-000123")?.as_deref(), Some(&b"v123"[..]));
    }
    // The log itself holds the commands (the log is the commit log).
    let entries = cluster
        .node(leader)?
        .log_reader()
        .read_entries(last..last + 1)
        .await?;
    assert_eq!(entries.len(), 1);
    cluster.shutdown().await
}
