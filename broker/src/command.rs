//! What a broker group replicates: the commands one Raft entry carries, and their encoding.
//!
//! An entry payload is laid out as
//!
//! ```text
//! [u32 BE header length][header: codec-encoded Command][blob: message bytes]
//! ```
//!
//! The header is small (topics, queue ids, byte ranges). Message bytes travel once, in the blob,
//! already in RocketMQ's stored-message layout with the queue offset and physical offset left
//! zero: the state machine assigns offsets at apply time, and a pull patches them in while it
//! copies the message out. The raft log is the commit log, so this blob is the only copy of a
//! message the broker keeps.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use raftmq_protocol::acl::AclChange;

use crate::topic::{GroupConfig, TopicConfig};

/// Largest number of messages one entry may hold: a message's physical offset is
/// `log_index << PHYSICAL_OFFSET_ORDINAL_BITS | ordinal`, so the ordinal must fit those bits.
pub const PHYSICAL_OFFSET_ORDINAL_BITS: u32 = 20;
pub const MAX_MESSAGES_PER_ENTRY: usize = 1 << PHYSICAL_OFFSET_ORDINAL_BITS;
/// Largest header an entry may carry (it names topics and byte ranges, never bodies).
pub const MAX_HEADER_BYTES: usize = 8 << 20;

/// One replicated change to a broker group's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Messages to append; offsets are assigned when it is applied.
    Send(SendBatch),
    /// Consumer offsets a group has committed.
    CommitOffsets(OffsetCommit),
    /// Create a topic or change its queues and permissions.
    UpsertTopic(TopicConfig),
    /// Delete a topic, its queue index and the offsets committed on it.
    DeleteTopic { topic: String },
    /// Create a subscription group or change its configuration.
    UpsertGroup(GroupConfig),
    /// Delete a subscription group and its committed offsets.
    DeleteGroup { group: String },
    /// Create a topic unless it exists (a send's auto-creation when the send itself is stored
    /// elsewhere: a delayed message waits in the schedule topic). Never changes an existing one.
    CreateTopicIfMissing(TopicConfig),
    /// Messages leaving a pending state for their real queue (a due timer, a committed
    /// transaction), or dropped from it (a rolled-back transaction): each exactly once.
    Release(Release),
    /// The leader asked a producer about a pending transaction: count the check and wait a
    /// check interval before the next one.
    TransactionChecked { half: u64, checked_at_ms: i64 },
    /// Retention (decided by the leader's retention task): the messages of log entries below
    /// `from_index` are gone; every queue's minimum offset moves past them and their index rows
    /// go. Never moves back: a lower `from_index` than the floor in force changes nothing.
    Retain { from_index: u64 },
    /// POP: hand out messages of a group's queues, invisible to the group for a while
    /// (`crate::pop` plans it on the leader; apply checks the plan against the state).
    Pop(PopCommand),
    /// POP: messages consumed; they never come back.
    Ack { group: String, acks: Vec<PopTarget> },
    /// POP: a handed-out message stays invisible for `invisible_ms` from `now_ms`.
    ChangeInvisible {
        group: String,
        target: PopTarget,
        now_ms: i64,
        invisible_ms: u64,
    },
    /// A change to the group's ACL configuration (accounts, whitelists, the on switch),
    /// validated by the leader before it is proposed.
    Acl(AclChange),
}

impl Command {
    /// The messages an entry stores, if it stores any: a send, or a release.
    pub fn send_batch(&self) -> Option<&SendBatch> {
        match self {
            Command::Send(batch) => Some(batch),
            Command::Release(release) => Some(&release.batch),
            _ => None,
        }
    }
}

/// Messages released from pending state: unit `i` of `batch` is stored only if `claims[i]` is
/// still pending when this applies, and the claim is consumed with it, so a release proposed
/// twice (by an old and a new leader) takes effect once. A unit without messages only consumes
/// its claim (a rollback).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub batch: SendBatch,
    pub claims: Vec<Claim>,
}

/// Assembles a [`Release`] and the blob its slots point into: one unit per claim.
#[derive(Debug, Default)]
pub struct ReleaseBuilder {
    units: Vec<SendUnit>,
    claims: Vec<Claim>,
    blob: BytesMut,
}

