//! The Raft log in segment files, with group commit. This log IS the broker's commit log:
//! message bodies live only here, so the broker reads them back through [`LogReader`].
//!
//! Data path of a write:
//!
//! ```text
//! openraft append(entries, IOFlushed)
//!   -> entries go into the in-memory tail (mem.rs): readable at once
//!   -> the command is queued to the flusher (flusher.rs, one thread, bounded queue)
//!   -> append returns; openraft's leader replicates the entries from the tail right away
//!   -> the flusher drains the queue, appends it all to the active segment (crate::segment)
//!      and fdatasyncs once
//!   -> then fires IOFlushed for every append in the batch, in order
//! ```
//!
//! openraft 0.10 counts the leader toward the commit quorum only when its `IOFlushed` fires, and
//! followers answer an append only once flushed, so the callback is the durability promise:
//! it never fires before the fsync that covers its entries (ARCHITECTURE.md decision 3). Appends
//! that arrive while an fsync runs wait in the queue and share the next one.
//!
//! Truncate, purge and vote go through the same queue and return once durable, so every write
//! reaches disk in the order openraft issued it. The first storage error fails the store for
//! good: it is returned to openraft as an `io::Error` whose source is the [`LogStoreError`]
//! (which stops the node) and every later call fails too.
//!
//! On disk, in the node's data directory:
//!
//! ```text
//! log/        the segment files ([`crate::segment`]): one record per entry, [`codec`]-encoded
//! history/    segment files of entries below the purge point that came with an installed
//!             snapshot (a member that caught up by snapshot reads old messages from them)
//! raft-meta   vote, committed log id, last purged log id and the retention floor, replaced
//!             atomically ([`crate::segment::MetaFile`])
//! CORRUPT     only after corrupt data was found (a bad record met by a read or by the scrub,
//!             `scrub.rs`): why. The store then refuses to open: this member's log is not a
//!             faithful copy any more and must be rebuilt from its group.
//! ```
//!
//! Two lower bounds: openraft's purge point (`last_purged`: entries at or below it are no longer
//! part of the Raft log) and the retention floor (entries below it may be deleted from disk).
//! Segment files go only when both allow it, so the broker can go on reading messages below the
//! purge point ([`LogReader::read_entries`]) until retention drops them.

mod flusher;
mod mem;
mod scrub;
#[cfg(test)]
mod test_backend;
#[cfg(test)]
mod tests;

use std::fmt::Debug;
use std::ops::{Bound, Range, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogIdOptionExt, LogState, OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use flusher::{AppendDone, FlushCommand};
pub use flusher::{FLUSH_QUEUE_CAPACITY, MAX_COMMANDS_PER_FLUSH};
use mem::MemLog;

use crate::codec;
use crate::segment::{
    DEFAULT_SEGMENT_BYTES, FaultHook, MetaFile, SegmentConfig, SegmentError, SegmentLog,
    StoredRecord,
};
use crate::storage_fault::{FailureKind, is_no_space};
use crate::types::{Entry, LogId, TypeConfig, Vote};

pub use scrub::{DEFAULT_SCRUB_BYTES_PER_SEC, ScrubConfig};

/// The directory of the segment files inside a node's data directory.
pub const LOG_DIR_NAME: &str = "log";

/// The directory of the history segments (entries that came with an installed snapshot).
pub const HISTORY_DIR_NAME: &str = "history";

/// The metadata file (vote, committed, purge point, retention floor) in the data directory.
pub const META_FILE_NAME: &str = "raft-meta";

/// The marker left in the data directory once corrupt data was found (see the module docs).
pub const CORRUPT_MARKER_FILE_NAME: &str = "CORRUPT";

/// The redb file in which RaftMQ before the segment files kept its log: a data directory that
/// holds one is refused with a clear error instead of being read as empty.
pub const LEGACY_LOG_FILE_NAME: &str = "raft-log.redb";

/// Default byte cap of the in-memory cache of recent durable entries (entries not yet durable
/// are always held, whatever the cap).
pub const DEFAULT_LOG_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The most entries one [`LogReader::read_entries`] call returns; callers page through longer
/// ranges.
pub const MAX_READ_ENTRIES: u64 = 65_536;

/// Why the log store failed. The storage failures keep their kind apart ([`kind`](Self::kind):
/// a full disk, an I/O error, corrupt data, an earlier failure) and carry their source. Cloneable
/// (sources are shared) so that one failed flush can report the same error to every command it
/// carried.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("cannot open the raft log at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<LogStoreError>,
    },
    /// The disk is full (ENOSPC) outside the segment files (creating a directory).
    #[error("raft log disk is full: {source}")]
    NoSpace {
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("raft log I/O failed: {source}")]
    Io {
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The segment files or the metadata file failed: full disk, I/O error or corruption, each
    /// naming the file (see [`SegmentError`]).
    #[error("raft log {source}")]
    Segments {
        #[source]
        source: Arc<SegmentError>,
    },
    #[error("raft log entry {index} on disk is corrupt: {reason}")]
    CorruptEntry { index: u64, reason: String },
    #[error("raft log metadata is corrupt: {reason}")]
    CorruptMeta { reason: String },
    /// Corrupt data was found earlier (the marker file says what and where): the member must
    /// not take part in its group with this log.
    #[error(
        "this member's raft log was found corrupt earlier ({reason}; recorded in {marker}): its data cannot be trusted. Replace the member: remove it from its group (mq cluster remove-member), clear its --data-dir, and add it back (mq cluster add-member); it catches up from its peers"
    )]
    MarkedCorrupt { marker: PathBuf, reason: String },
    #[error("raft log is missing entries {missing:?} that should be on disk")]
    MissingEntries { missing: Range<u64> },
    /// A data directory written by a RaftMQ that kept its log in redb.
    #[error(
        "{path} is a raft log in the format of an older RaftMQ (redb); this version keeps the log in segment files: start the member with a fresh --data-dir and let it catch up from its group"
    )]
    LegacyFormat { path: PathBuf },
    /// The store failed earlier (in this call's flush or before): every call fails since, and
    /// `first` is the failure that stopped it.
    #[error("raft log stopped after an earlier failure: {first}")]
    PreviousFailure {
        #[source]
        first: Box<LogStoreError>,
    },
    #[error("cannot encode a raft log record: {0}")]
    Encode(String),
    #[error("append breaks the raft log: {0}")]
    NotConsecutive(String),
    #[error("a raft log read task failed: {0}")]
    ReadTask(String),
    #[error("raft log is shut down")]
    Closed,
    #[error("cannot start the raft log flusher thread: {0}")]
    Spawn(#[source] Arc<std::io::Error>),
}

