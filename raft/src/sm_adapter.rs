//! The adapter that lets openraft drive any [`StateMachine`]: it implements openraft's
//! `RaftStateMachine` and `RaftSnapshotBuilder` over a boxed `dyn StateMachine` (so the `Raft`
//! type is one concrete type whatever the application), and keeps the current snapshot in a file
//! in the data directory so that it survives a restart.
//!
//! openraft 0.10 hands `apply` a stream of committed entries, each with the responder of the
//! client that proposed it (on the leader). The adapter collects the stream (openraft reads the
//! whole committed range from the log before it starts), applies the batch in one call, then
//! answers each responder with its entry's response.
//!
//! `StateMachine::apply` is synchronous and may do disk I/O. An apply that may wait for the disk
//! (an fsync: [`StateMachine::next_apply_waits_for_disk`]) runs with
//! `tokio::task::spawn_blocking` rather than `block_in_place` (which panics on a current-thread
//! runtime and stalls whatever else that worker thread holds); any other apply runs inline on
//! openraft's state-machine task: the broker's applies are in-memory work plus a non-durable
//! redb commit (tens of microseconds), and the blocking-pool hop cost two thread hand-offs
//! (futex wake-ups and context switches) per applied batch, a large share of a synchronous
//! send's CPU (bench/RESULTS.md). The state machine sits behind a `std::sync::Mutex` that is
//! never held across an `.await`.

use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{OptionalSend, RaftSnapshotBuilder};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::disk_space::{ApplySpace, SpaceProbe, StatvfsProbe};
use crate::log_store::LogReader;
use crate::snapshot::{SnapshotBundle, SnapshotDir};
use crate::state_machine::{StateMachine, StateMachineError};
use crate::storage_fault::{FailureLatch, StorageFailure};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

pub use crate::snapshot::{SNAPSHOT_DIR_NAME, SnapshotFileError};

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
struct Shared {
    state_machine: Mutex<Box<dyn StateMachine>>,
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
pub struct StateMachineStore {
    shared: Arc<Shared>,
    snapshots: Arc<SnapshotDir>,
    log: LogReader,
    released: Option<oneshot::Receiver<()>>,
    failure: FailureLatch,
    /// Each apply first waits for room on the disk (see [`crate::disk_space`]).
    space: ApplySpace,
    /// Cancelled when the member stops: a wait for disk space gives up.
    stop: CancellationToken,
}

impl std::fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("snapshots", &self.snapshots)
            .finish_non_exhaustive()
    }
}

fn lock(state_machine: &Mutex<Box<dyn StateMachine>>) -> MutexGuard<'_, Box<dyn StateMachine>> {
    // A panic inside apply poisons the lock; the join error already stopped the node, and a
    // later reader only needs the applied state, which the state machine keeps consistent on disk.
    state_machine
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The state machine if nobody holds it right now (see [`lock`] on poisoning).
fn try_lock(
    state_machine: &Mutex<Box<dyn StateMachine>>,
) -> Option<MutexGuard<'_, Box<dyn StateMachine>>> {
    match state_machine.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Records a failure as the node's first storage failure (if it is), and returns the
/// `io::Error` openraft's storage traits take, with the typed error as its source (callers
/// recover it with `get_ref()` / `downcast`).
fn failed<E>(latch: &FailureLatch, error: E) -> io::Error
where
    E: Into<StorageFailure> + std::error::Error + Send + Sync + Clone + 'static,
{
    latch.record(error.clone());
    io::Error::other(error)
}

/// Runs `work` on the blocking pool; a panic in it becomes an I/O error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, io::Error> + Send + 'static,
) -> Result<T, io::Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(io::Error::other(format!("state machine task failed: {e}"))),
    }
}