impl ReleaseBuilder {
    /// Stores `message` (stored layout) in `topic`'s queue if `claim` is still pending.
    pub fn deliver(
        &mut self,
        claim: Claim,
        destination: (String, u32),
        create_topic: Option<TopicConfig>,
        message: &[u8],
        tags_code: i64,
    ) {
        let slot = MessageSlot {
            start: self.blob.len() as u32,
            len: message.len() as u32,
            tags_code,
        };
        self.blob.put_slice(message);
        self.units.push(SendUnit {
            topic: destination.0,
            queue_id: destination.1,
            create_topic,
            messages: vec![slot],
        });
        self.claims.push(claim);
    }

    /// Consumes `claim` without storing anything (a rollback, a message retention removed).
    pub fn drop_claim(&mut self, claim: Claim, topic: String) {
        self.units.push(SendUnit {
            topic,
            queue_id: 0,
            create_topic: None,
            messages: Vec::new(),
        });
        self.claims.push(claim);
    }

    pub fn len(&self) -> usize {
        self.claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }

    /// Message bytes so far.
    pub fn blob_len(&self) -> usize {
        self.blob.len()
    }

    /// The command and its blob, stamped with the leader's `store_timestamp_ms`.
    pub fn build(self, store_timestamp_ms: i64) -> (Command, Bytes) {
        let release = Release {
            batch: SendBatch {
                store_timestamp_ms,
                dedup_window_ms: 0,
                units: self.units,
            },
            claims: self.claims,
        };
        (Command::Release(release), self.blob.freeze())
    }
}

/// A pending record a release consumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Claim {
    /// A timer message, by its due time and the physical offset of its copy in the timer topic.
    Timer { due_ms: i64, physical: u64 },
    /// A transaction, by the physical offset of its half message.
    Transaction { half: u64 },
    /// A popped message of `group` leaving its in-flight set for the group's DLQ: only while
    /// it is still in flight under the same delivery.
    Pop { group: String, target: PopTarget },
}

/// One delivery of a popped message: its queue and offset, and the time of the pop (or change
/// of invisibility) that handed it out. A later delivery of the same message has a later
/// `pop_ms`, so a target names one delivery and a stale one is told apart.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PopTarget {
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    pub pop_ms: i64,
}

/// A pop planned by the leader (`crate::pop::pop`): for each queue, which expired deliveries
/// to hand out again and which new offsets to hand out. The leader chooses new offsets because
/// only it reads the messages (a tag or SQL filter needs their properties); apply takes them
/// only if the queue's pop cursor is still where the leader read from, so two pops racing on
/// one queue never hand out one offset twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopCommand {
    pub group: String,
    pub topic: String,
    /// The leader's clock: the pop time of every delivery, and what "expired" is judged by.
    pub now_ms: i64,
    pub invisible_ms: u64,
    /// Orderly: a queue hands out its next message only once nothing of it is in flight.
    pub fifo: bool,
    /// Where a queue the group never consumed starts: its end (else its first message).
    pub init_from_end: bool,
    pub queues: Vec<QueuePop>,
}

/// One queue's part of a [`PopCommand`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePop {
    pub queue_id: u32,
    /// Expired deliveries to hand out again: `(offset, pop_ms of the expired delivery)`.
    pub redeliver: Vec<(u64, i64)>,
    /// The pop cursor the leader read new messages from ...
    pub from_cursor: u64,
    /// ... where its read ended (past messages the filter skipped) ...
    pub to_cursor: u64,
    /// ... and the offsets in between that matched, ascending.
    pub offsets: Vec<u64>,
}

/// A delivery apply handed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Popped {
    pub queue_id: u32,
    pub offset: u64,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub invisible_until_ms: i64,
}

/// What became of one ack (or change of invisibility).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckOutcome {
    /// Done.
    Done,
    /// Not in flight any more: acked (perhaps by a retry of this ack) or dead-lettered.
    NotInFlight,
    /// In flight under a later delivery: the handle is stale.
    Stale,
    /// The offset was never handed out to this group.
    NeverPopped,
}

/// Sends packed into one entry by the leader's proposal batcher: one `SendUnit` per client
/// request, each for one queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendBatch {
    /// The leader's clock when it packed the batch: the store timestamp of every message in it.
    /// It travels in the command so that apply reads no clock (STYLE.md rule 8).
    pub store_timestamp_ms: i64,
    /// How far back a message's `UNIQ_KEY` is looked for before storing it (0: not at all): a
    /// send retried after an unknown outcome finds its first attempt instead of being stored
    /// twice. In the command, so every member decides alike whatever its own configuration.
    pub dedup_window_ms: u64,
    pub units: Vec<SendUnit>,
}

