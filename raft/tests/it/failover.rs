//! The leader is shut down: the others elect a new leader that accepts writes; the old leader
//! restarts from its data directory and catches up.

use anyhow::{Context, Result};

use crate::cluster::{Cluster, put, put_many};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_the_old_one_catches_up_after_restart() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let old_leader = cluster.leader().await?;
    put_many(cluster.node(old_leader)?.raft(), "before", 200, 16).await?;

    cluster.stop(old_leader).await?;
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, old_leader);
    let indexes = put_many(cluster.node(new_leader)?.raft(), "after", 200, 16).await?;
    let last = *indexes.iter().max().context("no writes")?;

    cluster.restart(old_leader).await?;
    let (index, _) = put(cluster.node(new_leader)?.raft(), "after-restart", "x").await?;
    assert!(index > last);
    cluster.wait_applied(index).await?;

    let reference = cluster.kv(new_leader)?.history()?;
    assert_eq!(reference.len(), 401);
    for id in cluster.running() {
        assert_eq!(cluster.kv(id)?.history()?, reference, "member {id}");
    }
    assert_eq!(
        cluster.kv(old_leader)?.get("after-000199")?.as_deref(),
        Some(&b"v199"[..])
    );
    cluster.shutdown().await
}
