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
    StateMachineError::Storage(e.into().to_string())
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
            .map_err(|e| StateMachineError::Storage(format!("meta {key:?} is corrupt: {e}")))
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
    codec::encode(value).map_err(|e| StateMachineError::Storage(e.to_string()))
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

    fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
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
            membership,
            kv,
            history: self.history()?,
        };
        encoded(&snapshot)
    }

    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> Result<(), StateMachineError> {
        let snapshot: KvSnapshot =
            codec::decode(data).map_err(|e| StateMachineError::CorruptSnapshot(e.to_string()))?;
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
