//! Applying one command to the state machine's private copy of the state. Pure and
//! deterministic: the same entries applied to the same state give the same state and answers on
//! every member. What changed is recorded in `Touched` so the caller can persist exactly that
//! and then publish it to readers.

use std::collections::BTreeSet;

use raftmq_protocol::message::{KEY_SEPARATOR, properties, property, stored_properties};
use raftmq_protocol::names::{
    DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX, TIMER_TOPIC, TRANS_HALF_TOPIC,
};
use raftmq_raft::StateMachineError;

use super::indexes::{Indexes, KeyKind, MAX_KEYS_PER_MESSAGE};
use super::pop::{self, PopKey};
use super::state::{IndexRow, MemState, OffsetKey, QueueKey};
use crate::command::{
    Applied, Claim, Command, DecodedEntry, Duplicate, Location, OffsetCommit, Refusal, SendBatch,
    SendOutcome, SendUnit, physical_offset,
};
use crate::schedule::SCHEDULE_TOPIC;
use crate::topic::TopicConfig;

/// The keys an apply changed (present = written, absent from the state = deleted), and the
/// index rows it added.
#[derive(Debug, Default)]
pub struct Touched {
    pub topics: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub queues: BTreeSet<QueueKey>,
    pub consumer_offsets: BTreeSet<OffsetKey>,
    /// `(topic, queue id, row)`
    pub index_rows: Vec<(String, u32, IndexRow)>,
    /// Topics whose whole queue index must be removed.
    pub deleted_topics: BTreeSet<String>,
    /// `(log index, store ms)` of each entry that stored messages.
    pub log_times: Vec<(u64, i64)>,
    /// A retention floor applied in this batch: rows below it are dropped when persisting.
    pub retain_from: Option<u64>,
    /// Index rows retention dropped: `(topic, queue id, first offset)`.
    pub dropped_rows: Vec<(String, u32, u64)>,
    /// POP state of these `(group, topic, queue)` changed (absent from the state: removed).
    pub pop_queues: BTreeSet<PopKey>,
    /// The ACL configuration changed.
    pub acl: bool,
}

/// Applies the command of the entry at `log_index`. Errors are storage errors of the indexes
/// (the state machine stops on them); refusals are answers.
pub fn apply_command(
    state: &mut MemState,
    touched: &mut Touched,
    indexes: &mut Indexes<'_>,
    log_index: u64,
    entry: &DecodedEntry,
) -> Result<Applied, StateMachineError> {
    let at = EntryRef { log_index, entry };
    Ok(match &entry.command {
        Command::Send(batch) => {
            Applied::Sent(apply_send(state, touched, indexes, at, batch, None)?)
        }
        Command::Release(release) => Applied::Sent(apply_send(
            state,
            touched,
            indexes,
            at,
            &release.batch,
            Some(&release.claims),
        )?),
        Command::TransactionChecked {
            half,
            checked_at_ms,
        } => {
            if indexes.touch_half(*half, *checked_at_ms)? {
                Applied::Done
            } else {
                Applied::Refused(Refusal::NotPending(Claim::Transaction { half: *half }))
            }
        }
        Command::Retain { from_index } => {
            // The index rows live on disk: the caller drops those below the floor (and moves
            // each queue's minimum) when it persists this batch.
            if *from_index > state.retention_floor {
                state.retention_floor = *from_index;
                touched.retain_from = Some(*from_index);
            }
            Applied::Done
        }
        Command::CommitOffsets(commit) => apply_commit(state, touched, commit),
        Command::Pop(command) => {
            if !state.topics.contains_key(&command.topic) {
                return Ok(Applied::Refused(Refusal::TopicMissing(
                    command.topic.clone(),
                )));
            }
            Applied::Popped(pop::apply_pop(state, touched, command))
        }
        Command::Ack { group, acks } => Applied::Acked(pop::apply_ack(state, touched, group, acks)),
        Command::ChangeInvisible {
            group,
            target,
            now_ms,
            invisible_ms,
        } => {
            let (outcome, invisible_until_ms) =
                pop::apply_change_invisible(state, touched, group, target, *now_ms, *invisible_ms);
            Applied::Changed {
                outcome,
                invisible_until_ms,
            }
        }
        Command::Acl(change) => match state.acl.apply(change.clone()) {
            Ok(()) => {
                touched.acl = true;
                Applied::Done
            }
            Err(refused) => Applied::Refused(Refusal::Acl(refused.to_string())),
        },
        Command::UpsertTopic(config) => {
            upsert_topic(state, touched, config.clone());
            Applied::Done
        }
        Command::CreateTopicIfMissing(config) => {
            if !state.topics.contains_key(&config.name) {
                upsert_topic(state, touched, config.clone());
            }
            Applied::Done
        }
        Command::DeleteTopic { topic } => {
            delete_topic(state, touched, topic);
            Applied::Done
        }
        Command::UpsertGroup(config) => {
            touched.groups.insert(config.name.clone());
            state.groups.insert(config.name.clone(), config.clone());
            Applied::Done
        }
        Command::DeleteGroup { group } => {
            if state.groups.remove(group).is_none() {
                return Ok(Applied::Refused(Refusal::GroupMissing(group.clone())));
            }
            touched.groups.insert(group.clone());
            let keys: Vec<OffsetKey> = state
                .consumer_offsets
                .keys()
                .filter(|(g, _, _)| g == group)
                .cloned()
                .collect();
            for key in keys {
                state.consumer_offsets.remove(&key);
                touched.consumer_offsets.insert(key);
            }
            pop::forget(state, touched, |(g, _, _)| g == group);
            Applied::Done
        }
    })
}

