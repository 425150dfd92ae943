//! A round trip against a running cluster: creates a topic, starts a two-member consumer
//! group and waits until it has split the queues, produces messages (sync, async or in
//! batches), then checks that every acknowledged message arrived at its offset, in offset
//! order per queue, each queue at one member.
//!
//! ```sh
//! NAMESRV_ADDR=127.0.0.1:9876 cargo run -p raftmq-client --example roundtrip -- \
//!     [count=1000] [sync|async|batch] [topic]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftmq_client::admin::TopicConfig;
use raftmq_client::{
    Admin, ConsumeStatus, Consumer, Message, MessageQueue, Producer, ReceivedMessage, SendOutcome,
    SendResult,
};

/// Queues of the topic the example creates.
const QUEUES: u32 = 8;
/// Messages per batch in `batch` mode.
const BATCH: usize = 32;
/// How long the cluster may take to publish the topic, or the group to settle, or the
/// consumers to receive everything.
const DEADLINE: Duration = Duration::from_secs(60);

type Received = Arc<Mutex<Vec<(usize, ReceivedMessage)>>>;

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let mode = args.next().unwrap_or_else(|| "sync".to_owned());
    let topic = args
        .next()
        .unwrap_or_else(|| format!("RoundTrip-{}", std::process::id()));
    let group = format!("roundtrip-{}", std::process::id());

    let admin = Admin::new(None)?;
    admin
        .create_topic(&TopicConfig::new(topic.clone(), QUEUES), None)
        .await?;
    let deadline = Instant::now() + DEADLINE;
    while admin.route(&topic).await?.is_none() {
        if Instant::now() > deadline {
            return Err("the topic never appeared in the NameServer".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let received: Received = Arc::default();
    let mut consumers = Vec::new();
    for who in 0..2 {
        let log = received.clone();
        let consumer = Consumer::builder()
            .group(&group)
            .subscribe(&topic, "*")
            .start(move |messages: Vec<ReceivedMessage>| {
                log.lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .extend(messages.into_iter().map(|m| (who, m)));
                std::future::ready(ConsumeStatus::Success)
            })
            .await?;
        consumers.push(consumer);
    }
    wait_for("the group to split the queues", || {
        let held: Vec<BTreeSet<MessageQueue>> = consumers
            .iter()
            .map(|c| {
                c.assigned_queues()
                    .into_iter()
                    .filter(|q| q.topic == topic)
                    .collect()
            })
            .collect();
        held[0].is_disjoint(&held[1]) && held[0].len() + held[1].len() == QUEUES as usize
    })
    .await?;

    let producer = Producer::builder()
        .group("roundtrip-producer")
        .build()
        .await?;
    let started = Instant::now();
    let mut results: Vec<Result<SendResult, raftmq_client::SendError>> = Vec::new();
    match mode.as_str() {
        "sync" => {
            let mut slowest = Duration::ZERO;
            for i in 0..count {
                let begun = Instant::now();
                results.push(producer.send(Message::new(&topic, format!("m-{i}"))).await);
                slowest = slowest.max(begun.elapsed());
            }
            println!("slowest send took {slowest:?}");
        }
        "async" => {
            let mut handles = Vec::with_capacity(count);
            for i in 0..count {
                handles.push(
                    producer
                        .send_async(Message::new(&topic, format!("m-{i}")))
                        .await?,
                );
            }
            for handle in handles {
                results.push(handle.await);
            }
        }
        "batch" => {
            for start in (0..count).step_by(BATCH) {
                let batch = (start..(start + BATCH).min(count))
                    .map(|i| Message::new(&topic, format!("m-{i}")))
                    .collect();
                results.push(producer.send_batch(batch).await);
            }
        }
        other => return Err(format!("unknown mode {other} (sync, async or batch)").into()),
    }
    let elapsed = started.elapsed();
    let mut sent: BTreeMap<MessageQueue, BTreeMap<i64, String>> = BTreeMap::new();
    let (mut failed, mut unknown) = (0, 0);
    for result in results {
        match SendOutcome::from(result) {
            SendOutcome::Ok(result) => {
                for (index, id) in result.msg_ids.iter().enumerate() {
                    sent.entry(result.queue.clone())
                        .or_default()
                        .insert(result.queue_offset + index as i64, id.clone());
                }
            }
            SendOutcome::Failed(error) => {
                failed += 1;
                eprintln!("send failed: {error}");
            }
            SendOutcome::Unknown(error) => {
                unknown += 1;
                eprintln!("send outcome unknown: {error}");
            }
        }
    }
    let acked: usize = sent.values().map(BTreeMap::len).sum();
    println!(
        "{mode}: {acked} acknowledged, {failed} failed, {unknown} unknown in {elapsed:?} ({:.0} msgs/s)",
        acked as f64 / elapsed.as_secs_f64()
    );

    let distinct = || {
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, m)| m.msg_id.clone())
            .collect::<BTreeSet<_>>()
            .len()
    };
    wait_for("every acknowledged message", || distinct() >= acked).await?;
    for consumer in &consumers {
        consumer.shutdown().await;
    }
    producer.shutdown().await;
    admin.shutdown().await;

    let received = received.lock().unwrap_or_else(|p| p.into_inner());
    let mut per_queue: BTreeMap<MessageQueue, Vec<(i64, String, usize)>> = BTreeMap::new();
    for (who, message) in received.iter() {
        per_queue.entry(message.queue.clone()).or_default().push((
            message.queue_offset,
            message.msg_id.clone(),
            *who,
        ));
    }
    // Every acknowledged message at its offset; offsets increasing; one member per queue.
    // Messages of sends with an unknown outcome may appear too.
    let mut problems = 0;
    for (queue, expected) in &sent {
        let got = per_queue.get(queue).cloned().unwrap_or_default();
        let members: BTreeSet<usize> = got.iter().map(|(_, _, who)| *who).collect();
        let by_offset: BTreeMap<i64, &String> = got.iter().map(|(o, id, _)| (*o, id)).collect();
        let missing = expected
            .iter()
            .filter(|(offset, id)| by_offset.get(*offset) != Some(id))
            .count();
        let in_order = got.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if missing > 0 || !in_order || members.len() != 1 {
            problems += 1;
            eprintln!(
                "{queue:?}: {missing} acknowledged messages missing, in order: {in_order}, members {members:?}"
            );
        }
    }
    println!(
        "received {} messages from {} queues; {problems} problems",
        received.len(),
        per_queue.len()
    );
    if problems > 0 {
        return Err(format!("{problems} problems").into());
    }
    Ok(())
}
