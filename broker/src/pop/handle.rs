//! Receipt handles: the opaque string a consumer gets with each popped message and gives back
//! to ack it, change its invisibility or dead-letter it.
//!
//! It is RocketMQ's POP `extraInfo` (what `ExtraInfoUtil` builds, fields separated by a
//! space), so a RocketMQ remoting client's own handle works here, with two fields appended:
//!
//! ```text
//! ckQueueOffset popTime invisibleTime reviveQid retry brokerName queueId queueOffset attempt topic
//!   offset      ms      ms            0|999     "0"   name       id      offset      n       name
//! ```
//!
//! Everything in it is replicated state or the request's own: the broker group's name (not a
//! member's), the queue, the offset, and the pop time the state machine recorded for that
//! delivery. So a handle stays valid across a leader change, and a handle of an earlier
//! delivery of the same message (whose pop time is older) is told apart as stale.

use std::fmt;

/// The longest handle accepted (topic and broker names are bounded well below this).
pub const MAX_HANDLE_BYTES: usize = 1024;
/// RocketMQ's `reviveQid` of an orderly pop (`KeyBuilder.POP_ORDER_REVIVE_QUEUE`).
pub const ORDERLY_REVIVE_QID: i32 = 999;
/// The `retry` field of a handle for a message of the topic itself (not a retry topic).
const NORMAL_TOPIC: &str = "0";
/// RocketMQ's own extraInfo has these fields; ours appends the attempt and the topic.
const EXTRA_INFO_FIELDS: usize = 8;
const HANDLE_FIELDS: usize = 10;

/// One delivery of one popped message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptHandle {
    /// The broker group (broker name) that holds the message.
    pub broker_name: String,
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    /// The pop time of the delivery (the leader's clock, as replicated).
    pub pop_ms: i64,
    /// The invisible time the delivery was handed out with.
    pub invisible_ms: u64,
    /// The delivery attempt, 1 for the first; 0 when the handle did not say (a RocketMQ
    /// client's own extraInfo).
    pub attempt: u32,
    /// Handed out by an orderly pop.
    pub orderly: bool,
}

/// Why a handle cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("receipt handle is malformed: {0}")]
    Malformed(String),
    #[error("receipt handle names broker {found}, this is broker {expected}")]
    WrongBroker { found: String, expected: String },
    #[error("receipt handle is for {found}, the request names {expected}")]
    Mismatch { found: String, expected: String },
    #[error("receipt handle is stale: the message was handed out again since")]
    Stale,
    #[error("the message is no longer in flight (acked or dead-lettered)")]
    NotInFlight,
    #[error("the message was never handed out to this group")]
    NeverPopped,
}

impl ReceiptHandle {
    /// The handle as a string (what a gRPC client gets as its receipt handle).
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// Parses a handle made by [`ReceiptHandle::encode`].
    pub fn parse(text: &str) -> Result<Self, HandleError> {
        let fields = split(text)?;
        if fields.len() < HANDLE_FIELDS {
            return Err(HandleError::Malformed(format!(
                "{} fields, a receipt handle has {HANDLE_FIELDS}",
                fields.len()
            )));
        }
        let mut handle = from_extra_info(&fields, fields[9])?;
        handle.attempt = number("attempt", fields[8])?;
        Ok(handle)
    }

    /// Parses the `extraInfo` of a remoting ACK_MESSAGE or CHANGE_MESSAGE_INVISIBLETIME (as
    /// a RocketMQ client builds it, or as [`ReceiptHandle::encode`] does) and checks it names
    /// the queue and offset the request's header names.
    pub fn parse_extra_info(
        text: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<Self, HandleError> {
        let fields = split(text)?;
        if fields.len() < EXTRA_INFO_FIELDS {
            return Err(HandleError::Malformed(format!(
                "{} fields, extraInfo has at least {EXTRA_INFO_FIELDS}",
                fields.len()
            )));
        }
        let mut handle = from_extra_info(&fields, topic)?;
        if let Some(attempt) = fields.get(8) {
            handle.attempt = number("attempt", attempt)?;
        }
        if let Some(named) = fields.get(9)
            && *named != topic
        {
            return Err(HandleError::Mismatch {
                found: format!("topic {named}"),
                expected: format!("topic {topic}"),
            });
        }
        if (handle.queue_id, handle.offset) != (queue_id, offset) {
            return Err(HandleError::Mismatch {
                found: format!("queue {} offset {}", handle.queue_id, handle.offset),
                expected: format!("queue {queue_id} offset {offset}"),
            });
        }
        Ok(handle)
    }

    /// Refuses a handle of another broker group.
    pub fn check_broker(&self, broker_name: &str) -> Result<(), HandleError> {
        if self.broker_name == broker_name {
            Ok(())
        } else {
            Err(HandleError::WrongBroker {
                found: self.broker_name.clone(),
                expected: broker_name.to_string(),
            })
        }
    }
}

impl fmt::Display for ReceiptHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let revive = if self.orderly { ORDERLY_REVIVE_QID } else { 0 };
        write!(
            f,
            "{} {} {} {revive} {NORMAL_TOPIC} {} {} {} {} {}",
            self.offset,
            self.pop_ms,
            self.invisible_ms,
            self.broker_name,
            self.queue_id,
            self.offset,
            self.attempt,
            self.topic
        )
    }
}

