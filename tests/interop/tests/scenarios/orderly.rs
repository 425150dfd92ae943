//! Ordered messages: the real producer sends each order's steps to one queue (a selector on
//! the order key), and an orderly push consumer (which locks its queues on the broker with
//! LOCK_BATCH_MQ) must hand every queue's messages to its callback strictly in offset order,
//! so each order's steps arrive in the order they were sent.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure};
use raftmq_interop::history::{
    Recorder, Sent, all_acked_delivered, check_stream, describe_violations,
};
use rocketmq_client_rust::ConsumeOrderlyStatus;

use super::clients::{
    Env, delivery_of, require_mostly_acked, send_keyed, start_orderly_push_consumer,
    start_producer, stop, wait_for_route,
};

const TOPIC: &str = "InteropOrderTopic";
const PRODUCER_GROUP: &str = "interop-order-producer";
const CONSUMER_GROUP: &str = "interop-order-consumer";
/// Orders, each a sequence of steps sent interleaved with the other orders' steps.
const ORDERS: usize = 8;
const STEPS_PER_ORDER: usize = 10;
/// Bound on the consumer receiving every acknowledged message.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(env: &Env) -> anyhow::Result<()> {
    let producer = start_producer(env, PRODUCER_GROUP).await?;
    let mut sent: Vec<Sent> = Vec::new();
    let mut seq = 0;
    for step in 0..STEPS_PER_ORDER {
        for order in 0..ORDERS {
            let body = format!("interop-order-{order}-step-{step}");
            sent.push(send_keyed(&producer, TOPIC, seq, body, order).await?);
            seq += 1;
        }
    }
    require_mostly_acked(&sent)?;
    // One order, one queue: the selector saw the same queue list for every send.
    for order in 0..ORDERS {
        let queues: Vec<i32> = sent
            .iter()
            .skip(order)
            .step_by(ORDERS)
            .filter_map(|s| s.ack().map(|ack| ack.queue_id))
            .collect();
        ensure!(
            queues.windows(2).all(|pair| pair[0] == pair[1]),
            "order {order} was spread over queues {queues:?}"
        );
    }
    wait_for_route(env, TOPIC).await?;

    let recorder = Recorder::default();
    let callback_recorder = recorder.clone();
    let consumer =
        start_orderly_push_consumer(env, CONSUMER_GROUP, TOPIC, move |messages, _context| {
            for message in messages {
                callback_recorder.record(delivery_of(message));
            }
            Ok(ConsumeOrderlyStatus::Success)
        })
        .await?;
    let complete = recorder
        .wait_for(CONSUME_TIMEOUT, |d| all_acked_delivered(&sent, d))
        .await;
    stop(consumer, producer).await?;

    let deliveries = recorder.deliveries();
    if let Err(violations) = check_stream(TOPIC, &sent, &deliveries) {
        bail!(
            "orderly deliveries (all acknowledged delivered: {complete}) break the contract:\n{}",
            describe_violations(&violations)
        );
    }
    // The orderly guarantee proper: in callback order, each queue's offsets only go up.
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    for delivery in &deliveries {
        if let Some(previous) = last_offset.insert(delivery.queue_id, delivery.queue_offset) {
            ensure!(
                delivery.queue_offset > previous,
                "queue {}: the orderly callback got offset {} after offset {previous}",
                delivery.queue_id,
                delivery.queue_offset
            );
        }
    }
    println!(
        "orderly: {ORDERS} orders x {STEPS_PER_ORDER} steps over {} queues, each queue \
         consumed in offset order",
        last_offset.len()
    );
    Ok(())
}
