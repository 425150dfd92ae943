//! A consumer callback that fails once per message: the client hands each message back with
//! CONSUMER_SEND_MSG_BACK, the broker stores it in `%RETRY%<group>`, and the consumer (which
//! subscribes to its retry topic by itself) receives it again, reconsume count raised, under
//! its original topic, body and message id, marked with its origin by the broker, after the
//! first retry's delay level (10 s).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use raftmq_interop::history::{Delivery, Recorder, Sent, check_stream, describe_violations};
use rocketmq_client_rust::{ClientConfig, ConsumeConcurrentlyStatus};

use super::clients::{
    Env, RetryMarks, delivery_of, require_mostly_acked, retry_marks, send_one, start_producer,
    start_push_consumer, stop, wait_for_route,
};

const TOPIC: &str = "InteropRetryTopic";
const PRODUCER_GROUP: &str = "interop-retry-producer";
const CONSUMER_GROUP: &str = "interop-retry-consumer";
const MESSAGES: u64 = 5;
/// How often the consumer asks the NameServer for routes. A new group's retry topic is
/// created by its first heartbeat, which comes after the consumer's first route lookups;
/// with RocketMQ's 30 s default the retry queue would be found only at the next poll.
/// 10 s is the least the client accepts.
const ROUTE_POLL_INTERVAL_MS: u32 = 10_000;
/// Bound on every message coming back through the retry topic.
const REDELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// The client leaves the retry's delay to the broker, which (as RocketMQ's) picks delay level
/// 3 for a first retry: 10 s with the default levels.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(10);

pub async fn run(env: &Env) -> anyhow::Result<()> {
    let producer = start_producer(env, PRODUCER_GROUP).await?;
    let mut sent: Vec<Sent> = Vec::new();
    for seq in 0..MESSAGES {
        sent.push(send_one(&producer, TOPIC, seq, format!("interop-retry-{seq}")).await?);
    }
    require_mostly_acked(&sent)?;

    let recorder = Recorder::default();
    let marks: Arc<Mutex<Vec<(Delivery, RetryMarks)>>> = Arc::default();
    let failed_once: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let callback_recorder = recorder.clone();
    let callback_marks = marks.clone();
    let config = ClientConfig {
        poll_name_server_interval: ROUTE_POLL_INTERVAL_MS,
        ..ClientConfig::default()
    };
    let consumer = start_push_consumer(
        env,
        CONSUMER_GROUP,
        TOPIC,
        config,
        move |messages, _context| {
            let mut fail = false;
            for message in messages {
                let delivery = delivery_of(message);
                let first_failure = failed_once
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .insert(delivery.body.clone());
                fail |= first_failure;
                callback_marks
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .push((delivery.clone(), retry_marks(message)));
                callback_recorder.record(delivery);
            }
            Ok(if fail {
                ConsumeConcurrentlyStatus::ReconsumeLater
            } else {
                ConsumeConcurrentlyStatus::ConsumeSuccess
            })
        },
    )
    .await?;
    // The group's first heartbeat made the broker create its retry topic, which the
    // NameServer must route for the consumer to pull redeliveries from it.
    wait_for_route(env, &format!("%RETRY%{CONSUMER_GROUP}")).await?;
    let started = Instant::now();
    let redelivered = |deliveries: &[Delivery]| {
        let again: BTreeSet<&str> = deliveries
            .iter()
            .filter(|d| d.reconsume_times > 0)
            .map(|d| d.body.as_str())
            .collect();
        sent.iter()
            .filter(|s| s.ack().is_some())
            .all(|s| again.contains(s.body.as_str()))
    };
    let complete = recorder.wait_for(REDELIVERY_TIMEOUT, redelivered).await;
    let elapsed = started.elapsed();
    stop(consumer, producer).await?;

    let deliveries = recorder.deliveries();
    if let Err(violations) = check_stream(TOPIC, &sent, &deliveries) {
        bail!(
            "send-back deliveries break the contract:\n{}",
            describe_violations(&violations)
        );
    }
    ensure!(
        complete,
        "not every acknowledged message came back through the retry topic within {REDELIVERY_TIMEOUT:?}: {deliveries:?}"
    );

    // A redelivery must come from the broker's retry topic, not from the client resubmitting
    // locally (which it does when a send-back fails): only the broker marks a message with
    // its retry origin, and the retry copy is a new stored message with an id of its own.
    let marks = marks.lock().unwrap_or_else(|poison| poison.into_inner());
    let first_ids: BTreeMap<&str, &str> = marks
        .iter()
        .filter(|(d, _)| d.reconsume_times == 0)
        .map(|(d, m)| (d.body.as_str(), m.msg_id.as_str()))
        .collect();
    for (delivery, mark) in marks.iter().filter(|(d, _)| d.reconsume_times > 0) {
        let first_id = first_ids.get(delivery.body.as_str()).copied();
        ensure!(
            mark.retry_topic.as_deref() == Some(TOPIC),
            "redelivery of {:?} lacks RETRY_TOPIC={TOPIC}: {:?}",
            delivery.body,
            mark.retry_topic
        );
        ensure!(
            first_id.is_some() && mark.origin_msg_id.as_deref() == first_id,
            "redelivery of {:?} names origin {:?}, first delivered as {first_id:?}",
            delivery.body,
            mark.origin_msg_id
        );
        ensure!(
            Some(mark.msg_id.as_str()) != first_id,
            "redelivery of {:?} has the first delivery's id {:?}: resubmitted locally, not stored again",
            delivery.body,
            mark.msg_id
        );
    }
    ensure!(
        elapsed >= FIRST_RETRY_DELAY,
        "the retries came back after {elapsed:?}, before the first retry's delay level ({FIRST_RETRY_DELAY:?})"
    );
    println!(
        "send-back: {} messages failed once and came back through %RETRY%{CONSUMER_GROUP} in {elapsed:?} ({} deliveries)",
        sent.len(),
        deliveries.len()
    );
    Ok(())
}