impl From<SegmentError> for LogStoreError {
    fn from(source: SegmentError) -> Self {
        LogStoreError::Segments {
            source: Arc::new(source),
        }
    }
}

impl LogStoreError {
    /// An I/O error outside the segment files (creating the data directory), by kind.
    pub(crate) fn io(source: std::io::Error) -> Self {
        if is_no_space(&source) {
            LogStoreError::NoSpace {
                source: Arc::new(source),
            }
        } else {
            LogStoreError::Io {
                source: Arc::new(source),
            }
        }
    }

    /// What kind of failure this is. An error from opening the log has the kind of its cause.
    pub fn kind(&self) -> FailureKind {
        match self {
            LogStoreError::Open { source, .. } => source.kind(),
            LogStoreError::NoSpace { .. } => FailureKind::NoSpace,
            LogStoreError::Io { .. } => FailureKind::Io,
            LogStoreError::Segments { source } => match &**source {
                error if error.is_no_space() => FailureKind::NoSpace,
                error if error.is_corruption() => FailureKind::Corrupt,
                SegmentError::Failed { .. } => FailureKind::PreviousFailure,
                SegmentError::Io { .. } => FailureKind::Io,
                _ => FailureKind::Other,
            },
            LogStoreError::CorruptEntry { .. }
            | LogStoreError::CorruptMeta { .. }
            | LogStoreError::MarkedCorrupt { .. }
            | LogStoreError::MissingEntries { .. } => FailureKind::Corrupt,
            LogStoreError::PreviousFailure { .. } => FailureKind::PreviousFailure,
            LogStoreError::LegacyFormat { .. }
            | LogStoreError::Encode(_)
            | LogStoreError::NotConsecutive(_)
            | LogStoreError::ReadTask(_)
            | LogStoreError::Closed
            | LogStoreError::Spawn(_) => FailureKind::Other,
        }
    }

    /// Whether this error means a record on disk is not what was written (a bad CRC, a cut
    /// or misnumbered record, an entry that does not decode): the cases that mark the data
    /// directory corrupt. Not a missing range (which a race can explain) nor a metadata file
    /// (checked when the store opens).
    pub fn is_corrupt_record(&self) -> bool {
        match self {
            LogStoreError::Segments { source } => {
                source.is_corruption() && !matches!(**source, SegmentError::CorruptMeta { .. })
            }
            LogStoreError::CorruptEntry { .. } => true,
            _ => false,
        }
    }

    /// The failure that started it all: the first failure behind a
    /// [`PreviousFailure`](Self::PreviousFailure), else this error itself.
    pub fn first_failure(&self) -> &LogStoreError {
        match self {
            LogStoreError::PreviousFailure { first } => first.first_failure(),
            other => other,
        }
    }
}

impl From<codec::CodecError> for LogStoreError {
    fn from(e: codec::CodecError) -> Self {
        LogStoreError::Encode(e.to_string())
    }
}

/// Tunables of the log store.
#[derive(Clone, Debug)]
pub struct LogStoreConfig {
    /// Byte cap of the cache of recent durable entries.
    pub cache_bytes: usize,
    /// The size at which a segment file is sealed and a new one started.
    pub segment_bytes: u64,
    /// TEST ONLY: skip the group commit's fsyncs (see [`SegmentConfig::unsafe_skip_fsync`]).
    pub unsafe_skip_fsync: bool,
    /// Background verification of the finalized segments (`None`: off).
    pub scrub: Option<ScrubConfig>,
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            cache_bytes: DEFAULT_LOG_CACHE_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            unsafe_skip_fsync: false,
            scrub: None,
        }
    }
}

/// What the metadata file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogMeta {
    pub(crate) vote: Option<Vote>,
    pub(crate) committed: Option<LogId>,
    pub(crate) last_purged: Option<LogId>,
    /// Entries below this index may be deleted from disk (the broker's retention).
    pub(crate) retention_floor: u64,
}

impl LogMeta {
    /// The last index whose segment may be deleted: at or below both the purge point and the
    /// retention floor.
    pub(crate) fn deletable_upto(&self) -> Option<u64> {
        let purged = self.last_purged?.index;
        let below_floor = self.retention_floor.checked_sub(1)?;
        Some(purged.min(below_floor))
    }
}

