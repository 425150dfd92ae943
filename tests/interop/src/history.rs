//! What a scenario sent and what its consumer received, and the checks over them.
//!
//! A send has one of two outcomes: acknowledged (the broker answered SEND_OK with a queue and
//! an offset) or unknown (the client gave up: a timeout, or an error after retries, any of
//! which may have been stored by an earlier attempt). Acknowledged messages must all arrive;
//! unknown ones may or may not; nothing may arrive that was never sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

/// Violations quoted in one failure message; the rest are counted.
pub const MAX_QUOTED_VIOLATIONS: usize = 20;

/// Where the broker said it stored a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The client's message id (the message's `UNIQ_KEY` property).
    pub msg_id: String,
    pub queue_id: i32,
    pub queue_offset: u64,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Acked(Ack),
    /// No acknowledgement: the message may or may not be stored.
    Unknown {
        timed_out: bool,
        error: String,
    },
}

/// One message the producer tried to send, in send order (`seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub seq: u64,
    pub body: String,
    pub outcome: SendOutcome,
}

impl Sent {
    pub fn ack(&self) -> Option<&Ack> {
        match &self.outcome {
            SendOutcome::Acked(ack) => Some(ack),
            SendOutcome::Unknown { .. } => None,
        }
    }
}

/// One message as the consumer's callback saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub body: String,
    /// The `UNIQ_KEY` property, which the client reports as the message id of a send.
    pub uniq_key: Option<String>,
    pub topic: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub reconsume_times: i32,
}

impl Delivery {
    /// A first delivery comes from the topic's own queue; a redelivery comes from the
    /// group's retry queue, at a position of its own.
    pub fn is_first_delivery(&self) -> bool {
        self.reconsume_times == 0
    }
}

/// Deliveries recorded by a consumer callback (which runs on the client's blocking threads)
/// and awaited by the test.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

#[derive(Debug, Default)]
struct RecorderInner {
    deliveries: Mutex<Vec<Delivery>>,
    changed: Notify,
}

impl Recorder {
    pub fn record(&self, delivery: Delivery) {
        self.lock().push(delivery);
        self.inner.changed.notify_waiters();
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Delivery>> {
        self.inner
            .deliveries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Waits until `done` holds for the deliveries so far, or `timeout` passes; returns
    /// whether it held.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[Delivery]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so a delivery between the check and the
            // wait still wakes us.
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(&self.lock());
            }
        }
    }
}

/// Whether every acknowledged message of `sent` has been delivered at least once.
pub fn all_acked_delivered(sent: &[Sent], deliveries: &[Delivery]) -> bool {
    let delivered: BTreeSet<&str> = deliveries.iter().map(|d| d.body.as_str()).collect();
    sent.iter()
        .filter(|s| s.ack().is_some())
        .all(|s| delivered.contains(s.body.as_str()))
}

/// Counts that a passing check reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub sent: usize,
    pub acked: usize,
    pub unknown: usize,
    pub delivered_distinct: usize,
    pub redelivered: usize,
    pub queues: usize,
}

