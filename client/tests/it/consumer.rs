//! Consumer scenarios: a group of two splitting the queues and receiving everything in queue
//! order, committed offsets, a restarted consumer, consume-from-where, redelivery and the
//! dead-letter topic, the channel API and tag filters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftmq_client::consumer::ConsumerBuilder;
use raftmq_client::{
    ConsumeFrom, ConsumeStatus, Consumer, Message, MessageQueue, Producer, ReceivedMessage,
};

use crate::support::{FakeBroker, FakeNamesrv, Group, route, wait_until, within};

type Log = Arc<Mutex<Vec<(usize, ReceivedMessage)>>>;

/// A consumer of `topic` in `group` whose handler appends what it gets to `log`, tagged `who`.
async fn consumer(namesrv: &str, group: &str, topic: &str, who: usize, log: &Log) -> Consumer {
    builder(namesrv, group, topic)
        .start(recorder(log, who))
        .await
        .unwrap()
}

fn builder(namesrv: &str, group: &str, topic: &str) -> ConsumerBuilder {
    Consumer::builder()
        .namesrv(namesrv)
        .group(group)
        .subscribe(topic, "*")
        .commit_interval(Duration::from_millis(100))
        .reconsume_backoff(Duration::from_millis(20))
}

fn recorder(
    log: &Log,
    who: usize,
) -> impl Fn(Vec<ReceivedMessage>) -> std::future::Ready<ConsumeStatus> + Send + Sync + 'static {
    let log = log.clone();
    move |messages| {
        let mut log = log.lock().unwrap();
        log.extend(messages.into_iter().map(|message| (who, message)));
        std::future::ready(ConsumeStatus::Success)
    }
}

fn count(log: &Log) -> usize {
    log.lock().unwrap().len()
}

async fn producer(namesrv: &str) -> Producer {
    Producer::builder().namesrv(namesrv).build().await.unwrap()
}

/// Sends `count` messages; returns, per queue, the bodies in queue-offset order.
async fn produce(
    producer: &Producer,
    topic: &str,
    prefix: &str,
    count: usize,
) -> BTreeMap<MessageQueue, BTreeMap<i64, String>> {
    let mut sent: BTreeMap<MessageQueue, BTreeMap<i64, String>> = BTreeMap::new();
    for i in 0..count {
        let body = format!("{prefix}-{i}");
        let result = within("send", producer.send(Message::new(topic, body.clone())))
            .await
            .unwrap();
        sent.entry(result.queue)
            .or_default()
            .insert(result.queue_offset, body);
    }
    sent
}

fn text(message: &ReceivedMessage) -> String {
    String::from_utf8(message.body.to_vec()).unwrap()
}

/// Checks that `log` holds every message of `sent` exactly once and, per queue, in offset
/// order, each delivered by the member that held the queue.
fn check_delivery(log: &Log, sent: &BTreeMap<MessageQueue, BTreeMap<i64, String>>) {
    let log = log.lock().unwrap();
    let mut per_queue: BTreeMap<MessageQueue, Vec<(i64, String, usize)>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (who, message) in log.iter() {
        assert!(
            ids.insert(message.msg_id.clone()),
            "{} delivered twice",
            message.msg_id
        );
        per_queue.entry(message.queue.clone()).or_default().push((
            message.queue_offset,
            text(message),
            *who,
        ));
    }
    assert_eq!(
        per_queue.len(),
        sent.len(),
        "messages came from every queue"
    );
    for (queue, expected) in sent {
        let got = &per_queue[queue];
        let got_offsets: Vec<i64> = got.iter().map(|(offset, _, _)| *offset).collect();
        let expected_offsets: Vec<i64> = expected.keys().copied().collect();
        assert_eq!(
            got_offsets, expected_offsets,
            "queue {queue:?} in offset order"
        );
        let got_bodies: Vec<&String> = got.iter().map(|(_, body, _)| body).collect();
        let expected_bodies: Vec<&String> = expected.values().collect();
        assert_eq!(got_bodies, expected_bodies, "queue {queue:?} in send order");
        let receivers: BTreeSet<usize> = got.iter().map(|(_, _, who)| *who).collect();
        assert_eq!(receivers.len(), 1, "queue {queue:?} had one consumer");
    }
}

