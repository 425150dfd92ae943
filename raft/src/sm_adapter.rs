//! The adapter that lets openraft drive any [`StateMachine`]: it implements openraft's
//! `RaftStateMachine` and `RaftSnapshotBuilder` over an `S: StateMachine`, and keeps the current
//! snapshot in a file in the data directory so that it survives a restart.
//!
//! `StateMachine::apply` is synchronous and does disk I/O (one durable transaction per batch).
//! The adapter runs it with `tokio::task::spawn_blocking` rather than `block_in_place`:
//! `block_in_place` panics on a current-thread runtime and stalls whatever else that worker
//! thread holds, while one hop to the blocking pool per *batch* of committed entries costs a few
//! microseconds. The state machine sits behind a `std::sync::Mutex` that is only ever locked on
//! blocking-pool threads, never across an `.await`.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::codec::{self, CodecError};
use crate::state_machine::{StateMachine, StateMachineError};
use crate::types::{
    AppResponse, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The folder, inside the data directory, that holds the current snapshot.
pub const SNAPSHOT_DIR_NAME: &str = "snapshot";
const SNAPSHOT_FILE_NAME: &str = "current.snap";
const SNAPSHOT_TEMP_FILE_NAME: &str = "current.snap.tmp";

/// Why the snapshot file could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file {path} I/O failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: CodecError,
    },
    #[error("cannot encode the snapshot: {0}")]
    Encode(#[source] CodecError),
}

/// What the snapshot file holds.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: bytes::Bytes,
}

/// The current snapshot on disk: written to a temporary file, fsynced, renamed over the old one,
/// and the directory fsynced, so a crash leaves either the old or the new snapshot.
#[derive(Debug)]
struct SnapshotFiles {
    dir: PathBuf,
    /// Serializes writers (a build and an install may race).
    write_lock: Mutex<()>,
}

impl SnapshotFiles {
    fn open(data_dir: &Path) -> Result<Self, SnapshotFileError> {
        let dir = data_dir.join(SNAPSHOT_DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(|source| SnapshotFileError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(SnapshotFiles {
            dir,
            write_lock: Mutex::new(()),
        })
    }

    fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), SnapshotFileError> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes::Bytes::copy_from_slice(data),
        };
        let encoded = codec::encode(&stored).map_err(SnapshotFileError::Encode)?;
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let temp = self.dir.join(SNAPSHOT_TEMP_FILE_NAME);
        let path = self.dir.join(SNAPSHOT_FILE_NAME);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotFileError::Io { path, source }
        };
        {
            let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
            file.write_all(&encoded).map_err(io(&temp))?;
            file.sync_all().map_err(io(&temp))?;
        }
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }

    fn load(&self) -> Result<Option<StoredSnapshot>, SnapshotFileError> {
        let path = self.dir.join(SNAPSHOT_FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SnapshotFileError::Io { path, source }),
        };
        codec::decode(&bytes)
            .map(Some)
            .map_err(|source| SnapshotFileError::Corrupt { path, source })
    }
}

/// Fires when the last reference to the wrapped state machine is gone, i.e. when the
/// application's state machine has been dropped (its files closed).
#[derive(Debug)]
struct ReleaseSignal(Option<oneshot::Sender<()>>);

impl Drop for ReleaseSignal {
    fn drop(&mut self) {
        if let Some(released) = self.0.take() {
            // Nobody may be waiting: that is fine.
            let _ = released.send(());
        }
    }
}

/// The state machine and the signal that fires when it is dropped.
struct Shared<S> {
    state_machine: Mutex<S>,
    _release: ReleaseSignal,
}

/// Resolves once the state machine given to [`StateMachineStore::open`] has been dropped, which
/// openraft does some time after `Raft::shutdown` returns.
#[derive(Debug)]
pub struct StateMachineReleased(oneshot::Receiver<()>);

impl StateMachineReleased {
    /// Waits until the state machine is dropped; false if `timeout` passed first.
    pub async fn wait(self, timeout: std::time::Duration) -> bool {
        // A closed channel also means the sender (and with it the state machine) is gone.
        tokio::time::timeout(timeout, self.0).await.is_ok()
    }
}

/// openraft's view of an application [`StateMachine`].
pub struct StateMachineStore<S: StateMachine> {
    shared: Arc<Shared<S>>,
    snapshots: Arc<SnapshotFiles>,
    released: Option<oneshot::Receiver<()>>,
}

impl<S: StateMachine> std::fmt::Debug for StateMachineStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("snapshot_dir", &self.snapshots.dir)
            .finish_non_exhaustive()
    }
}

