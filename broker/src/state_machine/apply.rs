//! Applying one command to the state machine's private copy of the state. Pure and
//! deterministic: the same entries applied to the same state give the same state and answers on
//! every member. What changed is recorded in `Touched` so the caller can persist exactly that
//! and then publish it to readers.

use std::collections::BTreeSet;

use super::state::{IndexRow, MemState, OffsetKey, QueueKey};
use crate::command::{Applied, Command, OffsetCommit, Refusal, SendBatch, SendOutcome, SendUnit};
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
}

/// Applies `command` from the entry at `log_index`.
pub fn apply_command(
    state: &mut MemState,
    touched: &mut Touched,
    log_index: u64,
    command: &Command,
) -> Applied {
    match command {
        Command::Send(batch) => Applied::Sent(apply_send(state, touched, log_index, batch)),
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
                return Applied::Refused(Refusal::GroupMissing(group.clone()));
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
            Applied::Done
        }
    }
}

fn apply_send(
    state: &mut MemState,
    touched: &mut Touched,
    log_index: u64,
    batch: &SendBatch,
) -> Vec<SendOutcome> {
    let store_timestamp_ms = batch.store_timestamp_ms.max(state.last_store_timestamp_ms);
    state.last_store_timestamp_ms = store_timestamp_ms;
    let mut ordinal: u32 = 0;
    let mut outcomes = Vec::with_capacity(batch.units.len());
    for (unit_index, unit) in batch.units.iter().enumerate() {
        let first_ordinal = ordinal;
        // Ordinals count every message slot of the entry, stored or not, so a message's
        // physical offset is fixed by the entry alone.
        ordinal = ordinal.saturating_add(unit.messages.len() as u32);
        match check_unit(state, touched, unit) {
            Err(refusal) => outcomes.push(SendOutcome::Refused(refusal)),
            Ok(()) => {
                let key = (unit.topic.clone(), unit.queue_id);
                let bytes: u64 = unit.messages.iter().map(|m| u64::from(m.len)).sum();
                let queue = state.queues.entry(key.clone()).or_default();
                let first_offset = queue.next_offset;
                queue.next_offset += unit.messages.len() as u64;
                queue.bytes += bytes;
                touched.queues.insert(key);
                if !unit.messages.is_empty() {
                    touched.index_rows.push((
                        unit.topic.clone(),
                        unit.queue_id,
                        IndexRow {
                            first_offset,
                            log_index,
                            unit_index: unit_index as u32,
                            first_ordinal,
                            count: unit.messages.len() as u32,
                            store_timestamp_ms,
                            bytes,
                        },
                    ));
                }
                outcomes.push(SendOutcome::Stored {
                    first_offset,
                    log_index,
                    first_ordinal,
                });
            }
        }
    }
    let stored_any = outcomes
        .iter()
        .any(|outcome| matches!(outcome, SendOutcome::Stored { .. }));
    if stored_any {
        touched.log_times.push((log_index, store_timestamp_ms));
    }
    outcomes
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
    touched.index_rows.retain(|(t, _, _)| t != topic);
}
