//! A small key-value [`StateMachine`] on redb, for this crate's own tests, openraft's storage
//! Suite and the benchmark. It follows the same rules as the broker's: apply is deterministic and
//! writes its changes, the applied log id and the membership in one durable transaction.
//!
//! Besides the map it records, per applied normal entry, `log index -> key` (the apply history),
//! so tests can compare the order in which members applied commands.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::state_machine::{StateMachine, StateMachineError};
use crate::types::{
    AppRequest, AppResponse, Entry, EntryPayload, LogId, SnapshotMeta, StoredMembership,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const HISTORY: TableDefinition<u64, &str> = TableDefinition::new("history");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_APPLIED: &str = "applied";
const META_MEMBERSHIP: &str = "membership";

/// redb page cache of the test state machine.
const KV_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The response of an entry whose payload is not a [`KvCommand`].
pub const MALFORMED_RESPONSE: &[u8] = b"malformed";

/// A command of the test state machine: set `key` to `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    pub key: String,
    pub value: Bytes,
}

impl KvCommand {
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        KvCommand {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The command as an entry payload.
    pub fn to_request(&self) -> AppRequest {
        // Encoding a String and Bytes cannot fail; an empty request would answer "malformed".
        AppRequest(codec::encode(self).map(Bytes::from).unwrap_or_default())
    }
}

/// What a snapshot of the test state machine holds.
#[derive(Serialize, Deserialize)]
struct KvSnapshot {
    applied: Option<LogId>,
    membership: StoredMembership,
    kv: Vec<(String, Bytes)>,
    history: Vec<(u64, String)>,
}

fn storage(e: impl Into<redb::Error>) -> StateMachineError {
    StateMachineError::from_redb(e)
}

/// A handle on the test state machine; clones share the same database, so a test can keep one
/// to read while openraft drives another.
#[derive(Clone, Debug)]
pub struct KvStateMachine {
    db: Arc<Database>,
}

impl KvStateMachine {
    /// Opens (or creates) the state machine in the file `path`.
    pub fn open(path: &Path) -> Result<Self, StateMachineError> {
        let db = redb::Builder::new()
            .set_cache_size(KV_CACHE_BYTES)
            .create(path)
            .map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(KV).map_err(storage)?;
        txn.open_table(HISTORY).map_err(storage)?;
        txn.open_table(META).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(KvStateMachine { db: Arc::new(db) })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, StateMachineError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(KV).map_err(storage)?;
        let value = table.get(key).map_err(storage)?;
        Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// `(log index, key)` of every applied command, in log order.
    pub fn history(&self) -> Result<Vec<(u64, String)>, StateMachineError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(HISTORY).map_err(storage)?;
        let mut history = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (index, key) = row.map_err(storage)?;
            history.push((index.value(), key.value().to_string()));
        }
        Ok(history)
    }

    /// How many commands have been applied.
    pub fn applied_commands(&self) -> Result<u64, StateMachineError> {
        let txn = self.db.begin_read().map_err(storage)?;
        txn.open_table(HISTORY)
            .map_err(storage)?
            .len()
            .map_err(storage)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, StateMachineError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(META).map_err(storage)?;
        let Some(value) = table.get(key).map_err(storage)? else {
            return Ok(None);
        };
        codec::decode(value.value())
            .map(Some)
            .map_err(|e| StateMachineError::Corrupt {
                reason: format!("meta {key:?}: {e}"),
            })
    }

    fn try_applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StateMachineError> {
        let applied = self.read_meta::<Option<LogId>>(META_APPLIED)?.flatten();
        let membership = self
            .read_meta::<StoredMembership>(META_MEMBERSHIP)?
            .unwrap_or_default();
        Ok((applied, membership))
    }
}