/// The entry being applied: where its messages' physical offsets come from.
#[derive(Clone, Copy)]
struct EntryRef<'a> {
    log_index: u64,
    entry: &'a DecodedEntry,
}

/// Whether a send to `topic` is checked against the dedup window. Messages the broker moves
/// between its own topics keep their `UNIQ_KEY` (a retry sent back twice, a delayed message),
/// so those topics are not: only what producers send to their topics, and the half and timer
/// topics where a producer's transactional and timer sends wait.
fn deduplicated(topic: &str) -> bool {
    !(topic == SCHEDULE_TOPIC
        || topic.starts_with(RETRY_GROUP_TOPIC_PREFIX)
        || topic.starts_with(DLQ_GROUP_TOPIC_PREFIX))
}

/// Stores a batch's units. With `claims` (a release), unit `i` is stored only if `claims[i]` is
/// still pending, and consumes it.
fn apply_send(
    state: &mut MemState,
    touched: &mut Touched,
    indexes: &mut Indexes<'_>,
    at: EntryRef<'_>,
    batch: &SendBatch,
    claims: Option<&[Claim]>,
) -> Result<Vec<SendOutcome>, StateMachineError> {
    let store_timestamp_ms = batch.store_timestamp_ms.max(state.last_store_timestamp_ms);
    state.last_store_timestamp_ms = store_timestamp_ms;
    let mut ordinal: u32 = 0;
    let mut outcomes = Vec::with_capacity(batch.units.len());
    for (unit_index, unit) in batch.units.iter().enumerate() {
        let first_ordinal = ordinal;
        // Ordinals count every message slot of the entry, stored or not, so a message's
        // physical offset is fixed by the entry alone.
        ordinal = ordinal.saturating_add(unit.messages.len() as u32);
        if let Some(claim) = claims.and_then(|claims| claims.get(unit_index)) {
            let pending = match claim {
                Claim::Timer { due_ms, physical } => indexes.take_timer(*due_ms, *physical)?,
                Claim::Transaction { half } => indexes.take_half(*half)?,
                Claim::Pop { group, target } => pop::take(state, touched, group, target),
            };
            if !pending {
                outcomes.push(SendOutcome::Refused(Refusal::NotPending(claim.clone())));
                continue;
            }
            if unit.messages.is_empty() {
                // A rollback: the claim alone.
                outcomes.push(SendOutcome::Stored {
                    first_offset: 0,
                    log_index: at.log_index,
                    first_ordinal,
                });
                continue;
            }
        }
        if let Err(refusal) = check_unit(state, touched, unit) {
            outcomes.push(SendOutcome::Refused(refusal));
            continue;
        }
        let dedup_since =
            (claims.is_none() && batch.dedup_window_ms > 0 && deduplicated(&unit.topic))
                .then(|| store_timestamp_ms.saturating_sub(batch.dedup_window_ms as i64));
        let placed = place_unit(
            state,
            touched,
            indexes,
            at,
            UnitAt {
                unit,
                unit_index: unit_index as u32,
                first_ordinal,
                store_timestamp_ms,
                dedup_since,
            },
        )?;
        outcomes.push(placed);
    }
    let stored_any = outcomes.iter().any(|outcome| {
        matches!(
            outcome,
            SendOutcome::Stored { .. } | SendOutcome::Placed { .. }
        )
    });
    if stored_any {
        touched.log_times.push((at.log_index, store_timestamp_ms));
    }
    Ok(outcomes)
}

