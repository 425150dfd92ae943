//! The broker's applied state as processors read it: small maps in memory, the queue index in
//! redb, and a signal that fires whenever something new is applied (it wakes long polls).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::indexes::{self, KeyKind};
use super::pop::{InFlight, PopKey, PopQueue};
use super::tables::{LOG_TIMES, QUEUE_INDEX};
use crate::topic::{GroupConfig, TopicConfig};
use raftmq_protocol::acl::AclConfig;
use raftmq_raft::{LogId, StoredMembership};

/// `(topic, queue id)`
pub type QueueKey = (String, u32);
/// `(group, topic, queue id)`
pub type OffsetKey = (String, String, u32);

/// One queue's offsets: messages `min_offset .. next_offset` exist, `bytes` long in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    pub next_offset: u64,
    pub min_offset: u64,
    pub bytes: u64,
}

/// The small part of the state machine, kept whole in memory (and in redb).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemState {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub topics: BTreeMap<String, TopicConfig>,
    pub groups: BTreeMap<String, GroupConfig>,
    pub queues: BTreeMap<QueueKey, QueueState>,
    pub consumer_offsets: BTreeMap<OffsetKey, u64>,
    /// The latest store timestamp applied: store timestamps never go back, even when a new
    /// leader's clock is behind the old one's, so a search by time can bisect a queue.
    pub last_store_timestamp_ms: i64,
    /// Log entries below this index are gone with retention (their messages are below every
    /// queue's minimum offset); the log may delete them.
    pub retention_floor: u64,
    /// POP cursors and in-flight deliveries. Not in this struct's encoding: the snapshot image
    /// carries it in frames of its own and redb in a table of its own, so images and files
    /// written before POP existed still read.
    #[serde(skip)]
    pub pop: BTreeMap<PopKey, PopQueue>,
    /// Who may do what (`raftmq_protocol::acl`): replicated, so every member decides alike.
    pub acl: AclConfig,
}

/// One row of the queue index: where a run of a queue's messages sits in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRow {
    pub first_offset: u64,
    pub log_index: u64,
    pub unit_index: u32,
    pub first_ordinal: u32,
    pub count: u32,
    pub store_timestamp_ms: i64,
    /// Bytes of the run's messages (stored layout).
    pub bytes: u64,
}

impl IndexRow {
    pub fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.count)
    }
}

/// Why reading the applied state failed.
#[derive(Debug, thiserror::Error)]
#[error("reading the broker state failed: {0}")]
pub struct StateReadError(String);

fn read_error(err: impl std::fmt::Display) -> StateReadError {
    StateReadError(err.to_string())
}

/// The applied state, shared between the state machine (which writes it) and the processors.
pub struct BrokerState {
    db: Arc<Database>,
    mem: RwLock<MemState>,
    applied_index: watch::Sender<u64>,
}

impl BrokerState {
    pub(super) fn new(db: Arc<Database>, mem: MemState) -> Self {
        let index = mem.applied.map(|id| id.index).unwrap_or(0);
        let (applied_index, _) = watch::channel(index);
        Self {
            db,
            mem: RwLock::new(mem),
            applied_index,
        }
    }