fn lock<S>(state_machine: &Mutex<S>) -> MutexGuard<'_, S> {
    // A panic inside apply poisons the lock; the join error already stopped the node, and a
    // later reader only needs the applied state, which the state machine keeps consistent on disk.
    state_machine
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `work` on the blocking pool; a panic in it becomes a storage error. (The error is boxed
/// inside the closure only to keep the closure's result small.)
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Box<StorageError>> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| *e),
        Err(e) => Err(StorageIOError::write_state_machine(AnyError::error(format!(
            "state machine task failed: {e}"
        )))
        .into()),
    }
}

fn sm_write_error(e: &StateMachineError) -> Box<StorageError> {
    Box::new(StorageIOError::write_state_machine(AnyError::new(e)).into())
}

fn snapshot_read_error(e: &SnapshotFileError) -> Box<StorageError> {
    Box::new(StorageIOError::read_snapshot(None, AnyError::new(e)).into())
}

fn snapshot_write_error(
    meta: &SnapshotMeta,
    e: &(impl std::error::Error + 'static),
) -> Box<StorageError> {
    Box::new(StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(e)).into())
}

impl<S: StateMachine> StateMachineStore<S> {
    /// Wraps `state_machine`; the current snapshot lives under `data_dir`/[`SNAPSHOT_DIR_NAME`].
    pub fn open(data_dir: &Path, state_machine: S) -> Result<Self, SnapshotFileError> {
        let (release, released) = oneshot::channel();
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                state_machine: Mutex::new(state_machine),
                _release: ReleaseSignal(Some(release)),
            }),
            snapshots: Arc::new(SnapshotFiles::open(data_dir)?),
            released: Some(released),
        })
    }

    /// A future-like handle that resolves when the wrapped state machine is dropped (once; later
    /// calls return `None`).
    pub fn released(&mut self) -> Option<StateMachineReleased> {
        self.released.take().map(StateMachineReleased)
    }
}

/// Builds a snapshot from the state machine's current state and stores it as the current one.
pub struct SnapshotBuilder<S: StateMachine> {
    shared: Arc<Shared<S>>,
    snapshots: Arc<SnapshotFiles>,
}

impl<S: StateMachine> std::fmt::Debug for SnapshotBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder").finish_non_exhaustive()
    }
}

/// A snapshot id unique enough to tell two snapshots of the same log id apart.
fn snapshot_id(last_log_id: Option<&LogId>) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    match last_log_id {
        Some(id) => format!("{}-{}-{nanos}", id.leader_id, id.index),
        None => format!("empty-{nanos}"),
    }
}

impl<S: StateMachine> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = Arc::clone(&self.shared);
        let snapshots = Arc::clone(&self.snapshots);
        blocking(move || {
            let (last_log_id, last_membership, data) = {
                let mut sm = lock(&shared.state_machine);
                let (applied, membership) = sm.applied_state();
                let data = sm.snapshot().map_err(|e| {
                    Box::new(StorageError::from(StorageIOError::read_state_machine(
                        AnyError::new(&e),
                    )))
                })?;
                (applied, membership, data)
            };
            let meta = SnapshotMeta {
                snapshot_id: snapshot_id(last_log_id.as_ref()),
                last_log_id,
                last_membership,
            };
            snapshots
                .save(&meta, &data)
                .map_err(|e| snapshot_write_error(&meta, &e))?;
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        })
        .await
    }
}

impl<S: StateMachine> RaftStateMachine<TypeConfig> for StateMachineStore<S> {
    type SnapshotBuilder = SnapshotBuilder<S>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let shared = Arc::clone(&self.shared);
        blocking(move || Ok(lock(&shared.state_machine).applied_state())).await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<AppResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let count = entries.len();
        let shared = Arc::clone(&self.shared);
        let responses = blocking(move || {
            lock(&shared.state_machine)
                .apply(entries)
                .map_err(|e| sm_write_error(&e))
        })
        .await?;
        if responses.len() != count {
            let e = StateMachineError::Invariant {
                index: 0,
                reason: format!(
                    "apply returned {} responses for {count} entries",
                    responses.len()
                ),
            };
            return Err(*sm_write_error(&e));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let meta = meta.clone();
        let shared = Arc::clone(&self.shared);
        let snapshots = Arc::clone(&self.snapshots);
        blocking(move || {
            lock(&shared.state_machine)
                .install_snapshot(&meta, &data)
                .map_err(|e| snapshot_write_error(&meta, &e))?;
            snapshots
                .save(&meta, &data)
                .map_err(|e| snapshot_write_error(&meta, &e))
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let snapshots = Arc::clone(&self.snapshots);
        let stored =
            blocking(move || snapshots.load().map_err(|e| snapshot_read_error(&e))).await?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data.to_vec())),
        }))
    }
}
