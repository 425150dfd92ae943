//! The broker state machine: what applying committed entries does to a broker group's state.
//!
//! It holds only small things (ARCHITECTURE.md decision 2): the per-queue index, consumer
//! offsets, topic and group configs, the applied log id and membership, all written in one redb
//! transaction per applied batch. Message bytes stay in the Raft log.
//!
//! Reading order: [`apply`] (what each command does), then [`BrokerStateMachine::apply`] here
//! (one transaction per batch, then publish to readers), then [`state`] (what processors read).

mod apply;
pub mod state;
mod tables;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::command::{decode_entry, encode_applied};
use apply::{Touched, apply_command};
use raftmq_raft::{
    AppResponse, Entry, EntryPayload, LogId, SnapshotMeta, StateMachine, StateMachineError,
    StoredMembership,
};
pub use state::{BrokerState, IndexRow, MemState, QueueState};
use tables::*;

/// Applies between durable (fsynced) state machine commits. The commits in between are atomic
/// but may be lost in a crash; that is safe because the Raft log holds every committed entry and
/// openraft re-applies from the last durable applied id on restart. It saves an fsync per apply.
pub const APPLIES_PER_DURABLE_COMMIT: u32 = 64;

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
    fn as_loaded(mem: &MemState) -> Self {
        StoredMeta {
            membership: Some(mem.membership.clone()),
            last_store_timestamp_ms: Some(mem.last_store_timestamp_ms),
        }
    }
}

/// What a snapshot holds: the small state and every queue index row.
#[derive(Serialize, Deserialize)]
struct SnapshotImage {
    mem: MemState,
    index_rows: Vec<(String, u32, IndexRow)>,
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
        let db = Database::create(path).map_err(|err| open_error(storage(err)))?;
        create_tables(&db).map_err(open_error)?;
        let private = load(&db).map_err(open_error)?;
        let db = Arc::new(db);
        let shared = Arc::new(BrokerState::new(db.clone(), private.clone()));
        Ok(Self {
            db,
            stored_meta: StoredMeta::as_loaded(&private),
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
        let mut touched = Touched::default();
        let mut responses = Vec::with_capacity(entries.len());
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
                        log_id.index,
                        &decoded.command,
                    );
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
        self.persist(&touched)?;
        self.publish(&touched);
        Ok(responses)
    }

