//! The real producer sends single messages and one batch to a topic that does not exist yet
//! (the broker creates it from `TBW102`), then the real push consumer reads the topic from
//! its first offset: every acknowledged message arrives under its message id, at the queue
//! and offset its acknowledgement named, in send order per queue.

use std::time::{Duration, Instant};

use anyhow::bail;
use raftmq_interop::history::{
    Recorder, Sent, all_acked_delivered, check_stream, describe_violations,
};
use rocketmq_client_rust::{ClientConfig, ConsumeConcurrentlyStatus};

use super::clients::{
    Env, delivery_of, require_mostly_acked, send_batch, send_one, start_producer,
    start_push_consumer, stop, wait_for_route,
};

const TOPIC: &str = "InteropTopic";
const PRODUCER_GROUP: &str = "interop-producer";
const CONSUMER_GROUP: &str = "interop-consumer";
/// Single sync sends.
const SINGLE_SENDS: u64 = 200;
/// Messages in the one batch send.
const BATCH_SIZE: u64 = 10;
/// Bound on the consumer receiving every acknowledged message.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(env: &Env) -> anyhow::Result<()> {
    let producer = start_producer(env, PRODUCER_GROUP).await?;
    let started = Instant::now();
    let mut sent: Vec<Sent> = Vec::new();
    for seq in 0..SINGLE_SENDS {
        sent.push(send_one(&producer, TOPIC, seq, format!("interop-single-{seq}")).await?);
    }
    let bodies = (0..BATCH_SIZE)
        .map(|index| format!("interop-batch-{index}"))
        .collect();
    sent.extend(send_batch(&producer, TOPIC, SINGLE_SENDS, bodies).await?);
    let send_elapsed = started.elapsed();

    require_mostly_acked(&sent)?;
    // The topic did not exist before the first send: the broker created it and must have
    // told the NameServer, or the consumer would find no route.
    wait_for_route(env, TOPIC).await?;
    let batch_acked = sent[SINGLE_SENDS as usize..]
        .iter()
        .all(|s| s.ack().is_some());

    let recorder = Recorder::default();
    let callback_recorder = recorder.clone();
    let consumer = start_push_consumer(
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
    .await?;
    let consume_started = Instant::now();
    let complete = recorder
        .wait_for(CONSUME_TIMEOUT, |deliveries| {
            all_acked_delivered(&sent, deliveries)
        })
        .await;
    let consume_elapsed = consume_started.elapsed();
    stop(consumer, producer).await?;

    let deliveries = recorder.deliveries();
    match check_stream(TOPIC, &sent, &deliveries) {
        Ok(summary) => {
            println!(
                "produce/consume: {summary:?}; batch acknowledged: {batch_acked}; \
                 sends took {send_elapsed:?}, consuming took {consume_elapsed:?}"
            );
            Ok(())
        }
        Err(violations) => bail!(
            "after {consume_elapsed:?} (all acknowledged delivered: {complete}), {} \
             deliveries break the contract:\n{}",
            deliveries.len(),
            describe_violations(&violations)
        ),
    }
}