/// One unit of an entry, about to be stored.
struct UnitAt<'a> {
    unit: &'a SendUnit,
    unit_index: u32,
    first_ordinal: u32,
    store_timestamp_ms: i64,
    /// Look for each message's `UNIQ_KEY` among messages stored since then.
    dedup_since: Option<i64>,
}

/// Assigns queue offsets to the messages of a unit that may be stored, skipping duplicates;
/// writes an index row per run of stored messages, and the key, timer and transaction indexes.
fn place_unit(
    state: &mut MemState,
    touched: &mut Touched,
    indexes: &mut Indexes<'_>,
    at: EntryRef<'_>,
    placing: UnitAt<'_>,
) -> Result<SendOutcome, StateMachineError> {
    let UnitAt {
        unit,
        unit_index,
        first_ordinal,
        store_timestamp_ms,
        dedup_since,
    } = placing;
    let key = (unit.topic.clone(), unit.queue_id);
    let first_offset = state.queues.entry(key.clone()).or_default().next_offset;
    touched.queues.insert(key.clone());
    let mut next_offset = first_offset;
    let mut duplicates = Vec::new();
    let mut run: Option<IndexRow> = None;
    let mut stored_bytes = 0u64;
    for (position, slot) in unit.messages.iter().enumerate() {
        let ordinal = first_ordinal + position as u32;
        let physical = physical_offset(at.log_index, ordinal);
        let bytes = at.entry.message_bytes(slot);
        // A message whose properties cannot be read has no keys: it is stored all the same
        // (the leader encoded it; reads will report any damage).
        let props = stored_properties(&bytes).ok();
        let uniq = props
            .and_then(|text| properties::find(text, property::UNIQ_KEY))
            .filter(|uniq| !uniq.is_empty());
        if let (Some(since), Some(uniq)) = (dedup_since, uniq)
            && let Some(first) =
                indexes.find_unique(&unit.topic, uniq, since, store_timestamp_ms)?
        {
            touched.index_rows.extend(
                run.take()
                    .map(|row| (unit.topic.clone(), unit.queue_id, row)),
            );
            duplicates.push(Duplicate {
                position: position as u32,
                first,
            });
            continue;
        }
        let queue_offset = next_offset;
        next_offset += 1;
        stored_bytes += u64::from(slot.len);
        match &mut run {
            Some(row) => {
                row.count += 1;
                row.bytes += u64::from(slot.len);
            }
            None => {
                run = Some(IndexRow {
                    first_offset: queue_offset,
                    log_index: at.log_index,
                    unit_index,
                    first_ordinal: ordinal,
                    count: 1,
                    store_timestamp_ms,
                    bytes: u64::from(slot.len),
                })
            }
        }
        let location = Location {
            queue_id: unit.queue_id,
            queue_offset,
            physical,
        };
        if let Some(uniq) = uniq {
            indexes.add_key(
                &unit.topic,
                KeyKind::Unique,
                uniq,
                store_timestamp_ms,
                location,
            )?;
        }
        if let Some(keys) = props.and_then(|text| properties::find(text, property::KEYS)) {
            for key in keys
                .split(KEY_SEPARATOR)
                .filter(|key| !key.is_empty())
                .take(MAX_KEYS_PER_MESSAGE)
            {
                indexes.add_key(&unit.topic, KeyKind::Key, key, store_timestamp_ms, location)?;
            }
        }
        if unit.topic == TIMER_TOPIC {
            // The leader wrote the due time; without one the message is due at once.
            let due_ms = props
                .and_then(|text| properties::find(text, property::TIMER_OUT_MS))
                .and_then(|due| due.parse::<i64>().ok())
                .unwrap_or(store_timestamp_ms);
            indexes.add_timer(due_ms, physical)?;
        } else if unit.topic == TRANS_HALF_TOPIC {
            indexes.add_half(physical, store_timestamp_ms)?;
        }
    }
    touched
        .index_rows
        .extend(run.map(|row| (unit.topic.clone(), unit.queue_id, row)));
    if let Some(queue) = state.queues.get_mut(&key) {
        queue.next_offset = next_offset;
        queue.bytes += stored_bytes;
    }
    Ok(if duplicates.is_empty() {
        SendOutcome::Stored {
            first_offset,
            log_index: at.log_index,
            first_ordinal,
        }
    } else {
        SendOutcome::Placed {
            first_offset,
            log_index: at.log_index,
            first_ordinal,
            duplicates,
        }
    })
}

