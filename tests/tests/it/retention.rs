//! Retention: messages older than `--file-reserved-time` go with whole segment files on every
//! member, queue minimum offsets advance the same everywhere, a consumer below the minimum is
//! moved to it (PULL_OFFSET_MOVED, counted in a metric), and the floor survives a leader kill.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use raftmq_client::broker_client::{PullRequest, PullStatus};
use raftmq_client::{Admin, BrokerClient, Message, MessageQueue, Producer};
use raftmq_remoting::RpcClient;
use raftmq_tests::cluster::TestCluster;
use raftmq_tests::wait_until;

const TOPIC: &str = "RetentionTopic";
const STEP: Duration = Duration::from_secs(60);

/// Segment files (not sidecars) in a member's log directory.
fn segment_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("raft").join("log"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .count()
        })
        .unwrap_or(0)
}

/// Every queue's `(min offset, max offset)` of `TOPIC` on one member.
fn offsets(cluster: &TestCluster, node_id: u64) -> anyhow::Result<Vec<(u64, u64)>> {
    let topics = cluster.admin.topics(cluster.member(node_id)?.admin())?;
    let topic = topics
        .into_iter()
        .find(|t| t.name == TOPIC)
        .ok_or_else(|| anyhow::anyhow!("no {TOPIC} on member {node_id}"))?;
    Ok(topic.queues.values().copied().collect())
}