impl StateMachineStore {
    /// Wraps `state_machine`; the current snapshot lives under `data_dir`/[`SNAPSHOT_DIR_NAME`].
    /// `log` reads the log entries a snapshot carries, and installs received ones.
    pub fn open(
        data_dir: &Path,
        state_machine: impl StateMachine,
        log: LogReader,
    ) -> Result<Self, SnapshotFileError> {
        let probe = Arc::new(StatvfsProbe(data_dir.to_path_buf()));
        Self::open_with_probe(data_dir, state_machine, log, probe)
    }

    /// [`open`](Self::open) with the free space read from `probe` (tests).
    pub fn open_with_probe(
        data_dir: &Path,
        state_machine: impl StateMachine,
        log: LogReader,
        probe: Arc<dyn SpaceProbe>,
    ) -> Result<Self, SnapshotFileError> {
        let (release, released) = oneshot::channel();
        let stop = CancellationToken::new();
        Ok(StateMachineStore {
            space: ApplySpace::new(probe, log.clone(), stop.clone()),
            stop,
            shared: Arc::new(Shared {
                state_machine: Mutex::new(Box::new(state_machine)),
                _release: ReleaseSignal(Some(release)),
            }),
            snapshots: Arc::new(SnapshotDir::open(data_dir)?),
            log,
            released: Some(released),
            failure: FailureLatch::default(),
        })
    }

    /// The latch that remembers this state machine's first storage failure.
    pub(crate) fn failure_latch(&self) -> FailureLatch {
        self.failure.clone()
    }

    /// Cancelling it makes an apply that waits for disk space give up (the member stops).
    pub(crate) fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// A future-like handle that resolves when the wrapped state machine is dropped (once; later
    /// calls return `None`).
    pub fn released(&mut self) -> Option<StateMachineReleased> {
        self.released.take().map(StateMachineReleased)
    }
}

/// Builds a snapshot from the state machine's current state and stores it as the current one.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    snapshots: Arc<SnapshotDir>,
    log: LogReader,
    failure: FailureLatch,
}

