//! The broker state machine: what applying committed entries does to a broker group's state.
//!
//! It holds only small things (ARCHITECTURE.md decision 2): the per-queue index, consumer
//! offsets, topic and group configs, the applied log id and membership, all written in one redb
//! transaction per applied batch. Message bytes stay in the Raft log.
//!
//! Reading order: [`apply`] (what each command does), then [`BrokerStateMachine::apply`] here
//! (one transaction per batch, then publish to readers), then [`state`] (what processors read).

mod apply;
pub mod indexes;
pub mod pop;
pub mod state;
mod tables;

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::command::{decode_entry, encode_applied};
use apply::{Touched, apply_command};
use indexes::Indexes;
use raftmq_raft::{
    AppResponse, Entry, EntryPayload, LogId, SnapshotMeta, StateMachine, StateMachineError,
    StoredMembership,
};
pub use state::{BrokerState, IndexRow, MemState, QueueKey, QueueState};
use tables::*;

/// Applies between durable (fsynced) state machine commits. The commits in between are atomic
/// but may be lost in a crash; that is safe because the Raft log holds every committed entry and
/// openraft re-applies from the last durable applied id on restart. It saves an fsync per apply.
pub const APPLIES_PER_DURABLE_COMMIT: u32 = 64;

/// redb's page cache for the state machine. redb's default (1 GiB) grows with what is written,
/// so a broker holding a million pending timers (rows in the timer and key indexes) kept
/// hundreds of MB of pages in memory; the rows are read by range and the OS caches the file.
pub const STATE_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The broker's implementation of the raft crate's [`StateMachine`].
pub struct BrokerStateMachine {
    db: Arc<Database>,
    /// The writer's own copy of the state; readers see `shared`, updated after each commit.
    private: MemState,
    shared: Arc<BrokerState>,
    applies_since_durable: u32,
    /// The meta values the database holds, so that a commit rewrites only the ones that
    /// changed (`None`: not known, written at the next commit).
    stored_meta: StoredMeta,
    /// Set at the first failure: a state machine that failed half-way never applies again.
    failed: Option<StateMachineError>,
}

/// The membership and last store timestamp as last written to the `meta` table. Most applies
/// change neither (a membership changes rarely; a store timestamp only from one millisecond to
/// the next), and each insert skipped saves a B-tree update in every apply's transaction.
#[derive(Debug, Default)]
struct StoredMeta {
    membership: Option<StoredMembership>,
    last_store_timestamp_ms: Option<i64>,
}

impl StoredMeta {
    fn as_written(mem: &MemState) -> Self {
        StoredMeta {
            membership: Some(mem.membership.clone()),
            last_store_timestamp_ms: Some(mem.last_store_timestamp_ms),
        }
    }
}

/// Index rows or log times per frame of a snapshot image: bounds the memory of writing and
/// installing an image, whatever the size of the state.
pub const IMAGE_ROWS_PER_FRAME: usize = 4096;

/// One frame of the state machine's snapshot image (`raftmq_raft::snapshot::write_frame`): the
/// small state first, then the queue index, the log times and the timer, transaction and key
/// indexes in frames of at most [`IMAGE_ROWS_PER_FRAME`] rows.
#[derive(Serialize, Deserialize)]
enum ImageFrame {
    Mem(Box<MemState>),
    IndexRows(Vec<(String, u32, IndexRow)>),
    LogTimes(Vec<(u64, i64)>),
    Indexes(Box<indexes::IndexImage>),
    /// POP state, [`IMAGE_ROWS_PER_FRAME`] queues at most per frame (last: images written
    /// before POP existed simply have none).
    Pop(Vec<(pop::PopKey, pop::PopQueue)>),
}

