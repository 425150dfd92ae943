//! Pre-vote: a member cut off from its group campaigns in vain, and once healed it rejoins
//! without raising the term, so the healthy leader keeps leading. (Without pre-vote it would
//! come back with a higher term and depose the leader.)

use anyhow::{Context, Result};
use raftmq_raft::network::RpcKind;
use raftmq_raft::{MetricsReceiver, NodeId};

use crate::cluster::{Cluster, put, wait_for};

/// How many of its own election rounds the cut-off member must go through: several election
/// timeouts, not one.
const ROUNDS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_and_healed_does_not_raise_the_term() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let leader_raft = cluster.node(leader)?.raft().clone();
    put(&leader_raft, "before", "x").await?;
    let term = leader_raft.metrics().borrow_watched().current_term;
    let isolated = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .context("a follower")?;
    let others: Vec<NodeId> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != isolated)
        .collect();

    // Cut it off both ways.
    let cut_off = cluster.node(isolated)?.partition();
    cut_off.cut(others.iter().copied());
    for id in &others {
        cluster.node(*id)?.partition().cut([isolated]);
    }

    // Each of its election rounds asks both peers for a (pre-)vote, refused by the cut.
    let campaigns = || cut_off.refused(RpcKind::PreVote) + cut_off.refused(RpcKind::Vote);
    wait_for("the cut-off member campaigns several times", || {
        campaigns() >= ROUNDS * 2
    })
    .await?;
    // The majority kept working meanwhile.
    let (during, _) = put(&leader_raft, "during", "y").await?;

    // Heal: it catches up, under the same leader and in the same term.
    cut_off.heal();
    for id in &others {
        cluster.node(*id)?.partition().heal();
    }
    cluster.wait_applied(during).await?;
    for id in cluster.running() {
        let metrics = cluster.node(id)?.raft().metrics().borrow_watched().clone();
        assert_eq!(metrics.current_term, term, "member {id}: the term moved");
        assert_eq!(metrics.current_leader, Some(leader), "member {id}");
    }
    assert_eq!(
        cut_off.refused(RpcKind::Vote),
        0,
        "no real election without a pre-vote quorum"
    );
    assert_eq!(
        cluster.kv(isolated)?.get("during")?.as_deref(),
        Some(&b"y"[..])
    );
    let (after, _) = put(&leader_raft, "after", "z").await?;
    assert!(after > during);
    cluster.shutdown().await
}