impl std::fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuilder").finish_non_exhaustive()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    /// Writes the state machine's image into a fresh directory (holding the state machine only
    /// while it writes), and names the log entries that travel with it: from the retention
    /// floor (or the first entry still on disk, if later) up to the image's applied index.
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = Arc::clone(&self.shared);
        let snapshots = Arc::clone(&self.snapshots);
        let log = self.log.clone();
        let latch = self.failure.clone();
        blocking(move || {
            let dir = snapshots.new_build_dir().map_err(|e| failed(&latch, e))?;
            let path = dir.join(crate::snapshot::STATE_FILE_NAME);
            let file = std::fs::File::create(&path)
                .map_err(|e| failed(&latch, SnapshotFileError::io(&path, e)))?;
            let mut out = BufWriter::new(file);
            let (last_log_id, last_membership) = lock(&shared.state_machine)
                .write_snapshot(&mut out)
                .map_err(|e| failed(&latch, e))?;
            let file = out
                .into_inner()
                .map_err(|e| failed(&latch, SnapshotFileError::io(&path, e.into_error())))?;
            file.sync_all()
                .map_err(|e| failed(&latch, SnapshotFileError::io(&path, e)))?;
            let log_next = last_log_id.map_or(0, |id| id.index + 1);
            let log_first = log
                .retention_floor()
                .max(log.first_readable_index())
                .min(log_next);
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
            };
            let bundle = snapshots
                .commit(&dir, &meta, log_first..log_next)
                .map_err(|e| failed(&latch, e))?;
            Ok(Snapshot {
                meta,
                snapshot: bundle,
            })
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let shared = Arc::clone(&self.shared);
        blocking(move || Ok(lock(&shared.state_machine).applied_state())).await
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let (entries, responders): (Vec<Entry>, Vec<_>) = entries.try_collect().await?;
        if entries.is_empty() {
            return Ok(());
        }
        // Never start an apply that could meet a full disk half-way (it would stop the member).
        self.space.wait_for_room().await.map_err(io::Error::other)?;
        let count = entries.len();
        let latch = self.failure.clone();
        // Inline only when the lock is free at once: a snapshot being built or installed holds
        // it on the blocking pool, and this task must not stall a runtime thread waiting for it.
        // The guard is dropped before any await.
        let inline = match try_lock(&self.shared.state_machine) {
            Some(mut state_machine) if !state_machine.next_apply_waits_for_disk() => {
                Ok(state_machine.apply(entries))
            }
            _ => Err(entries),
        };
        let responses = match inline {
            Ok(applied) => applied.map_err(|e| failed(&latch, e))?,
            Err(entries) => {
                let shared = Arc::clone(&self.shared);
                blocking(move || {
                    lock(&shared.state_machine)
                        .apply(entries)
                        .map_err(|e| failed(&latch, e))
                })
                .await?
            }
        };
        if responses.len() != count {
            return Err(failed(
                &self.failure,
                StateMachineError::Invariant {
                    index: 0,
                    reason: format!(
                        "apply returned {} responses for {count} entries",
                        responses.len()
                    ),
                },
            ));
        }
        for (responder, response) in responders.into_iter().zip(responses) {
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
            snapshots: Arc::clone(&self.snapshots),
            log: self.log.clone(),
            failure: self.failure.clone(),
        }
    }

    /// Installs a snapshot: a received one's log part becomes the node's history (below the
    /// purge point, for readers), the state machine replaces its state with the image, and the
    /// snapshot becomes the current one. At a restart openraft installs the current snapshot
    /// again if the state machine is behind it; its log part is then already in place.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let log_dir = snapshot.log_dir();
        if log_dir.exists() {
            self.log
                .install_history(log_dir, snapshot.log_range.start)
                .await
                .map_err(|e| failed(&self.failure, SnapshotFileError::Log(e)))?;
        }
        let meta = meta.clone();
        let shared = Arc::clone(&self.shared);
        let snapshots = Arc::clone(&self.snapshots);
        let latch = self.failure.clone();
        blocking(move || {
            let mut image =
                crate::snapshot::open_state(&snapshot).map_err(|e| failed(&latch, e))?;
            lock(&shared.state_machine)
                .install_snapshot(&meta, &mut image)
                .map_err(|e| failed(&latch, e))?;
            drop(image);
            if snapshot.dir != snapshots.current_dir() {
                snapshots
                    .commit(&snapshot.dir, &meta, snapshot.log_range.clone())
                    .map_err(|e| failed(&latch, e))?;
            }
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshots = Arc::clone(&self.snapshots);
        let latch = self.failure.clone();
        let current = blocking(move || snapshots.current().map_err(|e| failed(&latch, e))).await?;
        Ok(
            current.map(|(meta, bundle): (SnapshotMeta, SnapshotBundle)| Snapshot {
                meta,
                snapshot: bundle,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage_fault::FailureKind;
    use crate::types::{AppRequest, AppResponse, EntryPayload, log_id};

    /// A state machine whose disk is full.
    struct FullDisk;

    impl StateMachine for FullDisk {
        fn apply(&mut self, _entries: Vec<Entry>) -> Result<Vec<AppResponse>, StateMachineError> {
            Err(StateMachineError::from_io(io::Error::from_raw_os_error(28)))
        }

        fn applied_state(&self) -> (Option<LogId>, StoredMembership) {
            (None, StoredMembership::default())
        }

        fn write_snapshot(
            &mut self,
            _out: &mut dyn std::io::Write,
        ) -> Result<(Option<LogId>, StoredMembership), StateMachineError> {
            Ok((None, StoredMembership::default()))
        }

        fn install_snapshot(
            &mut self,
            _meta: &SnapshotMeta,
            _image: &mut dyn std::io::Read,
        ) -> Result<(), StateMachineError> {
            Ok(())
        }
    }

    /// Records the thread each apply runs on; `waits` is its answer to
    /// `next_apply_waits_for_disk`.
    struct ThreadRecorder {
        waits: bool,
        threads: Arc<Mutex<Vec<std::thread::ThreadId>>>,
    }

    impl StateMachine for ThreadRecorder {
        fn apply(&mut self, entries: Vec<Entry>) -> Result<Vec<AppResponse>, StateMachineError> {
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::current().id());
            Ok(entries.iter().map(|_| AppResponse::default()).collect())
        }

        fn next_apply_waits_for_disk(&self) -> bool {
            self.waits
        }

        fn applied_state(&self) -> (Option<LogId>, StoredMembership) {
            (None, StoredMembership::default())
        }

        fn write_snapshot(
            &mut self,
            _out: &mut dyn std::io::Write,
        ) -> Result<(Option<LogId>, StoredMembership), StateMachineError> {
            Ok((None, StoredMembership::default()))
        }

        fn install_snapshot(
            &mut self,
            _meta: &SnapshotMeta,
            _image: &mut dyn std::io::Read,
        ) -> Result<(), StateMachineError> {
            Ok(())
        }
    }

    fn one_entry(index: u64) -> futures::stream::Iter<std::vec::IntoIter<EntryItem>> {
        let entry = Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(AppRequest(bytes::Bytes::from_static(b"x"))),
        };
        futures::stream::iter(vec![Ok((entry, None))])
    }

    type EntryItem = Result<EntryResponder<TypeConfig>, io::Error>;

    /// A reader of an empty log store in `dir` (the store opened to serve snapshots).
    fn log_reader(dir: &tempfile::TempDir) -> crate::log_store::LogReader {
        crate::log_store::LogStore::open(&dir.path().join("log"), Default::default())
            .unwrap()
            .reader()
    }

    /// A current-thread runtime: an inline apply runs on the test's own thread, one on the
    /// blocking pool on another.
    #[tokio::test]
    async fn only_an_apply_that_waits_for_the_disk_goes_to_the_blocking_pool() {
        for waits in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let threads = Arc::new(Mutex::new(Vec::new()));
            let recorder = ThreadRecorder {
                waits,
                threads: Arc::clone(&threads),
            };
            let mut store =
                StateMachineStore::open(dir.path(), recorder, log_reader(&dir)).unwrap();
            store.apply(one_entry(1)).await.unwrap();
            let ran_on = threads.lock().unwrap().clone();
            let here = std::thread::current().id();
            assert_eq!(ran_on.len(), 1);
            assert_eq!(ran_on[0] == here, !waits, "waits for the disk: {waits}");
        }
    }

    /// While a snapshot holds the state machine (on the blocking pool), an apply must not wait
    /// for it on a runtime thread: it goes to the blocking pool too.
    #[tokio::test]
    async fn an_apply_does_not_stall_the_runtime_while_a_snapshot_holds_the_state_machine() {
        let dir = tempfile::tempdir().unwrap();
        let threads = Arc::new(Mutex::new(Vec::new()));
        let recorder = ThreadRecorder {
            waits: false,
            threads: Arc::clone(&threads),
        };
        let mut store = StateMachineStore::open(dir.path(), recorder, log_reader(&dir)).unwrap();
        let shared = Arc::clone(&store.shared);
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _held = lock(&shared.state_machine);
            locked_tx.send(()).unwrap();
            // Bounded: the test releases it right after its first poll.
            let _ = release_rx.recv_timeout(std::time::Duration::from_secs(30));
        });
        locked_rx.recv().unwrap();
        let mut apply = Box::pin(store.apply(one_entry(1)));
        assert!(
            futures::poll!(&mut apply).is_pending(),
            "the apply waits for the lock without blocking this thread"
        );
        release_tx.send(()).unwrap();
        apply.await.unwrap();
        holder.join().unwrap();
        let ran_on = threads.lock().unwrap().clone();
        assert_eq!(ran_on.len(), 1);
        assert_ne!(ran_on[0], std::thread::current().id());
    }

    /// Free space as a test sets it.
    struct SetSpace(std::sync::atomic::AtomicU64);

    impl SpaceProbe for SetSpace {
        fn probe(&self) -> io::Result<crate::disk_space::DiskSpace> {
            Ok(crate::disk_space::DiskSpace {
                free_bytes: self.0.load(std::sync::atomic::Ordering::SeqCst),
                total_bytes: 1 << 30,
            })
        }
    }

    /// On a nearly full disk an apply waits (applying nothing, saying so in the log's metrics)
    /// instead of failing the member, goes on by itself once space is freed, and gives up when
    /// the member stops.
    #[tokio::test]
    async fn an_apply_waits_for_disk_space_and_goes_on_when_it_is_freed() {
        let dir = tempfile::tempdir().unwrap();
        let threads = Arc::new(Mutex::new(Vec::new()));
        let recorder = ThreadRecorder {
            waits: false,
            threads: Arc::clone(&threads),
        };
        let log = log_reader(&dir);
        let probe = Arc::new(SetSpace(std::sync::atomic::AtomicU64::new(1 << 20)));
        let mut store =
            StateMachineStore::open_with_probe(dir.path(), recorder, log.clone(), probe.clone())
                .unwrap();
        let metrics = || log.metrics();
        {
            let mut apply = Box::pin(store.apply(one_entry(1)));
            let waiting = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                loop {
                    if futures::poll!(&mut apply).is_ready() {
                        return false;
                    }
                    if metrics().apply_waiting_for_space {
                        return true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            })
            .await;
            assert_eq!(waiting, Ok(true), "the apply waits, and says so");
            assert!(metrics().disk_full());
            assert!(threads.lock().unwrap().is_empty(), "nothing was applied");
            probe.0.store(1 << 30, std::sync::atomic::Ordering::SeqCst);
            tokio::time::timeout(std::time::Duration::from_secs(10), apply)
                .await
                .expect("the apply goes on once space is freed")
                .unwrap();
        }
        assert_eq!(threads.lock().unwrap().len(), 1);
        assert!(!metrics().disk_full());
    }

    /// A member that stops while an apply waits for space: the wait ends with an error, not a
    /// hang, and nothing is applied.
    #[tokio::test]
    async fn a_stopping_member_does_not_wait_for_disk_space() {
        let dir = tempfile::tempdir().unwrap();
        let threads = Arc::new(Mutex::new(Vec::new()));
        let recorder = ThreadRecorder {
            waits: false,
            threads: Arc::clone(&threads),
        };
        let probe = Arc::new(SetSpace(std::sync::atomic::AtomicU64::new(0)));
        let mut store =
            StateMachineStore::open_with_probe(dir.path(), recorder, log_reader(&dir), probe)
                .unwrap();
        let stop = store.stop_token();
        let mut apply = Box::pin(store.apply(one_entry(1)));
        assert!(
            futures::poll!(&mut apply).is_pending(),
            "it waits for space"
        );
        stop.cancel();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), apply)
            .await
            .expect("a stopped member does not wait for space");
        assert!(stopped.is_err());
        assert!(threads.lock().unwrap().is_empty(), "nothing was applied");
    }

    #[tokio::test]
    async fn a_failed_apply_reaches_openraft_typed_and_is_remembered_as_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let log = crate::log_store::LogStore::open(
            &dir.path().join("log"),
            crate::log_store::LogStoreConfig::default(),
        )
        .unwrap();
        let mut store = StateMachineStore::open(dir.path(), FullDisk, log.reader()).unwrap();
        let latch = store.failure_latch();
        let entry = Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Normal(AppRequest(bytes::Bytes::from_static(b"x"))),
        };
        let stream = futures::stream::iter([Ok((entry, None))]);
        let error = store.apply(stream).await.unwrap_err();
        let typed = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<StateMachineError>())
            .expect("the typed error is the io::Error's source");
        assert_eq!(typed.kind(), FailureKind::NoSpace);
        assert!(error.to_string().contains("No space left on device"));
        let first = latch.get().expect("the failure is remembered");
        assert_eq!(first.kind(), FailureKind::NoSpace);
    }
}
