//! Leader transfer with openraft's transfer-leader, while proposals are running: the named
//! member leads within two seconds, and every write acknowledged before, during and after the
//! hand-over is applied at its log index on every member.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use openraft::errors::RaftError;
use raftmq_raft::testing::KvCommand;
use raftmq_raft::{ClientWriteError, MetricsReceiver, NodeId, Raft};

use crate::cluster::{Cluster, POLL_INTERVAL, WAIT_MAX, wait_for};

/// The hand-over must complete within this (the target).
const TRANSFER_MAX: Duration = Duration::from_secs(2);
/// Writers proposing at once.
const WRITERS: u64 = 4;
/// Writes each writer makes at most (a bound; the test stops them much earlier).
const WRITES_PER_WRITER_MAX: u64 = 100_000;
/// Acknowledged writes before the transfer starts, and again after it.
const WRITES_AROUND: u64 = 50;

/// One writer: proposes `w<writer>-<i>` to whichever member leads, following openraft's
/// "forward to leader" hints, until `stop`; returns `(key, log index)` of every acknowledged
/// write.
async fn writer(
    writer: u64,
    members: Arc<BTreeMap<NodeId, Raft>>,
    mut leader: NodeId,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
) -> Result<Vec<(String, u64)>> {
    let deadline = Instant::now() + WAIT_MAX;
    let mut done = Vec::new();
    for i in 0..WRITES_PER_WRITER_MAX {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if Instant::now() > deadline {
            bail!("writer {writer} ran out of time");
        }
        let key = format!("w{writer}-{i:06}");
        let raft = members.get(&leader).context("leader handle")?;
        match raft
            .client_write(KvCommand::new(&key, "v").to_request())
            .await
        {
            Ok(response) => {
                done.push((key, response.log_id.index));
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            // Refused before it was appended: it never commits; go where the hint points.
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                match forward.leader_id {
                    Some(next) if next != leader => leader = next,
                    _ => tokio::time::sleep(POLL_INTERVAL).await,
                }
            }
            Err(error) => return Err(anyhow!("writer {writer}: {error}")),
        }
    }
    Ok(done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_a_named_member_under_load_is_quick_and_loses_nothing() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let target = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .context("a follower")?;
    let members: Arc<BTreeMap<NodeId, Raft>> = Arc::new(
        cluster
            .running()
            .into_iter()
            .map(|id| Ok((id, cluster.node(id)?.raft().clone())))
            .collect::<Result<_>>()?,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        writers.spawn(writer(
            w,
            Arc::clone(&members),
            leader,
            Arc::clone(&stop),
            Arc::clone(&acknowledged),
        ));
    }
    wait_for("writes flow", || {
        acknowledged.load(Ordering::SeqCst) >= WRITES_AROUND
    })
    .await?;

    let started = Instant::now();
    cluster.node(leader)?.transfer_leader(target).await?;
    // The old leader answers once it follows the target; the target's own metrics are
    // published a moment later, so wait (bounded) for them too.
    let target_raft = cluster.node(target)?.raft().clone();
    wait_for("the target reports itself leader", || {
        target_raft.metrics().borrow_watched().current_leader == Some(target)
    })
    .await?;
    let took = started.elapsed();
    assert!(
        took < TRANSFER_MAX,
        "the hand-over took {took:?} (at most {TRANSFER_MAX:?})"
    );

    // Writes go on through the new leader.
    let before = acknowledged.load(Ordering::SeqCst);
    wait_for("writes flow through the new leader", || {
        acknowledged.load(Ordering::SeqCst) >= before + WRITES_AROUND
    })
    .await?;
    stop.store(true, Ordering::SeqCst);
    let mut written = Vec::new();
    while let Some(joined) = writers.join_next().await {
        written.extend(joined??);
    }

    // Nothing acknowledged is lost: each key is applied, at its index, on every member.
    let last = written
        .iter()
        .map(|(_, index)| *index)
        .max()
        .context("no writes")?;
    cluster.wait_applied(last).await?;
    for id in cluster.running() {
        let applied: BTreeMap<u64, String> = cluster.kv(id)?.history()?.into_iter().collect();
        for (key, index) in &written {
            assert_eq!(
                applied.get(index),
                Some(key),
                "member {id}: acknowledged {key} at {index}"
            );
        }
    }
    let term_after = cluster
        .node(target)?
        .raft()
        .metrics()
        .borrow_watched()
        .current_term;
    assert!(term_after > 1, "a new term began with the hand-over");
    cluster.shutdown().await
}