async fn send_batches(producer: &Producer, batches: usize, tag: &str) -> anyhow::Result<()> {
    let body = "r".repeat(512);
    for batch in 0..batches {
        let messages: Vec<Message> = (0..16)
            .map(|i| Message::new(TOPIC, Bytes::from(format!("{tag}-{batch}-{i}-{body}"))))
            .collect();
        producer.send_batch(messages).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_segments_go_on_every_member_and_consumers_below_are_moved() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(
        3,
        &[
            "--segment-size",
            "64KiB",
            "--file-reserved-time",
            "3s",
            "--retention-check-interval-ms",
            "200",
        ],
    )?;
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let producer = Producer::builder()
        .namesrv(cluster.namesrv_addr.to_string())
        .group("retention-test")
        .build()
        .await?;
    // ~300 KiB of old messages: several sealed segments on every member.
    send_batches(&producer, 40, "old").await?;
    let members: Vec<u64> = cluster.members.iter().map(|m| m.node_id).collect();
    let files_before: Vec<usize> = members
        .iter()
        .map(|id| segment_files(&cluster.member(*id).unwrap().data_dir))
        .collect();
    assert!(
        files_before.iter().all(|&n| n >= 4),
        "segments rolled on every member: {files_before:?}"
    );

    // After the reserved time, newer messages keep coming; the old ones go.
    tokio::time::sleep(Duration::from_secs(4)).await;
    send_batches(&producer, 12, "new").await?;
    wait_until(STEP, || {
        let moved = members.iter().all(|id| {
            offsets(&cluster, *id).is_ok_and(|queues| queues.iter().any(|(min, _)| *min > 0))
        });
        Ok(moved)
    })
    .context("every member moving a queue's minimum")?;
    // Every member agrees on every queue's minimum (it went through Raft). Retention may still
    // be moving the minimums (the newer segments expire too): each look compares with the
    // leader's of that moment.
    wait_until(STEP, || {
        let leader_now = offsets(&cluster, leader)?;
        Ok(members
            .iter()
            .all(|id| offsets(&cluster, *id).is_ok_and(|o| o == leader_now)))
    })
    .context("every member agreeing with the leader's minimums")?;
    let leader_offsets = offsets(&cluster, leader)?;
    // Whole segment files went on every member.
    wait_until(STEP, || {
        Ok(members
            .iter()
            .zip(&files_before)
            .all(|(id, before)| segment_files(&cluster.member(*id).unwrap().data_dir) < *before))
    })
    .context("segment files removed on every member")?;

    // A consumer at offset 0 of a queue whose messages went is moved to the minimum.
    let (queue_id, (min, max)) = leader_offsets
        .iter()
        .enumerate()
        .find(|(_, (min, _))| *min > 0)
        .map(|(q, o)| (q, *o))
        .ok_or_else(|| anyhow::anyhow!("no queue lost messages"))?;
    let queue = MessageQueue {
        topic: TOPIC.into(),
        broker_name: cluster.broker_name.clone(),
        queue_id: queue_id as i32,
    };
    let broker = BrokerClient::new(RpcClient::default());
    let leader_addr = cluster.member(leader)?.remoting().to_string();
    // A group that once committed offset 0 of that queue, and comes back late.
    broker
        .update_consumer_offset(&leader_addr, "late-group", &queue, 0)
        .await?;
    for _ in 0..100 {
        let committed = broker
            .query_consumer_offset(&leader_addr, "late-group", &queue)
            .await;
        if matches!(committed, Ok(Some(0))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pulled = broker
        .pull(
            &leader_addr,
            &PullRequest::new("late-group", queue.clone(), 0, 32),
        )
        .await?;
    assert_eq!(pulled.status, PullStatus::OffsetMoved);
    // To the queue's minimum: the one read above, or a later one if retention moved on since.
    let min_after = offsets(&cluster, leader)?[queue_id].0;
    assert!(
        (min as i64..=min_after as i64).contains(&pulled.next_begin_offset),
        "moved to {}, the minimum was {min} then {min_after}",
        pulled.next_begin_offset
    );
    let metrics = cluster.admin.metrics(cluster.member(leader)?.admin())?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("raftmq_consumer_offset_moved_total")
                && l.contains("consumer_group=\"late-group\"")),
        "the move is counted"
    );
    // What is still held reads back, in order, up to the end (retention may have moved the
    // minimum on meanwhile: what is read is a suffix).
    let admin = Admin::new(Some(&cluster.namesrv_addr.to_string()))?;
    let kept = admin
        .read_queue(&leader_addr, &queue, min as i64, (max - min) as usize)
        .await?;
    let offsets_read: Vec<i64> = kept.iter().map(|m| m.queue_offset).collect();
    assert!(
        offsets_read.windows(2).all(|w| w[1] == w[0] + 1),
        "{offsets_read:?}"
    );
    assert!(
        offsets_read
            .first()
            .is_some_and(|&first| first >= min as i64)
    );
    assert_eq!(offsets_read.last().copied(), Some(max as i64 - 1));

    // A fourth member joins after the old segments went: it catches up by a snapshot that
    // carries the retained log, then serves the same messages as the leader, byte for byte.
    cluster.add_joining_member(4)?;
    let new_member = cluster.member(4)?;
    let (new_admin, new_raft, new_addr) = (
        new_member.admin(),
        new_member.raft(),
        new_member.remoting().to_string(),
    );
    cluster
        .admin
        .add_learner(cluster.member(leader)?.admin(), 4, new_raft)?;
    send_batches(&producer, 4, "fresh").await?;
    let leader_applied = cluster.raft_status(leader)?.applied_index;
    wait_until(STEP, || {
        Ok(cluster.admin.raft_status(new_admin)?.applied_index >= leader_applied)
    })?;
    let mut compared = 0usize;
    for (queue_id, (min, max)) in offsets(&cluster, leader)?.into_iter().enumerate() {
        let queue = MessageQueue {
            topic: TOPIC.into(),
            broker_name: cluster.broker_name.clone(),
            queue_id: queue_id as i32,
        };
        let count = (max - min) as usize;
        let on_leader = admin
            .read_queue(&leader_addr, &queue, min as i64, count)
            .await?;
        let on_new = admin
            .read_queue(&new_addr, &queue, min as i64, count)
            .await?;
        // Retention may move a minimum between the two reads: compare what both hold.
        let from = on_leader
            .first()
            .zip(on_new.first())
            .map_or(i64::MAX, |(a, b)| a.queue_offset.max(b.queue_offset));
        let bodies = |messages: &[raftmq_client::ReceivedMessage]| {
            messages
                .iter()
                .filter(|m| m.queue_offset >= from)
                .map(|m| (m.queue_offset, m.body.clone()))
                .collect::<Vec<_>>()
        };
        let (leader_bodies, new_bodies) = (bodies(&on_leader), bodies(&on_new));
        assert_eq!(
            new_bodies, leader_bodies,
            "queue {queue_id} differs on the new member"
        );
        compared += leader_bodies.len();
    }
    assert!(compared > 0, "nothing left to compare");
    // The leader's old segments were gone, so the new member can only have caught up by a
    // snapshot: its retained log arrived as the history.
    let history = cluster.member(4)?.data_dir.join("raft").join("history");
    assert!(
        history.is_dir(),
        "the new member installed the snapshot's log as its history"
    );

    // The floor survives a leader kill: the next leader keeps the minimums and goes on.
    cluster.kill_member(leader)?;
    let new_leader = cluster.wait_for_registered_leader(STEP)?;
    // (A learner cannot lead: the new leader is one of the voters.)
    assert_ne!(new_leader, leader);
    let after = offsets(&cluster, new_leader)?;
    for (before, now) in leader_offsets.iter().zip(&after) {
        assert!(
            now.0 >= before.0,
            "a minimum went back: {before:?} -> {now:?}"
        );
    }
    send_batches(&producer, 4, "after-kill").await?;
    producer.shutdown().await;
    Ok(())
}
