//! W3: a consumer group of real push consumers ([`raftmq_client::Consumer`]) under forced
//! rebalances, fed by one producer (`w3p`) on [`W3_TOPIC`].
//!
//! Every few seconds a consumer joins or leaves (between [`W3_MIN_CONSUMERS`] and
//! [`W3_MAX_CONSUMERS`]); each has a fresh name (`w3c1`, `w3c2`, ...), so one name is one
//! lifetime. Each delivered batch is recorded as a `poll` of that consumer, by process
//! `<consumer>.q<queue>` (the consumer handles queues concurrently, one batch at a time per
//! queue; a lock per process keeps its records paired).
//!
//! Assignment epochs for `poll_order`: the consumer decides its queues itself, so the harness
//! infers where an epoch may have begun. A queue that was dropped and taken again restarts at
//! the group's committed offset, and the dropping rebalance finishes (bumping
//! `rebalance_count`) after the old worker's last delivery and before the new worker's first.
//! So when a batch does not continue right after the previous one (first offset != last + 1)
//! and the rebalance count moved since that previous batch, a `reassign` is recorded first.
//! Within one worker (no rebalance in between) every gap or step back is checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use raftmq_client::{ConsumeStatus, Consumer, ReceivedMessage};
use tokio_util::task::TaskTracker;

use super::{ClientRng, OP_TIMEOUT, RPC_TIMEOUT, Shared, W3_TOPIC};
use crate::history::{AssignOp, Call, Event, PollOp, PolledMsg, QueueRef, RecordError};

/// The consumer group.
pub const W3_GROUP: &str = "jl-w3";
/// Consumers running at the start.
pub const W3_INITIAL_CONSUMERS: usize = 2;
/// Fewest and most consumers while churning.
pub const W3_MIN_CONSUMERS: usize = 1;
pub const W3_MAX_CONSUMERS: usize = 4;
/// Time between one join/leave and the next, drawn in this range.
pub const CHURN_INTERVAL_MS: (u64, u64) = (5_000, 12_000);
/// Consumer periods, shorter than RocketMQ's defaults so that churn is seen within a run.
pub const REBALANCE_INTERVAL: Duration = Duration::from_secs(5);
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
pub const ROUTE_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a consumer may take to stop (handlers, final commits, unregistering).
pub const CONSUMER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

const RNG_STREAM: u64 = 300;

/// What was last delivered to one consumer from one queue.
#[derive(Default)]
struct Delivered {
    last_offset: Option<u64>,
    /// The consumer's rebalance count at that delivery (`None`: not known yet).
    rebalances: Option<u64>,
}

/// One consumer's recording state, shared with its handler.
struct Member {
    name: String,
    consumer: OnceLock<Consumer>,
    queues: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<Delivered>>>>,
}

