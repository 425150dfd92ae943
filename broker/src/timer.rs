//! Timer messages (RocketMQ 5): a message with `TIMER_DELIVER_MS` (a time), `TIMER_DELAY_SEC` or
//! `TIMER_DELAY_MS` (a delay from now) is delivered at that time, any time up to
//! `timer-max-delay` ahead (3 days by default; further is refused with a clear error).
//!
//! 1. [`divert`]: the send is stored, through Raft like any send, in queue 0 of [`TIMER_TOPIC`]
//!    with its due time in `TIMER_OUT_MS` and its real topic and queue in `REAL_TOPIC` and
//!    `REAL_QID`. Applying it adds `(due ms, physical offset)` to the state machine's timer index,
//!    a redb table: pending timers are rows on disk, not memory.
//! 2. [`run`]: on the leader only, a task reads the due head of the index every
//!    [`TIMER_POLL_INTERVAL`] and proposes a `Command::Release` that claims each due timer and
//!    stores its message in the real queue. Apply stores a message only while its timer is still
//!    pending and removes the timer with it, so each timer is delivered exactly once, across
//!    leader changes: a new leader picks up the index where the old one left it.
//!
//! A message with a delay level (`DELAY`) keeps RocketMQ 4's path ([`crate::schedule`]) and
//! ignores its timer properties, as RocketMQ 5's broker does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftmq_protocol::message::{StoredMessage, property};
use raftmq_protocol::names::{TIMER_TOPIC, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::batcher::MAX_BATCH_BYTES;
use crate::command::{Applied, Claim, ReleaseBuilder, SendOutcome};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::leader_task::{LeaderTask, Round, run_while_leading};
use crate::message_reader::ReadError;
use crate::processor::send_message::{pending_message, resolve_topic};
use crate::schedule::{Destination, real_destination};
use crate::topic::TopicConfig;

/// How often the leader looks for due timers: a timer is delivered within about this long of
/// its due time (RocketMQ's timer wheel has a 1 s precision by default).
pub const TIMER_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Timers released per round (one Raft entry).
pub const RELEASES_PER_ROUND: usize = 1024;
/// How long the task waits after a failed round before trying again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The due time a message asks for, from `TIMER_DELIVER_MS` (absolute), `TIMER_DELAY_SEC` or
/// `TIMER_DELAY_MS` (from `now_ms`): `Ok(None)` for a message without one.
pub fn requested_due_ms(
    properties: &BTreeMap<String, String>,
    now_ms: i64,
) -> Result<Option<i64>, String> {
    let number = |name: &str| -> Result<Option<i64>, String> {
        properties
            .get(name)
            .map(|value| {
                value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{name}={value:?} is not a number"))
            })
            .transpose()
    };
    if let Some(seconds) = number(property::TIMER_DELAY_SEC)? {
        return Ok(Some(now_ms.saturating_add(seconds.saturating_mul(1000))));
    }
    if let Some(millis) = number(property::TIMER_DELAY_MS)? {
        return Ok(Some(now_ms.saturating_add(millis)));
    }
    number(property::TIMER_DELIVER_MS)
}

/// Redirects a timer message to [`TIMER_TOPIC`] when it is due later than `now_ms`, rewriting
/// its properties (`TIMER_OUT_MS`, `REAL_TOPIC`, `REAL_QID`). A timer already due goes where it
/// was sent, and so does a message that waited as a timer before (it has `TIMER_OUT_MS`: a
/// delivered timer a consumer sends back). Refuses a due time further than `max_delay` ahead,
/// or one that is not a number.
pub fn divert(
    real: Destination,
    properties: &mut BTreeMap<String, String>,
    now_ms: i64,
    max_delay: Duration,
) -> Result<Destination, RequestError> {
    if properties.contains_key(property::TIMER_OUT_MS) {
        return Ok(real);
    }
    let Some(due_ms) = requested_due_ms(properties, now_ms)
        .map_err(|reason| RequestError::MessageIllegal(format!("timer message: {reason}")))?
    else {
        return Ok(real);
    };
    if due_ms <= now_ms {
        return Ok(real);
    }
    let max_delay_ms = max_delay.as_millis() as i64;
    if due_ms - now_ms > max_delay_ms {
        return Err(RequestError::MessageIllegal(format!(
            "timer message due in {} ms, more than the max delay of {max_delay_ms} ms (timer-max-delay-sec)",
            due_ms - now_ms
        )));
    }
    properties.insert(property::TIMER_OUT_MS.into(), due_ms.to_string());
    properties.insert(property::REAL_TOPIC.into(), real.topic);
    properties.insert(property::REAL_QID.into(), real.queue_id.to_string());
    Ok(Destination {
        topic: TIMER_TOPIC.to_string(),
        queue_id: 0,
    })
}

/// The timer topic's config (one queue; only the broker writes to it).
pub fn timer_topic_config() -> TopicConfig {
    TopicConfig::new(TIMER_TOPIC, 1)
}

/// A timer message made ready for its real topic: topic and queue restored, `REAL_TOPIC` and
/// `REAL_QID` dropped, `TIMER_DEQUEUE_MS` set, everything else kept (as RocketMQ's
/// `TimerMessageStore` converts it).
pub fn delivered(
    mut message: StoredMessage,
    dequeue_ms: i64,
) -> Result<(Destination, StoredMessage), String> {
    let destination = real_destination(&message)?;
    message.properties.remove(property::REAL_TOPIC);
    message.properties.remove(property::REAL_QID);
    message
        .properties
        .insert(property::TIMER_DEQUEUE_MS.into(), dequeue_ms.to_string());
    message.topic = destination.topic.clone();
    message.queue_id = destination.queue_id as i32;
    message.queue_offset = 0;
    message.physical_offset = 0;
    message.store_timestamp = 0;
    Ok((destination, message))
}

/// Runs until `shutdown`: while this member leads, delivers due timers.
pub async fn run(ctx: Arc<BrokerContext>, shutdown: CancellationToken) {
    run_while_leading(ctx, shutdown, TimerDelivery::default()).await
}

/// The leader's delivery of due timers.
#[derive(Default)]
struct TimerDelivery {
    /// After a failure, no round until then (a failing store does not spin).
    paused_until: Option<Instant>,
}

impl LeaderTask for TimerDelivery {
    const NAME: &'static str = "timer delivery";
    const INTERVAL: Duration = TIMER_POLL_INTERVAL;

    async fn round(&mut self, ctx: &BrokerContext) -> Round {
        if self
            .paused_until
            .is_some_and(|until| Instant::now() < until)
        {
            return Round::Done;
        }
        match deliver_due(ctx).await {
            Ok(count) if count >= RELEASES_PER_ROUND => {
                debug!(count, "delivered timer messages");
                Round::Backlog
            }
            Ok(count) => {
                if count > 0 {
                    debug!(count, "delivered timer messages");
                }
                Round::Done
            }
            Err(err) => {
                warn!(error = %err, "timer delivery failed; trying again shortly");
                self.paused_until = Some(Instant::now() + RETRY_AFTER_FAILURE);
                Round::Done
            }
        }
    }
}

/// Releases the due head of the timer index (up to [`RELEASES_PER_ROUND`] timers, about one
/// entry of bytes) in one entry. Returns how many timers were looked at.
async fn deliver_due(ctx: &BrokerContext) -> Result<usize, RequestError> {
    let now = now_ms();
    let due = ctx.state.due_timers(now, RELEASES_PER_ROUND)?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut release = ReleaseBuilder::default();
    for (due_ms, physical) in due {
        if release.blob_len() >= MAX_BATCH_BYTES {
            break;
        }
        let claim = Claim::Timer { due_ms, physical };
        let found = match ctx.reader.read_physical(&ctx.state, physical).await {
            Ok(found) => found,
            Err(ReadError::MissingEntry(_)) => None,
            Err(err) => return Err(err.into()),
        };
        let delivery = found
            .ok_or_else(|| "its message is no longer in the log".to_string())
            .and_then(|found| {
                StoredMessage::decode(&found.bytes)
                    .map_err(|err| format!("its message does not decode: {err}"))
            })
            .and_then(|(message, _)| delivered(message, now));
        match delivery {
            Ok((destination, message)) => match resolve_topic(ctx, &destination.topic) {
                Ok((_, create_topic)) => {
                    let pending = pending_message(&message)
                        .map_err(|err| RequestError::Internal(err.to_string()))?;
                    release.deliver(
                        claim,
                        (destination.topic, destination.queue_id),
                        create_topic,
                        &pending.bytes,
                        pending.tags_code,
                    );
                }
                Err(err) => {
                    // A real topic that no longer takes writes would block the timers behind
                    // it for ever: dropped, as RocketMQ's timer store drops a message it cannot
                    // put.
                    warn!(due_ms, physical, %err, "a timer message cannot be delivered; dropped");
                    release.drop_claim(claim, TIMER_TOPIC.to_string());
                }
            },
            Err(reason) => {
                warn!(
                    due_ms,
                    physical, reason, "a timer message cannot be delivered; dropped"
                );
                release.drop_claim(claim, TIMER_TOPIC.to_string());
            }
        }
    }
    let count = release.len();
    let (command, blob) = release.build(now_ms());
    let applied = ctx.proposer.propose_with_messages(command, blob).await?;
    if let Applied::Sent(outcomes) = &applied {
        let delivered = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, SendOutcome::Stored { .. }))
            .count();
        ctx.metrics.timers_delivered.inc_by(delivered as u64);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn real() -> Destination {
        Destination {
            topic: "Orders".into(),
            queue_id: 2,
        }
    }

    const MAX: Duration = Duration::from_secs(3 * 24 * 3600);

    #[test]
    fn each_timer_property_sets_the_due_time() {
        let now = 1_000_000;
        for (name, value, due) in [
            (property::TIMER_DELIVER_MS, "1005000", 1_005_000),
            (property::TIMER_DELAY_SEC, "3", 1_003_000),
            (property::TIMER_DELAY_MS, "250", 1_000_250),
        ] {
            let mut properties = props(&[(name, value)]);
            let destination = divert(real(), &mut properties, now, MAX).unwrap();
            assert_eq!(destination.topic, TIMER_TOPIC, "{name}");
            assert_eq!(
                properties[property::TIMER_OUT_MS],
                due.to_string(),
                "{name}"
            );
            assert_eq!(properties[property::REAL_TOPIC], "Orders");
            assert_eq!(properties[property::REAL_QID], "2");
        }
    }

    #[test]
    fn a_timer_due_now_or_absent_goes_straight_to_its_topic() {
        let now = 1_000_000;
        for pairs in [vec![], vec![(property::TIMER_DELIVER_MS, "999999")]] {
            let mut properties = props(&pairs);
            let before = properties.clone();
            assert_eq!(divert(real(), &mut properties, now, MAX).unwrap(), real());
            assert_eq!(properties, before);
        }
    }

    #[test]
    fn a_timer_beyond_the_max_delay_or_not_a_number_is_refused() {
        let now = 1_000_000;
        let mut too_far = props(&[(property::TIMER_DELAY_SEC, "259201")]);
        let err = divert(real(), &mut too_far, now, MAX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max delay"), "{err}");
        let mut garbage = props(&[(property::TIMER_DELIVER_MS, "tomorrow")]);
        let err = divert(real(), &mut garbage, now, MAX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a number"), "{err}");
    }

    #[test]
    fn a_delivered_timer_loses_its_waiting_marks_and_keeps_the_rest() {
        let host = "127.0.0.1:1".parse().unwrap();
        let waiting = StoredMessage {
            queue_id: 0,
            flag: 0,
            queue_offset: 9,
            physical_offset: 10,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: host,
            store_timestamp: 2,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: bytes::Bytes::from_static(b"ring"),
            topic: TIMER_TOPIC.into(),
            properties: props(&[
                (property::REAL_TOPIC, "Orders"),
                (property::REAL_QID, "2"),
                (property::TIMER_OUT_MS, "5000"),
                (property::UNIQ_KEY, "U1"),
            ]),
        };
        let (destination, message) = delivered(waiting, 5_004).unwrap();
        assert_eq!(destination, real());
        assert_eq!((message.topic.as_str(), message.queue_id), ("Orders", 2));
        assert!(!message.properties.contains_key(property::REAL_TOPIC));
        assert_eq!(message.properties[property::TIMER_OUT_MS], "5000");
        assert_eq!(message.properties[property::TIMER_DEQUEUE_MS], "5004");
        assert_eq!(message.properties[property::UNIQ_KEY], "U1");
    }
}