fn two_groups_route(a: &FakeBroker, b: &FakeBroker) -> raftmq_protocol::route::TopicRouteData {
    route(&[
        Group {
            name: "broker-a",
            members: vec![(0, &a.addr)],
            queues: 4,
        },
        Group {
            name: "broker-b",
            members: vec![(0, &b.addr)],
            queues: 4,
        },
    ])
}

#[tokio::test]
async fn a_group_of_two_splits_the_queues_and_gets_everything_in_order() {
    let namesrv = FakeNamesrv::start().await;
    let a = FakeBroker::start("broker-a").await;
    let b = FakeBroker::start("broker-b").await;
    a.state.create_topic("T", 4);
    b.state.create_topic("T", 4);
    namesrv.set_route("T", two_groups_route(&a, &b));
    let log: Log = Arc::default();

    let first = consumer(&namesrv.addr, "cg", "T", 1, &log).await;
    wait_until("the first member to take all 8 queues", || {
        first.assigned_queues().len() == 8
    })
    .await;
    let second = consumer(&namesrv.addr, "cg", "T", 2, &log).await;
    // The second member's heartbeat makes the brokers notify the first, which gives up half.
    wait_until("a disjoint, covering split", || {
        let one: BTreeSet<_> = first.assigned_queues().into_iter().collect();
        let two: BTreeSet<_> = second.assigned_queues().into_iter().collect();
        one.len() == 4 && two.len() == 4 && one.is_disjoint(&two)
    })
    .await;
    let all: BTreeSet<_> = first
        .assigned_queues()
        .into_iter()
        .chain(second.assigned_queues())
        .collect();
    assert_eq!(all.len(), 8);
    // RocketMQ's average allocation: the member with the lower id takes the first half.
    let (low, high) = if first.client_id() < second.client_id() {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert!(
        low.assigned_queues()
            .iter()
            .all(|q| q.broker_name == "broker-a")
    );
    assert!(
        high.assigned_queues()
            .iter()
            .all(|q| q.broker_name == "broker-b")
    );

    let producer = producer(&namesrv.addr).await;
    let sent = produce(&producer, "T", "m", 200).await;
    wait_until("all 200 messages", || count(&log) == 200).await;
    check_delivery(&log, &sent);
    {
        let log = log.lock().unwrap();
        for (who, message) in log.iter() {
            let holder = if *who == 1 { &first } else { &second };
            assert!(holder.assigned_queues().contains(&message.queue));
        }
    }

    // Offsets are committed on the interval: the brokers end up with every queue's end.
    wait_until("every offset committed", || {
        sent.keys().all(|queue| {
            let broker = if queue.broker_name == "broker-a" {
                &a
            } else {
                &b
            };
            broker.state.committed("cg", "T", queue.queue_id)
                == Some(broker.state.queue_len("T", queue.queue_id))
        })
    })
    .await;
    let offsets = first.offsets();
    assert_eq!(offsets.len(), 4);
    assert!(offsets.values().all(|offset| !offset.is_dirty()));

    // One member leaves: the other takes every queue, from the committed offsets.
    within("shutdown", first.shutdown()).await;
    assert!(first.assigned_queues().is_empty());
    wait_until("the survivor to take all 8 queues", || {
        second.assigned_queues().len() == 8
    })
    .await;
    let more = produce(&producer, "T", "n", 40).await;
    wait_until("40 more messages", || count(&log) == 240).await;
    {
        let log = log.lock().unwrap();
        let late: Vec<_> = log[200..].iter().map(|(who, _)| *who).collect();
        assert!(late.iter().all(|who| *who == 2));
        let bodies: BTreeSet<String> = log[200..].iter().map(|(_, m)| text(m)).collect();
        let expected: BTreeSet<String> = more.values().flat_map(|q| q.values().cloned()).collect();
        assert_eq!(bodies, expected, "nothing old was delivered again");
    }
    within("shutdown", second.shutdown()).await;
    producer.shutdown().await;
    a.stop().await;
    b.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn a_restarted_consumer_continues_from_its_committed_offsets() {
    let namesrv = FakeNamesrv::start().await;
    let broker = FakeBroker::start("broker-a").await;
    broker.state.create_topic("T", 2);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &broker.addr)],
            queues: 2,
        }]),
    );
    let producer = producer(&namesrv.addr).await;
    let log: Log = Arc::default();
    let sent = produce(&producer, "T", "old", 30).await;
    // A long commit interval: the offsets reach the broker through the shutdown commit.
    let first = builder(&namesrv.addr, "restart", "T")
        .commit_interval(Duration::from_secs(3600))
        .start(recorder(&log, 1))
        .await
        .unwrap();
    wait_until("the first 30", || count(&log) == 30).await;
    check_delivery(&log, &sent);
    within("shutdown", first.shutdown()).await;
    for queue_id in 0..2 {
        assert_eq!(
            broker.state.committed("restart", "T", queue_id),
            Some(broker.state.queue_len("T", queue_id)),
            "the shutdown committed queue {queue_id}"
        );
    }

    let newer = produce(&producer, "T", "new", 20).await;
    let log2: Log = Arc::default();
    let second = consumer(&namesrv.addr, "restart", "T", 2, &log2).await;
    wait_until("the next 20", || count(&log2) == 20).await;
    let offsets = second.offsets();
    for (queue, expected) in &newer {
        let start = *expected.keys().next().unwrap();
        assert!(offsets.contains_key(queue));
        let got: Vec<i64> = log2
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| &m.queue == queue)
            .map(|(_, m)| m.queue_offset)
            .collect();
        assert_eq!(
            got.first(),
            Some(&start),
            "queue {queue:?} resumed where it was"
        );
    }
    check_delivery(&log2, &newer);
    within("shutdown", second.shutdown()).await;
    producer.shutdown().await;
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn without_a_committed_offset_consume_from_last_or_a_time() {
    let namesrv = FakeNamesrv::start().await;
    let broker = FakeBroker::start("broker-a").await;
    broker.state.create_topic("T", 2);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &broker.addr)],
            queues: 2,
        }]),
    );
    let producer = producer(&namesrv.addr).await;
    produce(&producer, "T", "backlog", 10).await;
    let log: Log = Arc::default();
    let latest = builder(&namesrv.addr, "from-last", "T")
        .consume_from(ConsumeFrom::Last)
        .start(recorder(&log, 1))
        .await
        .unwrap();
    wait_until("both queues taken", || latest.assigned_queues().len() == 2).await;
    let fresh = produce(&producer, "T", "fresh", 6).await;
    wait_until("the 6 fresh messages", || count(&log) == 6).await;
    check_delivery(&log, &fresh);
    within("shutdown", latest.shutdown()).await;

    // From a time: each queue starts at its first message stored at or after it.
    let queue0 = broker.state.messages("T", 0);
    let since = queue0[queue0.len() / 2].store_timestamp;
    let log: Log = Arc::default();
    let timed = builder(&namesrv.addr, "from-time", "T")
        .consume_from(ConsumeFrom::Timestamp(since))
        .start(recorder(&log, 1))
        .await
        .unwrap();
    let expected: usize = (0..2)
        .map(|queue_id| {
            broker
                .state
                .messages("T", queue_id)
                .iter()
                .filter(|m| m.store_timestamp >= since)
                .count()
        })
        .sum();
    assert!(expected > 0);
    wait_until("the messages stored since then", || count(&log) == expected).await;
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .all(|(_, m)| m.store_timestamp >= since)
    );
    within("shutdown", timed.shutdown()).await;
    producer.shutdown().await;
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn a_failed_batch_is_redelivered_in_order_then_dead_lettered() {
    let namesrv = FakeNamesrv::start().await;
    let broker = FakeBroker::start("broker-a").await;
    broker.state.create_topic("T", 1);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &broker.addr)],
            queues: 1,
        }]),
    );
    let producer = producer(&namesrv.addr).await;
    let sent = produce(&producer, "T", "m", 6).await;
    let poison_id = {
        let stored = broker.state.messages("T", 0);
        stored[4].properties["UNIQ_KEY"].clone()
    };
    // m-1 fails once; m-4 always fails and ends in the dead-letter topic after 2 retries.
    let deliveries: Arc<Mutex<Vec<(String, i32)>>> = Arc::default();
    let seen = deliveries.clone();
    let consumer = builder(&namesrv.addr, "redo", "T")
        .consume_batch_size(1)
        .max_reconsume_times(2)
        .start(move |messages: Vec<ReceivedMessage>| {
            let message = &messages[0];
            let body = text(message);
            let mut seen = seen.lock().unwrap();
            let earlier = seen.iter().filter(|(b, _)| *b == body).count();
            seen.push((body.clone(), message.reconsume_times));
            let status = if (body == "m-1" && earlier == 0) || body == "m-4" {
                ConsumeStatus::RetryLater
            } else {
                ConsumeStatus::Success
            };
            std::future::ready(status)
        })
        .await
        .unwrap();
    wait_until("every message handled", || {
        deliveries
            .lock()
            .unwrap()
            .iter()
            .any(|(body, _)| body == "m-5")
    })
    .await;
    let order: Vec<(String, i32)> = deliveries.lock().unwrap().clone();
    let expected: Vec<(String, i32)> = [
        ("m-0", 0),
        ("m-1", 0),
        ("m-1", 1),
        ("m-2", 0),
        ("m-3", 0),
        ("m-4", 0),
        ("m-4", 1),
        ("m-4", 2),
        ("m-5", 0),
    ]
    .iter()
    .map(|(body, times)| ((*body).to_owned(), *times))
    .collect();
    assert_eq!(order, expected);
    assert_eq!(*broker.state.dead_letters.lock().unwrap(), vec![poison_id]);
    assert_eq!(sent.values().map(BTreeMap::len).sum::<usize>(), 6);
    within("shutdown", consumer.shutdown()).await;
    assert_eq!(broker.state.committed("redo", "T", 0), Some(6));
    producer.shutdown().await;
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn deliveries_through_a_channel_and_tag_filters() {
    let namesrv = FakeNamesrv::start().await;
    let broker = FakeBroker::start("broker-a").await;
    broker.state.create_topic("T", 1);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &broker.addr)],
            queues: 1,
        }]),
    );
    let producer = producer(&namesrv.addr).await;
    for (i, tag) in ["a", "c", "b", "c", "a"].iter().enumerate() {
        producer
            .send(Message::new("T", format!("{tag}{i}")).with_tags(*tag))
            .await
            .unwrap();
    }
    let (consumer, mut deliveries) = Consumer::builder()
        .namesrv(&namesrv.addr)
        .group("chan")
        .subscribe("T", "a || b")
        .consume_batch_size(1)
        .reconsume_backoff(Duration::from_millis(20))
        .start_with_channel(4)
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut dropped_once = false;
    while got.len() < 3 {
        let delivery = within("a delivery", deliveries.recv()).await.unwrap();
        let body = text(&delivery.messages[0]);
        if body == "b2" && !dropped_once {
            // Unanswered: comes again.
            dropped_once = true;
            drop(delivery);
            continue;
        }
        got.push(body);
        delivery.ack();
    }
    assert_eq!(got, vec!["a0", "b2", "a4"]);
    // Filtered-out messages still move the offset.
    wait_until("the offset past every message", || {
        consumer
            .offsets()
            .values()
            .all(|offset| offset.consumed == 5)
    })
    .await;
    within("shutdown", consumer.shutdown()).await;
    assert_eq!(broker.state.committed("chan", "T", 0), Some(5));
    producer.shutdown().await;
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn shutdown_abandons_a_stuck_handler_and_does_not_commit_its_batch() {
    let namesrv = FakeNamesrv::start().await;
    let broker = FakeBroker::start("broker-a").await;
    broker.state.create_topic("T", 1);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &broker.addr)],
            queues: 1,
        }]),
    );
    let producer = producer(&namesrv.addr).await;
    produce(&producer, "T", "m", 3).await;
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = started.clone();
    let consumer = builder(&namesrv.addr, "stuck", "T")
        .consume_batch_size(1)
        .handler_drain_timeout(Duration::from_millis(200))
        .start(move |messages: Vec<ReceivedMessage>| {
            let call = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                // The second message never finishes.
                if call == 1 || text(&messages[0]) == "m-1" {
                    std::future::pending::<()>().await;
                }
                ConsumeStatus::Success
            }
        })
        .await
        .unwrap();
    wait_until("the stuck handler to start", || {
        started.load(std::sync::atomic::Ordering::SeqCst) == 2
    })
    .await;
    within("shutdown despite the stuck handler", consumer.shutdown()).await;
    assert_eq!(
        broker.state.committed("stuck", "T", 0),
        Some(1),
        "only the finished message is committed"
    );
    producer.shutdown().await;
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn pulls_can_go_to_a_follower_while_offsets_go_to_the_leader() {
    let namesrv = FakeNamesrv::start().await;
    let leader = FakeBroker::start("broker-a").await;
    let follower = FakeBroker::start("broker-a").await;
    leader.state.create_topic("T", 1);
    follower.state.create_topic("T", 1);
    // The fakes do not replicate: write the messages where the consumer will read them.
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &follower.addr)],
            queues: 1,
        }]),
    );
    let producer = producer(&namesrv.addr).await;
    let sent = produce(&producer, "T", "m", 5).await;
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &leader.addr), (2, &follower.addr)],
            queues: 1,
        }]),
    );
    let log: Log = Arc::default();
    let consumer = builder(&namesrv.addr, "reader", "T")
        .read_from(raftmq_client::ReadFrom::Follower)
        .start(recorder(&log, 1))
        .await
        .unwrap();
    wait_until("5 messages from the follower", || count(&log) == 5).await;
    check_delivery(&log, &sent);
    within("shutdown", consumer.shutdown()).await;
    assert_eq!(leader.state.committed("reader", "T", 0), Some(5));
    assert_eq!(follower.state.committed("reader", "T", 0), None);
    assert_eq!(
        leader.state.pulls.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no pull went to the leader"
    );
    producer.shutdown().await;
    leader.stop().await;
    follower.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn dropping_a_consumer_without_shutdown_stops_everything() {
    let namesrv = FakeNamesrv::start().await;
    let broker = FakeBroker::start("broker-a").await;
    broker.state.create_topic("T", 2);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &broker.addr)],
            queues: 2,
        }]),
    );
    let log: Log = Arc::default();
    let consumer = consumer(&namesrv.addr, "dropped", "T", 1, &log).await;
    let id = consumer.client_id().to_owned();
    wait_until("the consumer to be listed and pulling", || {
        broker.state.consumer_ids("dropped") == vec![id.clone()]
            && consumer.assigned_queues().len() == 2
    })
    .await;
    drop(consumer);
    // Its tasks end, its connections close, and the broker forgets it.
    wait_until("the broker to forget the consumer", || {
        broker.state.consumer_ids("dropped").is_empty()
    })
    .await;
    broker.stop().await;
    namesrv.stop().await;
}