impl SendBatch {
    /// The entry-wide ordinal of the first message slot of unit `unit_index`: ordinals count
    /// every slot of the entry in order, stored or not.
    pub fn first_ordinal_of(&self, unit_index: usize) -> u32 {
        self.units
            .iter()
            .take(unit_index)
            .map(|unit| unit.messages.len() as u32)
            .sum()
    }
}

/// The messages of one send request, all for one queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendUnit {
    pub topic: String,
    pub queue_id: u32,
    /// The config to create the topic with if it does not exist when this applies. The leader
    /// fills it only where auto-creation is allowed, so apply decides without reading config.
    pub create_topic: Option<TopicConfig>,
    pub messages: Vec<MessageSlot>,
}

/// Where one message sits in the entry's blob, and its tag's hash (for filtering pulls by tag
/// without reading the message, as RocketMQ's consume queue does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSlot {
    pub start: u32,
    pub len: u32,
    pub tags_code: i64,
}

/// Offsets committed by a consumer group, one per queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub group: String,
    pub offsets: Vec<QueueOffset>,
    /// An operator's reset may move an offset backwards; a consumer's commit never does
    /// (committed offsets never go back: ARCHITECTURE.md's reliability contract).
    pub reset: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOffset {
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
}

/// What applying one entry answered, decoded by whoever proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// One outcome per `SendUnit`, in order.
    Sent(Vec<SendOutcome>),
    /// The command took effect.
    Done,
    /// The command was valid to replicate but refused by the state it met (deterministically,
    /// on every member).
    Refused(Refusal),
    /// What a pop handed out, in queue order, offset order within a queue.
    Popped(Vec<Popped>),
    /// One outcome per ack, in order.
    Acked(Vec<AckOutcome>),
    /// A change of invisibility: its outcome, and the delivery's new invisible time when done.
    Changed {
        outcome: AckOutcome,
        invisible_until_ms: i64,
    },
}

/// What became of one send request (or one unit) inside a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendOutcome {
    /// Stored at `first_offset .. first_offset + count` of its queue.
    Stored {
        first_offset: u64,
        log_index: u64,
        first_ordinal: u32,
    },
    /// A unit some of whose messages were stored before (their `UNIQ_KEY` was found within the
    /// dedup window): the others are stored from `first_offset` on, in slot order, and the
    /// duplicates, by slot position in the unit, point at their first copy. Only a unit's
    /// outcome; [`SendOutcome::for_request`] turns it into a request's.
    Placed {
        first_offset: u64,
        log_index: u64,
        first_ordinal: u32,
        duplicates: Vec<Duplicate>,
    },
    /// The request's first message was stored before: where.
    Duplicate(Location),
    Refused(Refusal),
}

/// A message not stored again, and where its first copy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    pub position: u32,
    pub first: Location,
}

/// Where a message is: its queue, its offset there, its physical offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub queue_id: u32,
    pub queue_offset: u64,
    pub physical: u64,
}

impl SendOutcome {
    /// The outcome of the request whose messages sit at slots `start ..` of a unit with this
    /// outcome. A request whose first message is a duplicate is answered with its first
    /// copy; otherwise with where its first new message went (a batch request of which only
    /// later messages were stored before is answered by its first message).
    pub fn for_request(&self, start: u32) -> SendOutcome {
        match self {
            SendOutcome::Stored {
                first_offset,
                log_index,
                first_ordinal,
            } => SendOutcome::Stored {
                first_offset: first_offset + u64::from(start),
                log_index: *log_index,
                first_ordinal: first_ordinal + start,
            },
            SendOutcome::Placed {
                first_offset,
                log_index,
                first_ordinal,
                duplicates,
            } => {
                if let Some(first) = duplicates.iter().find(|d| d.position == start) {
                    return SendOutcome::Duplicate(first.first);
                }
                let skipped_before = duplicates.iter().filter(|d| d.position < start).count();
                SendOutcome::Stored {
                    first_offset: first_offset + u64::from(start) - skipped_before as u64,
                    log_index: *log_index,
                    first_ordinal: first_ordinal + start,
                }
            }
            other => other.clone(),
        }
    }
}