/// Counters of the log store, for the benchmark and for Prometheus later.
#[derive(Debug, Default)]
pub struct LogStoreMetrics {
    appends: AtomicU64,
    entries_appended: AtomicU64,
    transactions: AtomicU64,
    fsyncs: AtomicU64,
    commands_flushed: AtomicU64,
    entries_flushed: AtomicU64,
    bytes_flushed: AtomicU64,
    commit_nanos_total: AtomicU64,
    entries_read_from_cache: AtomicU64,
    entries_read_from_disk: AtomicU64,
    /// 1 while the flusher waits for disk space.
    waiting_for_space: AtomicU64,
    /// 1 while the state machine waits for disk space before an apply (`disk_space`).
    apply_waiting_for_space: AtomicU64,
    segments_scrubbed: AtomicU64,
    scrub_passes: AtomicU64,
}

/// A point-in-time copy of [`LogStoreMetrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStoreMetricsSnapshot {
    /// `append()` calls.
    pub appends: u64,
    /// Entries handed to `append()`.
    pub entries_appended: u64,
    /// Batches of queued commands the flusher wrote.
    pub transactions: u64,
    /// Of those, the ones that ended with an fsync of the segments (one group commit each).
    pub fsyncs: u64,
    /// Queued commands (appends, truncates, votes, ...) written by those batches.
    pub commands_flushed: u64,
    /// Entries written to disk.
    pub entries_flushed: u64,
    /// Encoded entry bytes written to disk.
    pub bytes_flushed: u64,
    /// Total time spent writing and syncing batches, in nanoseconds.
    pub commit_nanos_total: u64,
    /// Entries served from the in-memory tail.
    pub entries_read_from_cache: u64,
    /// Entries read back from the segment files.
    pub entries_read_from_disk: u64,
    /// The disk is full: appends wait (this member acknowledges nothing new) until space is
    /// freed.
    pub waiting_for_space: bool,
    /// The disk is nearly full: the state machine applies nothing new until space is freed
    /// ([`crate::disk_space`]).
    pub apply_waiting_for_space: bool,
    /// Finalized segments the scrub verified (every record's CRC), over all passes.
    pub segments_scrubbed: u64,
    /// Complete scrub passes over every finalized segment.
    pub scrub_passes: u64,
}

impl LogStoreMetricsSnapshot {
    /// Whether this member is held up by a full disk, in its log or its state machine.
    pub fn disk_full(&self) -> bool {
        self.waiting_for_space || self.apply_waiting_for_space
    }
}