/// Judges one stream of sends to `topic` against what its consumer received:
/// - every acknowledged message is delivered, under its client message id;
/// - every delivery is a message that was sent, to `topic`;
/// - a first delivery comes from the queue and offset its acknowledgement named, and no
///   position holds two different messages;
/// - in each queue, offsets follow send order.
///
/// Returns the violations found (empty when the stream is correct).
pub fn check_stream(
    topic: &str,
    sent: &[Sent],
    deliveries: &[Delivery],
) -> Result<StreamSummary, Vec<String>> {
    let mut violations = Vec::new();
    let by_body: BTreeMap<&str, &Sent> = sent.iter().map(|s| (s.body.as_str(), s)).collect();
    if by_body.len() != sent.len() {
        violations.push("the scenario sent two messages with one body".to_owned());
    }

    // Which message each queue position holds: (queue, offset) -> seq.
    let mut positions: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    for s in sent {
        if let Some(ack) = s.ack() {
            match i64::try_from(ack.queue_offset) {
                Ok(offset) => place(
                    &mut positions,
                    &mut violations,
                    (ack.queue_id, offset),
                    s.seq,
                    "acknowledgements",
                ),
                Err(_) => violations.push(format!(
                    "message #{} acknowledged at an impossible offset {}",
                    s.seq, ack.queue_offset
                )),
            }
        }
    }

    let mut delivered: BTreeSet<&str> = BTreeSet::new();
    let mut redelivered = 0;
    for d in deliveries {
        let Some(s) = by_body.get(d.body.as_str()) else {
            violations.push(format!(
                "delivered a message nobody sent: {:?} from {} queue {} offset {}",
                d.body, d.topic, d.queue_id, d.queue_offset
            ));
            continue;
        };
        if !delivered.insert(d.body.as_str()) {
            redelivered += 1;
        }
        if d.topic != topic {
            violations.push(format!(
                "message #{} delivered as topic {:?}, sent to {topic:?}",
                s.seq, d.topic
            ));
        }
        if let Some(ack) = s.ack() {
            if d.uniq_key.as_deref() != Some(ack.msg_id.as_str()) {
                violations.push(format!(
                    "message #{} delivered with message id {:?}, acknowledged as {:?}",
                    s.seq, d.uniq_key, ack.msg_id
                ));
            }
            if d.is_first_delivery()
                && (d.queue_id != ack.queue_id
                    || i64::try_from(ack.queue_offset).ok() != Some(d.queue_offset))
            {
                violations.push(format!(
                    "message #{} acknowledged at queue {} offset {}, delivered from queue {} offset {}",
                    s.seq, ack.queue_id, ack.queue_offset, d.queue_id, d.queue_offset
                ));
            }
        }
        if d.is_first_delivery() {
            place(
                &mut positions,
                &mut violations,
                (d.queue_id, d.queue_offset),
                s.seq,
                "deliveries",
            );
        }
    }

    let missing: Vec<u64> = sent
        .iter()
        .filter(|s| s.ack().is_some() && !delivered.contains(s.body.as_str()))
        .map(|s| s.seq)
        .collect();
    if !missing.is_empty() {
        violations.push(format!(
            "{} acknowledged messages were never delivered: #{missing:?}",
            missing.len()
        ));
    }

    // Per-queue order: walking a queue by offset, send order only goes up.
    let mut last_in_queue: BTreeMap<i32, (i64, u64)> = BTreeMap::new();
    for (&(queue, offset), &seq) in &positions {
        if let Some(&(previous_offset, previous_seq)) = last_in_queue.get(&queue)
            && previous_seq >= seq
        {
            violations.push(format!(
                "queue {queue}: offset {previous_offset} holds message #{previous_seq} but the later offset {offset} holds the earlier message #{seq}"
            ));
        }
        last_in_queue.insert(queue, (offset, seq));
    }

    if !violations.is_empty() {
        return Err(violations);
    }
    let acked = sent.iter().filter(|s| s.ack().is_some()).count();
    Ok(StreamSummary {
        sent: sent.len(),
        acked,
        unknown: sent.len() - acked,
        delivered_distinct: delivered.len(),
        redelivered,
        queues: last_in_queue.len(),
    })
}

/// Records that queue position `at` holds message `seq`; a different message already there
/// is a violation.
fn place(
    positions: &mut BTreeMap<(i32, i64), u64>,
    violations: &mut Vec<String>,
    at: (i32, i64),
    seq: u64,
    source: &str,
) {
    let previous = *positions.entry(at).or_insert(seq);
    if previous != seq {
        let (queue, offset) = at;
        violations.push(format!(
            "queue {queue} offset {offset} holds message #{previous} and message #{seq} ({source})"
        ));
    }
}