/// Why the state machine refused a command, deterministically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("topic {0} does not exist")]
    TopicMissing(String),
    #[error("topic {topic} has no writable queue {queue_id}")]
    QueueInvalid { topic: String, queue_id: u32 },
    #[error("topic {0} is not writable")]
    TopicNotWritable(String),
    #[error("subscription group {0} does not exist")]
    GroupMissing(String),
    /// A release whose timer or transaction is no longer pending: it was released before (by
    /// this leader or an earlier one), or dropped.
    #[error("nothing pending to release: {0:?}")]
    NotPending(Claim),
    #[error("ACL change refused: {0}")]
    Acl(String),
}

/// An entry payload that is not a well-formed command: corruption, since only a leader of this
/// group writes entries.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("entry payload is shorter than its {0}-byte header")]
    Truncated(usize),
    #[error("entry header of {0} bytes is over the {MAX_HEADER_BYTES}-byte cap")]
    HeaderTooLarge(usize),
    #[error("entry header does not decode: {0}")]
    Header(#[from] raftmq_raft::codec::CodecError),
    #[error("message slot {start}+{len} is outside the {blob_len}-byte blob")]
    SlotOutOfRange {
        start: u32,
        len: u32,
        blob_len: usize,
    },
    #[error("entry holds {0} messages, over the cap of {MAX_MESSAGES_PER_ENTRY}")]
    TooManyMessages(usize),
    #[error("a release has {claims} claims for {units} units")]
    ClaimsMismatch { claims: usize, units: usize },
}

/// A decoded entry: its command and the blob its message slots point into.
#[derive(Clone, Debug)]
pub struct DecodedEntry {
    pub command: Command,
    pub blob: Bytes,
}

impl DecodedEntry {
    /// The bytes of one message slot (a cheap slice of the shared payload).
    pub fn message_bytes(&self, slot: &MessageSlot) -> Bytes {
        // Ranges were checked by `decode_entry`.
        let start = slot.start as usize;
        self.blob.slice(start..start + slot.len as usize)
    }
}

/// Encodes a command and its message blob as one entry payload.
pub fn encode_entry(command: &Command, blob: &[u8]) -> Result<Bytes, CommandError> {
    let header = raftmq_raft::codec::encode(command)?;
    if header.len() > MAX_HEADER_BYTES {
        return Err(CommandError::HeaderTooLarge(header.len()));
    }
    let mut out = BytesMut::with_capacity(4 + header.len() + blob.len());
    out.put_u32(header.len() as u32);
    out.put_slice(&header);
    out.put_slice(blob);
    Ok(out.freeze())
}

/// Decodes an entry payload, checking every message slot lies inside the blob.
pub fn decode_entry(payload: &Bytes) -> Result<DecodedEntry, CommandError> {
    let Some(len_bytes) = payload.get(..4) else {
        return Err(CommandError::Truncated(4));
    };
    let header_len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    let header_len = header_len as usize;
    if header_len > MAX_HEADER_BYTES {
        return Err(CommandError::HeaderTooLarge(header_len));
    }
    let header_end = 4 + header_len;
    let Some(header) = payload.get(4..header_end) else {
        return Err(CommandError::Truncated(header_end));
    };
    let command: Command = raftmq_raft::codec::decode(header)?;
    let blob = payload.slice(header_end..);
    if let Command::Release(release) = &command
        && release.claims.len() != release.batch.units.len()
    {
        return Err(CommandError::ClaimsMismatch {
            claims: release.claims.len(),
            units: release.batch.units.len(),
        });
    }
    if let Some(batch) = command.send_batch() {
        let mut count = 0usize;
        for unit in &batch.units {
            count += unit.messages.len();
            for slot in &unit.messages {
                let end = (slot.start as usize).checked_add(slot.len as usize);
                if end.is_none_or(|end| end > blob.len()) {
                    return Err(CommandError::SlotOutOfRange {
                        start: slot.start,
                        len: slot.len,
                        blob_len: blob.len(),
                    });
                }
            }
        }
        if count > MAX_MESSAGES_PER_ENTRY {
            return Err(CommandError::TooManyMessages(count));
        }
    }
    Ok(DecodedEntry { command, blob })
}

