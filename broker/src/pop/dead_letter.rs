//! Dead letters of POP: a message handed out as often as its group allows
//! (`retry_max_times + 1` deliveries) and still not acked when its last invisible time ends is
//! stored in `%DLQ%<group>` and leaves the in-flight set (so the queue moves on, and an orderly
//! queue is unblocked).
//!
//! [`run`] does it on the leader, like the timer task: every [`DEAD_LETTER_POLL_INTERVAL`] it
//! reads the exhausted deliveries from the applied state and proposes one `Command::Release`
//! whose claims are those deliveries (`Claim::Pop`). Apply stores each message only while its
//! delivery is still in flight under the same pop time, and takes it out with it, so a message
//! is dead-lettered once, whichever leader proposes it, and never after an ack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftmq_protocol::message::{StoredMessage, property};
use raftmq_protocol::names::{dlq_topic, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::batcher::MAX_BATCH_BYTES;
use crate::command::{Applied, Claim, PopTarget, ReleaseBuilder, SendOutcome};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::filter::MessageFilter;
use crate::leader_task::{LeaderTask, Round, run_while_leading};
use crate::message_reader::QueueReadRequest;
use crate::processor::send_message::{pending_message, resolve_topic};

/// How often the leader looks for exhausted deliveries.
pub const DEAD_LETTER_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Deliveries dead-lettered per round (one Raft entry).
pub const DEAD_LETTERS_PER_ROUND: usize = 256;
/// How long the task waits after a failed round before trying again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Runs until `shutdown`: while this member leads, dead-letters exhausted deliveries.
pub async fn run(ctx: Arc<BrokerContext>, shutdown: CancellationToken) {
    run_while_leading(ctx, shutdown, DeadLettering::default()).await
}

/// The leader's dead-lettering of exhausted POP deliveries.
#[derive(Default)]
struct DeadLettering {
    /// After a failure, no round until then (a failing store does not spin).
    paused_until: Option<Instant>,
}

impl LeaderTask for DeadLettering {
    const NAME: &'static str = "POP dead-lettering";
    const INTERVAL: Duration = DEAD_LETTER_POLL_INTERVAL;

    async fn round(&mut self, ctx: &BrokerContext) -> Round {
        // The in-flight set read below must include every committed pop and ack.
        if !ctx.leadership.may_read_committed()
            || self
                .paused_until
                .is_some_and(|until| Instant::now() < until)
        {
            return Round::Done;
        }
        let exhausted = ctx.state.pop_exhausted(now_ms(), DEAD_LETTERS_PER_ROUND);
        if exhausted.is_empty() {
            return Round::Done;
        }
        let items: Vec<(String, PopTarget, u32)> = exhausted
            .into_iter()
            .map(|((group, topic, queue_id), offset, entry)| {
                let target = PopTarget {
                    topic,
                    queue_id,
                    offset,
                    pop_ms: entry.pop_ms,
                };
                (group, target, entry.attempt)
            })
            .collect();
        let count = items.len();
        match dead_letter(ctx, &items).await {
            Ok(moved) => {
                debug!(moved, "dead-lettered POP deliveries");
                if count >= DEAD_LETTERS_PER_ROUND {
                    return Round::Backlog;
                }
            }
            Err(err) => {
                warn!(error = %err, "POP dead-lettering failed; trying again shortly");
                self.paused_until = Some(Instant::now() + RETRY_AFTER_FAILURE);
            }
        }
        Round::Done
    }
}

/// Stores each delivery's message in its group's DLQ and takes the delivery out of flight, in
/// one entry; returns how many were moved. A message retention removed only leaves flight.
pub(crate) async fn dead_letter(
    ctx: &BrokerContext,
    items: &[(String, PopTarget, u32)],
) -> Result<usize, RequestError> {
    let mut release = ReleaseBuilder::default();
    let mut origins = Vec::new();
    let all = MessageFilter::all();
    for (group, target, attempt) in items {
        if release.blob_len() >= MAX_BATCH_BYTES {
            break;
        }
        let claim = Claim::Pop {
            group: group.clone(),
            target: target.clone(),
        };
        let read = ctx
            .reader
            .read_queue(
                &ctx.state,
                &QueueReadRequest {
                    topic: &target.topic,
                    queue_id: target.queue_id,
                    offset: target.offset,
                    max_messages: 1,
                    max_bytes: 1,
                    filter: &all,
                },
            )
            .await?;
        let found = read
            .messages
            .first()
            .and_then(|bytes| StoredMessage::decode(bytes).ok())
            .map(|(message, _)| message)
            .filter(|message| message.queue_offset as u64 == target.offset);
        let Some(original) = found else {
            warn!(group, topic = %target.topic, offset = target.offset, "a POP message to dead-letter is no longer stored; dropped");
            release.drop_claim(claim, target.topic.clone());
            origins.push(None);
            continue;
        };
        let dlq = dlq_topic(group);
        let (_, create_topic) = resolve_topic(ctx, &dlq)?;
        let message = to_dead_letter(original, &dlq, attempt.saturating_sub(1));
        let pending =
            pending_message(&message).map_err(|err| RequestError::Internal(err.to_string()))?;
        release.deliver(
            claim,
            (dlq, 0),
            create_topic,
            &pending.bytes,
            pending.tags_code,
        );
        origins.push(Some((target.topic.clone(), group.clone())));
    }
    if release.is_empty() {
        return Ok(0);
    }
    let (command, blob) = release.build(now_ms());
    let applied = ctx.proposer.propose_with_messages(command, blob).await?;
    let Applied::Sent(outcomes) = applied else {
        return Err(RequestError::Internal(format!(
            "a dead-letter release was answered with {applied:?}"
        )));
    };
    let mut moved = 0;
    for (outcome, origin) in outcomes.iter().zip(&origins) {
        if let (SendOutcome::Stored { .. }, Some((topic, group))) = (outcome, origin) {
            ctx.metrics.sent_to_dlq(topic, group);
            moved += 1;
        }
    }
    Ok(moved)
}

/// The DLQ copy of a message, as CONSUMER_SEND_MSG_BACK makes one: where it came from kept in
/// its properties, its offsets left for apply to assign.
fn to_dead_letter(mut message: StoredMessage, dlq: &str, reconsume_times: u32) -> StoredMessage {
    let origin_id = message.offset_msg_id();
    let properties = &mut message.properties;
    properties
        .entry(property::RETRY_TOPIC.to_string())
        .or_insert_with(|| message.topic.clone());
    properties
        .entry(property::ORIGIN_MESSAGE_ID.to_string())
        .or_insert(origin_id);
    properties.insert(
        property::DLQ_ORIGIN_TOPIC.to_string(),
        message.topic.clone(),
    );
    properties.remove(property::DELAY);
    properties.remove(property::REAL_TOPIC);
    properties.remove(property::REAL_QID);
    message.topic = dlq.to_string();
    message.queue_id = 0;
    message.queue_offset = 0;
    message.physical_offset = 0;
    message.store_timestamp = 0;
    message.reconsume_times = reconsume_times as i32;
    message
}
