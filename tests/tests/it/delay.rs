//! Delayed delivery against a real 3-member group (levels shortened with
//! `--message-delay-level`): a message sent with a delay level creates its topic at once but
//! reaches it only after the level's delay, unchanged but for the `DELAY` property; a message a consumer hands back
//! returns through its retry topic after the level it asked for; and a delayed message whose
//! leader is killed while it waits is still delivered, by the next leader.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftmq_client::{
    Admin, BrokerClient, ConsumeFrom, ConsumeStatus, Consumer, Message, MessageQueue, Producer,
    ReceivedMessage,
};
use raftmq_protocol::names::now_ms;
use raftmq_tests::cluster::TestCluster;

/// Level 1 waits 1 s, level 2 waits 3 s.
const LEVELS: &str = "1s 3s";
const LEVEL_2_MS: i64 = 3_000;
const LEVEL_1_MS: i64 = 1_000;
const STEP: Duration = Duration::from_secs(60);
const TOPIC: &str = "DelayedTopic";
const GROUP: &str = "delay-consumers";

type Received = Arc<Mutex<Vec<(Instant, ReceivedMessage)>>>;

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

/// The first delivery of `body` (from the topic itself or its retry topic, as asked).
fn delivery(log: &Received, body: &str, retried: bool) -> Option<(Instant, ReceivedMessage)> {
    log.lock()
        .unwrap()
        .iter()
        .find(|(_, m)| body_of(m) == body && m.queue.topic.starts_with("%RETRY%") == retried)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_and_retried_messages_wait_their_level_even_across_a_leader_kill()
-> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3, &["--message-delay-level", LEVELS])?;
    let namesrv = cluster.namesrv_addr.to_string();
    let producer = Producer::builder()
        .namesrv(namesrv.clone())
        .group("delay-producer")
        .build()
        .await?;
    let log: Received = Arc::default();
    let consumer_log = log.clone();
    let consumer = Consumer::builder()
        .namesrv(namesrv.clone())
        .group(GROUP)
        .subscribe(TOPIC, "*")
        .consume_from(ConsumeFrom::First)
        .commit_interval(Duration::from_millis(500))
        .start(move |messages: Vec<ReceivedMessage>| {
            let now = Instant::now();
            consumer_log
                .lock()
                .unwrap()
                .extend(messages.into_iter().map(|m| (now, m)));
            std::future::ready(ConsumeStatus::Success)
        })
        .await?;
    let queue = MessageQueue {
        topic: TOPIC.into(),
        broker_name: cluster.broker_name.clone(),
        queue_id: 0,
    };

    // 1. A plain message and a level-2 one, sent back to back to the same queue.
    let sent_ms = now_ms();
    let sent_at = Instant::now();
    let delayed = producer
        .send_to_queue(
            Message::new(TOPIC, Bytes::from_static(b"delayed"))
                .with_keys(["k-delayed"])
                .with_delay_level(2),
            queue.clone(),
        )
        .await?;
    // The topic did not exist: the delayed send created it at once (not at delivery), so its
    // consumers find a route while the message waits.
    let admin = Admin::new(Some(&namesrv))?;
    let deadline = Instant::now() + STEP;
    while admin.route(TOPIC).await.ok().flatten().is_none() {
        anyhow::ensure!(Instant::now() < deadline, "{TOPIC} never got a route");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    producer
        .send_to_queue(
            Message::new(TOPIC, Bytes::from_static(b"plain")),
            queue.clone(),
        )
        .await?;
    let (plain_at, plain) =
        wait_for("the plain message", STEP, || delivery(&log, "plain", false)).await?;
    let (delayed_at, got) = wait_for("the delayed message", STEP, || {
        delivery(&log, "delayed", false)
    })
    .await?;
    assert!(
        got.store_timestamp >= sent_ms + LEVEL_2_MS,
        "stored in its topic {} ms after the send, before its 3 s level",
        got.store_timestamp - sent_ms
    );
    assert!(delayed_at >= sent_at + Duration::from_millis(LEVEL_2_MS as u64));
    assert!(plain_at < delayed_at, "the plain message is not held up");
    assert_eq!(got.topic, TOPIC);
    assert_eq!(
        got.queue.queue_id, 0,
        "delivered to the queue it was sent to"
    );
    assert_eq!(got.msg_id, delayed.msg_id, "the same message id (UNIQ_KEY)");
    assert_eq!(got.keys, vec!["k-delayed".to_string()]);
    assert_eq!(got.property("DELAY"), None);
    assert_eq!(got.property("REAL_TOPIC"), Some(TOPIC));
    assert!(
        got.queue_offset > plain.queue_offset,
        "it took its place in the queue when it was delivered"
    );

    // 2. The consumer hands the plain message back asking for level 1: it returns through
    //    the group's retry topic, re-consumed once, after at least 1 s.
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let leader_addr = cluster.member(leader)?.remoting().to_string();
    let handed_back_ms = now_ms();
    BrokerClient::new(Default::default())
        .send_message_back(&leader_addr, GROUP, &plain, 1, 16)
        .await?;
    let (_, retried) = wait_for("the retried message", STEP, || {
        delivery(&log, "plain", true)
    })
    .await?;
    assert!(
        retried.store_timestamp >= handed_back_ms + LEVEL_1_MS,
        "the retry was stored {} ms after the hand-back, before its 1 s level",
        retried.store_timestamp - handed_back_ms
    );
    assert_eq!(retried.reconsume_times, 1);
    assert_eq!(retried.topic, TOPIC, "a retry names its original topic");
    assert_eq!(retried.msg_id, plain.msg_id);

    // 3. A delayed message whose leader is killed while it waits: the next leader delivers it.
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let sent_ms = now_ms();
    producer
        .send_to_queue(
            Message::new(TOPIC, Bytes::from_static(b"survivor")).with_delay_level(2),
            queue.clone(),
        )
        .await?;
    cluster.kill_member(leader)?;
    let (_, survivor) = wait_for("the delayed message after the leader kill", STEP, || {
        delivery(&log, "survivor", false)
    })
    .await?;
    assert!(survivor.store_timestamp >= sent_ms + LEVEL_2_MS);
    let new_leader = cluster.wait_for_registered_leader(STEP)?;
    assert_ne!(new_leader, leader);

    // Delivery is at least once, so a message may arrive twice; but no copy of a delayed
    // message ever reached its topic before its delay.
    for (_, message) in log.lock().unwrap().iter() {
        if let Some(level) = message
            .property("REAL_TOPIC")
            .and(message.property("REAL_QID"))
        {
            assert!(
                message.store_timestamp - message.born_timestamp >= LEVEL_1_MS,
                "a delayed copy (REAL_QID {level}) arrived early: {message:?}"
            );
        }
    }
    consumer.shutdown().await;
    Ok(())
}