fn encoded(value: &impl Serialize) -> Result<Vec<u8>, StateMachineError> {
    codec::encode(value).map_err(|e| StateMachineError::Encode(e.to_string()))
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, entries: Vec<Entry>) -> Result<Vec<AppResponse>, StateMachineError> {
        let (mut applied, mut membership) = self.try_applied_state()?;
        let mut responses = Vec::with_capacity(entries.len());
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut kv = txn.open_table(KV).map_err(storage)?;
            let mut history = txn.open_table(HISTORY).map_err(storage)?;
            let mut applied_commands = history.len().map_err(storage)?;
            for entry in entries {
                if applied.is_some_and(|a| entry.log_id <= a) {
                    return Err(StateMachineError::Invariant {
                        index: entry.log_id.index,
                        reason: format!("already applied up to {applied:?}"),
                    });
                }
                applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(AppResponse::default()),
                    EntryPayload::Membership(m) => {
                        membership = StoredMembership::new(Some(entry.log_id), m);
                        responses.push(AppResponse::default());
                    }
                    EntryPayload::Normal(request) => {
                        match codec::decode::<KvCommand>(&request.0) {
                            Ok(command) => {
                                kv.insert(command.key.as_str(), command.value.as_ref())
                                    .map_err(storage)?;
                                history
                                    .insert(entry.log_id.index, command.key.as_str())
                                    .map_err(storage)?;
                                applied_commands += 1;
                                // The response is the command's sequence number in apply order.
                                responses.push(AppResponse(Bytes::copy_from_slice(
                                    &applied_commands.to_le_bytes(),
                                )));
                            }
                            Err(_) => {
                                responses.push(AppResponse(Bytes::from_static(MALFORMED_RESPONSE)))
                            }
                        }
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(storage)?;
            meta.insert(META_APPLIED, encoded(&applied)?.as_slice())
                .map_err(storage)?;
            meta.insert(META_MEMBERSHIP, encoded(&membership)?.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(responses)
    }

    fn applied_state(&self) -> (Option<LogId>, StoredMembership) {
        // The trait has no error here; a read failure shows as "nothing applied", which makes
        // openraft re-apply (the invariant check in apply then stops the node loudly).
        self.try_applied_state().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the applied state");
            (None, StoredMembership::default())
        })
    }

    fn write_snapshot(
        &mut self,
        out: &mut dyn std::io::Write,
    ) -> Result<(Option<LogId>, StoredMembership), StateMachineError> {
        let (applied, membership) = self.try_applied_state()?;
        let txn = self.db.begin_read().map_err(storage)?;
        let mut kv = Vec::new();
        for row in txn
            .open_table(KV)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (key, value) = row.map_err(storage)?;
            kv.push((
                key.value().to_string(),
                Bytes::copy_from_slice(value.value()),
            ));
        }
        let snapshot = KvSnapshot {
            applied,
            membership: membership.clone(),
            kv,
            history: self.history()?,
        };
        crate::snapshot::write_frame(out, &snapshot).map_err(StateMachineError::from_io)?;
        Ok((applied, membership))
    }

    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        image: &mut dyn std::io::Read,
    ) -> Result<(), StateMachineError> {
        let snapshot: KvSnapshot = crate::snapshot::read_frame(image)
            .map_err(|e| StateMachineError::CorruptSnapshot(e.to_string()))?
            .ok_or_else(|| StateMachineError::CorruptSnapshot("an empty image".into()))?;
        if snapshot.applied != meta.last_log_id {
            return Err(StateMachineError::CorruptSnapshot(format!(
                "data is as of {:?} but the snapshot claims {:?}",
                snapshot.applied, meta.last_log_id
            )));
        }
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut kv = txn.open_table(KV).map_err(storage)?;
            kv.retain(|_, _| false).map_err(storage)?;
            for (key, value) in &snapshot.kv {
                kv.insert(key.as_str(), value.as_ref()).map_err(storage)?;
            }
            let mut history = txn.open_table(HISTORY).map_err(storage)?;
            history.retain(|_, _| false).map_err(storage)?;
            for (index, key) in &snapshot.history {
                history.insert(*index, key.as_str()).map_err(storage)?;
            }
            let mut table = txn.open_table(META).map_err(storage)?;
            table
                .insert(META_APPLIED, encoded(&meta.last_log_id)?.as_slice())
                .map_err(storage)?;
            table
                .insert(META_MEMBERSHIP, encoded(&meta.last_membership)?.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }
}

/// A state machine that keeps only small things, as the broker's does (the message bodies stay
/// in the log): a count of applied commands, the applied log id and the membership, in one
/// durable redb transaction per batch. The benchmark uses it so that it measures the Raft path,
/// not a second copy of every payload.
#[derive(Clone, Debug)]
pub struct CounterStateMachine {
    db: Arc<Database>,
}

const COUNTER_META: TableDefinition<&str, &[u8]> = TableDefinition::new("counter");
const META_COUNT: &str = "count";

/// What a snapshot of the counter holds.
#[derive(Serialize, Deserialize)]
struct CounterSnapshot {
    applied: Option<LogId>,
    membership: StoredMembership,
    count: u64,
}

impl CounterStateMachine {
    /// Opens (or creates) the counter in the file `path`.
    pub fn open(path: &Path) -> Result<Self, StateMachineError> {
        let db = redb::Builder::new()
            .set_cache_size(KV_CACHE_BYTES)
            .create(path)
            .map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(COUNTER_META).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(CounterStateMachine { db: Arc::new(db) })
    }

    fn read(&self) -> Result<CounterSnapshot, StateMachineError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(COUNTER_META).map_err(storage)?;
        let get = |key: &'static str| -> Result<Option<Vec<u8>>, StateMachineError> {
            Ok(table.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
        };
        let decode_err = |e: codec::CodecError| StateMachineError::Corrupt {
            reason: e.to_string(),
        };
        let applied = match get(META_APPLIED)? {
            Some(bytes) => codec::decode::<Option<LogId>>(&bytes).map_err(decode_err)?,
            None => None,
        };
        let membership = match get(META_MEMBERSHIP)? {
            Some(bytes) => codec::decode(&bytes).map_err(decode_err)?,
            None => StoredMembership::default(),
        };
        let count = match get(META_COUNT)? {
            Some(bytes) => codec::decode(&bytes).map_err(decode_err)?,
            None => 0,
        };
        Ok(CounterSnapshot {
            applied,
            membership,
            count,
        })
    }

    fn write(&self, state: &CounterSnapshot) -> Result<(), StateMachineError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(COUNTER_META).map_err(storage)?;
            table
                .insert(META_APPLIED, encoded(&state.applied)?.as_slice())
                .map_err(storage)?;
            table
                .insert(META_MEMBERSHIP, encoded(&state.membership)?.as_slice())
                .map_err(storage)?;
            table
                .insert(META_COUNT, encoded(&state.count)?.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    /// How many normal entries have been applied.
    pub fn count(&self) -> Result<u64, StateMachineError> {
        Ok(self.read()?.count)
    }
}