/// The violations as one readable message, at most [`MAX_QUOTED_VIOLATIONS`] quoted.
pub fn describe_violations(violations: &[String]) -> String {
    let mut text: Vec<String> = violations
        .iter()
        .take(MAX_QUOTED_VIOLATIONS)
        .map(|v| format!("  - {v}"))
        .collect();
    if violations.len() > MAX_QUOTED_VIOLATIONS {
        text.push(format!(
            "  ... and {} more",
            violations.len() - MAX_QUOTED_VIOLATIONS
        ));
    }
    text.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "T";

    fn acked(seq: u64, queue_id: i32, queue_offset: u64) -> Sent {
        Sent {
            seq,
            body: format!("m{seq}"),
            outcome: SendOutcome::Acked(Ack {
                msg_id: format!("id{seq}"),
                queue_id,
                queue_offset,
            }),
        }
    }

    fn unknown(seq: u64) -> Sent {
        Sent {
            seq,
            body: format!("m{seq}"),
            outcome: SendOutcome::Unknown {
                timed_out: true,
                error: "timeout".into(),
            },
        }
    }

    fn delivery(seq: u64, queue_id: i32, queue_offset: i64) -> Delivery {
        Delivery {
            body: format!("m{seq}"),
            uniq_key: Some(format!("id{seq}")),
            topic: TOPIC.into(),
            queue_id,
            queue_offset,
            reconsume_times: 0,
        }
    }

    fn violations(sent: &[Sent], deliveries: &[Delivery]) -> Vec<String> {
        check_stream(TOPIC, sent, deliveries)
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn a_complete_ordered_stream_passes() {
        let sent = [acked(0, 0, 0), acked(1, 1, 0), unknown(2), acked(3, 0, 2)];
        // The unknown send was stored (queue 0 offset 1); delivery order does not matter.
        let mut d2 = delivery(2, 0, 1);
        d2.uniq_key = Some("id2".into());
        let deliveries = [delivery(3, 0, 2), delivery(1, 1, 0), d2, delivery(0, 0, 0)];
        let summary = check_stream(TOPIC, &sent, &deliveries).expect("passes");
        assert_eq!(summary.acked, 3);
        assert_eq!(summary.unknown, 1);
        assert_eq!(summary.delivered_distinct, 4);
        assert_eq!(summary.queues, 2);
        assert!(all_acked_delivered(&sent, &deliveries));
    }

    #[test]
    fn a_lost_acknowledged_message_fails() {
        let sent = [acked(0, 0, 0), acked(1, 0, 1)];
        let deliveries = [delivery(0, 0, 0)];
        assert!(!all_acked_delivered(&sent, &deliveries));
        let found = violations(&sent, &deliveries);
        assert!(found[0].contains("never delivered: #[1]"), "{found:?}");
    }

    #[test]
    fn a_phantom_message_fails() {
        let sent = [acked(0, 0, 0)];
        let deliveries = [delivery(0, 0, 0), delivery(9, 0, 1)];
        assert!(violations(&sent, &deliveries)[0].contains("nobody sent"));
    }

    #[test]
    fn a_delivery_from_another_position_fails() {
        let sent = [acked(0, 0, 0)];
        let deliveries = [delivery(0, 1, 0)];
        assert!(violations(&sent, &deliveries)[0].contains("delivered from queue 1"));
    }

    #[test]
    fn two_messages_at_one_position_fail() {
        let sent = [acked(0, 0, 0), unknown(1)];
        let deliveries = [delivery(0, 0, 0), delivery(1, 0, 0)];
        assert!(violations(&sent, &deliveries)[0].contains("holds message #0 and message #1"));
    }

    #[test]
    fn reordering_within_a_queue_fails() {
        let sent = [acked(0, 0, 1), acked(1, 0, 0)];
        let deliveries = [delivery(0, 0, 1), delivery(1, 0, 0)];
        let found = violations(&sent, &deliveries);
        assert!(found[0].contains("earlier message #0"), "{found:?}");
    }

    #[test]
    fn a_wrong_message_id_fails() {
        let sent = [acked(0, 0, 0)];
        let mut d = delivery(0, 0, 0);
        d.uniq_key = Some("other".into());
        assert!(violations(&sent, &[d])[0].contains("message id"));
    }

    #[test]
    fn a_redelivery_from_the_retry_queue_is_not_a_position_conflict() {
        let sent = [acked(0, 0, 0), acked(1, 0, 1)];
        let mut retry = delivery(0, 0, 1);
        retry.reconsume_times = 1;
        let deliveries = [delivery(0, 0, 0), retry, delivery(1, 0, 1)];
        let summary = check_stream(TOPIC, &sent, &deliveries).expect("passes");
        assert_eq!(summary.redelivered, 1);
    }

    #[tokio::test]
    async fn the_recorder_wakes_a_waiter_and_bounds_the_wait() {
        let recorder = Recorder::default();
        assert!(
            !recorder
                .wait_for(Duration::from_millis(10), |d| !d.is_empty())
                .await
        );
        let writer = recorder.clone();
        let task = tokio::spawn(async move { writer.record(delivery(0, 0, 0)) });
        assert!(
            recorder
                .wait_for(Duration::from_secs(5), |d| d.len() == 1)
                .await
        );
        task.await.expect("the writer task finished");
    }
}
