//! Producer scenarios: round robin, route refresh on a not-leader answer, unknown outcomes,
//! definite refusals, auto-created topics, batches, sharding keys, the async window, and
//! NameServer failover.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use raftmq_client::{ClientError, Message, MessageQueue, Producer, SendOutcome};
use raftmq_protocol::code::response;
use raftmq_protocol::message::property;

use crate::support::{FakeBroker, FakeNamesrv, Group, SendScript, route, wait_until, within};

async fn producer(namesrv: &str) -> Producer {
    Producer::builder()
        .namesrv(namesrv)
        .group("pg")
        .retry_backoff(Duration::from_millis(10))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn round_robin_spreads_over_every_queue_of_every_group() {
    let namesrv = FakeNamesrv::start().await;
    let a = FakeBroker::start("broker-a").await;
    let b = FakeBroker::start("broker-b").await;
    a.state.create_topic("T", 4);
    b.state.create_topic("T", 4);
    namesrv.set_route(
        "T",
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
        ]),
    );
    let producer = producer(&namesrv.addr).await;
    let mut per_queue: BTreeMap<(String, i32), Vec<i64>> = BTreeMap::new();
    for i in 0..16 {
        let sent = within(
            "send",
            producer.send(Message::new("T", format!("m{i}")).with_tags("t")),
        )
        .await
        .unwrap();
        assert_eq!(sent.attempts, 1);
        assert!(!sent.earlier_attempt_unknown);
        assert_eq!(sent.msg_ids, vec![sent.msg_id.clone()]);
        let expected_addr = if sent.queue.broker_name == "broker-a" {
            &a.addr
        } else {
            &b.addr
        };
        assert_eq!(&sent.broker_addr, expected_addr);
        per_queue
            .entry((sent.queue.broker_name.clone(), sent.queue.queue_id))
            .or_default()
            .push(sent.queue_offset);
    }
    assert_eq!(per_queue.len(), 8, "{per_queue:?}");
    assert!(per_queue.values().all(|offsets| offsets == &vec![0, 1]));
    // What the broker stored carries the client's id and properties.
    let stored = a.state.messages("T", 0);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].properties[property::TAGS], "t");
    assert_eq!(stored[0].properties[property::UNIQ_KEY].len(), 32);
    producer.shutdown().await;
    a.stop().await;
    b.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn not_leader_answer_refreshes_the_route_and_retries_the_new_leader() {
    let namesrv = FakeNamesrv::start().await;
    let old = FakeBroker::start("broker-a").await;
    let new = FakeBroker::start("broker-a").await;
    old.state.create_topic("T", 2);
    new.state.create_topic("T", 2);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &old.addr), (2, &new.addr)],
            queues: 2,
        }]),
    );
    let producer = producer(&namesrv.addr).await;
    let first = producer.send(Message::new("T", "before")).await.unwrap();
    assert_eq!(first.broker_addr, old.addr);

    // Leadership moves; the producer's cached route still names the old leader.
    old.state.follower.store(true, Ordering::SeqCst);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &new.addr), (1, &old.addr)],
            queues: 2,
        }]),
    );
    let route_requests = namesrv.route_requests();
    let sent = within("send", producer.send(Message::new("T", "after")))
        .await
        .unwrap();
    assert_eq!(
        sent.broker_addr, new.addr,
        "the retry went to the new leader"
    );
    assert_eq!(sent.attempts, 2);
    assert!(
        !sent.earlier_attempt_unknown,
        "a not-leader answer is a definite failure"
    );
    assert!(
        namesrv.route_requests() > route_requests,
        "the route was refreshed"
    );
    assert_eq!(old.state.stored_total(), 1, "the follower stored nothing");
    assert_eq!(new.state.stored_total(), 1);
    // Later sends go straight to the new leader.
    let next = producer.send(Message::new("T", "next")).await.unwrap();
    assert_eq!(
        (next.attempts, next.broker_addr.as_str()),
        (1, new.addr.as_str())
    );
    producer.shutdown().await;
    old.stop().await;
    new.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn a_timeout_is_an_unknown_outcome_and_a_retry_after_it_is_flagged() {
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

    // No retries: the timeout is the answer, and it is "unknown", not "failed".
    let strict = Producer::builder()
        .namesrv(&namesrv.addr)
        .send_timeout(Duration::from_millis(200))
        .retries(0)
        .build()
        .await
        .unwrap();
    broker
        .state
        .script
        .lock()
        .unwrap()
        .push_back(SendScript::Swallow);
    let error = within("send", strict.send(Message::new("T", "lost answer")))
        .await
        .unwrap_err();
    assert!(error.is_unknown_outcome(), "{error}");
    assert!(matches!(error.source, ClientError::Rpc(_)), "{error}");
    assert_eq!(error.attempts, 1);
    assert!(!error.earlier_attempt_unknown);
    assert!(matches!(
        SendOutcome::from(Err(error)),
        SendOutcome::Unknown(_)
    ));
    // The broker did store it: that is why the outcome had to be "unknown".
    assert_eq!(broker.state.stored_total(), 1);

    // Retrying after an unknown outcome may duplicate; the result says so.
    let retrying = Producer::builder()
        .namesrv(&namesrv.addr)
        .send_timeout(Duration::from_millis(200))
        .retries(1)
        .build()
        .await
        .unwrap();
    broker
        .state
        .script
        .lock()
        .unwrap()
        .push_back(SendScript::Swallow);
    let sent = within("send", retrying.send(Message::new("T", "twice")))
        .await
        .unwrap();
    assert_eq!(sent.attempts, 2);
    assert!(sent.earlier_attempt_unknown);
    let copies: Vec<_> = broker
        .state
        .messages("T", 0)
        .into_iter()
        .filter(|m| m.properties[property::UNIQ_KEY] == sent.msg_id)
        .collect();
    assert_eq!(copies.len(), 2, "both attempts carried the same UNIQ_KEY");

    // With retries of unknown outcomes off, the send ends unknown at once.
    let no_unknown_retry = Producer::builder()
        .namesrv(&namesrv.addr)
        .send_timeout(Duration::from_millis(200))
        .retry_on_unknown_outcome(false)
        .build()
        .await
        .unwrap();
    broker
        .state
        .script
        .lock()
        .unwrap()
        .push_back(SendScript::Swallow);
    let error = no_unknown_retry
        .send(Message::new("T", "once"))
        .await
        .unwrap_err();
    assert_eq!(error.attempts, 1);
    assert!(error.is_unknown_outcome());

    for producer in [strict, retrying, no_unknown_retry] {
        producer.shutdown().await;
    }
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn broker_answers_decide_between_retry_stop_and_unknown() {
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
    let script = |steps: Vec<SendScript>| {
        let mut script = broker.state.script.lock().unwrap();
        script.clear();
        script.extend(steps);
    };

    // An illegal message is not retried.
    script(vec![SendScript::Refuse(response::MESSAGE_ILLEGAL, "bad")]);
    let error = producer.send(Message::new("T", "x")).await.unwrap_err();
    assert_eq!((error.attempts, error.is_unknown_outcome()), (1, false));
    assert_eq!(
        error.source.response_code(),
        Some(response::MESSAGE_ILLEGAL)
    );
    assert!(matches!(
        SendOutcome::from(Err(error)),
        SendOutcome::Failed(_)
    ));

    // Busy three times: every attempt used, a definite failure.
    script(vec![SendScript::Refuse(response::SYSTEM_BUSY, "busy"); 3]);
    let error = producer.send(Message::new("T", "x")).await.unwrap_err();
    assert_eq!((error.attempts, error.is_unknown_outcome()), (3, false));

    // "Outcome unknown", then busy twice: fails, but the first attempt may have stored it.
    script(vec![
        SendScript::Refuse(response::SYSTEM_ERROR, "outcome unknown: leadership lost"),
        SendScript::Refuse(response::SYSTEM_BUSY, "busy"),
        SendScript::Refuse(response::SYSTEM_BUSY, "busy"),
    ]);
    let error = producer.send(Message::new("T", "x")).await.unwrap_err();
    assert_eq!(error.attempts, 3);
    assert!(error.earlier_attempt_unknown);
    assert!(error.is_unknown_outcome(), "{error}");

    // Busy once, then stored.
    script(vec![SendScript::Refuse(response::SYSTEM_BUSY, "busy")]);
    let sent = producer.send(Message::new("T", "x")).await.unwrap();
    assert_eq!((sent.attempts, sent.earlier_attempt_unknown), (2, false));

    // Too large: refused before anything is sent.
    let sends = broker.state.sends_received.load(Ordering::SeqCst);
    let big = Message::new(
        "T",
        vec![0u8; raftmq_client::message::MAX_MESSAGE_BYTES + 1],
    );
    let error = producer.send(big).await.unwrap_err();
    assert!(
        matches!(error.source, ClientError::MessageTooLarge { .. }),
        "{error}"
    );
    assert_eq!((error.attempts, error.is_unknown_outcome()), (0, false));
    assert_eq!(broker.state.sends_received.load(Ordering::SeqCst), sends);

    producer.shutdown().await;
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn a_new_topic_borrows_tbw102_and_the_broker_creates_it() {
    let namesrv = FakeNamesrv::start().await;
    let broker = FakeBroker::start("broker-a").await;
    namesrv.set_route(
        "TBW102",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &broker.addr)],
            queues: 8,
        }]),
    );
    let producer = producer(&namesrv.addr).await;
    let route = producer.route("Fresh").await.unwrap();
    assert!(route.from_default_topic);
    assert_eq!(route.write_queues.len(), 8);
    let sent = producer.send(Message::new("Fresh", "first")).await.unwrap();
    assert_eq!(sent.queue.topic, "Fresh");
    assert_eq!(broker.state.topics.lock().unwrap().get("Fresh"), Some(&8));
    // No route at all, not even TBW102: a definite "no route".
    namesrv.state.routes.lock().unwrap().clear();
    let error = producer.send(Message::new("Other", "x")).await.unwrap_err();
    assert!(
        matches!(error.source, ClientError::NoRoute { .. }),
        "{error}"
    );
    assert_eq!(error.attempts, 0);
    assert!(!error.is_unknown_outcome());
    producer.shutdown().await;
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn batches_land_on_one_queue_at_consecutive_offsets() {
    let namesrv = FakeNamesrv::start().await;
    let broker = FakeBroker::start("broker-a").await;
    broker.state.create_topic("T", 4);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &broker.addr)],
            queues: 4,
        }]),
    );
    let producer = producer(&namesrv.addr).await;
    producer.send(Message::new("T", "single")).await.unwrap();
    let batch: Vec<Message> = (0..5)
        .map(|i| Message::new("T", format!("b{i}")).with_keys([format!("k{i}")]))
        .collect();
    let sent = producer.send_batch(batch).await.unwrap();
    assert_eq!(sent.msg_ids.len(), 5);
    let stored = broker.state.messages("T", sent.queue.queue_id);
    let start = usize::try_from(sent.queue_offset).unwrap();
    let bodies: Vec<_> = stored[start..].iter().map(|m| m.body.clone()).collect();
    assert_eq!(
        bodies,
        (0..5)
            .map(|i| format!("b{i}").into())
            .collect::<Vec<bytes::Bytes>>()
    );
    for (message, id) in stored[start..].iter().zip(&sent.msg_ids) {
        assert_eq!(&message.properties[property::UNIQ_KEY], id);
    }
    assert_eq!(stored[start].properties[property::KEYS], "k0");
    // Mixed topics and empty batches are refused before sending.
    let mixed = vec![Message::new("T", "a"), Message::new("U", "b")];
    assert!(matches!(
        producer.send_batch(mixed).await.unwrap_err().source,
        ClientError::InvalidMessage(_)
    ));
    assert!(producer.send_batch(Vec::new()).await.is_err());
    producer.shutdown().await;
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn sharding_keys_and_explicit_queues_pin_messages() {
    let namesrv = FakeNamesrv::start().await;
    let a = FakeBroker::start("broker-a").await;
    let b = FakeBroker::start("broker-b").await;
    a.state.create_topic("T", 4);
    b.state.create_topic("T", 4);
    namesrv.set_route(
        "T",
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
        ]),
    );
    let producer = producer(&namesrv.addr).await;
    let mut queues_by_key: BTreeMap<String, MessageQueue> = BTreeMap::new();
    for i in 0..40 {
        let key = format!("order-{}", i % 5);
        let sent = producer
            .send(Message::new("T", format!("{i}")).with_sharding_key(&key))
            .await
            .unwrap();
        let queue = queues_by_key
            .entry(key)
            .or_insert_with(|| sent.queue.clone());
        assert_eq!(&sent.queue, queue, "a key stays on one queue");
    }
    let target = MessageQueue {
        topic: "T".into(),
        broker_name: "broker-b".into(),
        queue_id: 3,
    };
    for _ in 0..3 {
        let sent = producer
            .send_to_queue(Message::new("T", "pinned"), target.clone())
            .await
            .unwrap();
        assert_eq!(sent.queue, target);
        assert_eq!(sent.broker_addr, b.addr);
    }
    producer.shutdown().await;
    a.stop().await;
    b.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn the_async_window_bounds_sends_in_flight() {
    const WINDOW: usize = 4;
    const SENDS: usize = 12;
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
    let producer = Producer::builder()
        .namesrv(&namesrv.addr)
        .async_window(WINDOW)
        .build()
        .await
        .unwrap();
    broker.state.hold_sends.store(true, Ordering::SeqCst);
    let starter = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut handles = Vec::new();
            for i in 0..SENDS {
                handles.push(
                    producer
                        .send_async(Message::new("T", format!("{i}")))
                        .await
                        .unwrap(),
                );
            }
            handles
        })
    };
    wait_until("the window to fill", || {
        broker.state.sends_waiting.load(Ordering::SeqCst) == WINDOW
    })
    .await;
    assert_eq!(producer.in_flight(), WINDOW);
    assert!(
        !starter.is_finished(),
        "send_async waits while the window is full"
    );
    assert_eq!(broker.state.sends_received.load(Ordering::SeqCst), WINDOW);
    broker.state.release_sends();
    let handles = within("all sends started", starter).await.unwrap();
    let mut offsets = Vec::new();
    for handle in handles {
        let sent = within("a send", handle).await.unwrap();
        offsets.push((sent.queue.queue_id, sent.queue_offset));
    }
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), SENDS);
    assert_eq!(producer.in_flight(), 0);
    assert_eq!(broker.state.stored_total(), SENDS);
    producer.shutdown().await;
    assert!(matches!(
        producer.send_async(Message::new("T", "late")).await,
        Err(ClientError::Shutdown)
    ));
    assert!(matches!(
        producer
            .send(Message::new("T", "late"))
            .await
            .unwrap_err()
            .source,
        ClientError::Shutdown
    ));
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn an_unreachable_namesrv_is_skipped() {
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
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let producer = producer(&format!("{dead_addr};{}", namesrv.addr)).await;
    producer.send(Message::new("T", "x")).await.unwrap();
    assert_eq!(producer.routes().namesrv().addrs().len(), 2);
    producer.shutdown().await;
    broker.stop().await;
    namesrv.stop().await;
}

