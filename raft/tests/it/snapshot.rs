//! The snapshot path, which RaftMQ does not use on its own yet (nothing is purged): after a
//! manual snapshot and purge on the leader, a new learner can only catch up through a full
//! snapshot sent in one frame, then the log after it; and the snapshot survives a restart.

use anyhow::{Context, Result};
use raftmq_raft::{MetricsReceiver, Node};

use crate::cluster::{Cluster, Member, WAIT_MAX, any_port, put, put_many, start_member};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_catches_up_from_a_snapshot_after_a_purge() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let raft = cluster.node(leader)?.raft().clone();
    let indexes = put_many(&raft, "pre-snapshot", 50, 8).await?;
    let last = *indexes.iter().max().context("no writes")?;
    cluster.wait_applied(last).await?;

    raft.trigger().snapshot().await?;
    let metrics = raft
        .wait(Some(WAIT_MAX))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= last),
            "snapshot built",
        )
        .await?;
    let snapshot_at = metrics.snapshot.context("no snapshot")?;
    raft.trigger().purge_log(snapshot_at.index).await?;
    raft.wait(Some(WAIT_MAX))
        .purged(Some(snapshot_at), "log purged")
        .await?;

    // A new member joins: the entries it needs are gone, so it gets the snapshot.
    let (node4, kv4) = start_member(cluster.root.path(), 4, any_port()).await?;
    let addr4 = node4.local_addr();
    cluster
        .node(leader)?
        .add_learner(
            4,
            Node {
                addr: addr4.to_string(),
            },
        )
        .await?;
    cluster.members.insert(
        4,
        Member {
            node: Some(node4),
            kv: Some(kv4),
            addr: addr4,
        },
    );
    let (after, _) = put(&raft, "post-snapshot", "x").await?;
    cluster.wait_applied(after).await?;
    let reference = cluster.kv(leader)?.history()?;
    assert_eq!(reference.len(), 51);
    assert_eq!(cluster.kv(4)?.history()?, reference);
    let learner_metrics = cluster.node(4)?.raft().metrics().borrow_watched().clone();
    assert_eq!(
        learner_metrics.snapshot,
        Some(snapshot_at),
        "the learner installed it"
    );

    // The current snapshot is on disk: a restarted leader still has it.
    cluster.stop(leader).await?;
    cluster.restart(leader).await?;
    let restarted = cluster.node(leader)?.raft().get_snapshot().await?;
    assert_eq!(
        restarted.map(|s| s.meta.last_log_id),
        Some(Some(snapshot_at))
    );
    cluster.shutdown().await
}