/// A redb error, by kind (full disk, I/O, corrupt file, ...).
fn storage(err: impl Into<redb::Error>) -> StateMachineError {
    StateMachineError::from_redb(err)
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> StateMachineError {
    StateMachineError::Corrupt {
        reason: format!("{what}: {err}"),
    }
}

impl BrokerStateMachine {
    /// Opens (or creates) the state machine database at `path` and loads its small state.
    pub fn open(path: &Path) -> Result<Self, StateMachineError> {
        let open_error = |source: StateMachineError| StateMachineError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        // Every page's checksum is verified at open (redb does it after a crash anyway): a file
        // damaged on disk is refused with an error naming it, where a plain open may panic
        // or trust it. The cost is one read of the file per start.
        let db = Database::builder()
            .set_cache_size(STATE_CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|err| open_error(storage(err)))?;
        create_tables(&db).map_err(open_error)?;
        let private = load(&db).map_err(open_error)?;
        let db = Arc::new(db);
        let shared = Arc::new(BrokerState::new(db.clone(), private.clone()));
        Ok(Self {
            db,
            stored_meta: StoredMeta::as_written(&private),
            private,
            shared,
            applies_since_durable: 0,
            failed: None,
        })
    }

    /// The applied state, for processors to read.
    pub fn state(&self) -> Arc<BrokerState> {
        self.shared.clone()
    }

    fn check_not_failed(&self) -> Result<(), StateMachineError> {
        match &self.failed {
            Some(first) => Err(StateMachineError::PreviousFailure {
                first: Box::new(first.clone()),
            }),
            None => Ok(()),
        }
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
    ) -> Result<Vec<AppResponse>, StateMachineError> {
        let txn = self.begin_write()?;
        let mut touched = Touched::default();
        let mut responses = Vec::with_capacity(entries.len());
        let mut indexes = Indexes::open(&txn)?;
        for entry in entries {
            let log_id = entry.log_id;
            if let Some(applied) = self.private.applied
                && log_id.index <= applied.index
            {
                return Err(StateMachineError::Invariant {
                    index: log_id.index,
                    reason: format!("applied out of order after index {}", applied.index),
                });
            }
            let response = match entry.payload {
                EntryPayload::Blank => AppResponse::default(),
                EntryPayload::Membership(membership) => {
                    self.private.membership = StoredMembership::new(Some(log_id), membership);
                    AppResponse::default()
                }
                EntryPayload::Normal(request) => {
                    let decoded =
                        decode_entry(&request.0).map_err(|err| StateMachineError::Invariant {
                            index: log_id.index,
                            reason: err.to_string(),
                        })?;
                    let applied = apply_command(
                        &mut self.private,
                        &mut touched,
                        &mut indexes,
                        log_id.index,
                        &decoded,
                    )?;
                    let bytes =
                        encode_applied(&applied).map_err(|err| StateMachineError::Invariant {
                            index: log_id.index,
                            reason: err.to_string(),
                        })?;
                    AppResponse(bytes)
                }
            };
            self.private.applied = Some(log_id);
            responses.push(response);
        }
        if let Some(from) = touched.retain_from {
            // Pending timers and transactions whose messages retention removes go with them,
            // and so do the key index rows of those messages.
            indexes.drop_below_log_index(from)?;
            if let Some(first_kept_ms) = self.store_time_from(from)? {
                indexes.drop_keys_older_than(first_kept_ms)?;
            }
            self.drop_below(from, &mut touched)?;
            pop::drop_below_queue_minimum(&mut self.private, &mut touched);
        }
        drop(indexes);
        self.persist(txn, &touched)?;
        self.publish(&touched);
        Ok(responses)
    }

    /// The store time of the first entry at or after `log_index` that stored messages.
    fn store_time_from(&self, log_index: u64) -> Result<Option<i64>, StateMachineError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let times = txn.open_table(LOG_TIMES).map_err(storage)?;
        let first = times.range(log_index..).map_err(storage)?.next();
        match first {
            None => Ok(None),
            Some(found) => Ok(Some(found.map_err(storage)?.1.value())),
        }
    }

    /// The write transaction of one apply: durable (fsynced) every
    /// [`APPLIES_PER_DURABLE_COMMIT`] applies.
    fn begin_write(&mut self) -> Result<WriteTransaction, StateMachineError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        self.applies_since_durable += 1;
        let durability = if self.applies_since_durable >= APPLIES_PER_DURABLE_COMMIT {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(storage)?;
        Ok(txn)
    }

    /// Retention: finds every queue's index rows of log entries below `from` (they are in order
    /// of offset, which is the order of log index), drops them, and moves the queue's minimum
    /// offset to its first row left (or to its end). Deterministic: it reads only applied state.
    fn drop_below(&mut self, from: u64, touched: &mut Touched) -> Result<(), StateMachineError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let index = txn.open_table(QUEUE_INDEX).map_err(storage)?;
        let keys: Vec<QueueKey> = self.private.queues.keys().cloned().collect();
        for key in keys {
            let (topic, queue_id) = (key.0.as_str(), key.1);
            let range = (topic, queue_id, 0u64)..=(topic, queue_id, u64::MAX);
            let mut dropped_bytes = 0u64;
            let mut first_kept = None;
            for row in index.range(range).map_err(storage)? {
                let (row_key, value) = row.map_err(storage)?;
                let row = state::to_row(row_key.value().2, value.value());
                if row.log_index >= from {
                    first_kept = Some(row.first_offset);
                    break;
                }
                dropped_bytes += row.bytes;
                touched
                    .dropped_rows
                    .push((key.0.clone(), queue_id, row.first_offset));
            }
            // Rows added by this batch are not on disk yet; they all sit at or above `from`.
            let first_new = touched
                .index_rows
                .iter()
                .find(|(t, q, _)| t == topic && *q == queue_id)
                .map(|(_, _, row)| row.first_offset);
            let Some(queue) = self.private.queues.get_mut(&key) else {
                continue;
            };
            let new_min = first_kept.or(first_new).unwrap_or(queue.next_offset);
            if new_min > queue.min_offset || dropped_bytes > 0 {
                queue.min_offset = queue.min_offset.max(new_min);
                queue.bytes = queue.bytes.saturating_sub(dropped_bytes);
                touched.queues.insert(key);
            }
        }
        Ok(())
    }

    /// Writes what `touched` names, with the applied log id and membership, in one transaction.
    /// Only the tables with something to write are opened, and only the meta values that
    /// changed are rewritten: each open and each insert is a B-tree walk in every apply's
    /// transaction (bench/RESULTS.md, "Where the time goes").
    fn persist(
        &mut self,
        txn: WriteTransaction,
        touched: &Touched,
    ) -> Result<(), StateMachineError> {
        let durable = self.applies_since_durable >= APPLIES_PER_DURABLE_COMMIT;
        self.write_changes(&txn, touched)?;
        txn.commit().map_err(storage)?;
        self.stored_meta = StoredMeta::as_written(&self.private);
        if durable {
            self.applies_since_durable = 0;
        }
        Ok(())
    }

    /// Writes what `touched` names (from the private state), with the applied log id and
    /// membership, into `txn`.
    fn write_changes(
        &self,
        txn: &redb::WriteTransaction,
        touched: &Touched,
    ) -> Result<(), StateMachineError> {
        {
            let state = &self.private;
            write_configs(txn, TOPICS, &touched.topics, |t| state.topics.get(t))?;
            write_configs(txn, GROUPS, &touched.groups, |g| state.groups.get(g))?;

            if !touched.queues.is_empty() {
                let mut queues = txn.open_table(QUEUES).map_err(storage)?;
                for key in &touched.queues {
                    match state.queues.get(key) {
                        Some(q) => queues.insert(
                            (key.0.as_str(), key.1),
                            (q.next_offset, q.min_offset, q.bytes),
                        ),
                        None => queues.remove((key.0.as_str(), key.1)),
                    }
                    .map_err(storage)?;
                }
            }

            if !touched.consumer_offsets.is_empty() {
                let mut offsets = txn.open_table(CONSUMER_OFFSETS).map_err(storage)?;
                for key in &touched.consumer_offsets {
                    let table_key = (key.0.as_str(), key.1.as_str(), key.2);
                    match state.consumer_offsets.get(key) {
                        Some(offset) => offsets.insert(table_key, *offset),
                        None => offsets.remove(table_key),
                    }
                    .map_err(storage)?;
                }
            }

            if !touched.deleted_topics.is_empty()
                || !touched.dropped_rows.is_empty()
                || !touched.index_rows.is_empty()
            {
                let mut index = txn.open_table(QUEUE_INDEX).map_err(storage)?;
                for topic in &touched.deleted_topics {
                    let range = (topic.as_str(), 0u32, 0u64)..=(topic.as_str(), u32::MAX, u64::MAX);
                    index.retain_in(range, |_, _| false).map_err(storage)?;
                }
                for (topic, queue_id, first_offset) in &touched.dropped_rows {
                    index
                        .remove((topic.as_str(), *queue_id, *first_offset))
                        .map_err(storage)?;
                }
                for (topic, queue_id, row) in &touched.index_rows {
                    let value = (
                        row.log_index,
                        row.unit_index,
                        row.first_ordinal,
                        row.count,
                        row.store_timestamp_ms,
                        row.bytes,
                    );
                    index
                        .insert((topic.as_str(), *queue_id, row.first_offset), value)
                        .map_err(storage)?;
                }
            }

            if !touched.pop_queues.is_empty() {
                let mut table = txn.open_table(POP_QUEUES).map_err(storage)?;
                for key in &touched.pop_queues {
                    let table_key = (key.0.as_str(), key.1.as_str(), key.2);
                    match state.pop.get(key) {
                        Some(queue) => table.insert(table_key, encode_meta(queue)?.as_slice()),
                        None => table.remove(table_key),
                    }
                    .map_err(storage)?;
                }
            }

            if !touched.log_times.is_empty() || touched.retain_from.is_some() {
                let mut log_times = txn.open_table(LOG_TIMES).map_err(storage)?;
                for (log_index, store_ms) in &touched.log_times {
                    log_times.insert(*log_index, *store_ms).map_err(storage)?;
                }
                if let Some(from) = touched.retain_from {
                    log_times.retain_in(..from, |_, _| false).map_err(storage)?;
                }
            }

            let mut meta = txn.open_table(META).map_err(storage)?;
            if touched.acl {
                meta.insert(META_ACL, encode_meta(&state.acl)?.as_slice())
                    .map_err(storage)?;
            }
            if touched.retain_from.is_some() {
                let floor = encode_meta(&state.retention_floor)?;
                meta.insert(META_RETENTION_FLOOR, floor.as_slice())
                    .map_err(storage)?;
            }
            if let Some(applied) = &state.applied {
                meta.insert(META_APPLIED, encode_meta(applied)?.as_slice())
                    .map_err(storage)?;
            }
            if self.stored_meta.membership.as_ref() != Some(&state.membership) {
                meta.insert(META_MEMBERSHIP, encode_meta(&state.membership)?.as_slice())
                    .map_err(storage)?;
            }
            if self.stored_meta.last_store_timestamp_ms != Some(state.last_store_timestamp_ms) {
                let last_store = encode_meta(&state.last_store_timestamp_ms)?;
                meta.insert(META_LAST_STORE_TIMESTAMP, last_store.as_slice())
                    .map_err(storage)?;
            }
        }
        Ok(())
    }

    /// Copies what changed into the readers' state and wakes long polls.
    fn publish(&self, touched: &Touched) {
        let private = &self.private;
        self.shared.publish(|shared| {
            shared.applied = private.applied;
            shared.membership = private.membership.clone();
            shared.last_store_timestamp_ms = private.last_store_timestamp_ms;
            shared.retention_floor = private.retention_floor;
            if touched.acl {
                shared.acl = private.acl.clone();
            }
            copy_keys(&touched.topics, &private.topics, &mut shared.topics);
            copy_keys(&touched.groups, &private.groups, &mut shared.groups);
            copy_keys(&touched.queues, &private.queues, &mut shared.queues);
            copy_keys(
                &touched.consumer_offsets,
                &private.consumer_offsets,
                &mut shared.consumer_offsets,
            );
            copy_keys(&touched.pop_queues, &private.pop, &mut shared.pop);
        });
    }

    /// Writes the snapshot image: the small state, then the index rows and log times read from
    /// one read transaction, a frame at a time.
    fn write_image(&self, out: &mut dyn std::io::Write) -> Result<(), StateMachineError> {
        use raftmq_raft::snapshot::write_frame;
        let io = StateMachineError::from_io;
        let txn = self.db.begin_read().map_err(storage)?;
        write_frame(out, &ImageFrame::Mem(Box::new(self.private.clone()))).map_err(io)?;
        let mut rows = Vec::with_capacity(IMAGE_ROWS_PER_FRAME);
        for found in txn
            .open_table(QUEUE_INDEX)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (key, value) = found.map_err(storage)?;
            let (topic, queue_id, first_offset) = key.value();
            rows.push((
                topic.to_string(),
                queue_id,
                state::to_row(first_offset, value.value()),
            ));
            if rows.len() == IMAGE_ROWS_PER_FRAME {
                write_frame(out, &ImageFrame::IndexRows(std::mem::take(&mut rows))).map_err(io)?;
            }
        }
        if !rows.is_empty() {
            write_frame(out, &ImageFrame::IndexRows(rows)).map_err(io)?;
        }
        let mut times = Vec::with_capacity(IMAGE_ROWS_PER_FRAME);
        for found in txn
            .open_table(LOG_TIMES)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (index, store_ms) = found.map_err(storage)?;
            times.push((index.value(), store_ms.value()));
            if times.len() == IMAGE_ROWS_PER_FRAME {
                write_frame(out, &ImageFrame::LogTimes(std::mem::take(&mut times))).map_err(io)?;
            }
        }
        if !times.is_empty() {
            write_frame(out, &ImageFrame::LogTimes(times)).map_err(io)?;
        }
        indexes::image_in_parts(&txn, IMAGE_ROWS_PER_FRAME, |part| {
            write_frame(out, &ImageFrame::Indexes(Box::new(part))).map_err(io)
        })?;
        let pop_queues: Vec<_> = self.private.pop.iter().collect();
        for part in pop_queues.chunks(IMAGE_ROWS_PER_FRAME) {
            let part: Vec<_> = part
                .iter()
                .map(|(key, queue)| ((*key).clone(), (*queue).clone()))
                .collect();
            write_frame(out, &ImageFrame::Pop(part)).map_err(io)?;
        }
        out.flush().map_err(io)
    }

    /// Replaces the whole state with an image, in one durable transaction (a crash leaves the
    /// old state or the new), reading it a frame at a time.
    fn install_image(
        &mut self,
        meta: &SnapshotMeta,
        image: &mut dyn std::io::Read,
    ) -> Result<(), StateMachineError> {
        use raftmq_raft::snapshot::read_frame;
        let corrupt = |e: std::io::Error| StateMachineError::CorruptSnapshot(e.to_string());
        let Some(ImageFrame::Mem(mem)) = read_frame::<ImageFrame>(image).map_err(corrupt)? else {
            return Err(StateMachineError::CorruptSnapshot(
                "the image does not start with the small state".into(),
            ));
        };
        let mut mem = *mem;
        // The snapshot's own metadata is authoritative for what it covers.
        mem.applied = meta.last_log_id;
        mem.membership = meta.last_membership.clone();

        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        for name in [
            "meta",
            "topics",
            "groups",
            "queues",
            "consumer_offsets",
            "queue_index",
            "log_times",
            "pop_queues",
        ]
        .into_iter()
        .chain(indexes::TABLE_NAMES)
        {
            txn.delete_table(TableDefinition::<&str, &[u8]>::new(name))
                .map_err(storage)?;
        }
        // Every table exists again (readers open them), and every meta value is written.
        open_all_tables(&txn)?;
        self.stored_meta = StoredMeta::default();
        self.private = mem;
        let touched = Touched {
            topics: self.private.topics.keys().cloned().collect(),
            groups: self.private.groups.keys().cloned().collect(),
            queues: self.private.queues.keys().cloned().collect(),
            consumer_offsets: self.private.consumer_offsets.keys().cloned().collect(),
            retain_from: Some(self.private.retention_floor),
            acl: true,
            ..Touched::default()
        };
        self.write_changes(&txn, &touched)?;
        {
            let mut index = txn.open_table(QUEUE_INDEX).map_err(storage)?;
            let mut log_times = txn.open_table(LOG_TIMES).map_err(storage)?;
            while let Some(frame) = read_frame::<ImageFrame>(image).map_err(corrupt)? {
                match frame {
                    ImageFrame::Mem(_) => {
                        return Err(StateMachineError::CorruptSnapshot(
                            "a second small state in the image".into(),
                        ));
                    }
                    ImageFrame::IndexRows(rows) => {
                        for (topic, queue_id, row) in rows {
                            let value = (
                                row.log_index,
                                row.unit_index,
                                row.first_ordinal,
                                row.count,
                                row.store_timestamp_ms,
                                row.bytes,
                            );
                            index
                                .insert((topic.as_str(), queue_id, row.first_offset), value)
                                .map_err(storage)?;
                        }
                    }
                    ImageFrame::LogTimes(times) => {
                        for (log_index, store_ms) in times {
                            log_times.insert(log_index, store_ms).map_err(storage)?;
                        }
                    }
                    ImageFrame::Indexes(part) => indexes::restore(&txn, &part)?,
                    ImageFrame::Pop(part) => {
                        let mut table = txn.open_table(POP_QUEUES).map_err(storage)?;
                        for (key, queue) in part {
                            table
                                .insert(
                                    (key.0.as_str(), key.1.as_str(), key.2),
                                    encode_meta(&queue)?.as_slice(),
                                )
                                .map_err(storage)?;
                            self.private.pop.insert(key, queue);
                        }
                    }
                }
            }
        }
        txn.commit().map_err(storage)?;
        self.applies_since_durable = 0;
        self.stored_meta = StoredMeta::as_written(&self.private);
        let whole = self.private.clone();
        self.shared.publish(|shared| *shared = whole);
        Ok(())
    }
}