#[tokio::test]
async fn a_send_rides_out_a_leader_change_within_the_failover_wait() {
    let namesrv = FakeNamesrv::start().await;
    let new_leader = FakeBroker::start("broker-a").await;
    new_leader.state.create_topic("T", 1);
    // The old leader is dead: its address refuses connections.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(0, &dead_addr), (2, &new_leader.addr)],
            queues: 1,
        }]),
    );
    let producer = Producer::builder()
        .namesrv(&namesrv.addr)
        .retries(0)
        .retry_backoff(Duration::from_millis(20))
        .failover_wait(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    // The election ends a little later: first no leader at all, then the new one.
    let switch = {
        let state = namesrv.state.clone();
        let leaderless = route(&[Group {
            name: "broker-a",
            members: vec![(2, &new_leader.addr)],
            queues: 1,
        }]);
        let elected = route(&[Group {
            name: "broker-a",
            members: vec![(0, &new_leader.addr)],
            queues: 1,
        }]);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            state.routes.lock().unwrap().insert("T".into(), leaderless);
            tokio::time::sleep(Duration::from_millis(150)).await;
            state.routes.lock().unwrap().insert("T".into(), elected);
        })
    };
    let sent = within(
        "send",
        producer.send(Message::new("T", "through the election")),
    )
    .await
    .unwrap();
    assert_eq!(sent.broker_addr, new_leader.addr);
    assert!(sent.attempts >= 2, "the dead leader was tried first");
    assert!(
        !sent.earlier_attempt_unknown,
        "refused connections are definite failures"
    );
    switch.await.unwrap();

    // Without a failover wait, a leaderless group fails the send at once, definitely.
    let impatient = Producer::builder()
        .namesrv(&namesrv.addr)
        .retries(0)
        .failover_wait(Duration::ZERO)
        .build()
        .await
        .unwrap();
    namesrv.set_route(
        "T",
        route(&[Group {
            name: "broker-a",
            members: vec![(2, &new_leader.addr)],
            queues: 1,
        }]),
    );
    let error = impatient.send(Message::new("T", "x")).await.unwrap_err();
    assert!(
        matches!(error.source, ClientError::NoLeader { .. }),
        "{error}"
    );
    assert_eq!(error.attempts, 0);
    assert!(!error.is_unknown_outcome());
    producer.shutdown().await;
    impatient.shutdown().await;
    new_leader.stop().await;
    namesrv.stop().await;
}