fn split(text: &str) -> Result<Vec<&str>, HandleError> {
    if text.len() > MAX_HANDLE_BYTES {
        return Err(HandleError::Malformed(format!(
            "{} bytes, more than {MAX_HANDLE_BYTES}",
            text.len()
        )));
    }
    Ok(text.split(' ').filter(|field| !field.is_empty()).collect())
}

fn number<T: std::str::FromStr>(what: &str, field: &str) -> Result<T, HandleError> {
    field
        .parse()
        .map_err(|_| HandleError::Malformed(format!("{what} {field:?} is not a number")))
}

fn from_extra_info(fields: &[&str], topic: &str) -> Result<ReceiptHandle, HandleError> {
    // The checkpoint offset is RocketMQ's; checked for form only.
    number::<i64>("ckQueueOffset", fields[0])?;
    let pop_ms: i64 = number("popTime", fields[1])?;
    let invisible_ms: u64 = number("invisibleTime", fields[2])?;
    let revive: i32 = number("reviveQid", fields[3])?;
    if fields[4] != NORMAL_TOPIC {
        return Err(HandleError::Malformed(format!(
            "retry kind {:?}: this broker redelivers in place, never through a retry topic",
            fields[4]
        )));
    }
    Ok(ReceiptHandle {
        broker_name: fields[5].to_string(),
        topic: topic.to_string(),
        queue_id: number("queueId", fields[6])?,
        offset: number("queueOffset", fields[7])?,
        pop_ms,
        invisible_ms,
        attempt: 0,
        orderly: revive == ORDERLY_REVIVE_QID,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> ReceiptHandle {
        ReceiptHandle {
            broker_name: "broker-a".into(),
            topic: "Orders".into(),
            queue_id: 3,
            offset: 42,
            pop_ms: 1_700_000_000_123,
            invisible_ms: 30_000,
            attempt: 2,
            orderly: true,
        }
    }

    #[test]
    fn a_handle_round_trips_and_reads_as_rocketmq_extra_info() {
        let text = handle().encode();
        assert_eq!(ReceiptHandle::parse(&text).unwrap(), handle());
        let via_header = ReceiptHandle::parse_extra_info(&text, "Orders", 3, 42).unwrap();
        assert_eq!(via_header, handle());
        // What a RocketMQ client builds from a pop answer: eight fields, no attempt.
        let java = "40 1700000000123 30000 0 0 broker-a 3 42";
        let parsed = ReceiptHandle::parse_extra_info(java, "Orders", 3, 42).unwrap();
        assert_eq!(
            (parsed.offset, parsed.pop_ms, parsed.attempt),
            (42, 1_700_000_000_123, 0)
        );
        assert!(!parsed.orderly);
    }

    #[test]
    fn malformed_handles_are_errors_not_panics() {
        for bad in [
            "",
            "garbage",
            "1 2 3",
            "x 1 2 0 0 b 1 2 1 T",
            "1 x 2 0 0 b 1 2 1 T",
            "1 2 -3 0 0 b 1 2 1 T",
            "1 2 3 0 1 b 1 2 1 T",
            "1 2 3 0 0 b -1 2 1 T",
            "1 2 3 0 0 b 1 2 x T",
            "1 2 3 0 0 b 1 99999999999999999999 1 T",
        ] {
            assert!(
                matches!(ReceiptHandle::parse(bad), Err(HandleError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = "1 ".repeat(MAX_HANDLE_BYTES);
        assert!(ReceiptHandle::parse(&long).is_err());
    }

    #[test]
    fn a_handle_for_another_queue_offset_topic_or_broker_is_refused() {
        let text = handle().encode();
        assert!(matches!(
            ReceiptHandle::parse_extra_info(&text, "Orders", 3, 41),
            Err(HandleError::Mismatch { .. })
        ));
        assert!(matches!(
            ReceiptHandle::parse_extra_info(&text, "Other", 3, 42),
            Err(HandleError::Mismatch { .. })
        ));
        assert!(handle().check_broker("broker-a").is_ok());
        assert!(matches!(
            handle().check_broker("broker-b"),
            Err(HandleError::WrongBroker { .. })
        ));
    }
}