/// The physical offset RocketMQ clients see for a message (in its `offsetMsgId` and when they
/// view a message by id): where it sits in the commit log, which here is the Raft log.
pub fn physical_offset(log_index: u64, ordinal: u32) -> u64 {
    (log_index << PHYSICAL_OFFSET_ORDINAL_BITS) | u64::from(ordinal)
}

/// The inverse of [`physical_offset`]: `(log_index, ordinal)`.
pub fn split_physical_offset(physical: u64) -> (u64, u32) {
    let mask = (1u64 << PHYSICAL_OFFSET_ORDINAL_BITS) - 1;
    (
        physical >> PHYSICAL_OFFSET_ORDINAL_BITS,
        (physical & mask) as u32,
    )
}

/// Encodes a state machine answer for the proposer.
pub fn encode_applied(applied: &Applied) -> Result<Bytes, CommandError> {
    Ok(Bytes::from(raftmq_raft::codec::encode(applied)?))
}

/// Decodes a state machine answer.
pub fn decode_applied(bytes: &[u8]) -> Result<Applied, CommandError> {
    Ok(raftmq_raft::codec::decode(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_entry() -> (Command, Vec<u8>) {
        let blob = b"first-messagesecond".to_vec();
        let command = Command::Send(SendBatch {
            store_timestamp_ms: 1_700_000_000_000,
            dedup_window_ms: 120_000,
            units: vec![SendUnit {
                topic: "orders".into(),
                queue_id: 3,
                create_topic: Some(TopicConfig::new("orders", 8)),
                messages: vec![
                    MessageSlot {
                        start: 0,
                        len: 13,
                        tags_code: 7,
                    },
                    MessageSlot {
                        start: 13,
                        len: 6,
                        tags_code: 0,
                    },
                ],
            }],
        });
        (command, blob)
    }

    #[test]
    fn entry_round_trips_and_slices_messages() {
        let (command, blob) = send_entry();
        let payload = encode_entry(&command, &blob).unwrap();
        let decoded = decode_entry(&payload).unwrap();
        assert_eq!(decoded.command, command);
        let Command::Send(batch) = &decoded.command else {
            panic!("not a send")
        };
        let slots = &batch.units[0].messages;
        assert_eq!(&decoded.message_bytes(&slots[0])[..], b"first-message");
        assert_eq!(&decoded.message_bytes(&slots[1])[..], b"second");
    }

    #[test]
    fn every_truncation_of_an_entry_is_an_error_not_a_panic() {
        let (command, blob) = send_entry();
        let payload = encode_entry(&command, &blob).unwrap();
        for len in 0..payload.len() {
            assert!(
                decode_entry(&payload.slice(..len)).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn a_slot_outside_the_blob_is_refused() {
        let (mut command, blob) = send_entry();
        if let Command::Send(batch) = &mut command {
            batch.units[0].messages[1].len = 7;
        }
        let payload = encode_entry(&command, &blob).unwrap();
        assert!(matches!(
            decode_entry(&payload),
            Err(CommandError::SlotOutOfRange { .. })
        ));
    }

    #[test]
    fn a_huge_header_length_is_refused_before_reading() {
        let mut payload = BytesMut::new();
        payload.put_u32(u32::MAX);
        assert!(matches!(
            decode_entry(&payload.freeze()),
            Err(CommandError::HeaderTooLarge(_))
        ));
    }

    #[test]
    fn physical_offsets_split_back() {
        let physical = physical_offset(123_456, 789);
        assert_eq!(split_physical_offset(physical), (123_456, 789));
        let last = physical_offset(1, (MAX_MESSAGES_PER_ENTRY - 1) as u32);
        assert_eq!(
            split_physical_offset(last),
            (1, (MAX_MESSAGES_PER_ENTRY - 1) as u32)
        );
    }

    #[test]
    fn applied_answers_round_trip() {
        let applied = Applied::Sent(vec![
            SendOutcome::Stored {
                first_offset: 42,
                log_index: 9,
                first_ordinal: 0,
            },
            SendOutcome::Refused(Refusal::QueueInvalid {
                topic: "t".into(),
                queue_id: 99,
            }),
        ]);
        let bytes = encode_applied(&applied).unwrap();
        assert_eq!(decode_applied(&bytes).unwrap(), applied);
    }
}
