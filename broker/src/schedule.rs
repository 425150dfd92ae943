//! Delayed delivery: RocketMQ's delay levels, for messages a producer sends with a `DELAY`
//! property and for the retries a consumer hands back (CONSUMER_SEND_MSG_BACK).
//!
//! It works as RocketMQ's `ScheduleMessageService` does, on top of the ordinary data path:
//!
//! 1. [`divert`]: a send whose message carries a delay level > 0 is stored, through Raft like any
//!    send, in queue `level - 1` of [`SCHEDULE_TOPIC`], with its real topic and queue in the
//!    `REAL_TOPIC` and `REAL_QID` properties. One queue per level, and every message of a level
//!    waits the same time, so each queue is due in order: only its head needs watching.
//! 2. [`run`]: on the leader only, a task reads each level's queue from its progress offset
//!    (a consumer offset of the internal group [`SCHEDULE_PROGRESS_GROUP`], replicated like
//!    any other), and once a message's store time plus its level's delay has passed, sends it
//!    to its real topic and queue (without the `DELAY` property) and then commits the progress.
//!
//! Both steps go through Raft, so a delayed message is as durable as any other, and a new
//! leader carries on from the committed progress. Delivery is at least once: a leader that
//! fails after delivering but before committing the progress has the next leader deliver those
//! messages again (with the same `UNIQ_KEY`), as RocketMQ's broker does after a crash.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use raftmq_protocol::message::{StoredMessage, property};
use raftmq_protocol::names::now_ms;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::batcher::{MAX_BATCH_BYTES, SendRequest};
use crate::command::{Command, OffsetCommit, QueueOffset};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::filter::MessageFilter;
use crate::leader_task::{LeaderTask, Round, run_while_leading};
use crate::message_reader::QueueReadRequest;
use crate::processor::send_message::{pending_message, resolve_topic, store};
use crate::topic::TopicConfig;

/// Where delayed messages wait: queue `level - 1` holds the messages of delay level `level`.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// The internal consumer group whose committed offsets on [`SCHEDULE_TOPIC`] say how far each
/// level has been delivered.
pub const SCHEDULE_PROGRESS_GROUP: &str = "SCHEDULE_CONSUMER";
/// RocketMQ's default `messageDelayLevel`: level 1 is 1 s, level 18 is 2 h.
pub const DEFAULT_MESSAGE_DELAY_LEVEL: &str =
    "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";
/// The most delay levels a configuration may have (RocketMQ has 18 by default).
pub const MAX_DELAY_LEVELS: usize = 64;
/// The longest delay a level may have.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the leader looks for due messages (RocketMQ: 100 ms).
pub const SCHEDULE_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Messages one level delivers per round (and at most about one entry's worth of bytes,
/// `MAX_BATCH_BYTES`): bounds each round's memory, and it takes one progress commit.
pub const DELIVERIES_PER_ROUND: usize = 256;
/// How long a level waits after a failed delivery before trying again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The retry level RocketMQ gives a message a consumer hands back without choosing one: the
/// first retry waits level 3 (10 s by default), each later one a level more.
pub const FIRST_RETRY_DELAY_LEVEL: i32 = 3;

/// The delay of each level, level 1 first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayLevels(Vec<Duration>);

/// A `messageDelayLevel` setting that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--message-delay-level: {0}")]
pub struct DelayLevelError(String);

impl DelayLevels {
    /// Parses RocketMQ's `messageDelayLevel` format: delays separated by spaces, each a number
    /// with a unit `ms`, `s`, `m`, `h` or `d` (`"1s 5s 10s 30s 1m ..."`).
    pub fn parse(text: &str) -> Result<Self, DelayLevelError> {
        let mut levels = Vec::new();
        for item in text.split_whitespace() {
            let split = item
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(|| DelayLevelError(format!("{item:?} has no unit (ms, s, m, h, d)")))?;
            let (number, unit) = item.split_at(split);
            let number: u64 = number
                .parse()
                .map_err(|_| DelayLevelError(format!("{item:?} does not start with a number")))?;
            let unit_ms: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => {
                    return Err(DelayLevelError(format!(
                        "{item:?}: unknown unit {unit:?} (ms, s, m, h, d)"
                    )));
                }
            };
            let delay = number
                .checked_mul(unit_ms)
                .map(Duration::from_millis)
                .filter(|delay| *delay <= MAX_DELAY)
                .ok_or_else(|| DelayLevelError(format!("{item:?} is longer than 7 days")))?;
            if delay.is_zero() {
                return Err(DelayLevelError(format!("{item:?} is no delay")));
            }
            levels.push(delay);
        }
        if levels.is_empty() {
            return Err(DelayLevelError("no delay levels given".into()));
        }
        if levels.len() > MAX_DELAY_LEVELS {
            return Err(DelayLevelError(format!(
                "{} levels, at most {MAX_DELAY_LEVELS}",
                levels.len()
            )));
        }
        Ok(Self(levels))
    }

    /// How many levels there are (the schedule topic's queue count).
    pub fn count(&self) -> u32 {
        self.0.len() as u32
    }

    /// The delay of `level` (1-based), if there is such a level.
    pub fn delay(&self, level: u32) -> Option<Duration> {
        level
            .checked_sub(1)
            .and_then(|index| self.0.get(index as usize).copied())
    }

    /// `level` brought into range, as RocketMQ does: anything above the last level is the last.
    pub fn clamp(&self, level: u32) -> u32 {
        level.min(self.count())
    }
}