impl Member {
    fn slot(&self, queue: u32) -> Arc<tokio::sync::Mutex<Delivered>> {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue)
            .or_default()
            .clone()
    }

    async fn deliver(&self, shared: &Shared, batch: &[ReceivedMessage]) -> Result<(), RecordError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let topic = first.queue.topic.clone();
        let queue = u32::try_from(first.queue.queue_id).unwrap_or(u32::MAX);
        let slot = self.slot(queue);
        let mut delivered = slot.lock().await;
        let process = format!("{}.q{queue}", self.name);
        let rebalances = self.consumer.get().map(Consumer::rebalance_count);
        let first_offset = u64::try_from(first.queue_offset).unwrap_or(0);
        if may_start_epoch(&delivered, rebalances, first_offset) {
            let mut queues: Vec<QueueRef> = self
                .consumer
                .get()
                .map(|c| {
                    c.assigned_queues()
                        .into_iter()
                        .filter_map(|mq| {
                            Some(QueueRef {
                                topic: mq.topic,
                                queue: u32::try_from(mq.queue_id).ok()?,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let this = QueueRef {
                topic: topic.clone(),
                queue,
            };
            if !queues.contains(&this) {
                queues.push(this);
            }
            let op = AssignOp {
                consumer: self.name.clone(),
                group: W3_GROUP.into(),
                queues,
            };
            shared
                .recorder
                .record(Event::invoke(&process, Call::Reassign(op.clone())))
                .await?;
            shared
                .recorder
                .record(Event::ok(&process, Call::Reassign(op)))
                .await?;
        }
        let mut op = PollOp {
            consumer: self.name.clone(),
            group: W3_GROUP.into(),
            msgs: vec![],
            // A push consumer hands over messages, not the pull answers' minimum offsets.
            min_offsets: vec![],
        };
        shared
            .recorder
            .record(Event::invoke(&process, Call::Poll(op.clone())))
            .await?;
        for m in batch {
            op.msgs.push(PolledMsg {
                topic: m.queue.topic.clone(),
                queue: u32::try_from(m.queue.queue_id).unwrap_or(u32::MAX),
                offset: u64::try_from(m.queue_offset).unwrap_or(0),
                value: String::from_utf8_lossy(&m.body).into_owned(),
            });
        }
        let last = op.msgs.last().map(|m| m.offset);
        shared
            .recorder
            .record(Event::ok(&process, Call::Poll(op)))
            .await?;
        delivered.last_offset = last;
        delivered.rebalances = rebalances;
        Ok(())
    }
}

/// Whether a batch of a queue starting at `first_offset` may come from a new worker (the
/// queue dropped and taken again): it does not continue the previous batch, and a rebalance
/// finished since (or the count is not known). See the module docs.
fn may_start_epoch(delivered: &Delivered, rebalances: Option<u64>, first_offset: u64) -> bool {
    match delivered.last_offset {
        None => false,
        Some(last) => {
            first_offset != last + 1 && (rebalances.is_none() || rebalances != delivered.rebalances)
        }
    }
}

async fn start_consumer(shared: &Shared, name: String) -> Option<(Arc<Member>, Consumer)> {
    let member = Arc::new(Member {
        name: name.clone(),
        consumer: OnceLock::new(),
        queues: Mutex::new(HashMap::new()),
    });
    let handler_member = member.clone();
    let handler_shared = shared.clone();
    let builder = Consumer::builder()
        .namesrv(shared.namesrv.clone())
        .tls(shared.tls.clone())
        .group(W3_GROUP)
        .client_id(format!("{name}@jepsen-lite-{}", std::process::id()))
        .subscribe(W3_TOPIC, "*")
        .consume_retry_topic(false)
        .rebalance_interval(REBALANCE_INTERVAL)
        .commit_interval(COMMIT_INTERVAL)
        .heartbeat_interval(HEARTBEAT_INTERVAL)
        .route_refresh_interval(ROUTE_REFRESH_INTERVAL)
        .rpc_timeout(RPC_TIMEOUT);
    let started = tokio::time::timeout(
        OP_TIMEOUT,
        builder.start(move |batch: Vec<ReceivedMessage>| {
            let member = handler_member.clone();
            let shared = handler_shared.clone();
            async move {
                if let Err(e) = member.deliver(&shared, &batch).await {
                    tracing::debug!(error = %e, "history closed; delivery not recorded");
                }
                ConsumeStatus::Success
            }
        }),
    )
    .await;
    match started {
        Ok(Ok(consumer)) => {
            let _ = member.consumer.set(consumer.clone());
            tracing::info!(consumer = %name, "w3 consumer joined");
            Some((member, consumer))
        }
        Ok(Err(e)) => {
            tracing::warn!(consumer = %name, error = %e, "w3 consumer could not start");
            None
        }
        Err(_) => {
            tracing::warn!(consumer = %name, "w3 consumer start timed out");
            None
        }
    }
}

fn stop_consumer(tracker: &TaskTracker, name: String, consumer: Consumer) {
    tracker.spawn(async move {
        if tokio::time::timeout(CONSUMER_STOP_TIMEOUT, consumer.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(consumer = %name, "w3 consumer did not stop in time");
        } else {
            tracing::info!(consumer = %name, "w3 consumer left");
        }
    });
}

/// Runs W3 (its producer and the churning group) until `shared.stop`.
pub async fn run(shared: Shared) -> Result<(), RecordError> {
    let tracker = TaskTracker::new();
    let producer_shared = shared.clone();
    let producer_task = tracker.spawn(run_producer(producer_shared));
    let mut rng = ClientRng::new(shared.seed, RNG_STREAM);
    let mut next_name = 1usize;
    let mut active: Vec<(String, Consumer)> = Vec::new();
    let mut members: Vec<Arc<Member>> = Vec::new();
    for _ in 0..W3_INITIAL_CONSUMERS {
        let name = format!("w3c{next_name}");
        next_name += 1;
        if let Some((member, consumer)) = start_consumer(&shared, name.clone()).await {
            members.push(member);
            active.push((name, consumer));
        }
    }
    loop {
        let (lo, hi) = CHURN_INTERVAL_MS;
        let wait = Duration::from_millis(lo + rng.below(hi - lo + 1));
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let join = if active.len() <= W3_MIN_CONSUMERS {
            true
        } else if active.len() >= W3_MAX_CONSUMERS {
            false
        } else {
            rng.below(2) == 0
        };
        if join {
            let name = format!("w3c{next_name}");
            next_name += 1;
            if let Some((member, consumer)) = start_consumer(&shared, name.clone()).await {
                members.push(member);
                active.push((name, consumer));
            }
        } else {
            let (name, consumer) = active.remove(rng.below(active.len() as u64) as usize);
            stop_consumer(&tracker, name, consumer);
        }
    }
    for (name, consumer) in active.drain(..) {
        stop_consumer(&tracker, name, consumer);
    }
    tracker.close();
    tracker.wait().await;
    drop(members);
    producer_task.await.unwrap_or(Ok(()))
}

async fn run_producer(shared: Shared) -> Result<(), RecordError> {
    super::feed(&shared, "jl-w3-producer", "w3p", W3_TOPIC).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(last: u64, rebalances: u64) -> Delivered {
        Delivered {
            last_offset: Some(last),
            rebalances: Some(rebalances),
        }
    }

    #[test]
    fn epochs_start_only_where_a_rebalance_could_have_restarted_the_queue() {
        // The first batch of a queue: nothing to compare, no epoch needed.
        assert!(!may_start_epoch(&Delivered::default(), Some(3), 40));
        // A continuation never starts an epoch, rebalance or not.
        assert!(!may_start_epoch(&after(9, 3), Some(3), 10));
        assert!(!may_start_epoch(&after(9, 3), Some(4), 10));
        // Same worker (no rebalance finished): a gap or a step back stays checked.
        assert!(!may_start_epoch(&after(9, 3), Some(3), 12));
        assert!(!may_start_epoch(&after(9, 3), Some(3), 5));
        // A rebalance finished in between: the queue may have been dropped and retaken.
        assert!(may_start_epoch(&after(9, 3), Some(4), 5));
        assert!(may_start_epoch(&after(9, 3), Some(4), 30));
        // The count is not known yet: assume it may have.
        assert!(may_start_epoch(&after(9, 3), None, 5));
    }
}
