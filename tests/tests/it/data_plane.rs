//! The data plane through the Rust client against a real 3-member group: 10,000 messages over
//! 8 queues reach a 2-member consumer group exactly as sent; a producer rides out `kill -9` of
//! the leader and nothing it had acknowledged is lost; a restarted consumer continues from its
//! committed offset without skipping anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftmq_client::admin::TopicConfig;
use raftmq_client::{
    Admin, ConsumeFrom, ConsumeStatus, Consumer, Message, MessageQueue, Producer, ReceivedMessage,
};
use raftmq_tests::cluster::TestCluster;

const STEP: Duration = Duration::from_secs(60);
const QUEUES: u32 = 8;

type Received = Arc<Mutex<Vec<(usize, ReceivedMessage)>>>;
/// `(when, queue id, queue offset, body)` of each acknowledged send.
type Acked = Arc<Mutex<Vec<(Instant, i32, i64, String)>>>;

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn create_topic(cluster: &TestCluster, topic: &str) -> anyhow::Result<Admin> {
    let admin = Admin::new(Some(&cluster.namesrv_addr.to_string()))?;
    let config = TopicConfig {
        topic_name: topic.into(),
        read_queue_nums: QUEUES,
        write_queue_nums: QUEUES,
        ..Default::default()
    };
    admin.create_topic(&config, None).await?;
    // Wait until the NameServer routes it (the broker registers at once on creation).
    let deadline = Instant::now() + STEP;
    while admin.route(topic).await.ok().flatten().is_none() {
        anyhow::ensure!(Instant::now() < deadline, "topic {topic} never got a route");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(admin)
}

async fn consumer(
    cluster: &TestCluster,
    group: &str,
    topic: &str,
    who: usize,
    log: &Received,
) -> anyhow::Result<Consumer> {
    let log = log.clone();
    Ok(Consumer::builder()
        .namesrv(cluster.namesrv_addr.to_string())
        .group(group)
        .subscribe(topic, "*")
        .consume_from(ConsumeFrom::First)
        .commit_interval(Duration::from_millis(500))
        .rebalance_interval(Duration::from_secs(2))
        .start(move |messages: Vec<ReceivedMessage>| {
            log.lock()
                .unwrap()
                .extend(messages.into_iter().map(|m| (who, m)));
            std::future::ready(ConsumeStatus::Success)
        })
        .await?)
}

fn queue(cluster: &TestCluster, topic: &str, queue_id: i32) -> MessageQueue {
    MessageQueue {
        topic: topic.into(),
        broker_name: cluster.broker_name.clone(),
        queue_id,
    }
}

fn body_of(message: &ReceivedMessage) -> String {
    String::from_utf8_lossy(&message.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_messages_over_eight_queues_reach_a_two_member_group() -> anyhow::Result<()> {
    const TOPIC: &str = "TenThousand";
    const PER_QUEUE: usize = 1250;
    const BATCH: usize = 25;
    let cluster = TestCluster::start(3, &[])?;
    create_topic(&cluster, TOPIC).await?;
    let log: Received = Arc::default();
    let first = consumer(&cluster, "g-10k", TOPIC, 0, &log).await?;
    let second = consumer(&cluster, "g-10k", TOPIC, 1, &log).await?;
    // Both members hold queues, together all of them, none twice.
    // (Each also holds its group's retry topic queues: only the topic's own queues count.)
    let topic_queues = |consumer: &Consumer| -> BTreeSet<MessageQueue> {
        consumer
            .assigned_queues()
            .into_iter()
            .filter(|q| q.topic == TOPIC)
            .collect()
    };
    let split = wait_for("the group to split the queues", STEP, || {
        let (a, b) = (topic_queues(&first), topic_queues(&second));
        !a.is_empty() && !b.is_empty() && a.len() + b.len() == QUEUES as usize
    })
    .await;
    if let Err(err) = split {
        anyhow::bail!(
            "{err}: first holds {:?}, second holds {:?}",
            first.assigned_queues(),
            second.assigned_queues()
        );
    }
    let (a, b) = (topic_queues(&first), topic_queues(&second));
    assert!(
        a.is_disjoint(&b),
        "each consumer gets its own queues: {a:?} / {b:?}"
    );
    assert_eq!(a.len() + b.len(), QUEUES as usize);

    // One sender per queue, sending batches one after another, so each queue's send order is
    // well defined (a batch keeps its order and lands at consecutive offsets).
    let producer = Arc::new(
        Producer::builder()
            .namesrv(cluster.namesrv_addr.to_string())
            .group("p-10k")
            .build()
            .await?,
    );
    let mut senders = Vec::new();
    for queue_id in 0..QUEUES as i32 {
        let producer = producer.clone();
        let target = queue(&cluster, TOPIC, queue_id);
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::with_capacity(PER_QUEUE);
            for batch in 0..PER_QUEUE / BATCH {
                let bodies: Vec<String> = (0..BATCH)
                    .map(|i| format!("q{queue_id}-{}", batch * BATCH + i))
                    .collect();
                let messages = bodies
                    .iter()
                    .map(|body| Message::new(TOPIC, Bytes::from(body.clone())))
                    .collect();
                let result = producer
                    .send_batch_to_queue(messages, target.clone())
                    .await?;
                anyhow::ensure!(result.queue.queue_id == queue_id);
                for (i, body) in bodies.into_iter().enumerate() {
                    acked.push((result.queue_offset + i as i64, body));
                }
            }
            anyhow::Ok((queue_id, acked))
        }));
    }
    let mut sent: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for sender in senders {
        let (queue_id, acked) = sender.await??;
        sent.insert(queue_id, acked);
    }
    for (queue_id, acked) in &sent {
        let offsets: Vec<i64> = acked.iter().map(|(o, _)| *o).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "queue {queue_id}: offsets follow send order"
        );
    }

    wait_for("every message to be consumed", STEP, || {
        log.lock().unwrap().len() >= QUEUES as usize * PER_QUEUE
    })
    .await?;
    let received = log.lock().unwrap().clone();
    let mut by_queue: BTreeMap<i32, Vec<(usize, i64, String)>> = BTreeMap::new();
    for (who, message) in &received {
        by_queue.entry(message.queue.queue_id).or_default().push((
            *who,
            message.queue_offset,
            body_of(message),
        ));
    }
    for (queue_id, acked) in &sent {
        let got = &by_queue[queue_id];
        let consumers: BTreeSet<usize> = got.iter().map(|(who, _, _)| *who).collect();
        assert_eq!(
            consumers.len(),
            1,
            "queue {queue_id} is consumed by one member only"
        );
        let got: Vec<(i64, String)> = got
            .iter()
            .map(|(_, offset, body)| (*offset, body.clone()))
            .collect();
        assert_eq!(
            &got, acked,
            "queue {queue_id}: every acknowledged message, once, in send order"
        );
    }
    first.shutdown().await;
    second.shutdown().await;
    producer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_rides_out_a_leader_kill_and_nothing_acknowledged_is_lost() -> anyhow::Result<()>
{
    const TOPIC: &str = "LeaderKill";
    let mut cluster = TestCluster::start(3, &[])?;
    let admin = create_topic(&cluster, TOPIC).await?;
    let producer = Arc::new(
        Producer::builder()
            .namesrv(cluster.namesrv_addr.to_string())
            .group("p-kill")
            .build()
            .await?,
    );

    // Four senders stream sync sends until told to stop, recording every acknowledgement.
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (producer, acked, stop) = (producer.clone(), acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let body = format!("s{sender}-{i}");
                if let Ok(result) = producer
                    .send(Message::new(TOPIC, Bytes::from(body.clone())))
                    .await
                {
                    acked.lock().unwrap().push((
                        Instant::now(),
                        result.queue.queue_id,
                        result.queue_offset,
                        body,
                    ));
                }
            }
        }));
    }
    wait_for("a steady stream", STEP, || {
        acked.lock().unwrap().len() >= 300
    })
    .await?;
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let killed_at = Instant::now();
    cluster.kill_member(leader)?;
    let before = acked.lock().unwrap().len();
    wait_for("sends to resume after the kill", STEP, || {
        acked.lock().unwrap().len() >= before + 300
    })
    .await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await?;
    }
    let acked = acked.lock().unwrap().clone();
    let resumed = acked
        .iter()
        .map(|(at, ..)| *at)
        .find(|at| *at > killed_at + Duration::from_millis(1));
    let gap = resumed.map(|at| at - killed_at).unwrap_or(Duration::MAX);
    println!("first acknowledgement {gap:?} after killing the leader");
    assert!(
        gap < Duration::from_secs(10),
        "the producer resumes within seconds (took {gap:?})"
    );

    // The killed member comes back and catches up; every acknowledged message is on the new
    // leader at its offset.
    cluster.start_member(leader)?;
    let new_leader = cluster.wait_for_registered_leader(STEP)?;
    let leader_addr = cluster.member(new_leader)?.remoting().to_string();
    let mut by_queue: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for (_, queue_id, offset, body) in &acked {
        by_queue
            .entry(*queue_id)
            .or_default()
            .push((*offset, body.clone()));
    }
    for (queue_id, expected) in by_queue {
        let stored: BTreeMap<i64, String> = admin
            .read_queue(
                &leader_addr,
                &queue(&cluster, TOPIC, queue_id),
                0,
                1_000_000,
            )
            .await?
            .iter()
            .map(|m| (m.queue_offset, body_of(m)))
            .collect();
        for (offset, body) in expected {
            assert_eq!(
                stored.get(&offset),
                Some(&body),
                "acknowledged {queue_id}:{offset} is at its offset"
            );
        }
    }
    producer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_consumer_continues_from_its_committed_offset() -> anyhow::Result<()> {
    const TOPIC: &str = "Restart";
    let cluster = TestCluster::start(3, &[])?;
    create_topic(&cluster, TOPIC).await?;
    let producer = Producer::builder()
        .namesrv(cluster.namesrv_addr.to_string())
        .group("p-restart")
        .build()
        .await?;
    let mut sent = BTreeSet::new();
    for i in 0..400 {
        let body = format!("first-{i}");
        producer
            .send(Message::new(TOPIC, Bytes::from(body.clone())))
            .await?;
        sent.insert(body);
    }
    let log: Received = Arc::default();
    let before = consumer(&cluster, "g-restart", TOPIC, 0, &log).await?;
    wait_for("the first half", STEP, || log.lock().unwrap().len() >= 400).await?;
    // Shutting down commits what was consumed.
    before.shutdown().await;
    let committed: BTreeMap<MessageQueue, i64> = before
        .offsets()
        .into_iter()
        .filter_map(|(q, o)| o.committed.map(|c| (q, c)))
        .collect();

    for i in 0..400 {
        let body = format!("second-{i}");
        producer
            .send(Message::new(TOPIC, Bytes::from(body.clone())))
            .await?;
        sent.insert(body);
    }
    let after_log: Received = Arc::default();
    let after = consumer(&cluster, "g-restart", TOPIC, 1, &after_log).await?;
    wait_for("the second half", STEP, || {
        after_log.lock().unwrap().len() >= 400
    })
    .await?;
    after.shutdown().await;

    let first: Vec<ReceivedMessage> = log.lock().unwrap().iter().map(|(_, m)| m.clone()).collect();
    let second: Vec<ReceivedMessage> = after_log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, m)| m.clone())
        .collect();
    // Nothing skipped: between them, both runs saw everything.
    let seen: BTreeSet<String> = first.iter().chain(&second).map(body_of).collect();
    assert_eq!(seen, sent);
    // And the restart began exactly where the committed offsets said, per queue.
    for (queue, offset) in committed {
        let restart = second
            .iter()
            .filter(|m| m.queue == queue)
            .map(|m| m.queue_offset)
            .min();
        if let Some(restart) = restart {
            assert_eq!(
                restart, offset,
                "{queue:?} restarts at its committed offset"
            );
        }
    }
    producer.shutdown().await;
    Ok(())
}