impl Default for DelayLevels {
    fn default() -> Self {
        Self::parse(DEFAULT_MESSAGE_DELAY_LEVEL).expect("the default delay levels parse")
    }
}

/// The delay level a message asks for in its `DELAY` property: 0 (none) when absent, not a
/// number, or not positive.
pub fn requested_level(properties: &BTreeMap<String, String>) -> u32 {
    properties
        .get(property::DELAY)
        .and_then(|level| level.trim().parse::<i64>().ok())
        .filter(|level| *level > 0)
        .map_or(0, |level| u32::try_from(level).unwrap_or(u32::MAX))
}

/// Where a send goes once its delay level is considered: its own topic and queue, or the
/// level's schedule queue with the real destination recorded in its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub topic: String,
    pub queue_id: u32,
}

/// Redirects a message with a delay level to its schedule queue, rewriting its properties
/// (`DELAY` clamped to a configured level, `REAL_TOPIC`, `REAL_QID`). Returns the destination
/// unchanged when the message is not delayed.
pub fn divert(
    levels: &DelayLevels,
    topic: &str,
    queue_id: u32,
    properties: &mut BTreeMap<String, String>,
) -> Destination {
    let level = levels.clamp(requested_level(properties));
    if level == 0 {
        return Destination {
            topic: topic.to_string(),
            queue_id,
        };
    }
    properties.insert(property::DELAY.into(), level.to_string());
    properties.insert(property::REAL_TOPIC.into(), topic.to_string());
    properties.insert(property::REAL_QID.into(), queue_id.to_string());
    Destination {
        topic: SCHEDULE_TOPIC.to_string(),
        queue_id: level - 1,
    }
}

/// The schedule topic's config: one queue per delay level. Only the broker writes to it.
pub fn schedule_topic_config(levels: &DelayLevels) -> TopicConfig {
    TopicConfig::new(SCHEDULE_TOPIC, levels.count())
}

/// Where a message waiting in a broker topic (delayed, timer, half) really goes: its
/// `REAL_TOPIC` and `REAL_QID` properties.
pub fn real_destination(message: &StoredMessage) -> Result<Destination, String> {
    let topic = message
        .properties
        .get(property::REAL_TOPIC)
        .cloned()
        .ok_or_else(|| format!("a message in {} has no REAL_TOPIC property", message.topic))?;
    let queue_id: u32 = message
        .properties
        .get(property::REAL_QID)
        .and_then(|qid| qid.parse().ok())
        .ok_or_else(|| {
            format!(
                "a message in {} has no usable REAL_QID property",
                message.topic
            )
        })?;
    Ok(Destination { topic, queue_id })
}

/// A delayed message made ready for its real topic: `DELAY` dropped, topic and queue restored,
/// everything else (body, keys, born time and host, reconsume count, `UNIQ_KEY`) kept.
pub fn delivered(mut message: StoredMessage) -> Result<(Destination, StoredMessage), String> {
    let Destination { topic, queue_id } = real_destination(&message)?;
    message.properties.remove(property::DELAY);
    message.topic = topic.clone();
    message.queue_id = queue_id as i32;
    message.queue_offset = 0;
    message.physical_offset = 0;
    message.store_timestamp = 0;
    Ok((Destination { topic, queue_id }, message))
}

/// Runs until `shutdown`: while this member leads, delivers due messages of every level.
pub async fn run(ctx: Arc<BrokerContext>, shutdown: CancellationToken) {
    let task = DelayedDelivery {
        levels: ctx.config.delay_levels.clone(),
        paused_until: BTreeMap::new(),
        shutdown: shutdown.clone(),
    };
    run_while_leading(ctx, shutdown, task).await
}

/// The leader's delivery of due delayed messages, level by level.
struct DelayedDelivery {
    levels: DelayLevels,
    /// Per level: when to look again after a failure (a failing level does not spin).
    paused_until: BTreeMap<u32, Instant>,
    /// A round stops between levels when the member shuts down.
    shutdown: CancellationToken,
}