impl LogStoreMetrics {
    pub(crate) fn record_flush(
        &self,
        durable: bool,
        commands: u64,
        entries: u64,
        bytes: u64,
        commit_nanos: u64,
    ) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        if durable {
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.commands_flushed.fetch_add(commands, Ordering::Relaxed);
        self.entries_flushed.fetch_add(entries, Ordering::Relaxed);
        self.bytes_flushed.fetch_add(bytes, Ordering::Relaxed);
        self.commit_nanos_total
            .fetch_add(commit_nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LogStoreMetricsSnapshot {
        LogStoreMetricsSnapshot {
            appends: self.appends.load(Ordering::Relaxed),
            entries_appended: self.entries_appended.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            commands_flushed: self.commands_flushed.load(Ordering::Relaxed),
            entries_flushed: self.entries_flushed.load(Ordering::Relaxed),
            bytes_flushed: self.bytes_flushed.load(Ordering::Relaxed),
            commit_nanos_total: self.commit_nanos_total.load(Ordering::Relaxed),
            entries_read_from_cache: self.entries_read_from_cache.load(Ordering::Relaxed),
            entries_read_from_disk: self.entries_read_from_disk.load(Ordering::Relaxed),
            waiting_for_space: self.waiting_for_space.load(Ordering::Relaxed) != 0,
            apply_waiting_for_space: self.apply_waiting_for_space.load(Ordering::Relaxed) != 0,
            segments_scrubbed: self.segments_scrubbed.load(Ordering::Relaxed),
            scrub_passes: self.scrub_passes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_waiting_for_space(&self, waiting: bool) {
        self.waiting_for_space
            .store(u64::from(waiting), Ordering::Relaxed);
    }
}

/// State shared by the store, its readers and the flusher thread.
pub(crate) struct Shared {
    /// `None` once closed by [`FlusherHandle::stop`]: later disk reads fail with `Closed`.
    segments: RwLock<Option<SegmentLog>>,
    /// Entries below the purge point that came with an installed snapshot (read-only; only the
    /// flusher replaces or trims it).
    history: RwLock<Option<SegmentLog>>,
    data_dir: PathBuf,
    segment_config: SegmentConfig,
    meta_file: MetaFile,
    /// What the metadata file holds (written by the flusher only).
    meta: Mutex<LogMeta>,
    mem: RwLock<MemLog>,
    failure: OnceLock<LogStoreError>,
    /// Becomes true with the first failure, for whoever must act on it without waiting for the
    /// next call to fail (a scrub can fail an idle store).
    failed: tokio::sync::watch::Sender<bool>,
    /// Set when the flusher is asked to stop: a flusher waiting for disk space gives up then.
    stopping: std::sync::atomic::AtomicBool,
    pub(crate) metrics: LogStoreMetrics,
}

impl Shared {
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The remembered first failure, as the error every later call returns.
    pub(crate) fn failure(&self) -> Option<LogStoreError> {
        self.failure
            .get()
            .map(|first| LogStoreError::PreviousFailure {
                first: Box::new(first.clone()),
            })
    }

    /// Remembers `error` as the store's failure if it is the first one. Corrupt data is also
    /// recorded durably in the marker file, so that the member refuses to start with this log
    /// again (a restart would otherwise go on until something read the bad record again).
    pub(crate) fn fail(&self, error: &LogStoreError) {
        // The marker first: whoever sees the failure may stop the process at once.
        if self.failure.get().is_none() && error.is_corrupt_record() {
            self.mark_corrupt(error);
        }
        if self.failure.set(error.clone()).is_ok() {
            tracing::error!(%error, "raft log store failed; every later call fails too");
            self.failed.send_replace(true);
        }
    }

    fn mark_corrupt(&self, error: &LogStoreError) {
        let marker = MetaFile::new(&self.data_dir, CORRUPT_MARKER_FILE_NAME);
        match marker.store(error.to_string().as_bytes()) {
            Ok(()) => tracing::error!(
                marker = %marker.path().display(),
                "raft log: corrupt data recorded; this member will refuse to start until it is replaced"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "raft log: cannot record the corruption in {}",
                marker.path().display()
            ),
        }
    }

    /// Fails the store when a read met corrupt data (other read errors leave it running).
    fn check_read<T>(&self, read: Result<T, LogStoreError>) -> Result<T, LogStoreError> {
        read.inspect_err(|error| {
            if error.is_corrupt_record() {
                self.fail(error);
            }
        })
    }

    /// Runs `work` on the open segment log, shared with readers (closing waits for it).
    pub(crate) fn with_segments<T>(
        &self,
        work: impl FnOnce(&SegmentLog) -> Result<T, LogStoreError>,
    ) -> Result<T, LogStoreError> {
        let segments = self
            .segments
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match segments.as_ref() {
            Some(log) => work(log),
            None => Err(LogStoreError::Closed),
        }
    }

    /// Runs `work` on the open segment log alone (the flusher's writes; readers wait).
    pub(crate) fn with_segments_mut<T>(
        &self,
        work: impl FnOnce(&mut SegmentLog) -> Result<T, LogStoreError>,
    ) -> Result<T, LogStoreError> {
        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match segments.as_mut() {
            Some(log) => work(log),
            None => Err(LogStoreError::Closed),
        }
    }

    /// Runs `work` on the history segments, if there are any.
    pub(crate) fn with_history_mut<T>(
        &self,
        work: impl FnOnce(&mut Option<SegmentLog>) -> Result<T, LogStoreError>,
    ) -> Result<T, LogStoreError> {
        let mut history = self
            .history
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut history)
    }

    /// Reads `[start, end)` of entries below the live log: from the history segments for the
    /// range they hold, then from what the segment files still hold below the purge point.
    /// Stops at the first index neither holds (retention took it).
    fn read_below_live(&self, start: u64, end: u64) -> Result<Vec<Entry>, LogStoreError> {
        let mut entries = Vec::new();
        let mut next = start;
        let history_plan = {
            let history = self
                .history
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match history.as_ref() {
                Some(log) if next >= log.first_index() && next < log.next_index() => {
                    Some(log.read_plan(next, end.min(log.next_index()))?)
                }
                _ => None,
            }
        };
        if let Some(plan) = history_plan {
            entries.extend(decode_records(plan.read(u64::MAX)?)?);
            next = entries.last().map_or(next, |e| e.log_id.index + 1);
        }
        if next < end {
            let plan = self.with_segments(|log| {
                if next < log.first_index() || next >= log.next_index() {
                    return Ok(None);
                }
                Ok(Some(log.read_plan(next, end)?))
            })?;
            if let Some(plan) = plan {
                entries.extend(decode_records(plan.read(u64::MAX)?)?);
            }
        }
        Ok(entries)
    }

    /// Reads `[start, end)` wherever the entries are: below the live log (history, segments
    /// below the purge point) and in it. What retention took is simply not there.
    fn read_any_blocking(&self, start: u64, end: u64) -> Result<Vec<Entry>, LogStoreError> {
        self.check()?;
        let live_start = self.mem_read().live_start();
        if start >= live_start {
            return self.read_range_blocking(start, end);
        }
        let mut entries = self.check_read(self.read_below_live(start, end.min(live_start)))?;
        let contiguous_to_live = entries.last().map_or(start == live_start, |last| {
            last.log_id.index + 1 == live_start
        });
        if end > live_start && contiguous_to_live {
            entries.extend(self.read_range_blocking(live_start, end)?);
        }
        Ok(entries)
    }

    pub(crate) fn meta(&self) -> std::sync::MutexGuard<'_, LogMeta> {
        self.meta
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the metadata file (durably) with `meta`.
    pub(crate) fn store_meta(&self, meta: &LogMeta) -> Result<(), LogStoreError> {
        let bytes = codec::encode(meta)?;
        self.meta_file.store(&bytes)?;
        Ok(())
    }

    /// Closes the segment files once the flusher is gone; every later disk access fails.
    fn close_segments(&self) {
        self.segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    fn check(&self) -> Result<(), LogStoreError> {
        match self.failure() {
            Some(failed) => Err(failed),
            None => Ok(()),
        }
    }

    // A panic while holding the lock cannot leave MemLog half-updated in a way reads depend on
    // (every mutation keeps its invariant before returning), so a poisoned lock is still usable.
    pub(crate) fn mem_read(&self) -> RwLockReadGuard<'_, MemLog> {
        self.mem
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn mem_write(&self) -> RwLockWriteGuard<'_, MemLog> {
        self.mem
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads `[start, end)` (clipped to the live log): the durable part from the segments, the
    /// rest from memory. Blocks on disk I/O when the range reaches below the cache.
    fn read_range_blocking(&self, start: u64, end: u64) -> Result<Vec<Entry>, LogStoreError> {
        self.check()?;
        let read = self.mem_read().read(start, end);
        let mut entries = if read.durable_range.is_empty() {
            Vec::new()
        } else {
            self.read_durable(read.durable_range.clone(), None)?
        };
        self.metrics
            .entries_read_from_cache
            .fetch_add(read.cached.len() as u64, Ordering::Relaxed);
        self.metrics
            .entries_read_from_disk
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        entries.extend(read.cached);
        Ok(entries)
    }

    /// Reads entries that memory says are durable. They must all be there, except a prefix that a
    /// concurrent purge may have removed. `purged_next` is the first index not purged, when the
    /// caller already holds the memory lock; otherwise it is looked up after the read.
    fn read_durable(
        &self,
        range: Range<u64>,
        purged_next: Option<u64>,
    ) -> Result<Vec<Entry>, LogStoreError> {
        let caller_holds_lock = purged_next;
        let result = self.read_durable_inner(range.clone()).and_then(|entries| {
            let first_found = match entries.first() {
                Some(first) => first.log_id.index,
                None => range.end,
            };
            let contiguous = entries
                .iter()
                .zip(first_found..)
                .all(|(entry, index)| entry.log_id.index == index);
            let ends_right = entries
                .last()
                .is_none_or(|last| last.log_id.index + 1 == range.end);
            let start_ok = first_found == range.start || {
                let purged_next = purged_next
                    .unwrap_or_else(|| self.mem_read().last_purged().map_or(0, |p| p.index + 1));
                first_found <= purged_next
            };
            // A truncate that ran since memory was consulted may have removed the tail of the
            // range (only uncommitted entries are ever truncated): return what is still there.
            // (Not asked when the caller holds the memory lock: nothing can truncate then.)
            let truncated_meanwhile = || {
                caller_holds_lock.is_none()
                    && self.mem_read().last_log_id().next_index() < range.end
            };
            if contiguous && start_ok && (ends_right || truncated_meanwhile()) {
                Ok(entries)
            } else {
                Err(LogStoreError::MissingEntries { missing: range })
            }
        });
        result.inspect_err(|e| self.fail(e))
    }

    /// Reads `range` from the segment files: the plan under the lock, the reading without it.
    /// A range that starts below what the files hold (a concurrent purge) yields what is left.
    fn read_durable_inner(&self, range: Range<u64>) -> Result<Vec<Entry>, LogStoreError> {
        let plan = self.with_segments(|log| {
            let start = range.start.max(log.first_index());
            Ok(log.read_plan(start, range.end)?)
        })?;
        decode_records(plan.read(u64::MAX)?)
    }

    /// The log id of a durable entry (used when a truncate goes below the cache, with the memory
    /// lock held: hence the purge point is passed in).
    fn durable_log_id(&self, index: u64, purged_next: u64) -> Result<LogId, LogStoreError> {
        let entries = self.read_durable(index..index + 1, Some(purged_next))?;
        entries
            .first()
            .map(|e| e.log_id)
            .ok_or(LogStoreError::MissingEntries {
                missing: index..index + 1,
            })
    }
}

/// Appends `entries` to a segment log, each as one record whose payload is the entry's
/// [`codec`] encoding (not yet synced). Returns the bytes encoded.
pub(crate) fn append_entries(
    log: &mut SegmentLog,
    entries: &[Entry],
    encode_buf: &mut Vec<u8>,
) -> Result<u64, LogStoreError> {
    encode_buf.clear();
    let mut ends = Vec::with_capacity(entries.len());
    for entry in entries {
        codec::encode_into(entry, encode_buf)?;
        ends.push(encode_buf.len());
    }
    let mut start = 0;
    let mut records = Vec::with_capacity(entries.len());
    for (entry, &end) in entries.iter().zip(&ends) {
        let id = crate::segment::RecordId {
            index: entry.log_id.index,
            term: entry.log_id.leader_id.term,
        };
        records.push((id, &encode_buf[start..end]));
        start = end;
    }
    log.append(&records)?;
    Ok(encode_buf.len() as u64)
}

/// Decodes the entries of segment records, checking each one sits under its own index.
fn decode_records(records: Vec<StoredRecord>) -> Result<Vec<Entry>, LogStoreError> {
    let mut entries = Vec::with_capacity(records.len());
    for record in records {
        let index = record.id.index;
        let entry: Entry =
            codec::decode(&record.payload).map_err(|e| LogStoreError::CorruptEntry {
                index,
                reason: e.to_string(),
            })?;
        if entry.log_id.index != index {
            return Err(LogStoreError::CorruptEntry {
                index,
                reason: format!("stored under index {index} but has log id {}", entry.log_id),
            });
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Reads `[start, end)` without blocking the async runtime on disk I/O.
async fn read_range(
    shared: &Arc<Shared>,
    start: u64,
    end: u64,
) -> Result<Vec<Entry>, LogStoreError> {
    shared.check()?;
    let needs_disk = !shared.mem_read().read(start, end).durable_range.is_empty();
    if !needs_disk {
        return shared.read_range_blocking(start, end);
    }
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || shared.read_range_blocking(start, end))
        .await
        .map_err(|e| LogStoreError::ReadTask(e.to_string()))?
}

/// `[start, end)` of any range bounds over log indexes.
fn to_start_end(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// Stops the flusher thread after everything queued before the stop is on disk, then closes
/// the segment files.
#[derive(Clone)]
pub struct FlusherHandle {
    tx: mpsc::Sender<FlushCommand>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    shared: Arc<Shared>,
}

impl Debug for FlusherHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlusherHandle").finish_non_exhaustive()
    }
}

impl FlusherHandle {
    /// Lets the flusher finish every queued write, waits for its thread to exit, and closes the
    /// segment files. Afterwards every call on the store and its readers fails with `Closed` (or
    /// is served from the memory tail).
    pub async fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // If the thread already exited (every store dropped), there is nobody to tell.
        let _ = self.tx.send(FlushCommand::Stop).await;
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("raft log flusher thread panicked");
            }
        }
        self.shared.close_segments();
    }
}

/// The log store that openraft drives (`RaftLogStorage`). Owned by openraft; keep a
/// [`LogReader`] and a [`FlusherHandle`] for your own use.
pub struct LogStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<FlushCommand>,
    flusher: FlusherHandle,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (or creates) the log in `data_dir` and starts its flusher thread.
    pub fn open(data_dir: &Path, config: LogStoreConfig) -> Result<LogStore, LogStoreError> {
        LogStore::open_with(data_dir, config, None)
    }

    /// [`open`](Self::open), with a fault hook on the segment files (tests stop or fail them at
    /// chosen steps).
    pub(crate) fn open_with(
        data_dir: &Path,
        config: LogStoreConfig,
        fault_hook: Option<FaultHook>,
    ) -> Result<LogStore, LogStoreError> {
        let open_error = |source: LogStoreError| LogStoreError::Open {
            path: data_dir.to_path_buf(),
            source: Box::new(source),
        };
        crate::segment::create_dir_all_durably(data_dir)
            .map_err(|e| open_error(LogStoreError::io(e)))?;
        let legacy = data_dir.join(LEGACY_LOG_FILE_NAME);
        if legacy.exists() {
            return Err(open_error(LogStoreError::LegacyFormat { path: legacy }));
        }
        let marker = MetaFile::new(data_dir, CORRUPT_MARKER_FILE_NAME);
        let marked = match marker.load() {
            Ok(None) => None,
            Ok(Some(reason)) => Some(String::from_utf8_lossy(&reason).into_owned()),
            // A damaged marker still says that something was found.
            Err(e) => Some(format!("the marker itself is unreadable: {e}")),
        };
        if let Some(reason) = marked {
            return Err(open_error(LogStoreError::MarkedCorrupt {
                marker: marker.path().to_path_buf(),
                reason,
            }));
        }
        let meta_file = MetaFile::new(data_dir, META_FILE_NAME);
        let meta = match meta_file.load().map_err(|e| open_error(e.into()))? {
            None => LogMeta::default(),
            Some(bytes) => codec::decode::<LogMeta>(&bytes).map_err(|e| {
                open_error(LogStoreError::CorruptMeta {
                    reason: format!("{}: {e}", meta_file.path().display()),
                })
            })?,
        };
        let segment_config = SegmentConfig {
            segment_bytes: config.segment_bytes,
            unsafe_skip_fsync: config.unsafe_skip_fsync,
        };
        if config.unsafe_skip_fsync {
            tracing::warn!(
                "raft log: fsyncs are SKIPPED (test only): a power loss loses acknowledged entries"
            );
        }
        let log_dir = data_dir.join(LOG_DIR_NAME);
        let (mut segments, report) =
            SegmentLog::open(&log_dir, segment_config.clone(), meta.deletable_upto())
                .map_err(|e| open_error(e.into()))?;
        let history_dir = data_dir.join(HISTORY_DIR_NAME);
        let history = if history_dir.exists() {
            let floor_purge = meta.retention_floor.checked_sub(1);
            let (history, _) = SegmentLog::open(&history_dir, segment_config.clone(), floor_purge)
                .map_err(|e| open_error(e.into()))?;
            Some(history)
        } else {
            None
        };
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(
                file = %torn.path.display(),
                position = torn.position,
                kept_records = torn.kept_records,
                reason = %torn.reason,
                "raft log: cut a torn tail (entries written but never synced before a crash)"
            );
        }
        for removed in &report.removed {
            tracing::info!(file = %removed.display(), "raft log: removed a leftover file");
        }
        if let Some(hook) = fault_hook {
            segments.set_fault_hook(hook);
        }
        // The live log (what openraft sees) starts above the purge point, even where the files
        // still hold older entries for readers.
        let purged_next = meta.last_purged.next_index();
        let last_entry = match segments.last_id() {
            Some(last) if last.index >= purged_next => {
                let records = segments
                    .read(last.index, last.index + 1, u64::MAX)
                    .map_err(|e| open_error(e.into()))?;
                let record = records.first().ok_or_else(|| {
                    open_error(LogStoreError::MissingEntries {
                        missing: last.index..last.index + 1,
                    })
                })?;
                let entry: Entry = codec::decode(&record.payload).map_err(|e| {
                    open_error(LogStoreError::CorruptEntry {
                        index: last.index,
                        reason: e.to_string(),
                    })
                })?;
                Some(entry.log_id)
            }
            _ => None,
        };
        let first_stored = last_entry.map(|_| segments.first_index().max(purged_next));
        let last_log_id = last_entry.max(meta.last_purged);
        let mem = MemLog::new(
            first_stored,
            last_log_id,
            meta.last_purged,
            meta.vote,
            meta.committed,
            config.cache_bytes,
        );

        let shared = Arc::new(Shared {
            segments: RwLock::new(Some(segments)),
            history: RwLock::new(history),
            data_dir: data_dir.to_path_buf(),
            segment_config,
            meta_file,
            meta: Mutex::new(meta),
            mem: RwLock::new(mem),
            failure: OnceLock::new(),
            failed: tokio::sync::watch::Sender::new(false),
            stopping: std::sync::atomic::AtomicBool::new(false),
            metrics: LogStoreMetrics::default(),
        });
        let (tx, rx) = mpsc::channel(FLUSH_QUEUE_CAPACITY);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("raft-log-flusher".to_string())
            .spawn(move || flusher::run(thread_shared, rx))
            .map_err(|e| open_error(LogStoreError::Spawn(Arc::new(e))))?;
        let flusher = FlusherHandle {
            tx: tx.clone(),
            thread: Arc::new(Mutex::new(Some(thread))),
            shared: Arc::clone(&shared),
        };
        if let Some(scrub) = config.scrub {
            let scrub_shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("raft-log-scrub".to_string())
                .spawn(move || scrub::run(&scrub_shared, scrub))
                .map_err(|e| open_error(LogStoreError::Spawn(Arc::new(e))))?;
        }
        Ok(LogStore {
            shared,
            tx,
            flusher,
        })
    }