    /// Runs `f` on the in-memory state. The lock is never held across an await.
    fn read<T>(&self, f: impl FnOnce(&MemState) -> T) -> T {
        let mem = self
            .mem
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mem)
    }

    /// Replaces parts of the in-memory state after a commit, then wakes long polls.
    pub(super) fn publish(&self, update: impl FnOnce(&mut MemState)) {
        let index = {
            let mut mem = self
                .mem
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            update(&mut mem);
            mem.applied.map(|id| id.index).unwrap_or(0)
        };
        self.applied_index.send_replace(index);
    }

    /// A receiver that changes whenever new entries are applied (the applied log index).
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    /// Runs `f` on the applied ACL configuration (the lock is held only for `f`).
    pub fn with_acl<T>(&self, f: impl FnOnce(&AclConfig) -> T) -> T {
        self.read(|mem| f(&mem.acl))
    }

    /// The latest store timestamp applied.
    pub fn read_last_store_timestamp_ms(&self) -> i64 {
        self.read(|mem| mem.last_store_timestamp_ms)
    }

    pub fn applied(&self) -> Option<LogId> {
        self.read(|mem| mem.applied)
    }

    /// Log entries below this index are gone with retention.
    pub fn retention_floor(&self) -> u64 {
        self.read(|mem| mem.retention_floor)
    }

    /// The first log index (at or above the retention floor) of an entry whose messages were
    /// stored at or after `cutoff_ms`; `None` if every entry still held is older. Store times
    /// never go back (apply keeps them monotonic), so the first match ends the search.
    pub fn first_log_index_stored_since(
        &self,
        cutoff_ms: i64,
    ) -> Result<Option<u64>, StateReadError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(LOG_TIMES).map_err(read_error)?;
        for row in table.iter().map_err(read_error)? {
            let (index, store_ms) = row.map_err(read_error)?;
            if store_ms.value() >= cutoff_ms {
                return Ok(Some(index.value()));
            }
        }
        Ok(None)
    }

    pub fn membership(&self) -> StoredMembership {
        self.read(|mem| mem.membership.clone())
    }

    pub fn topic(&self, topic: &str) -> Option<TopicConfig> {
        self.read(|mem| mem.topics.get(topic).cloned())
    }

    pub fn topics(&self) -> Vec<TopicConfig> {
        self.read(|mem| mem.topics.values().cloned().collect())
    }

    pub fn group(&self, group: &str) -> Option<GroupConfig> {
        self.read(|mem| mem.groups.get(group).cloned())
    }

    pub fn groups(&self) -> Vec<GroupConfig> {
        self.read(|mem| mem.groups.values().cloned().collect())
    }

    /// A queue's offsets; an unknown queue reads as empty.
    pub fn queue(&self, topic: &str, queue_id: u32) -> QueueState {
        self.read(|mem| {
            mem.queues
                .get(&(topic.to_string(), queue_id))
                .copied()
                .unwrap_or_default()
        })
    }

    pub fn consumer_offset(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.read(|mem| {
            mem.consumer_offsets
                .get(&(group.to_string(), topic.to_string(), queue_id))
                .copied()
        })
    }

    /// Every committed offset of a group: `(topic, queue id) -> offset`.
    pub fn group_offsets(&self, group: &str) -> BTreeMap<QueueKey, u64> {
        self.read(|mem| {
            mem.consumer_offsets
                .iter()
                .filter(|((g, _, _), _)| g == group)
                .map(|((_, topic, queue), offset)| ((topic.clone(), *queue), *offset))
                .collect()
        })
    }

    /// Every group that has committed an offset, sorted.
    pub fn groups_with_offsets(&self) -> Vec<String> {
        self.read(|mem| {
            let mut groups: Vec<String> = mem
                .consumer_offsets
                .keys()
                .map(|(g, _, _)| g.clone())
                .collect();
            groups.dedup();
            groups
        })
    }

    /// Every group that has committed an offset on `topic`.
    pub fn groups_consuming(&self, topic: &str) -> Vec<String> {
        self.read(|mem| {
            let mut groups: Vec<String> = mem
                .consumer_offsets
                .keys()
                .filter(|(_, t, _)| t == topic)
                .map(|(g, _, _)| g.clone())
                .collect();
            groups.dedup();
            groups
        })
    }

    /// A group's POP state of one queue, if it ever popped it.
    pub fn pop_queue(&self, group: &str, topic: &str, queue_id: u32) -> Option<PopQueue> {
        self.read(|mem| {
            mem.pop
                .get(&(group.to_string(), topic.to_string(), queue_id))
                .cloned()
        })
    }

    /// Where a group's next pop of a queue reads new messages from (see
    /// [`super::pop::effective_cursor`]).
    pub fn pop_cursor(&self, group: &str, topic: &str, queue_id: u32, init_from_end: bool) -> u64 {
        self.read(|mem| {
            let key = (group.to_string(), topic.to_string(), queue_id);
            super::pop::effective_cursor(mem, &key, mem.pop.get(&key), init_from_end)
        })
    }

    /// How many times a group's message is handed out before it is dead-lettered.
    pub fn pop_max_deliveries(&self, group: &str) -> u32 {
        self.read(|mem| super::pop::max_deliveries(mem, group))
    }

    /// Deliveries whose invisible time ended at or before `now_ms` and that were handed out
    /// as often as their group allows: what the dead-letter task moves to `%DLQ%<group>`.
    /// At most `limit`, in key order.
    pub fn pop_exhausted(&self, now_ms: i64, limit: usize) -> Vec<(PopKey, u64, InFlight)> {
        self.read(|mem| {
            let mut found = Vec::new();
            for (key, queue) in &mem.pop {
                let max = super::pop::max_deliveries(mem, &key.0);
                for (offset, entry) in &queue.in_flight {
                    if found.len() >= limit {
                        return found;
                    }
                    if entry.invisible_until_ms <= now_ms && entry.attempt >= max {
                        found.push((key.clone(), *offset, *entry));
                    }
                }
            }
            found
        })
    }

    /// Index rows of a queue covering `offset` and after, at most `max_rows` of them.
    pub fn index_rows_from(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_rows: usize,
    ) -> Result<Vec<IndexRow>, StateReadError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(QUEUE_INDEX).map_err(read_error)?;
        let mut rows = Vec::new();
        // The row that starts at or before `offset` (it may contain it) ...
        let before = table
            .range((topic, queue_id, 0)..=(topic, queue_id, offset))
            .map_err(read_error)?
            .next_back();
        if let Some(found) = before {
            let (key, value) = found.map_err(read_error)?;
            let row = to_row(key.value().2, value.value());
            if row.end_offset() > offset {
                rows.push(row);
            }
        }
        // ... then the rows that start after it.
        if rows.len() < max_rows && offset < u64::MAX {
            for found in table
                .range((topic, queue_id, offset + 1)..=(topic, queue_id, u64::MAX))
                .map_err(read_error)?
            {
                let (key, value) = found.map_err(read_error)?;
                rows.push(to_row(key.value().2, value.value()));
                if rows.len() >= max_rows {
                    break;
                }
            }
        }
        Ok(rows)
    }

    /// The first offset of a queue whose store time is at or after `timestamp_ms` (the queue's
    /// next offset if none is). Store times never go back within a queue (apply keeps them
    /// monotonic), so this is a binary search over index rows.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<u64, StateReadError> {
        let queue = self.queue(topic, queue_id);
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(QUEUE_INDEX).map_err(read_error)?;
        // Binary search over offsets; each probe finds the row containing the probed offset.
        let (mut low, mut high) = (queue.min_offset, queue.next_offset);
        while low < high {
            let middle = low + (high - low) / 2;
            let row = table
                .range((topic, queue_id, 0)..=(topic, queue_id, middle))
                .map_err(read_error)?
                .next_back();
            let store_ms = match row {
                Some(found) => found.map_err(read_error)?.1.value().4,
                None => i64::MIN,
            };
            if store_ms >= timestamp_ms {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(low)
    }

    /// The index row holding the message at `(log_index, ordinal)` of an entry, if it was
    /// stored in this queue. Rows of a queue are in log order as well as offset order (and runs
    /// of one entry in ordinal order), so this bisects.
    pub fn find_row(
        &self,
        topic: &str,
        queue_id: u32,
        log_index: u64,
        ordinal: u32,
    ) -> Result<Option<IndexRow>, StateReadError> {
        let queue = self.queue(topic, queue_id);
        let target = (log_index, ordinal);
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(QUEUE_INDEX).map_err(read_error)?;
        let (mut low, mut high) = (queue.min_offset, queue.next_offset);
        // Each probe halves [low, high); the bound is a safety net against a corrupt index.
        for _ in 0..128 {
            if low >= high {
                break;
            }
            let middle = low + (high - low) / 2;
            let Some(found) = table
                .range((topic, queue_id, 0)..=(topic, queue_id, middle))
                .map_err(read_error)?
                .next_back()
            else {
                return Ok(None);
            };
            let (key, value) = found.map_err(read_error)?;
            let row = to_row(key.value().2, value.value());
            let last_ordinal = row.first_ordinal + row.count.saturating_sub(1);
            if (row.log_index, row.first_ordinal) > target {
                high = row.first_offset;
            } else if (row.log_index, last_ordinal) < target {
                low = row.end_offset().max(middle + 1);
            } else {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    /// The store time of the message at `offset`, if it exists.
    pub fn store_timestamp(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<Option<i64>, StateReadError> {
        let rows = self.index_rows_from(topic, queue_id, offset, 1)?;
        Ok(rows
            .first()
            .filter(|row| row.first_offset <= offset)
            .map(|row| row.store_timestamp_ms))
    }
}

/// A pending transaction, as the check task sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingHalf {
    /// The half message's physical offset.
    pub physical: u64,
    /// Its store time until its first check, then the time of its last check.
    pub last_touch_ms: i64,
    pub checks: u32,
}

/// A message found in the key index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHit {
    pub physical: u64,
    pub store_ms: i64,
    pub queue_id: u32,
    pub queue_offset: u64,
}

impl BrokerState {
    /// Pending timers due at or before `now_ms`, soonest first, at most `limit`:
    /// `(due ms, physical)`.
    pub fn due_timers(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, u64)>, StateReadError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(indexes::TIMERS).map_err(read_error)?;
        let mut due = Vec::new();
        for found in table
            .range(..=(now_ms, u64::MAX))
            .map_err(read_error)?
            .take(limit)
        {
            due.push(found.map_err(read_error)?.0.value());
        }
        Ok(due)
    }

    /// When the soonest pending timer is due.
    pub fn next_timer_due_ms(&self) -> Result<Option<i64>, StateReadError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(indexes::TIMERS).map_err(read_error)?;
        Ok(table
            .first()
            .map_err(read_error)?
            .map(|(key, _)| key.value().0))
    }

    /// How many timers are pending.
    pub fn pending_timers(&self) -> Result<u64, StateReadError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(indexes::TIMERS).map_err(read_error)?;
        table.len().map_err(read_error)
    }

    /// How many transactions are pending.
    pub fn pending_transactions(&self) -> Result<u64, StateReadError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(indexes::HALF_MESSAGES).map_err(read_error)?;
        table.len().map_err(read_error)
    }

    /// The pending transaction whose half message is at `physical`, if it is pending.
    pub fn pending_half(&self, physical: u64) -> Result<Option<PendingHalf>, StateReadError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(indexes::HALF_MESSAGES).map_err(read_error)?;
        Ok(table.get(physical).map_err(read_error)?.map(|value| {
            let (last_touch_ms, checks) = value.value();
            PendingHalf {
                physical,
                last_touch_ms,
                checks,
            }
        }))
    }

    /// Pending transactions last touched at or before `before_ms`, oldest first, at most
    /// `limit`.
    pub fn halves_touched_before(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<PendingHalf>, StateReadError> {
        self.halves_touched_in(..=(before_ms, u64::MAX), limit)
    }

    /// Pending transactions last touched after `after_ms`, oldest first, at most `limit`: on
    /// a leader whose clock says `after_ms` is the future, they were touched by a clock that
    /// ran ahead of this one.
    pub fn halves_touched_after(
        &self,
        after_ms: i64,
        limit: usize,
    ) -> Result<Vec<PendingHalf>, StateReadError> {
        self.halves_touched_in((after_ms.saturating_add(1), 0).., limit)
    }

    fn halves_touched_in(
        &self,
        range: impl std::ops::RangeBounds<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<PendingHalf>, StateReadError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let checks = txn.open_table(indexes::HALF_CHECKS).map_err(read_error)?;
        let halves = txn.open_table(indexes::HALF_MESSAGES).map_err(read_error)?;
        let mut found_halves = Vec::new();
        for found in checks.range(range).map_err(read_error)?.take(limit) {
            let (last_touch_ms, physical) = found.map_err(read_error)?.0.value();
            let checks = halves
                .get(physical)
                .map_err(read_error)?
                .map_or(0, |value| value.value().1);
            found_halves.push(PendingHalf {
                physical,
                last_touch_ms,
                checks,
            });
        }
        Ok(found_halves)
    }

    /// Messages of `topic` indexed under `key` (of `kind`) and stored within
    /// `begin_ms ..= end_ms`, oldest bucket first, at most `max`.
    pub fn query_keys(
        &self,
        topic: &str,
        kind: KeyKind,
        key: &str,
        begin_ms: i64,
        end_ms: i64,
        max: usize,
    ) -> Result<Vec<KeyHit>, StateReadError> {
        let txn = self.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(indexes::KEY_INDEX).map_err(read_error)?;
        let kind = kind as u8;
        let mut hits = Vec::new();
        // Only the buckets the table holds: a query over all time costs what is retained.
        let (Some(oldest), Some(newest)) = (
            table.first().map_err(read_error)?,
            table.last().map_err(read_error)?,
        ) else {
            return Ok(hits);
        };
        let first_bucket = indexes::key_bucket(begin_ms).max(oldest.0.value().0);
        let last_bucket = indexes::key_bucket(end_ms).min(newest.0.value().0);
        for bucket in first_bucket..=last_bucket {
            let range = (bucket, topic, kind, key, 0)..=(bucket, topic, kind, key, u64::MAX);
            for found in table.range(range).map_err(read_error)? {
                let (row_key, value) = found.map_err(read_error)?;
                let (store_ms, queue_id, queue_offset) = value.value();
                if store_ms < begin_ms || store_ms > end_ms {
                    continue;
                }
                hits.push(KeyHit {
                    physical: row_key.value().4,
                    store_ms,
                    queue_id,
                    queue_offset,
                });
                if hits.len() >= max {
                    return Ok(hits);
                }
            }
        }
        Ok(hits)
    }
}

pub(super) fn to_row(first_offset: u64, value: super::tables::IndexValue) -> IndexRow {
    let (log_index, unit_index, first_ordinal, count, store_timestamp_ms, bytes) = value;
    IndexRow {
        first_offset,
        log_index,
        unit_index,
        first_ordinal,
        count,
        store_timestamp_ms,
        bytes,
    }
}