impl StateMachine for BrokerStateMachine {
    fn apply(&mut self, entries: Vec<Entry>) -> Result<Vec<AppResponse>, StateMachineError> {
        self.check_not_failed()?;
        let result = self.apply_entries(entries);
        if let Err(err) = &result {
            tracing::error!(error = %err, kind = %err.kind(), "broker state machine failed; it applies nothing more");
            self.failed = Some(err.clone());
        }
        result
    }

    fn applied_state(&self) -> (Option<LogId>, StoredMembership) {
        (self.private.applied, self.private.membership.clone())
    }

    /// Only every [`APPLIES_PER_DURABLE_COMMIT`]th apply fsyncs; the others are in-memory work
    /// and a non-durable redb commit, cheap enough to run on openraft's task.
    fn next_apply_waits_for_disk(&self) -> bool {
        self.failed.is_none() && self.applies_since_durable + 1 >= APPLIES_PER_DURABLE_COMMIT
    }

    fn write_snapshot(
        &mut self,
        out: &mut dyn std::io::Write,
    ) -> Result<(Option<LogId>, StoredMembership), StateMachineError> {
        self.check_not_failed()?;
        self.write_image(out)?;
        Ok((self.private.applied, self.private.membership.clone()))
    }

    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        image: &mut dyn std::io::Read,
    ) -> Result<(), StateMachineError> {
        self.check_not_failed()?;
        let result = self.install_image(meta, image);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }
}