impl StateMachine for CounterStateMachine {
    fn apply(&mut self, entries: Vec<Entry>) -> Result<Vec<AppResponse>, StateMachineError> {
        let mut state = self.read()?;
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            if state.applied.is_some_and(|a| entry.log_id <= a) {
                return Err(StateMachineError::Invariant {
                    index: entry.log_id.index,
                    reason: format!("already applied up to {:?}", state.applied),
                });
            }
            state.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(AppResponse::default()),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(AppResponse::default());
                }
                EntryPayload::Normal(_) => {
                    state.count += 1;
                    responses.push(AppResponse(Bytes::copy_from_slice(
                        &state.count.to_le_bytes(),
                    )));
                }
            }
        }
        self.write(&state)?;
        Ok(responses)
    }

    fn applied_state(&self) -> (Option<LogId>, StoredMembership) {
        match self.read() {
            Ok(state) => (state.applied, state.membership),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the applied state");
                (None, StoredMembership::default())
            }
        }
    }

    fn write_snapshot(
        &mut self,
        out: &mut dyn std::io::Write,
    ) -> Result<(Option<LogId>, StoredMembership), StateMachineError> {
        let state = self.read()?;
        crate::snapshot::write_frame(out, &state).map_err(StateMachineError::from_io)?;
        Ok((state.applied, state.membership))
    }

    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        image: &mut dyn std::io::Read,
    ) -> Result<(), StateMachineError> {
        let state: CounterSnapshot = crate::snapshot::read_frame(image)
            .map_err(|e| StateMachineError::CorruptSnapshot(e.to_string()))?
            .ok_or_else(|| StateMachineError::CorruptSnapshot("an empty image".into()))?;
        if state.applied != meta.last_log_id {
            return Err(StateMachineError::CorruptSnapshot(format!(
                "data is as of {:?} but the snapshot claims {:?}",
                state.applied, meta.last_log_id
            )));
        }
        self.write(&state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, payload: EntryPayload) -> Entry {
        Entry {
            log_id: crate::types::log_id(1, 1, index),
            payload,
        }
    }

    #[test]
    fn kv_applies_commands_records_history_and_round_trips_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = KvStateMachine::open(&dir.path().join("a.redb")).unwrap();
        let responses = kv
            .apply(vec![
                entry(1, EntryPayload::Blank),
                entry(
                    2,
                    EntryPayload::Normal(KvCommand::new("a", "1").to_request()),
                ),
                entry(
                    3,
                    EntryPayload::Normal(AppRequest(Bytes::from_static(b"junk"))),
                ),
                entry(
                    4,
                    EntryPayload::Normal(KvCommand::new("b", "2").to_request()),
                ),
            ])
            .unwrap();
        assert_eq!(responses.len(), 4);
        assert_eq!(responses[2].0.as_ref(), MALFORMED_RESPONSE);
        assert_eq!(responses[3].0.as_ref(), &2u64.to_le_bytes());
        assert_eq!(
            kv.history().unwrap(),
            vec![(2, "a".into()), (4, "b".into())]
        );
        assert!(kv.apply(vec![entry(4, EntryPayload::Blank)]).is_err());

        let mut data = Vec::new();
        let (applied, membership) = kv.write_snapshot(&mut data).unwrap();
        assert_eq!((applied, membership.clone()), kv.applied_state());
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        };
        let mut other = KvStateMachine::open(&dir.path().join("b.redb")).unwrap();
        other.install_snapshot(&meta, &mut data.as_slice()).unwrap();
        assert_eq!(other.history().unwrap(), kv.history().unwrap());
        assert_eq!(other.get("b").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(other.install_snapshot(&meta, &mut &b"garbage"[..]).is_err());
    }

    #[test]
    fn counter_counts_normal_entries_durably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let mut counter = CounterStateMachine::open(&path).unwrap();
        counter
            .apply(vec![
                entry(1, EntryPayload::Blank),
                entry(
                    2,
                    EntryPayload::Normal(AppRequest(Bytes::from_static(b"x"))),
                ),
                entry(
                    3,
                    EntryPayload::Normal(AppRequest(Bytes::from_static(b"y"))),
                ),
            ])
            .unwrap();
        drop(counter);
        let counter = CounterStateMachine::open(&path).unwrap();
        assert_eq!(counter.count().unwrap(), 2);
        assert_eq!(counter.applied_state().0.map(|a| a.index), Some(3));
    }
}
