//! RocketMQ's message semantics against a real 3-member group, with the Rust client:
//!
//! - transactions: a commit is delivered once, a rollback never; a transaction left unknown
//!   while its leader is killed is checked by the next leader with the producer, and resolved
//!   exactly once;
//! - timers: a timer pending while its leader is killed is delivered once, within a second of
//!   the later of its due time and the new leader;
//! - query by key and by unique key; SQL92 subscriptions (a bad one refused at start);
//!   broadcasting consumers that each get every message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftmq_client::{
    Admin, ConsumeFrom, ConsumeStatus, Consumer, Message, MessageQueue, Producer, ReceivedMessage,
    TransactionState,
};
use raftmq_protocol::names::now_ms;
use raftmq_tests::cluster::TestCluster;

const STEP: Duration = Duration::from_secs(60);
const QUEUES: u32 = 2;

async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut found: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = found() {
            return Ok(value);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn body_of(message: &ReceivedMessage) -> String {
    String::from_utf8_lossy(&message.body).into_owned()
}

/// How many times each body is stored in `topic`, read from the leader (not through a
/// consumer, which may see a message twice).
async fn stored_bodies(
    cluster: &TestCluster,
    admin: &Admin,
    topic: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let addr = cluster.member(leader)?.remoting().to_string();
    let mut counts = BTreeMap::new();
    for queue_id in 0..QUEUES as i32 {
        let queue = MessageQueue {
            topic: topic.into(),
            broker_name: cluster.broker_name.clone(),
            queue_id,
        };
        for message in admin.read_queue(&addr, &queue, 0, 10_000).await? {
            *counts.entry(body_of(&message)).or_default() += 1;
        }
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_end_once_even_when_the_leader_dies_before_the_check_back()
-> anyhow::Result<()> {
    const TOPIC: &str = "TxTopic";
    let mut cluster = TestCluster::start(
        3,
        &[
            "--transaction-timeout-ms",
            "1500",
            "--transaction-check-interval-ms",
            "1000",
        ],
    )?;
    let namesrv = cluster.namesrv_addr.to_string();
    let admin = cluster.create_routed_topic(TOPIC, QUEUES).await?;
    let checks = Arc::new(AtomicUsize::new(0));
    let checked = checks.clone();
    let producer = Producer::builder()
        .namesrv(namesrv.clone())
        .group("tx-producer")
        .transaction_checker(move |message: &ReceivedMessage| {
            checked.fetch_add(1, Ordering::SeqCst);
            // The local transaction of "pending-commit" committed after all.
            if body_of(message).starts_with("pending-commit") {
                TransactionState::Commit
            } else {
                TransactionState::Rollback
            }
        })
        .build()
        .await?;

    for (body, state) in [
        ("committed", TransactionState::Commit),
        ("rolled-back", TransactionState::Rollback),
    ] {
        let result = producer
            .send_in_transaction(
                Message::new(TOPIC, Bytes::from(body)),
                |_| async move { state },
            )
            .await?;
        assert_eq!(result.state, state);
        result.ended?;
    }
    // Left unknown: the broker must ask. Its leader dies before the check comes.
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let pending = producer
        .send_in_transaction(
            Message::new(TOPIC, Bytes::from_static(b"pending-commit")),
            |_| async { TransactionState::Unknown },
        )
        .await?;
    pending.ended?;
    cluster.kill_member(leader)?;
    let new_leader = cluster.wait_for_registered_leader(STEP)?;
    assert_ne!(new_leader, leader);

    let deadline = Instant::now() + STEP;
    loop {
        let bodies = stored_bodies(&cluster, &admin, TOPIC).await?;
        if bodies.contains_key("pending-commit") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pending transaction was never resolved ({} checks): {bodies:?}",
            checks.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(checks.load(Ordering::SeqCst) >= 1, "resolved by a check");
    // Checks that race the resolution (a second check interval) change nothing: wait past
    // two more intervals, then every committed message is stored exactly once.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let bodies = stored_bodies(&cluster, &admin, TOPIC).await?;
    assert_eq!(bodies.get("committed"), Some(&1), "{bodies:?}");
    assert_eq!(bodies.get("pending-commit"), Some(&1), "{bodies:?}");
    assert_eq!(
        bodies.get("rolled-back"),
        None,
        "a rollback is never visible"
    );
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    producer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timer_pending_across_a_leader_kill_is_delivered_once_and_on_time() -> anyhow::Result<()>
{
    const TOPIC: &str = "TimerTopic";
    let mut cluster = TestCluster::start(3, &[])?;
    let namesrv = cluster.namesrv_addr.to_string();
    let admin = cluster.create_routed_topic(TOPIC, QUEUES).await?;
    let producer = Producer::builder()
        .namesrv(namesrv.clone())
        .group("timer-producer")
        .build()
        .await?;
    let received: Arc<Mutex<Vec<ReceivedMessage>>> = Arc::default();
    let log = received.clone();
    let consumer = Consumer::builder()
        .namesrv(namesrv.clone())
        .group("timer-consumers")
        .subscribe(TOPIC, "*")
        .consume_from(ConsumeFrom::First)
        .start(move |messages: Vec<ReceivedMessage>| {
            log.lock().unwrap().extend(messages);
            std::future::ready(ConsumeStatus::Success)
        })
        .await?;

    // A short timer first, without a failure: delivered on time, marks kept.
    let due = now_ms() + 1_500;
    let sent = producer
        .send(
            Message::new(TOPIC, Bytes::from_static(b"soon"))
                .with_keys(["timer-key"])
                .with_deliver_time_ms(due),
        )
        .await?;
    let soon = wait_for("the first timer", STEP, || {
        received
            .lock()
            .unwrap()
            .iter()
            .find(|m| body_of(m) == "soon")
            .cloned()
    })
    .await?;
    assert!(soon.store_timestamp >= due, "not before its time");
    assert!(
        soon.store_timestamp <= due + 1_000,
        "{} ms late",
        soon.store_timestamp - due
    );
    assert_eq!(soon.msg_id, sent.msg_id);
    assert_eq!(soon.property("REAL_TOPIC"), None);
    assert_eq!(soon.keys, vec!["timer-key".to_string()]);

    // A timer pending while its leader is killed.
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let due = now_ms() + 3_000;
    producer
        .send(Message::new(TOPIC, Bytes::from_static(b"survivor")).with_deliver_time_ms(due))
        .await?;
    cluster.kill_member(leader)?;
    let new_leader = cluster.wait_for_registered_leader(STEP)?;
    let leader_up_ms = now_ms();
    assert_ne!(new_leader, leader);
    let survivor = wait_for("the timer after the leader kill", STEP, || {
        received
            .lock()
            .unwrap()
            .iter()
            .find(|m| body_of(m) == "survivor")
            .cloned()
    })
    .await?;
    assert!(survivor.store_timestamp >= due, "not before its time");
    let on_time_by = due.max(leader_up_ms) + 1_000;
    assert!(
        survivor.store_timestamp <= on_time_by,
        "delivered {} ms after the later of its due time and the new leader",
        survivor.store_timestamp - due.max(leader_up_ms)
    );
    let bodies = stored_bodies(&cluster, &admin, TOPIC).await?;
    assert_eq!(
        bodies.get("survivor"),
        Some(&1),
        "delivered once: {bodies:?}"
    );
    assert_eq!(bodies.get("soon"), Some(&1), "{bodies:?}");

    // Too far ahead: refused with a clear error.
    let too_far = producer
        .send(
            Message::new(TOPIC, Bytes::from_static(b"never"))
                .with_deliver_time_ms(now_ms() + 4 * 24 * 3_600_000),
        )
        .await
        .unwrap_err();
    assert!(too_far.to_string().contains("max delay"), "{too_far}");
    consumer.shutdown().await;
    producer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_sql92_subscriptions_and_broadcasting_consumers() -> anyhow::Result<()> {
    const TOPIC: &str = "SemanticsTopic";
    let cluster = TestCluster::start(3, &[])?;
    let namesrv = cluster.namesrv_addr.to_string();
    let admin = cluster.create_routed_topic(TOPIC, QUEUES).await?;
    let producer = Producer::builder()
        .namesrv(namesrv.clone())
        .group("semantics-producer")
        .build()
        .await?;
    let mut ids = Vec::new();
    for level in 1..=6 {
        let result = producer
            .send(
                Message::new(TOPIC, Bytes::from(format!("level-{level}")))
                    .with_keys([format!("order-{level}"), "all".to_string()])
                    .with_property("level", level.to_string()),
            )
            .await?;
        ids.push(result.msg_id);
    }

    // Query by key and by the id a client shows (UNIQ_KEY).
    let found = admin
        .query_messages(TOPIC, "order-4", false, (0, i64::MAX), 32)
        .await?;
    assert_eq!(found.iter().map(body_of).collect::<Vec<_>>(), ["level-4"]);
    let found = admin
        .query_messages(TOPIC, &ids[1], true, (0, i64::MAX), 32)
        .await?;
    assert_eq!(found.iter().map(body_of).collect::<Vec<_>>(), ["level-2"]);
    let all = admin
        .query_messages(TOPIC, "all", false, (0, i64::MAX), 32)
        .await?;
    assert_eq!(all.len(), 6);

    // SQL92: only matching properties; a bad expression fails the consumer's start.
    let refused = Consumer::builder()
        .namesrv(namesrv.clone())
        .group("sql-bad")
        .subscribe_sql92(TOPIC, "level LIKE '1%'")
        .start(|_| std::future::ready(ConsumeStatus::Success))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not supported"), "{refused}");
    let filtered: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = filtered.clone();
    let sql = Consumer::builder()
        .namesrv(namesrv.clone())
        .group("sql-consumers")
        .subscribe_sql92(TOPIC, "level BETWEEN 2 AND 4 AND level <> 3")
        .start(move |messages: Vec<ReceivedMessage>| {
            log.lock().unwrap().extend(messages.iter().map(body_of));
            std::future::ready(ConsumeStatus::Success)
        })
        .await?;

    // Broadcasting: two consumers of one group each get all six.
    let dir = tempfile::tempdir()?;
    let mut broadcast = Vec::new();
    let mut logs = Vec::new();
    for member in 0..2 {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let consumer = Consumer::builder()
            .namesrv(namesrv.clone())
            .group("broadcast-consumers")
            .subscribe(TOPIC, "*")
            .broadcasting(Some(dir.path().join(format!("member-{member}.json"))))
            .commit_interval(Duration::from_millis(200))
            .start(move |messages: Vec<ReceivedMessage>| {
                log.lock().unwrap().extend(messages.iter().map(body_of));
                std::future::ready(ConsumeStatus::Success)
            })
            .await?;
        broadcast.push(consumer);
        logs.push(seen);
    }
    wait_for("the SQL92 consumer's two messages", STEP, || {
        (filtered.lock().unwrap().len() >= 2).then_some(())
    })
    .await?;
    for (member, seen) in logs.iter().enumerate() {
        wait_for(&format!("broadcast consumer {member}"), STEP, || {
            (seen.lock().unwrap().len() >= 6).then_some(())
        })
        .await?;
    }
    // Nothing more arrives for the SQL92 consumer than its two.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = filtered.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["level-2", "level-4"]);
    for seen in &logs {
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        got.dedup();
        assert_eq!(
            got.len(),
            6,
            "every message reaches every broadcast consumer"
        );
    }
    sql.shutdown().await;
    for consumer in broadcast {
        consumer.shutdown().await;
    }
    // Each broadcast consumer kept its own offsets.
    for member in 0..2 {
        let text = std::fs::read_to_string(dir.path().join(format!("member-{member}.json")))?;
        assert!(text.contains(TOPIC), "{text}");
    }
    producer.shutdown().await;
    Ok(())
}
