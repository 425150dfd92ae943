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

/// Retention as the broker does it: every member raises its floor, snapshots and purges. A
/// member added afterwards gets a snapshot whose log part is exactly the retained entries (from
/// the floor up to the snapshot), in chunks, and then reads them like the leader does, also
/// after a restart; nothing below the floor comes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_after_retention_gets_the_retained_log_and_reads_it_like_the_leader()
-> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let raft = cluster.node(leader)?.raft().clone();
    // Values of 8 KiB: the log part spans several chunks.
    for i in 0..300u64 {
        put(&raft, &format!("k-{i:04}"), vec![(i % 251) as u8; 8 * 1024]).await?;
    }
    let last = raft
        .metrics()
        .borrow_watched()
        .last_applied
        .context("applied")?
        .index;
    cluster.wait_applied(last).await?;

    let floor = 120;
    for id in cluster.running() {
        let node = cluster.node(id)?;
        node.log_reader().retain_from(floor).await?;
        let member = node.raft().clone();
        member.trigger().snapshot().await?;
        member
            .wait(Some(WAIT_MAX))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= last),
                "snapshot built",
            )
            .await?;
        member.trigger().purge_log(floor - 1).await?;
        member
            .wait(Some(WAIT_MAX))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= floor - 1),
                "log purged",
            )
            .await?;
    }

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
    cluster.wait_applied(last).await?;

    // Everything the leader still holds from the floor on, the new member reads the same.
    let expected = cluster
        .node(leader)?
        .log_reader()
        .read_entries(floor..last + 1)
        .await?;
    assert_eq!(expected.len() as u64, last + 1 - floor);
    let reader4 = cluster.node(4)?.log_reader();
    assert_eq!(reader4.read_entries(floor..last + 1).await?, expected);
    // Below the floor nothing came.
    assert!(reader4.read_entries(0..floor).await?.is_empty());
    assert_eq!(cluster.kv(4)?.history()?, cluster.kv(leader)?.history()?);

    // A restart keeps the history and the state.
    cluster.stop(4).await?;
    cluster.restart(4).await?;
    let reader4 = cluster.node(4)?.log_reader();
    assert_eq!(reader4.read_entries(floor..last + 1).await?, expected);
    let (after, _) = put(&raft, "after-restart", "x").await?;
    cluster.wait_applied(after).await?;
    cluster.shutdown().await
}