    /// Writes what `touched` names, with the applied log id and membership, in one transaction.
    /// Only the tables with something to write are opened, and only the meta values that
    /// changed are rewritten: each open and each insert is a B-tree walk in every apply's
    /// transaction (bench/RESULTS.md, "Where the time goes").
    fn persist(&mut self, touched: &Touched) -> Result<(), StateMachineError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        self.applies_since_durable += 1;
        let durable = self.applies_since_durable >= APPLIES_PER_DURABLE_COMMIT;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(storage)?;
        let state = &self.private;
        let membership_changed = self.stored_meta.membership.as_ref() != Some(&state.membership);
        let last_store_changed =
            self.stored_meta.last_store_timestamp_ms != Some(state.last_store_timestamp_ms);
        {
            write_configs(&txn, TOPICS, &touched.topics, |t| state.topics.get(t))?;
            write_configs(&txn, GROUPS, &touched.groups, |g| state.groups.get(g))?;

            if !touched.queues.is_empty() {
                let mut queues = txn.open_table(QUEUES).map_err(storage)?;
                for key in &touched.queues {
                    match state.queues.get(key) {
                        Some(q) => {
                            queues.insert((key.0.as_str(), key.1), (q.next_offset, q.min_offset))
                        }
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

            if !touched.deleted_topics.is_empty() || !touched.index_rows.is_empty() {
                let mut index = txn.open_table(QUEUE_INDEX).map_err(storage)?;
                for topic in &touched.deleted_topics {
                    let range = (topic.as_str(), 0u32, 0u64)..=(topic.as_str(), u32::MAX, u64::MAX);
                    index.retain_in(range, |_, _| false).map_err(storage)?;
                }
                for (topic, queue_id, row) in &touched.index_rows {
                    let value = (
                        row.log_index,
                        row.unit_index,
                        row.first_ordinal,
                        row.count,
                        row.store_timestamp_ms,
                    );
                    index
                        .insert((topic.as_str(), *queue_id, row.first_offset), value)
                        .map_err(storage)?;
                }
            }

            let mut meta = txn.open_table(META).map_err(storage)?;
            if let Some(applied) = &state.applied {
                meta.insert(META_APPLIED, encode_meta(applied)?.as_slice())
                    .map_err(storage)?;
            }
            if membership_changed {
                meta.insert(META_MEMBERSHIP, encode_meta(&state.membership)?.as_slice())
                    .map_err(storage)?;
            }
            if last_store_changed {
                let last_store = encode_meta(&state.last_store_timestamp_ms)?;
                meta.insert(META_LAST_STORE_TIMESTAMP, last_store.as_slice())
                    .map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        if membership_changed {
            self.stored_meta.membership = Some(self.private.membership.clone());
        }
        if last_store_changed {
            self.stored_meta.last_store_timestamp_ms = Some(self.private.last_store_timestamp_ms);
        }
        if durable {
            self.applies_since_durable = 0;
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
            copy_keys(&touched.topics, &private.topics, &mut shared.topics);
            copy_keys(&touched.groups, &private.groups, &mut shared.groups);
            copy_keys(&touched.queues, &private.queues, &mut shared.queues);
            copy_keys(
                &touched.consumer_offsets,
                &private.consumer_offsets,
                &mut shared.consumer_offsets,
            );
        });
    }

    fn read_all_index_rows(&self) -> Result<Vec<(String, u32, IndexRow)>, StateMachineError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(QUEUE_INDEX).map_err(storage)?;
        let mut rows = Vec::new();
        for found in table.iter().map_err(storage)? {
            let (key, value) = found.map_err(storage)?;
            let (topic, queue_id, first_offset) = key.value();
            rows.push((
                topic.to_string(),
                queue_id,
                state::to_row(first_offset, value.value()),
            ));
        }
        Ok(rows)
    }

    fn replace_all(&mut self, image: SnapshotImage) -> Result<(), StateMachineError> {
        let txn = self.db.begin_write().map_err(storage)?;
        for name in [
            "meta",
            "topics",
            "groups",
            "queues",
            "consumer_offsets",
            "queue_index",
        ] {
            txn.delete_table(TableDefinition::<&str, &[u8]>::new(name))
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        create_tables(&self.db)?;
        self.stored_meta = StoredMeta::default();

        self.private = image.mem;
        let touched = Touched {
            topics: self.private.topics.keys().cloned().collect(),
            groups: self.private.groups.keys().cloned().collect(),
            queues: self.private.queues.keys().cloned().collect(),
            consumer_offsets: self.private.consumer_offsets.keys().cloned().collect(),
            index_rows: image.index_rows,
            deleted_topics: Default::default(),
        };
        // The next commit is durable: a restored snapshot must not be lost in a crash.
        self.applies_since_durable = APPLIES_PER_DURABLE_COMMIT;
        self.persist(&touched)?;
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

    fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        self.check_not_failed()?;
        let image = SnapshotImage {
            mem: self.private.clone(),
            index_rows: self.read_all_index_rows()?,
        };
        raftmq_raft::codec::encode(&image).map_err(|err| StateMachineError::Encode(err.to_string()))
    }

    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> Result<(), StateMachineError> {
        self.check_not_failed()?;
        let mut image: SnapshotImage = raftmq_raft::codec::decode(data)
            .map_err(|err| StateMachineError::CorruptSnapshot(err.to_string()))?;
        // The snapshot's own metadata is authoritative for what it covers.
        image.mem.applied = meta.last_log_id;
        image.mem.membership = meta.last_membership.clone();
        let result = self.replace_all(image);
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
    txn.open_table(META).map_err(storage)?;
    txn.open_table(TOPICS).map_err(storage)?;
    txn.open_table(GROUPS).map_err(storage)?;
    txn.open_table(QUEUES).map_err(storage)?;
    txn.open_table(CONSUMER_OFFSETS).map_err(storage)?;
    txn.open_table(QUEUE_INDEX).map_err(storage)?;
    txn.commit().map_err(storage)
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
        let (next_offset, min_offset) = value.value();
        mem.queues.insert(
            (topic.to_string(), queue_id),
            QueueState {
                next_offset,
                min_offset,
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
    Ok(mem)
}

#[cfg(test)]
mod tests;