impl Drop for BrokerStateMachine {
    /// A clean stop makes the last non-durable commits durable, so a restart re-applies nothing.
    fn drop(&mut self) {
        if self.failed.is_some() || self.applies_since_durable == 0 {
            return;
        }
        let result = self
            .db
            .begin_write()
            .map_err(storage)
            .and_then(|txn| txn.commit().map_err(storage));
        if let Err(err) = result {
            tracing::warn!(error = %err, "final durable commit of the broker state failed");
        }
    }
}

fn encode_meta<T: Serialize>(value: &T) -> Result<Vec<u8>, StateMachineError> {
    raftmq_raft::codec::encode(value).map_err(|err| StateMachineError::Encode(err.to_string()))
}

fn copy_keys<K: Ord + Clone, V: Clone>(
    keys: &std::collections::BTreeSet<K>,
    from: &std::collections::BTreeMap<K, V>,
    to: &mut std::collections::BTreeMap<K, V>,
) {
    for key in keys {
        match from.get(key) {
            Some(value) => to.insert(key.clone(), value.clone()),
            None => to.remove(key),
        };
    }
}

fn write_configs<'a, T: Serialize + 'a>(
    txn: &redb::WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    keys: &std::collections::BTreeSet<String>,
    current: impl Fn(&str) -> Option<&'a T>,
) -> Result<(), StateMachineError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(table).map_err(storage)?;
    for key in keys {
        match current(key) {
            Some(value) => table.insert(key.as_str(), encode_meta(value)?.as_slice()),
            None => table.remove(key.as_str()),
        }
        .map_err(storage)?;
    }
    Ok(())
}