/// Whether a unit may be stored, creating its topic first where the leader allowed that.
fn check_unit(state: &mut MemState, touched: &mut Touched, unit: &SendUnit) -> Result<(), Refusal> {
    if !state.topics.contains_key(&unit.topic) {
        match &unit.create_topic {
            Some(config) if config.name == unit.topic => {
                upsert_topic(state, touched, config.clone());
            }
            _ => return Err(Refusal::TopicMissing(unit.topic.clone())),
        }
    }
    let Some(topic) = state.topics.get(&unit.topic) else {
        return Err(Refusal::TopicMissing(unit.topic.clone()));
    };
    if !topic.is_writable() {
        return Err(Refusal::TopicNotWritable(unit.topic.clone()));
    }
    if unit.queue_id >= topic.write_queue_nums {
        return Err(Refusal::QueueInvalid {
            topic: unit.topic.clone(),
            queue_id: unit.queue_id,
        });
    }
    Ok(())
}

fn apply_commit(state: &mut MemState, touched: &mut Touched, commit: &OffsetCommit) -> Applied {
    for entry in &commit.offsets {
        let key = (commit.group.clone(), entry.topic.clone(), entry.queue_id);
        let current = state.consumer_offsets.get(&key).copied();
        // A consumer's commit never moves an offset back (a slow, deposed owner of a queue may
        // commit late); only an operator's reset does.
        if !commit.reset && current.is_some_and(|current| entry.offset < current) {
            continue;
        }
        if current != Some(entry.offset) {
            state.consumer_offsets.insert(key.clone(), entry.offset);
            touched.consumer_offsets.insert(key);
        }
    }
    Applied::Done
}

fn upsert_topic(state: &mut MemState, touched: &mut Touched, config: TopicConfig) {
    touched.topics.insert(config.name.clone());
    // Queues keep their offsets when a topic grows or shrinks: offsets never shift.
    state.topics.insert(config.name.clone(), config);
}

fn delete_topic(state: &mut MemState, touched: &mut Touched, topic: &str) {
    if state.topics.remove(topic).is_none() {
        return;
    }
    touched.topics.insert(topic.to_string());
    touched.deleted_topics.insert(topic.to_string());
    let queues: Vec<QueueKey> = state
        .queues
        .keys()
        .filter(|(t, _)| t == topic)
        .cloned()
        .collect();
    for key in queues {
        state.queues.remove(&key);
        touched.queues.insert(key);
    }
    let offsets: Vec<OffsetKey> = state
        .consumer_offsets
        .keys()
        .filter(|(_, t, _)| t == topic)
        .cloned()
        .collect();
    for key in offsets {
        state.consumer_offsets.remove(&key);
        touched.consumer_offsets.insert(key);
    }
    pop::forget(state, touched, |(_, t, _)| t == topic);
    touched.index_rows.retain(|(t, _, _)| t != topic);
}
