//! A push consumer reads a topic and stops (committing its offsets with
//! UPDATE_CONSUMER_OFFSET); a new consumer of the same group then starts where the group
//! left off (QUERY_CONSUMER_OFFSET): it receives every message sent since, and does not
//! start the topic over.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure};
use raftmq_interop::history::{
    Recorder, Sent, all_acked_delivered, check_stream, describe_violations,
};
use rocketmq_client_rust::{ClientConfig, ConsumeConcurrentlyStatus};
use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer};

use super::clients::{
    Env, LIFECYCLE_TIMEOUT, delivery_of, require_mostly_acked, send_one, start_producer,
    start_push_consumer, wait_for_route,
};
use raftmq_interop::runtime::bounded;

const TOPIC: &str = "InteropResumeTopic";
const PRODUCER_GROUP: &str = "interop-resume-producer";
const CONSUMER_GROUP: &str = "interop-resume-consumer";
/// Messages sent before the first consumer, and again before the second.
const MESSAGES_PER_ROUND: u64 = 40;
/// Bound on a consumer receiving a round.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

async fn send_round(
    producer: &DefaultMQProducer,
    sent: &mut Vec<Sent>,
    round: u64,
) -> anyhow::Result<()> {
    for index in 0..MESSAGES_PER_ROUND {
        let seq = round * MESSAGES_PER_ROUND + index;
        sent.push(send_one(producer, TOPIC, seq, format!("interop-resume-{seq}")).await?);
    }
    Ok(())
}

async fn start_consumer(env: &Env, recorder: &Recorder) -> anyhow::Result<DefaultMQPushConsumer> {
    let callback_recorder = recorder.clone();
    start_push_consumer(
        env,
        CONSUMER_GROUP,
        TOPIC,
        ClientConfig::default(),
        move |messages, _context| {
            for message in messages {
                callback_recorder.record(delivery_of(message));
            }
            Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
        },
    )
    .await
}

pub async fn run(env: &Env) -> anyhow::Result<()> {
    let mut producer = start_producer(env, PRODUCER_GROUP).await?;
    let mut sent = Vec::new();
    send_round(&producer, &mut sent, 0).await?;
    require_mostly_acked(&sent)?;
    wait_for_route(env, TOPIC).await?;

    let first = Recorder::default();
    let mut consumer = start_consumer(env, &first).await?;
    let first_round = sent.clone();
    let complete = first
        .wait_for(CONSUME_TIMEOUT, |d| all_acked_delivered(&first_round, d))
        .await;
    ensure!(
        complete,
        "the first consumer did not receive the first round within {CONSUME_TIMEOUT:?}"
    );
    // Shutting down commits the group's offsets.
    bounded(
        "stopping the first consumer",
        LIFECYCLE_TIMEOUT,
        consumer.shutdown(),
    )
    .await?;

    send_round(&producer, &mut sent, 1).await?;
    require_mostly_acked(&sent[first_round.len()..])?;
    let second = Recorder::default();
    let mut consumer = start_consumer(env, &second).await?;
    let complete = second
        .wait_for(CONSUME_TIMEOUT, |d| {
            all_acked_delivered(&sent[first_round.len()..], d)
        })
        .await;
    bounded(
        "stopping the second consumer",
        LIFECYCLE_TIMEOUT,
        consumer.shutdown(),
    )
    .await?;
    bounded(
        "stopping the producer",
        LIFECYCLE_TIMEOUT,
        producer.shutdown(),
    )
    .await?;

    let mut deliveries = first.deliveries();
    deliveries.extend(second.deliveries());
    if let Err(violations) = check_stream(TOPIC, &sent, &deliveries) {
        bail!(
            "after a consumer restart (second round complete: {complete}), deliveries break \
             the contract:\n{}",
            describe_violations(&violations)
        );
    }
    // At least once allows the second consumer to see a few first-round messages again (an
    // offset commit still in flight), but not the whole first round: that would mean it
    // ignored the group's committed offsets.
    let first_bodies: BTreeSet<&str> = first_round.iter().map(|s| s.body.as_str()).collect();
    let second_deliveries = second.deliveries();
    let seen_again = second_deliveries
        .iter()
        .map(|d| d.body.as_str())
        .filter(|body| first_bodies.contains(body))
        .collect::<BTreeSet<_>>()
        .len();
    ensure!(
        seen_again < first_round.len(),
        "the restarted consumer read all {seen_again} first-round messages again: it did not \
         resume from the committed offsets"
    );
    println!(
        "resume: the restarted consumer received all {} new messages and {seen_again} of {} \
         already consumed ones",
        sent.len() - first_round.len(),
        first_round.len()
    );
    Ok(())
}
