//! The state machine's indexes of pending and findable messages, written during apply inside the
//! apply's redb transaction and read by the leader's background tasks and by queries:
//!
//! | table | key -> value | what for |
//! |---|---|---|
//! | `timers` | (due ms, physical) -> () | timer messages waiting, in due order ([`crate::timer`]) |
//! | `timers_by_log` | physical -> due ms | the same, by log position (dropping below a log index) |
//! | `half_messages` | half physical -> (last touch ms, check count) | pending transactions |
//! | `half_checks` | (last touch ms, half physical) -> () | the same, oldest first ([`crate::transaction`]) |
//! | `key_index` | (bucket, topic, kind, key, physical) -> (store ms, queue, queue offset) | QUERY_MESSAGE by key or unique key; the dedup window |
//!
//! Nothing here is held in memory: a million pending timers are a million small rows on disk.
//! Every table is keyed so that what retention drops is a range: timers and half messages by log
//! index ([`Indexes::drop_below_log_index`]), the key index by time
//! ([`Indexes::drop_keys_older_than`]), whole buckets of [`KEY_INDEX_BUCKET_MS`] at once.

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::command::{Location, PHYSICAL_OFFSET_ORDINAL_BITS};
use raftmq_raft::StateMachineError;

/// `(due ms, physical offset)` -> ()
pub const TIMERS: TableDefinition<(i64, u64), ()> = TableDefinition::new("timers");
/// physical offset -> due ms
pub const TIMERS_BY_LOG: TableDefinition<u64, i64> = TableDefinition::new("timers_by_log");
/// half message physical offset -> (last touch ms, check count); the last touch is its store
/// time until it is first checked, then the time of its last check.
pub const HALF_MESSAGES: TableDefinition<u64, (i64, u32)> = TableDefinition::new("half_messages");
/// `(last touch ms, half physical offset)` -> ()
pub const HALF_CHECKS: TableDefinition<(i64, u64), ()> = TableDefinition::new("half_checks");
/// `(bucket, topic, kind, key, physical offset)` -> `(store ms, queue id, queue offset)`
pub const KEY_INDEX: TableDefinition<KeyIndexKey, (i64, u32, u64)> =
    TableDefinition::new("key_index");

/// `(bucket, topic, kind, key, physical offset)`
pub type KeyIndexKey<'a> = (u64, &'a str, u8, &'a str, u64);

/// The names of every table here (a snapshot install drops and recreates them).
pub const TABLE_NAMES: [&str; 5] = [
    "timers",
    "timers_by_log",
    "half_messages",
    "half_checks",
    "key_index",
];

/// Key index rows are grouped by store time in buckets of this length: a query by time range
/// reads only its buckets, and retention drops whole buckets.
pub const KEY_INDEX_BUCKET_MS: i64 = 60_000;
/// Keys of one message's `KEYS` property that are indexed; more are ignored.
pub const MAX_KEYS_PER_MESSAGE: usize = 32;
/// The longest key indexed; longer keys are not indexed (and cannot be queried).
pub const MAX_INDEXED_KEY_BYTES: usize = 512;

/// What a key index row was made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyKind {
    /// One of the keys of the `KEYS` property.
    Key = 0,
    /// The `UNIQ_KEY` property (what RocketMQ clients call the message id).
    Unique = 1,
}

/// The bucket of a store time.
pub fn key_bucket(store_ms: i64) -> u64 {
    (store_ms.max(0) / KEY_INDEX_BUCKET_MS) as u64
}

/// The first physical offset of entry `log_index`.
fn first_physical_of(log_index: u64) -> u64 {
    log_index.saturating_mul(1 << PHYSICAL_OFFSET_ORDINAL_BITS)
}

fn storage(err: impl Into<redb::Error>) -> StateMachineError {
    StateMachineError::from_redb(err)
}

/// The index tables, open in one apply's write transaction.
pub struct Indexes<'txn> {
    timers: Table<'txn, (i64, u64), ()>,
    timers_by_log: Table<'txn, u64, i64>,
    halves: Table<'txn, u64, (i64, u32)>,
    half_checks: Table<'txn, (i64, u64), ()>,
    keys: Table<'txn, KeyIndexKey<'static>, (i64, u32, u64)>,
}

/// Creates the tables if they do not exist yet.
pub fn create_tables(txn: &WriteTransaction) -> Result<(), StateMachineError> {
    Indexes::open(txn).map(drop)
}