impl LeaderTask for DelayedDelivery {
    const NAME: &'static str = "delayed delivery";
    const INTERVAL: Duration = SCHEDULE_POLL_INTERVAL;

    /// A level that delivered a full round may have more due at once: the round says so.
    async fn round(&mut self, ctx: &BrokerContext) -> Round {
        let mut backlog = false;
        for level in 1..=self.levels.count() {
            if self
                .paused_until
                .get(&level)
                .is_some_and(|until| Instant::now() < *until)
            {
                continue;
            }
            let Some(delay) = self.levels.delay(level) else {
                continue;
            };
            match deliver_due(ctx, level, delay).await {
                Ok(0) => {}
                Ok(count) => {
                    debug!(level, count, "delivered delayed messages");
                    backlog |= count >= DELIVERIES_PER_ROUND;
                }
                Err(err) => {
                    warn!(level, error = %err, "delayed delivery failed; trying again shortly");
                    self.paused_until
                        .insert(level, Instant::now() + RETRY_AFTER_FAILURE);
                }
            }
            if self.shutdown.is_cancelled() || !ctx.leadership.may_write() {
                break;
            }
        }
        if backlog { Round::Backlog } else { Round::Done }
    }
}

/// Delivers the due head of one level's queue (up to [`DELIVERIES_PER_ROUND`] messages), then
/// commits the level's progress past them. Returns how many were delivered.
async fn deliver_due(
    ctx: &BrokerContext,
    level: u32,
    delay: Duration,
) -> Result<usize, RequestError> {
    let queue_id = level - 1;
    let queue = ctx.state.queue(SCHEDULE_TOPIC, queue_id);
    let progress = ctx
        .state
        .consumer_offset(SCHEDULE_PROGRESS_GROUP, SCHEDULE_TOPIC, queue_id)
        .unwrap_or(queue.min_offset)
        .max(queue.min_offset);
    if progress >= queue.next_offset {
        return Ok(0);
    }
    let read = ctx
        .reader
        .read_queue(
            &ctx.state,
            &QueueReadRequest {
                topic: SCHEDULE_TOPIC,
                queue_id,
                offset: progress,
                max_messages: DELIVERIES_PER_ROUND,
                max_bytes: MAX_BATCH_BYTES,
                filter: &MessageFilter::all(),
            },
        )
        .await?;
    let now = now_ms();
    let delay_ms = delay.as_millis() as i64;
    // Consecutive due messages for the same real queue travel in one send, in order.
    let mut sends: Vec<SendRequest> = Vec::new();
    let mut next_progress = progress;
    for bytes in &read.messages {
        let (message, _) = StoredMessage::decode(bytes).map_err(|err| {
            RequestError::Internal(format!("a scheduled message does not decode: {err}"))
        })?;
        if message.store_timestamp.saturating_add(delay_ms) > now {
            break;
        }
        let queue_offset = message.queue_offset as u64;
        next_progress = queue_offset + 1;
        let (destination, message) = match delivered(message) {
            Ok(delivered) => delivered,
            Err(reason) => {
                // Only the broker writes this topic, so this is damage; a message no one can
                // route must not block every later one of its level.
                warn!(
                    level,
                    queue_offset, reason, "a delayed message has no destination; dropped"
                );
                continue;
            }
        };
        let pending =
            pending_message(&message).map_err(|err| RequestError::Internal(err.to_string()))?;
        match sends.last_mut() {
            Some(send)
                if send.topic == destination.topic && send.queue_id == destination.queue_id =>
            {
                send.messages.push(pending)
            }
            _ => {
                // A real topic that no longer exists or takes writes would block its level for
                // ever: the message is dropped, with a warning, as RocketMQ's schedule service
                // drops a message it cannot put.
                let create_topic = match resolve_topic(ctx, &destination.topic) {
                    Ok((_, create_topic)) => create_topic,
                    Err(err) => {
                        warn!(level, queue_offset, %err, "a delayed message cannot be delivered; dropped");
                        continue;
                    }
                };
                sends.push(SendRequest {
                    topic: destination.topic,
                    queue_id: destination.queue_id,
                    create_topic,
                    messages: vec![pending],
                });
            }
        }
    }
    if next_progress == progress {
        return Ok(0);
    }
    let count = sends.iter().map(|send| send.messages.len()).sum();
    let started = Instant::now();
    for result in join_all(sends.into_iter().map(|send| store(ctx, send, started))).await {
        match result {
            Ok(_) => {}
            // Refused by the state it met (the topic went away, a queue was removed): dropped,
            // for the same reason as above.
            Err(RequestError::Refused(refusal)) => {
                warn!(level, %refusal, "a delayed message could not be delivered; dropped")
            }
            Err(err) => return Err(err),
        }
    }
    ctx.proposer
        .propose(Command::CommitOffsets(OffsetCommit {
            group: SCHEDULE_PROGRESS_GROUP.to_string(),
            offsets: vec![QueueOffset {
                topic: SCHEDULE_TOPIC.to_string(),
                queue_id,
                offset: next_progress,
            }],
            reset: false,
        }))
        .await?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn rocketmq_default_levels_parse() {
        let levels = DelayLevels::default();
        assert_eq!(levels.count(), 18);
        assert_eq!(levels.delay(1), Some(Duration::from_secs(1)));
        assert_eq!(levels.delay(3), Some(Duration::from_secs(10)));
        assert_eq!(levels.delay(18), Some(Duration::from_secs(7200)));
        assert_eq!(levels.delay(0), None);
        assert_eq!(levels.delay(19), None);
        assert_eq!(levels.clamp(40), 18);
    }

    #[test]
    fn bad_level_lists_get_a_clear_error() {
        for (text, expected) in [
            ("", "no delay levels"),
            ("5", "no unit"),
            ("1s 5x", "unknown unit"),
            ("0s", "no delay"),
            ("8d", "longer than 7 days"),
            ("99999999999999999999s", "does not start with a number"),
            ("s", "does not start with a number"),
        ] {
            let err = DelayLevels::parse(text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{text:?}: {err:?} lacks {expected:?}"
            );
        }
        let too_many = vec!["1s"; MAX_DELAY_LEVELS + 1].join(" ");
        assert!(DelayLevels::parse(&too_many).is_err());
        assert_eq!(
            DelayLevels::parse("250ms 2m 1h").unwrap().delay(1),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn a_delayed_message_is_diverted_to_its_level_queue_and_restored_on_delivery() {
        let levels = DelayLevels::parse("1s 2s 3s").unwrap();
        let mut properties = BTreeMap::from([
            (property::DELAY.to_string(), "9".to_string()),
            (property::UNIQ_KEY.to_string(), "U1".to_string()),
        ]);
        let destination = divert(&levels, "Orders", 5, &mut properties);
        // Level 9 does not exist: the last level (3) is used, queue 2.
        assert_eq!(
            destination,
            Destination {
                topic: SCHEDULE_TOPIC.into(),
                queue_id: 2
            }
        );
        assert_eq!(properties[property::DELAY], "3");
        assert_eq!(properties[property::REAL_TOPIC], "Orders");
        assert_eq!(properties[property::REAL_QID], "5");

        let scheduled = StoredMessage {
            queue_id: 2,
            queue_offset: 17,
            physical_offset: 99,
            store_timestamp: 6,
            reconsume_times: 2,
            body: bytes::Bytes::from_static(b"body"),
            ..scheduled_message(properties)
        };
        let (destination, message) = delivered(scheduled).unwrap();
        assert_eq!(
            destination,
            Destination {
                topic: "Orders".into(),
                queue_id: 5
            }
        );
        assert_eq!(message.topic, "Orders");
        assert_eq!(message.queue_id, 5);
        assert_eq!((message.queue_offset, message.store_timestamp), (0, 0));
        assert!(!message.properties.contains_key(property::DELAY));
        assert_eq!(message.properties[property::UNIQ_KEY], "U1");
        assert_eq!(message.reconsume_times, 2);
        assert_eq!(&message.body[..], b"body");
    }

    #[test]
    fn messages_without_a_usable_delay_go_where_they_were_sent() {
        let levels = DelayLevels::default();
        for delay in [None, Some("0"), Some("-3"), Some("soon")] {
            let mut properties = BTreeMap::new();
            if let Some(delay) = delay {
                properties.insert(property::DELAY.to_string(), delay.to_string());
            }
            let before = properties.clone();
            let destination = divert(&levels, "T", 1, &mut properties);
            assert_eq!(
                destination,
                Destination {
                    topic: "T".into(),
                    queue_id: 1
                }
            );
            assert_eq!(properties, before, "DELAY={delay:?}");
        }
    }

    #[test]
    fn a_scheduled_message_without_its_real_topic_is_an_error() {
        let message = scheduled_message(BTreeMap::new());
        assert!(delivered(message).unwrap_err().contains("REAL_TOPIC"));
    }

    /// A message as it sits in the schedule topic, everything but its properties zero.
    fn scheduled_message(properties: BTreeMap<String, String>) -> StoredMessage {
        let host: SocketAddr = "127.0.0.1:1".parse().unwrap();
        StoredMessage {
            queue_id: 0,
            flag: 0,
            queue_offset: 0,
            physical_offset: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: host,
            store_timestamp: 0,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: bytes::Bytes::new(),
            topic: SCHEDULE_TOPIC.into(),
            properties,
        }
    }
}