    /// A cloneable reader of the log, usable outside openraft.
    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
            tx: self.tx.clone(),
        }
    }

    /// The handle that stops the flusher on shutdown.
    pub fn flusher(&self) -> FlusherHandle {
        self.flusher.clone()
    }

    pub fn metrics(&self) -> LogStoreMetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    async fn send(&self, command: FlushCommand) -> Result<(), LogStoreError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| LogStoreError::Closed)
    }

    async fn send_and_wait(
        &self,
        make: impl FnOnce(flusher::Ack) -> FlushCommand,
    ) -> Result<(), LogStoreError> {
        let (done, wait) = oneshot::channel();
        self.send(make(done)).await?;
        wait.await.map_err(|_| LogStoreError::Closed)?
    }

    /// Appends entries and returns once they are readable and queued for the flusher; `done`
    /// runs on the flusher thread once they are durable (or failed). This is what openraft's
    /// `append` does with its `IOFlushed` callback; it is public for benchmarks and tools that
    /// drive a log store directly (a running node's store belongs to openraft).
    pub async fn append_with_callback(
        &mut self,
        entries: Vec<Entry>,
        done: impl FnOnce(Result<(), std::io::Error>) + Send + 'static,
    ) -> Result<(), LogStoreError> {
        self.append_with(entries, Box::new(done)).await
    }

    pub(crate) async fn append_with(
        &mut self,
        entries: Vec<Entry>,
        done: AppendDone,
    ) -> Result<(), LogStoreError> {
        self.shared.check()?;
        if entries.is_empty() {
            done(Ok(()));
            return Ok(());
        }
        self.shared
            .mem_write()
            .append(&entries)
            .map_err(|e| LogStoreError::NotConsecutive(e.to_string()))?;
        self.shared.metrics.appends.fetch_add(1, Ordering::Relaxed);
        self.shared
            .metrics
            .entries_appended
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        self.send(FlushCommand::Append { entries, done }).await
    }

    pub(crate) async fn truncate_since(&mut self, since: u64) -> Result<(), LogStoreError> {
        self.shared.check()?;
        {
            let mut mem = self.shared.mem_write();
            if let Some(prev) = mem.truncate(since) {
                // Rare (a conflict below the cache): one small read while holding the lock keeps
                // readers from seeing a last log id that is not there.
                let purged_next = mem.last_purged().map_or(0, |p| p.index + 1);
                let last = self.shared.durable_log_id(prev, purged_next)?;
                mem.set_last_after_truncate(last);
            }
        }
        self.send_and_wait(|done| FlushCommand::Truncate { since, done })
            .await
    }

    pub(crate) async fn purge_upto(&mut self, upto: LogId) -> Result<(), LogStoreError> {
        self.shared.check()?;
        let upto = self.shared.mem_write().purge(upto);
        self.send_and_wait(|done| FlushCommand::Purge { upto, done })
            .await
    }

    pub(crate) async fn save_vote_durably(&mut self, vote: Vote) -> Result<(), LogStoreError> {
        self.shared.check()?;
        self.send_and_wait(|done| FlushCommand::SaveVote { vote, done })
            .await?;
        self.shared.mem_write().set_vote(vote);
        Ok(())
    }
}