fn create_tables(db: &Database) -> Result<(), StateMachineError> {
    let txn = db.begin_write().map_err(storage)?;
    open_all_tables(&txn)?;
    txn.commit().map_err(storage)
}

/// Opens (so creates) every table in `txn`.
fn open_all_tables(txn: &redb::WriteTransaction) -> Result<(), StateMachineError> {
    txn.open_table(META).map_err(storage)?;
    txn.open_table(TOPICS).map_err(storage)?;
    txn.open_table(GROUPS).map_err(storage)?;
    txn.open_table(QUEUES).map_err(storage)?;
    txn.open_table(CONSUMER_OFFSETS).map_err(storage)?;
    txn.open_table(QUEUE_INDEX).map_err(storage)?;
    txn.open_table(LOG_TIMES).map_err(storage)?;
    txn.open_table(POP_QUEUES).map_err(storage)?;
    indexes::create_tables(txn)?;
    Ok(())
}

/// Reads the small state back from disk.
fn load(db: &Database) -> Result<MemState, StateMachineError> {
    let txn = db.begin_read().map_err(storage)?;
    let mut mem = MemState::default();

    let meta = txn.open_table(META).map_err(storage)?;
    if let Some(bytes) = meta.get(META_APPLIED).map_err(storage)? {
        mem.applied = Some(
            raftmq_raft::codec::decode(bytes.value()).map_err(|e| corrupt("applied log id", e))?,
        );
    }
    if let Some(bytes) = meta.get(META_MEMBERSHIP).map_err(storage)? {
        mem.membership =
            raftmq_raft::codec::decode(bytes.value()).map_err(|e| corrupt("membership", e))?;
    }
    if let Some(bytes) = meta.get(META_RETENTION_FLOOR).map_err(storage)? {
        mem.retention_floor =
            raftmq_raft::codec::decode(bytes.value()).map_err(|e| corrupt("retention floor", e))?;
    }
    if let Some(bytes) = meta.get(META_ACL).map_err(storage)? {
        mem.acl = raftmq_raft::codec::decode(bytes.value()).map_err(|e| corrupt("acl", e))?;
    }
    if let Some(bytes) = meta.get(META_LAST_STORE_TIMESTAMP).map_err(storage)? {
        mem.last_store_timestamp_ms = raftmq_raft::codec::decode(bytes.value())
            .map_err(|e| corrupt("last store timestamp", e))?;
    }
    for found in txn
        .open_table(TOPICS)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, value) = found.map_err(storage)?;
        let config =
            raftmq_raft::codec::decode(value.value()).map_err(|e| corrupt("topic config", e))?;
        mem.topics.insert(key.value().to_string(), config);
    }
    for found in txn
        .open_table(GROUPS)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, value) = found.map_err(storage)?;
        let config =
            raftmq_raft::codec::decode(value.value()).map_err(|e| corrupt("group config", e))?;
        mem.groups.insert(key.value().to_string(), config);
    }
    for found in txn
        .open_table(QUEUES)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, value) = found.map_err(storage)?;
        let (topic, queue_id) = key.value();
        let (next_offset, min_offset, bytes) = value.value();
        mem.queues.insert(
            (topic.to_string(), queue_id),
            QueueState {
                next_offset,
                min_offset,
                bytes,
            },
        );
    }
    for found in txn
        .open_table(CONSUMER_OFFSETS)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, value) = found.map_err(storage)?;
        let (group, topic, queue_id) = key.value();
        mem.consumer_offsets.insert(
            (group.to_string(), topic.to_string(), queue_id),
            value.value(),
        );
    }
    for found in txn
        .open_table(POP_QUEUES)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, value) = found.map_err(storage)?;
        let (group, topic, queue_id) = key.value();
        let queue =
            raftmq_raft::codec::decode(value.value()).map_err(|e| corrupt("pop queue", e))?;
        mem.pop
            .insert((group.to_string(), topic.to_string(), queue_id), queue);
    }
    Ok(mem)
}

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod pop_tests;
#[cfg(test)]
mod tests;