impl<'txn> Indexes<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, StateMachineError> {
        Ok(Self {
            timers: txn.open_table(TIMERS).map_err(storage)?,
            timers_by_log: txn.open_table(TIMERS_BY_LOG).map_err(storage)?,
            halves: txn.open_table(HALF_MESSAGES).map_err(storage)?,
            half_checks: txn.open_table(HALF_CHECKS).map_err(storage)?,
            keys: txn.open_table(KEY_INDEX).map_err(storage)?,
        })
    }

    /// A timer message stored at `physical`, due at `due_ms`.
    pub fn add_timer(&mut self, due_ms: i64, physical: u64) -> Result<(), StateMachineError> {
        self.timers
            .insert((due_ms, physical), ())
            .map_err(storage)?;
        self.timers_by_log
            .insert(physical, due_ms)
            .map_err(storage)?;
        Ok(())
    }

    /// Consumes a pending timer; false if it is not pending (released before, or dropped).
    pub fn take_timer(&mut self, due_ms: i64, physical: u64) -> Result<bool, StateMachineError> {
        let found = self
            .timers
            .remove((due_ms, physical))
            .map_err(storage)?
            .is_some();
        if found {
            self.timers_by_log.remove(physical).map_err(storage)?;
        }
        Ok(found)
    }

    /// A half message stored at `physical` at `store_ms`: a pending transaction.
    pub fn add_half(&mut self, physical: u64, store_ms: i64) -> Result<(), StateMachineError> {
        self.halves
            .insert(physical, (store_ms, 0))
            .map_err(storage)?;
        self.half_checks
            .insert((store_ms, physical), ())
            .map_err(storage)?;
        Ok(())
    }

    /// Counts a check of a pending transaction made at `checked_at_ms`; false if it is not
    /// pending any more.
    pub fn touch_half(
        &mut self,
        physical: u64,
        checked_at_ms: i64,
    ) -> Result<bool, StateMachineError> {
        let Some((last_touch_ms, checks)) = self
            .halves
            .get(physical)
            .map_err(storage)?
            .map(|value| value.value())
        else {
            return Ok(false);
        };
        self.half_checks
            .remove((last_touch_ms, physical))
            .map_err(storage)?;
        self.halves
            .insert(physical, (checked_at_ms, checks.saturating_add(1)))
            .map_err(storage)?;
        self.half_checks
            .insert((checked_at_ms, physical), ())
            .map_err(storage)?;
        Ok(true)
    }

    /// Consumes a pending transaction (it is committed, rolled back or discarded); false if it
    /// is not pending.
    pub fn take_half(&mut self, physical: u64) -> Result<bool, StateMachineError> {
        let Some((last_touch_ms, _)) = self
            .halves
            .remove(physical)
            .map_err(storage)?
            .map(|value| value.value())
        else {
            return Ok(false);
        };
        self.half_checks
            .remove((last_touch_ms, physical))
            .map_err(storage)?;
        Ok(true)
    }

    /// Indexes a stored message under `key`.
    pub fn add_key(
        &mut self,
        topic: &str,
        kind: KeyKind,
        key: &str,
        store_ms: i64,
        at: Location,
    ) -> Result<(), StateMachineError> {
        if key.is_empty() || key.len() > MAX_INDEXED_KEY_BYTES {
            return Ok(());
        }
        self.keys
            .insert(
                (key_bucket(store_ms), topic, kind as u8, key, at.physical),
                (store_ms, at.queue_id, at.queue_offset),
            )
            .map_err(storage)?;
        Ok(())
    }

    /// The first message of `topic` stored in `since_ms ..= until_ms` whose `UNIQ_KEY` is
    /// `uniq`.
    pub fn find_unique(
        &self,
        topic: &str,
        uniq: &str,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Option<Location>, StateMachineError> {
        if uniq.is_empty() || uniq.len() > MAX_INDEXED_KEY_BYTES {
            return Ok(None);
        }
        let (first_bucket, last_bucket) = (key_bucket(since_ms), key_bucket(until_ms));
        let kind = KeyKind::Unique as u8;
        for bucket in first_bucket..=last_bucket {
            let range = (bucket, topic, kind, uniq, 0)..=(bucket, topic, kind, uniq, u64::MAX);
            for found in self.keys.range(range).map_err(storage)? {
                let (key, value) = found.map_err(storage)?;
                let (store_ms, queue_id, queue_offset) = value.value();
                if store_ms >= since_ms {
                    return Ok(Some(Location {
                        queue_id,
                        queue_offset,
                        physical: key.value().4,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Drops the pending timers and transactions whose messages are below entry `log_index`
    /// (retention deleted, or is about to delete, the log they are in). Returns how many.
    pub fn drop_below_log_index(&mut self, log_index: u64) -> Result<u64, StateMachineError> {
        let below = first_physical_of(log_index);
        let mut dropped = 0;
        let mut timers = Vec::new();
        for found in self.timers_by_log.range(..below).map_err(storage)? {
            let (physical, due_ms) = found.map_err(storage)?;
            timers.push((physical.value(), due_ms.value()));
        }
        for (physical, due_ms) in timers {
            self.timers.remove((due_ms, physical)).map_err(storage)?;
            dropped += 1;
        }
        self.timers_by_log
            .retain_in(..below, |_, _| false)
            .map_err(storage)?;
        let mut halves = Vec::new();
        for found in self.halves.range(..below).map_err(storage)? {
            let (physical, value) = found.map_err(storage)?;
            halves.push((physical.value(), value.value().0));
        }
        for (physical, last_touch_ms) in halves {
            self.half_checks
                .remove((last_touch_ms, physical))
                .map_err(storage)?;
            dropped += 1;
        }
        self.halves
            .retain_in(..below, |_, _| false)
            .map_err(storage)?;
        Ok(dropped)
    }

    /// Drops the key index rows of messages stored before `time_ms` (retention deleted their
    /// messages): whole buckets, then the older rows of the bucket `time_ms` falls in.
    pub fn drop_keys_older_than(&mut self, time_ms: i64) -> Result<(), StateMachineError> {
        let bucket = key_bucket(time_ms);
        self.keys
            .retain_in(..(bucket, "", 0, "", 0), |_, _| false)
            .map_err(storage)?;
        self.keys
            .retain_in(
                (bucket, "", 0, "", 0)..(bucket.saturating_add(1), "", 0, "", 0),
                |_, (store_ms, _, _)| store_ms >= time_ms,
            )
            .map_err(storage)?;
        Ok(())
    }
}

/// Every row of the index tables, as a snapshot carries them.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct IndexImage {
    /// `(due ms, physical)`
    timers: Vec<(i64, u64)>,
    /// `(physical, last touch ms, check count)`
    halves: Vec<(u64, i64, u32)>,
    keys: Vec<KeyRow>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct KeyRow {
    bucket: u64,
    topic: String,
    kind: u8,
    key: String,
    physical: u64,
    store_ms: i64,
    queue_id: u32,
    queue_offset: u64,
}

impl IndexImage {
    fn rows(&self) -> usize {
        self.timers.len() + self.halves.len() + self.keys.len()
    }
}

/// Reads every index row (for a snapshot) and hands them on in parts of at most
/// `rows_per_part` rows, so that the image of a large key index is never in memory whole.
pub fn image_in_parts(
    txn: &redb::ReadTransaction,
    rows_per_part: usize,
    mut emit: impl FnMut(IndexImage) -> Result<(), StateMachineError>,
) -> Result<(), StateMachineError> {
    let rows_per_part = rows_per_part.max(1);
    let mut part = IndexImage::default();
    let mut full = |part: &mut IndexImage| -> Result<(), StateMachineError> {
        if part.rows() >= rows_per_part {
            emit(std::mem::take(part))?;
        }
        Ok(())
    };
    for found in txn
        .open_table(TIMERS)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, _) = found.map_err(storage)?;
        part.timers.push(key.value());
        full(&mut part)?;
    }
    for found in txn
        .open_table(HALF_MESSAGES)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, value) = found.map_err(storage)?;
        let (last_touch_ms, checks) = value.value();
        part.halves.push((key.value(), last_touch_ms, checks));
        full(&mut part)?;
    }
    for found in txn
        .open_table(KEY_INDEX)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, value) = found.map_err(storage)?;
        let (bucket, topic, kind, indexed, physical) = key.value();
        let (store_ms, queue_id, queue_offset) = value.value();
        part.keys.push(KeyRow {
            bucket,
            topic: topic.to_string(),
            kind,
            key: indexed.to_string(),
            physical,
            store_ms,
            queue_id,
            queue_offset,
        });
        full(&mut part)?;
    }
    if part.rows() > 0 {
        emit(part)?;
    }
    Ok(())
}

/// Writes a part of a snapshot's index rows into emptied tables.
pub fn restore(txn: &WriteTransaction, image: &IndexImage) -> Result<(), StateMachineError> {
    let mut indexes = Indexes::open(txn)?;
    for (due_ms, physical) in &image.timers {
        indexes.add_timer(*due_ms, *physical)?;
    }
    for (physical, last_touch_ms, checks) in &image.halves {
        indexes
            .halves
            .insert(*physical, (*last_touch_ms, *checks))
            .map_err(storage)?;
        indexes
            .half_checks
            .insert((*last_touch_ms, *physical), ())
            .map_err(storage)?;
    }
    for row in &image.keys {
        indexes
            .keys
            .insert(
                (
                    row.bucket,
                    row.topic.as_str(),
                    row.kind,
                    row.key.as_str(),
                    row.physical,
                ),
                (row.store_ms, row.queue_id, row.queue_offset),
            )
            .map_err(storage)?;
    }
    Ok(())
}