/// The `io::Error` openraft's storage traits take, with the typed error as its source.
fn io_error(e: LogStoreError) -> std::io::Error {
    std::io::Error::other(e)
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, std::io::Error> {
        self.shared.check().map_err(io_error)?;
        let mem = self.shared.mem_read();
        Ok(LogState {
            last_purged_log_id: mem.last_purged(),
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), std::io::Error> {
        self.save_vote_durably(*vote).await.map_err(io_error)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        self.shared.check().map_err(io_error)?;
        self.shared.mem_write().set_committed(committed);
        self.send(FlushCommand::SaveCommitted { committed })
            .await
            .map_err(io_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, std::io::Error> {
        self.shared.check().map_err(io_error)?;
        Ok(self.shared.mem_read().committed())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), std::io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let done: AppendDone = Box::new(move |result| callback.io_completed(result));
        self.append_with(entries, done).await.map_err(io_error)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), std::io::Error> {
        self.truncate_since(last_log_id.next_index())
            .await
            .map_err(io_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), std::io::Error> {
        self.purge_upto(log_id).await.map_err(io_error)
    }
}

/// A cloneable handle that reads the log: openraft's replication uses it, and so does the broker
/// to serve messages (the log is the commit log). It may return entries that are not committed
/// yet: callers bound their reads by what the state machine has applied.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
    /// To the flusher: a reader may raise the retention floor.
    tx: mpsc::Sender<FlushCommand>,
}

impl Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader").finish_non_exhaustive()
    }
}

impl LogReader {
    /// Says whether the state machine waits for disk space (shown with the log's metrics).
    pub(crate) fn set_apply_waiting_for_space(&self, waiting: bool) {
        self.shared
            .metrics
            .apply_waiting_for_space
            .store(u64::from(waiting), Ordering::Relaxed);
    }

    /// Entries with index in `range`, in order, clipped to the live log and to
    /// [`MAX_READ_ENTRIES`]. Reads below the in-memory cache run on a blocking thread.
    pub async fn read_entries(&self, range: Range<u64>) -> Result<Vec<Entry>, LogStoreError> {
        let end = range.end.min(range.start.saturating_add(MAX_READ_ENTRIES));
        let live_start = self.shared.mem_read().live_start();
        if range.start >= live_start {
            return read_range(&self.shared, range.start, end).await;
        }
        // Below the live log: entries that are still on disk (history, or segments that
        // retention has not deleted yet).
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.read_any_blocking(range.start, end))
            .await
            .map_err(|e| LogStoreError::ReadTask(e.to_string()))?
    }

    /// The entry at `index`, if the log (or what is left below its purge point) holds it.
    pub async fn read_entry(&self, index: u64) -> Result<Option<Entry>, LogStoreError> {
        let mut entries = self.read_entries(index..index.saturating_add(1)).await?;
        Ok(entries.pop())
    }

    /// [`read_entries`](Self::read_entries) for synchronous callers (it may block on disk I/O).
    pub fn read_entries_blocking(&self, range: Range<u64>) -> Result<Vec<Entry>, LogStoreError> {
        let end = range.end.min(range.start.saturating_add(MAX_READ_ENTRIES));
        self.shared.read_any_blocking(range.start, end)
    }

    /// The first index still on disk for readers: the history's, else the segment files'.
    pub fn first_readable_index(&self) -> u64 {
        let history_first = self
            .shared
            .history
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .filter(|log| log.next_index() > log.first_index())
            .map(SegmentLog::first_index);
        let main_first = self
            .shared
            .with_segments(|log| Ok(log.first_index()))
            .unwrap_or(0);
        history_first.map_or(main_first, |h| h.min(main_first))
    }

    /// Installs `dir` (segment files of entries `first..=last`, from a snapshot) as the history
    /// below the purge point, replacing any earlier one, and raises the retention floor to
    /// `first`. Durable before it returns.
    pub async fn install_history(&self, dir: PathBuf, first: u64) -> Result<(), LogStoreError> {
        self.shared.check()?;
        let (done, wait) = oneshot::channel();
        self.tx
            .send(FlushCommand::InstallHistory { dir, first, done })
            .await
            .map_err(|_| LogStoreError::Closed)?;
        wait.await.map_err(|_| LogStoreError::Closed)?
    }

    /// The last log id appended (durable or not), or the last purged one if the log is empty.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.shared.mem_read().last_log_id()
    }

    /// The last purged log id: entries at or below it are gone.
    pub fn last_purged_log_id(&self) -> Option<LogId> {
        self.shared.mem_read().last_purged()
    }

    /// The first failure of the store, if it failed (every call fails since).
    pub fn first_failure(&self) -> Option<LogStoreError> {
        self.shared.failure.get().cloned()
    }

    /// Completes once the store has failed (at once if it already has); returns the failure.
    /// openraft learns of a failure only when one of its calls fails, which an idle member
    /// may not make for a long time; this is for acting on it at once.
    pub async fn failed(&self) -> LogStoreError {
        let mut failed = self.shared.failed.subscribe();
        // The sender lives as long as the store (this reader holds it): wait_for cannot fail
        // while we hold `self`; if it somehow does, report the store as closed.
        let _ = failed.wait_for(|failed| *failed).await;
        self.first_failure().unwrap_or(LogStoreError::Closed)
    }

    /// Entries and bytes held in the in-memory tail right now.
    pub fn cache_usage(&self) -> (usize, usize) {
        let mem = self.shared.mem_read();
        (mem.cached_entries(), mem.cached_bytes())
    }

    pub fn metrics(&self) -> LogStoreMetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Lets entries below `from` be deleted from disk (whole segment files, once openraft has
    /// purged them too): the broker's retention. Returns once the new floor is durable.
    pub async fn retain_from(&self, from: u64) -> Result<(), LogStoreError> {
        self.shared.check()?;
        let (done, wait) = oneshot::channel();
        self.tx
            .send(FlushCommand::Retain { from, done })
            .await
            .map_err(|_| LogStoreError::Closed)?;
        wait.await.map_err(|_| LogStoreError::Closed)?
    }

    /// The retention floor in force (0: nothing may be deleted).
    pub fn retention_floor(&self) -> u64 {
        self.shared.meta().retention_floor
    }

    /// Bytes the segment files take on disk, and how many files there are.
    pub fn disk_usage(&self) -> (u64, usize) {
        self.shared
            .with_segments(|log| Ok((log.disk_bytes(), log.segment_count())))
            .unwrap_or((0, 0))
    }

    /// `(first index, next index, file)` of every segment file, oldest first.
    pub fn segments(&self) -> Vec<(u64, u64, PathBuf)> {
        self.shared
            .with_segments(|log| Ok(log.segments()))
            .unwrap_or_default()
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, std::io::Error> {
        let (start, end) = to_start_end(&range);
        read_range(&self.shared, start, end).await.map_err(io_error)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, std::io::Error> {
        self.shared.check().map_err(io_error)?;
        Ok(self.shared.mem_read().vote())
    }
}
