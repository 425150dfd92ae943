//! The commit log on disk: append-only segment files, as RocketMQ's CommitLog and Kafka's and
//! Redpanda's log segments. The Raft log store keeps its entries here; message bodies live only
//! here, so consumers are served from these files.
//!
//! ```text
//! <dir>/
//!   00000000000000000001.log  sealed, finalized (.idx beside it): entries 1..=416
//!   00000000000000000001.idx  sparse index, written after the segment's data was fsynced
//!   00000000000000000417.log  active: appended to, space reserved ahead of the data
//! ```
//!
//! Where to start reading: [`SegmentLog::append`] (records framed by [`record`], rolled to a new
//! segment at [`SegmentConfig::segment_bytes`]), [`SegmentLog::sync`] (one fdatasync per
//! touched segment, the directory when files came or went, then sidecars of sealed segments),
//! [`SegmentLog::open`] (recovery), [`ReadPlan::read`] (a range of records, read once from disk).
//!
//! Crash safety, step by step (tests in `tests.rs` stop the log at every step and reopen):
//! - Append writes whole records after the data; the caller calls `sync` before it tells anyone
//!   the records are durable. A crash before that leaves a torn tail: recovery cuts the first
//!   segment without a sidecar at its first bad record and deletes the segments after it (none
//!   of it was synced). A bad record in a finalized segment, or followed by a finalized one, is
//!   corruption: `open` fails naming the file and position.
//! - Space: the active segment's disk space is reserved (fallocate, in steps) and new segments
//!   are created before anything is written, so a full disk fails the append cleanly; the old one is cut to its data; its sidecar is written only
//!   after the next sync.
//! - Truncate (a conflict): later segments are deleted from the back, one directory fsync each,
//!   so that the log on disk is always a prefix of itself; the segment holding the cut loses its
//!   sidecar (durably) before it is cut and synced.
//! - Purge: the caller records the purge point durably first; whole segments are then deleted
//!   from the front (a resurrected one is removed again by `open`, which knows the purge point).
//!
//! The first error stops the log for good (every later call fails with
//! [`SegmentError::Failed`]), except a full disk met while creating a segment before anything
//! was written: that append can be tried again once space is freed.

mod error;
mod file;
#[cfg(test)]
mod fuzz_tests;
mod meta;
pub mod record;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

pub use error::{SegmentError, is_no_space};
use file::{Flow, Segment, WalkStop, index_file_name, parse_base, segment_file_name, walk};
pub use file::{INDEX_INTERVAL_BYTES, INDEX_SUFFIX, SEGMENT_SUFFIX, TEMP_SUFFIX};
pub use meta::{MetaFile, create_dir_all_durably, sync_dir};
pub use record::{MAX_PAYLOAD_BYTES, RecordId, record_size};

/// RocketMQ's CommitLog file size: 1 GiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;

/// The smallest segment size accepted (tests use tiny segments to exercise rolls).
pub const MIN_SEGMENT_BYTES: u64 = 1024;

/// Disk space is reserved for the active segment in steps of this size (or the whole segment
/// when it is smaller), always before anything is written there: a full disk then fails an
/// append cleanly, with nothing written, instead of in the middle of a record.
pub const PREALLOCATE_STEP_BYTES: u64 = 16 * 1024 * 1024;

/// Tunables of the segment log.
#[derive(Clone, Debug)]
pub struct SegmentConfig {
    /// A segment is sealed and a new one started before an append would take it past this size
    /// (a single record larger than this gets a segment of its own).
    pub segment_bytes: u64,
    /// TEST ONLY (the broker's hidden `--unsafe-skip-fsync`): the group commit's fdatasyncs of
    /// segments and of their directory are skipped, so appends are reported durable while
    /// they sit in the page cache. A power loss then loses acknowledged entries; jepsen-lite's
    /// power-loss proof uses it to show that its checkers catch that.
    pub unsafe_skip_fsync: bool,
}

impl SegmentConfig {
    /// The space reserved for a segment when it is created or cut.
    fn initial_allocation(&self) -> u64 {
        self.segment_bytes.min(PREALLOCATE_STEP_BYTES)
    }
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            unsafe_skip_fsync: false,
        }
    }
}

/// A step of a mutating operation where a test can make the log stop, as if the process died
/// there (see [`SegmentLog::set_fault_hook`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    CreateSegment,
    Reserve,
    Write,
    Seal,
    Sync,
    SyncDir,
    WriteSidecar,
    DeleteSidecar,
    DeleteSegment,
    Cut,
}

/// Called before each [`Step`]; an error makes the operation fail there.
pub type FaultHook = Arc<dyn Fn(Step) -> io::Result<()> + Send + Sync>;

/// A record read back: its id and its payload (a slice of the buffer it was read into).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub id: RecordId,
    pub payload: Bytes,
}

/// A torn tail cut off by [`SegmentLog::open`]: unsynced data of a crashed process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub position: u64,
    /// Records kept in that segment.
    pub kept_records: u64,
    /// Why the record at `position` was not whole.
    pub reason: String,
}

/// What [`SegmentLog::open`] found and repaired, for the caller to log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub torn_tail: Option<TornTail>,
    /// Files removed: segments after a torn tail, purged segments, stale sidecars and
    /// temporary files.
    pub removed: Vec<PathBuf>,
}

/// The segment files of one log, and the state of the active one.
pub struct SegmentLog {
    dir: PathBuf,
    config: SegmentConfig,
    /// In index order, without gaps; the last one is the active segment. Never empty.
    segments: VecDeque<Segment>,
    /// The first index a reader may ask for (above the purge point).
    first_index: u64,
    /// Bases of segments written or cut since the last sync.
    unsynced: BTreeSet<u64>,
    /// Files were created or deleted since the last directory fsync.
    dir_dirty: bool,
    /// Sealed segments whose sidecar waits for the next sync.
    unfinalized: BTreeSet<u64>,
    failed: Option<String>,
    fault_hook: Option<FaultHook>,
    encode_buf: Vec<u8>,
}

impl std::fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("first_index", &self.first_index)
            .field("next_index", &self.next_index())
            .field("failed", &self.failed)
            .finish()
    }
}

/// The files found in a segment directory.
struct DirListing {
    segments: Vec<u64>,
    sidecars: Vec<u64>,
    temps: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<DirListing, SegmentError> {
    let mut listing = DirListing {
        segments: Vec::new(),
        sidecars: Vec::new(),
        temps: Vec::new(),
    };
    let entries = fs::read_dir(dir).map_err(|e| SegmentError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SegmentError::io("listing", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = parse_base(&name, SEGMENT_SUFFIX) {
            listing.segments.push(base);
        } else if let Some(base) = parse_base(&name, INDEX_SUFFIX) {
            listing.sidecars.push(base);
        } else if name.ends_with(TEMP_SUFFIX) {
            listing.temps.push(path);
        } else {
            return Err(SegmentError::UnexpectedFile { path });
        }
    }
    listing.segments.sort_unstable();
    Ok(listing)
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, which holds nothing but its segments. `purged` is
    /// the last index the caller purged (recorded durably before the purge): segments wholly at
    /// or below it are removed, and reads start above it.
    pub fn open(
        dir: &Path,
        config: SegmentConfig,
        purged: Option<u64>,
    ) -> Result<(SegmentLog, OpenReport), SegmentError> {
        create_dir_all_durably(dir).map_err(|e| SegmentError::io("creating", dir, e))?;
        let config = SegmentConfig {
            segment_bytes: config.segment_bytes.max(MIN_SEGMENT_BYTES),
            ..config
        };
        let mut report = OpenReport::default();
        let listing = list_dir(dir)?;
        for temp in listing.temps {
            remove_file(&temp)?;
            report.removed.push(temp);
        }
        let present: BTreeSet<u64> = listing.segments.iter().copied().collect();
        for base in listing.sidecars {
            if !present.contains(&base) {
                let path = dir.join(index_file_name(base));
                remove_file(&path)?;
                report.removed.push(path);
            }
        }
        let first_kept = purged.map_or(0, |p| p.saturating_add(1));
        // A segment whose successor starts at or below the first kept index holds only purged
        // records (a purge deleted it, but the deletion was not yet durable).
        let mut bases = listing.segments;
        let fully_purged = bases
            .windows(2)
            .take_while(|pair| pair[1] <= first_kept)
            .count();
        for base in bases.drain(..fully_purged) {
            report.removed.extend(remove_segment_files(dir, base)?);
        }

        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            config,
            segments: VecDeque::new(),
            first_index: first_kept,
            unsynced: BTreeSet::new(),
            dir_dirty: !report.removed.is_empty(),
            unfinalized: BTreeSet::new(),
            failed: None,
            fault_hook: None,
            encode_buf: Vec::new(),
        };
        log.open_segments(&bases, &mut report)?;
        log.prepare_active(first_kept)?;
        if log.dir_dirty {
            sync_dir(&log.dir)?;
            log.dir_dirty = false;
        }
        Ok((log, report))
    }

    /// Opens the segments in order, checks they follow each other, and cuts a torn tail.
    ///
    /// Finalized segments are durable, so anything wrong before one of them is corruption (an
    /// error). After the last finalized segment nothing is known to be durable: the first bad
    /// record, or the first segment that does not follow on (created by a roll whose records
    /// never made it), ends the log there, and what comes after is deleted.
    fn open_segments(
        &mut self,
        bases: &[u64],
        report: &mut OpenReport,
    ) -> Result<(), SegmentError> {
        let mut opened: Vec<(Segment, Option<WalkStop>)> = Vec::with_capacity(bases.len());
        for &base in bases {
            opened.push(Segment::open(&self.dir, base)?);
        }
        let last_finalized = opened.iter().rposition(|(segment, _)| segment.finalized);
        let mut end_of_log = None;
        for i in 0..opened.len() {
            let durable_after = last_finalized.is_some_and(|last| last > i);
            if let Some((previous, _)) = i.checked_sub(1).map(|p| &opened[p]) {
                let (segment, _) = &opened[i];
                if previous.next_index() != segment.base {
                    if segment.finalized || durable_after {
                        return Err(SegmentError::Gap {
                            previous: previous.path.clone(),
                            previous_last: previous.next_index().saturating_sub(1),
                            next: segment.path.clone(),
                            next_first: segment.base,
                        });
                    }
                    end_of_log = Some((i, None));
                    break;
                }
            }
            if let (segment, Some(stop)) = &opened[i] {
                if durable_after {
                    return Err(bad_record_error(&segment.path, stop));
                }
                end_of_log = Some((i + 1, Some(describe_stop(stop))));
                break;
            }
        }
        if let Some((keep, torn_reason)) = end_of_log {
            for (later, _) in opened.drain(keep..).rev() {
                report
                    .removed
                    .extend(remove_segment_files(&self.dir, later.base)?);
                self.dir_dirty = true;
            }
            if let Some((segment, stop)) = opened.last_mut() {
                let reason =
                    torn_reason.unwrap_or_else(|| "a later segment does not follow on".into());
                let position = segment.data_bytes;
                if stop.take().is_some() || segment.sealed {
                    let (count, allocate) = (segment.count, self.config.initial_allocation());
                    segment.cut(count, position, allocate)?;
                    segment
                        .file
                        .sync_all()
                        .map_err(|e| SegmentError::io("syncing", &segment.path, e))?;
                }
                report.torn_tail = Some(TornTail {
                    path: segment.path.clone(),
                    position,
                    kept_records: segment.count,
                    reason,
                });
            }
        }
        let count = opened.len();
        for (i, (mut segment, _)) in opened.into_iter().enumerate() {
            let is_last = i + 1 == count;
            if !is_last && !segment.finalized {
                // Rolled before a crash: seal it again and write its sidecar after the next sync.
                if !segment.sealed {
                    segment.seal()?;
                }
                self.unsynced.insert(segment.base);
                self.unfinalized.insert(segment.base);
            }
            self.segments.push_back(segment);
        }
        Ok(())
    }

    /// Makes sure there is an active segment ready for appends at the log's next index.
    fn prepare_active(&mut self, first_kept: u64) -> Result<(), SegmentError> {
        let next = self.next_index_opt();
        match next {
            None => {
                self.roll_to(first_kept)?;
            }
            Some(next) if next < first_kept => {
                // Everything on disk is purged (the caller moved past it, e.g. a snapshot).
                self.remove_all()?;
                self.roll_to(first_kept)?;
            }
            Some(next) => {
                let last_sealed = self.segments.back().is_some_and(|s| s.sealed);
                if last_sealed {
                    self.roll_to(next)?;
                } else if let Some(active) = self.segments.back_mut() {
                    let allocate = self.config.initial_allocation();
                    if active.file_bytes < allocate {
                        let (count, data) = (active.count, active.data_bytes);
                        active.cut(count, data, allocate)?;
                        self.unsynced.insert(active.base);
                    }
                }
            }
        }
        Ok(())
    }

    /// Lets a test stop the log at any [`Step`].
    pub fn set_fault_hook(&mut self, hook: FaultHook) {
        self.fault_hook = Some(hook);
    }

    fn step(&self, step: Step) -> Result<(), SegmentError> {
        match &self.fault_hook {
            Some(hook) => {
                hook(step).map_err(|e| SegmentError::io("injected fault at", &self.dir, e))
            }
            None => Ok(()),
        }
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first index a read may ask for.
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// The index the next append must carry.
    pub fn next_index(&self) -> u64 {
        self.next_index_opt().unwrap_or(self.first_index)
    }

    fn next_index_opt(&self) -> Option<u64> {
        self.segments.back().map(Segment::next_index)
    }

    /// The id of the last record, if the log holds any above the purge point.
    pub fn last_id(&self) -> Option<RecordId> {
        let last = self.segments.iter().rev().find(|s| s.count > 0)?;
        let index = last.last_index()?;
        let term = last.last_term?;
        (index >= self.first_index).then_some(RecordId { index, term })
    }

    /// Bytes the segment files take (allocated sizes).
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.file_bytes).sum()
    }

    /// How many segment files there are.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// `(first index, next index, file)` of every segment, oldest first.
    pub fn segments(&self) -> Vec<(u64, u64, PathBuf)> {
        self.segments
            .iter()
            .map(|s| (s.base, s.next_index(), s.path.clone()))
            .collect()
    }

    /// Whether an earlier error stopped the log for good.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    fn check(&self) -> Result<(), SegmentError> {
        match &self.failed {
            Some(first) => Err(SegmentError::Failed {
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Remembers the first error: the log refuses everything after it.
    fn fail(&mut self, error: SegmentError) -> SegmentError {
        if self.failed.is_none() {
            self.failed = Some(error.to_string());
        }
        error
    }

    /// Appends records at the end of the log (their indexes must follow on from
    /// [`next_index`](Self::next_index)), rolling to new segments as they fill. Not durable
    /// until [`sync`](Self::sync).
    ///
    /// An empty log (nothing at or above [`first_index`](Self::first_index)) may start at any
    /// index: it is reset to start there.
    pub fn append(&mut self, records: &[(RecordId, &[u8])]) -> Result<(), SegmentError> {
        self.check()?;
        if let Some((first, _)) = records.first()
            && self.next_index() == self.first_index
            && first.index != self.next_index()
        {
            let result = self.restart_at(first.index);
            result.map_err(|e| self.fail(e))?;
        }
        for (expected, (id, payload)) in (self.next_index()..).zip(records) {
            if id.index != expected {
                return Err(SegmentError::NotConsecutive {
                    expected,
                    got: id.index,
                });
            }
            if payload.len() > MAX_PAYLOAD_BYTES {
                return Err(record::PayloadTooLarge { len: payload.len() }.into());
            }
        }
        let Some(active) = self.segments.back() else {
            return Ok(());
        };
        // Plan which records go to which segment before writing anything.
        let segment_bytes = self.config.segment_bytes;
        // (first record, end, bytes) per segment: the active one first, then new ones.
        let mut groups: Vec<(usize, usize, u64)> = Vec::new();
        let mut used = active.data_bytes;
        let mut held = active.count;
        let mut start = 0;
        let mut group_bytes = 0u64;
        for (i, (_, payload)) in records.iter().enumerate() {
            let size = record_size(payload.len()) as u64;
            if held > 0 && used + size > segment_bytes {
                groups.push((start, i, group_bytes));
                start = i;
                used = 0;
                held = 0;
                group_bytes = 0;
            }
            used += size;
            held += 1;
            group_bytes += size;
        }
        groups.push((start, records.len(), group_bytes));

        // Space first, nothing written yet: a full disk fails here, cleanly (the log is not
        // failed; the append may be tried again once space is freed).
        let step = self.config.initial_allocation();
        let (active_needs, active_has) = (active.data_bytes + groups[0].2, active.file_bytes);
        if active_needs > active_has {
            let grow_to = active_needs
                .max(active_has + step)
                .min(segment_bytes.max(active_needs));
            let result = self
                .step(Step::Reserve)
                .and_then(|()| match self.segments.back_mut() {
                    Some(active) => active.reserve(grow_to),
                    None => Ok(()),
                });
            if let Err(error) = result {
                if error.is_no_space() {
                    return Err(error);
                }
                return Err(self.fail(error));
            }
        }
        let mut created = Vec::new();
        for &(first, _, bytes) in &groups[1..] {
            let base = records[first].0.index;
            let result = self
                .step(Step::CreateSegment)
                .and_then(|()| Segment::create(&self.dir, base, step.max(bytes)));
            match result {
                Ok(segment) => created.push(segment),
                Err(error) => {
                    for segment in created {
                        let _ = fs::remove_file(&segment.path);
                    }
                    if error.is_no_space() {
                        return Err(error);
                    }
                    return Err(self.fail(error));
                }
            }
        }
        if !created.is_empty() {
            self.dir_dirty = true;
        }
        let mut created = created.into_iter();
        for (n, &(first, end, _)) in groups.iter().enumerate() {
            if n > 0 {
                if let Err(error) = self.seal_active() {
                    return Err(self.fail(error));
                }
                if let Some(segment) = created.next() {
                    self.segments.push_back(segment);
                }
            }
            if let Err(error) = self.write_to_active(&records[first..end]) {
                return Err(self.fail(error));
            }
        }
        Ok(())
    }

    fn write_to_active(&mut self, records: &[(RecordId, &[u8])]) -> Result<(), SegmentError> {
        if records.is_empty() {
            return Ok(());
        }
        self.step(Step::Write)?;
        let mut buf = std::mem::take(&mut self.encode_buf);
        buf.clear();
        let mut ids = Vec::with_capacity(records.len());
        for (id, payload) in records {
            let before = buf.len();
            record::encode(*id, payload, &mut buf)?;
            ids.push((*id, buf.len() - before));
        }
        let result = match self.segments.back_mut() {
            Some(active) => {
                let base = active.base;
                active.write_records(&buf, &ids).map(|()| base)
            }
            None => Ok(0),
        };
        self.encode_buf = buf;
        let base = result?;
        self.unsynced.insert(base);
        Ok(())
    }

    fn seal_active(&mut self) -> Result<(), SegmentError> {
        self.step(Step::Seal)?;
        if let Some(active) = self.segments.back_mut() {
            active.seal()?;
            self.unsynced.insert(active.base);
            self.unfinalized.insert(active.base);
        }
        Ok(())
    }

    /// Makes everything appended, cut or sealed so far durable: one fdatasync per touched
    /// segment, the directory if files came or went; then writes the sidecars of segments sealed
    /// since the last sync. The same as [`sync_job`](Self::sync_job), [`SyncJob::run`] and
    /// [`finish_sync`](Self::finish_sync) in a row.
    pub fn sync(&mut self) -> Result<(), SegmentError> {
        let job = self.sync_job()?;
        let result = job.run();
        self.finish_sync(result)
    }

    /// What the next sync must fsync, taken off the log so that the fsyncs themselves can run
    /// without whatever lock guards it (readers keep reading meanwhile). Nothing may change the
    /// log between this and [`finish_sync`](Self::finish_sync) but reads.
    pub fn sync_job(&mut self) -> Result<SyncJob, SegmentError> {
        self.check()?;
        let unsynced = std::mem::take(&mut self.unsynced);
        let files = unsynced
            .into_iter()
            .filter_map(|base| self.segments.iter().find(|s| s.base == base))
            .map(|segment| (segment.path.clone(), Arc::clone(&segment.file)))
            .collect();
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        Ok(SyncJob {
            files,
            dir,
            fault_hook: self.fault_hook.clone(),
            unsafe_skip_fsync: self.config.unsafe_skip_fsync,
        })
    }

    /// Ends a sync: remembers a failure (the log is failed for good), or writes the sidecars of
    /// segments sealed before it (their data is durable now).
    pub fn finish_sync(&mut self, result: Result<(), SegmentError>) -> Result<(), SegmentError> {
        if let Err(error) = result {
            return Err(self.fail(error));
        }
        self.check()?;
        let result = self.write_sidecars();
        result.map_err(|e| self.fail(e))
    }

    fn write_sidecars(&mut self) -> Result<(), SegmentError> {
        let unfinalized = std::mem::take(&mut self.unfinalized);
        if unfinalized.is_empty() {
            return Ok(());
        }
        for base in unfinalized {
            self.step(Step::WriteSidecar)?;
            let dir = self.dir.clone();
            let Some(segment) = self
                .segments
                .iter_mut()
                .find(|s| s.base == base && s.sealed)
            else {
                continue;
            };
            match segment.write_sidecar(&dir) {
                Ok(()) => {}
                // The data is durable already; the sidecar spares a scan at open and marks the
                // segment durable for recovery: try again at the next sync.
                Err(error) if error.is_no_space() => {
                    tracing::warn!(%error, "segment sidecar not written; will retry");
                    self.unfinalized.insert(base);
                }
                Err(error) => return Err(error),
            }
        }
        self.step(Step::SyncDir)?;
        sync_dir(&self.dir)
    }

    /// Removes every record after `last_kept` (all of them for `None`), durably before it
    /// returns: a conflict truncation.
    pub fn truncate_after(&mut self, last_kept: Option<u64>) -> Result<(), SegmentError> {
        self.check()?;
        let result = self.truncate_inner(last_kept);
        result.map_err(|e| self.fail(e))
    }

    fn truncate_inner(&mut self, last_kept: Option<u64>) -> Result<(), SegmentError> {
        let keep_next = last_kept.map_or(0, |k| k.saturating_add(1));
        if keep_next >= self.next_index() {
            return Ok(());
        }
        let first_base = self.segments.front().map_or(0, |s| s.base);
        if keep_next <= first_base {
            self.remove_all()?;
            self.first_index = self.first_index.min(keep_next);
            return self.roll_to(keep_next);
        }
        // Whole segments after the cut, from the back: the log on disk stays a prefix.
        while self.segments.back().is_some_and(|s| s.base >= keep_next) {
            let Some(segment) = self.segments.pop_back() else {
                break;
            };
            self.forget(segment.base);
            self.step(Step::DeleteSegment)?;
            remove_segment_files(&self.dir, segment.base)?;
            self.step(Step::SyncDir)?;
            sync_dir(&self.dir)?;
        }
        let allocate = self.config.initial_allocation();
        let Some(segment) = self.segments.back() else {
            return Ok(());
        };
        let (base, finalized) = (segment.base, segment.finalized);
        // Where the cut falls; at the end of a sealed segment, it becomes the active one again.
        let cut = if keep_next < segment.next_index() {
            Some((keep_next - base, record_position(segment, keep_next)?))
        } else if segment.sealed {
            Some((segment.count, segment.data_bytes))
        } else {
            None
        };
        let Some((keep, position)) = cut else {
            return Ok(());
        };
        if finalized {
            // The sidecar must be gone for good before the data it describes changes.
            self.step(Step::DeleteSidecar)?;
            remove_file(&self.dir.join(index_file_name(base)))?;
            sync_dir(&self.dir)?;
        }
        self.step(Step::Cut)?;
        self.unfinalized.remove(&base);
        if let Some(segment) = self.segments.back_mut() {
            segment.cut(keep, position, allocate)?;
            segment
                .file
                .sync_all()
                .map_err(|e| SegmentError::io("syncing", &segment.path, e))?;
        }
        Ok(())
    }

    /// Records at or below `upto` are gone for readers; whole segments holding only such records
    /// are deleted. The caller has recorded `upto` durably before (it is `open`'s `purged`). A
    /// purge past the end of the log empties it: the next append starts at `upto + 1`.
    pub fn purge_upto(&mut self, upto: u64) -> Result<(), SegmentError> {
        self.check()?;
        let result = self.purge_inner(upto);
        result.map_err(|e| self.fail(e))
    }

    fn purge_inner(&mut self, upto: u64) -> Result<(), SegmentError> {
        let first_kept = upto.saturating_add(1);
        if first_kept <= self.first_index {
            return Ok(());
        }
        self.first_index = first_kept;
        if first_kept > self.next_index() {
            self.remove_all()?;
            return self.roll_to(first_kept);
        }
        // Whole segments from the front; never the active one.
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.next_index() <= first_kept)
        {
            let Some(segment) = self.segments.pop_front() else {
                break;
            };
            self.forget(segment.base);
            self.step(Step::DeleteSegment)?;
            remove_segment_files(&self.dir, segment.base)?;
            self.dir_dirty = true;
        }
        Ok(())
    }

    /// Empties the log and starts it again at `index`.
    fn restart_at(&mut self, index: u64) -> Result<(), SegmentError> {
        self.remove_all()?;
        self.first_index = index;
        self.roll_to(index)
    }

    /// Deletes every segment (from the back, so that what is left is always a prefix).
    fn remove_all(&mut self) -> Result<(), SegmentError> {
        while let Some(segment) = self.segments.pop_back() {
            self.forget(segment.base);
            self.step(Step::DeleteSegment)?;
            remove_segment_files(&self.dir, segment.base)?;
            self.step(Step::SyncDir)?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Starts a new, empty active segment at `base` (durably: created and directory synced).
    fn roll_to(&mut self, base: u64) -> Result<(), SegmentError> {
        if let Some(active) = self.segments.back()
            && !active.sealed
        {
            if active.count == 0 && active.base == base {
                return Ok(());
            }
            self.seal_active()?;
        }
        self.step(Step::CreateSegment)?;
        let segment = Segment::create(&self.dir, base, self.config.initial_allocation())?;
        self.segments.push_back(segment);
        self.step(Step::SyncDir)?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    fn forget(&mut self, base: u64) {
        self.unsynced.remove(&base);
        self.unfinalized.remove(&base);
    }

    /// What reading `[start, end)` takes: the files and byte ranges, so that the reading itself
    /// can run without holding whatever lock guards the log.
    pub fn read_plan(&self, start: u64, end: u64) -> Result<ReadPlan, SegmentError> {
        self.check()?;
        let next = self.next_index();
        if start < self.first_index || start > next {
            return Err(SegmentError::NotInLog {
                index: start,
                first: self.first_index,
                next,
            });
        }
        let end = end.min(next);
        let mut pieces = Vec::new();
        for segment in &self.segments {
            if segment.next_index() <= start || segment.base >= end || segment.count == 0 {
                continue;
            }
            pieces.push(ReadPiece {
                path: segment.path.clone(),
                file: Arc::clone(&segment.file),
                from_position: segment.start_position(start.max(segment.base)),
                to_position: segment.data_bytes,
            });
        }
        Ok(ReadPlan { start, end, pieces })
    }

    /// What a scrub reads: for every finalized segment (its data known durable, never written
    /// again), the plan that walks all its records. The reading runs without the log's lock; a
    /// segment purged meanwhile stays readable through the plan's open file.
    pub fn finalized_segment_plans(&self) -> Vec<ReadPlan> {
        self.segments
            .iter()
            .filter(|segment| segment.finalized && segment.count > 0)
            .map(|segment| ReadPlan {
                start: segment.base,
                end: segment.next_index(),
                pieces: vec![ReadPiece {
                    path: segment.path.clone(),
                    file: Arc::clone(&segment.file),
                    from_position: 0,
                    to_position: segment.data_bytes,
                }],
            })
            .collect()
    }

    /// Reads `[start, end)` at once (see [`ReadPlan::read`]).
    pub fn read(
        &self,
        start: u64,
        end: u64,
        max_bytes: u64,
    ) -> Result<Vec<StoredRecord>, SegmentError> {
        self.read_plan(start, end)?.read(max_bytes)
    }
}

/// The fsyncs of one sync ([`SegmentLog::sync_job`]), to run without holding the log.
pub struct SyncJob {
    files: Vec<(PathBuf, Arc<File>)>,
    dir: Option<PathBuf>,
    fault_hook: Option<FaultHook>,
    /// [`SegmentConfig::unsafe_skip_fsync`]: `run` does nothing.
    unsafe_skip_fsync: bool,
}

impl SyncJob {
    /// Whether there is nothing to fsync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    /// fdatasyncs every touched segment, then the directory if files came or went.
    pub fn run(&self) -> Result<(), SegmentError> {
        if self.unsafe_skip_fsync {
            return Ok(());
        }
        let step = |step: Step, path: &Path| match &self.fault_hook {
            Some(hook) => hook(step).map_err(|e| SegmentError::io("injected fault at", path, e)),
            None => Ok(()),
        };
        for (path, file) in &self.files {
            step(Step::Sync, path)?;
            file.sync_data()
                .map_err(|e| SegmentError::io("syncing", path, e))?;
        }
        if let Some(dir) = &self.dir {
            step(Step::SyncDir, dir)?;
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// One segment's part of a [`ReadPlan`].
#[derive(Debug, Clone)]
struct ReadPiece {
    path: PathBuf,
    file: Arc<File>,
    from_position: u64,
    to_position: u64,
}

/// Files and byte ranges to read for `[start, end)`; see [`SegmentLog::read_plan`].
#[derive(Debug, Clone)]
pub struct ReadPlan {
    start: u64,
    end: u64,
    pieces: Vec<ReadPiece>,
}

impl ReadPlan {
    /// Reads the records of the plan in order, stopping after `max_bytes` of payload (but always
    /// returning at least one record when there is one). Every record's CRC is checked; a bad
    /// one is an error naming its file and position.
    pub fn read(&self, max_bytes: u64) -> Result<Vec<StoredRecord>, SegmentError> {
        let mut records = Vec::new();
        let mut bytes = 0u64;
        self.walk_records(|id, payload| {
            if !records.is_empty() && bytes >= max_bytes {
                return Flow::Stop;
            }
            bytes += payload.len() as u64;
            records.push(StoredRecord { id, payload });
            Flow::Continue
        })?;
        Ok(records)
    }

    /// Checks every record of the plan (CRC, length, indexes counting up) without keeping the
    /// payloads: what a scrub does. Returns the records and bytes checked; a bad record is an
    /// error naming its file and position.
    pub fn verify(&self) -> Result<VerifiedRange, SegmentError> {
        let mut verified = VerifiedRange::default();
        let next = self.walk_records(|_, payload| {
            verified.records += 1;
            verified.payload_bytes += payload.len() as u64;
            Flow::Continue
        })?;
        if next != self.end {
            let path = self
                .pieces
                .first()
                .map(|p| p.path.clone())
                .unwrap_or_default();
            return Err(SegmentError::ShortSegment {
                path,
                expected_next: self.end,
                found_next: next,
            });
        }
        Ok(verified)
    }

    /// Hands the plan's records to `visit` in index order from `start` until it answers `Stop`
    /// (that record not taken) or `end` is reached; returns the index after the last record
    /// taken. A record out of order, or a bad one below the recorded end of the data (where
    /// every record must be whole), is an error naming its file and position.
    fn walk_records(
        &self,
        mut visit: impl FnMut(RecordId, Bytes) -> Flow,
    ) -> Result<u64, SegmentError> {
        let mut expected = self.start;
        for piece in &self.pieces {
            if expected >= self.end {
                break;
            }
            let mut out_of_order = None;
            let stop = walk(
                &piece.file,
                &piece.path,
                piece.from_position,
                piece.to_position,
                |position, id, payload| {
                    // The walk starts at a sparse index point, at or before `expected`.
                    if id.index < expected {
                        return Ok(Flow::Continue);
                    }
                    if id.index != expected {
                        out_of_order = Some(SegmentError::OutOfOrder {
                            path: piece.path.clone(),
                            position,
                            expected,
                            found: id.index,
                        });
                        return Ok(Flow::Stop);
                    }
                    if id.index >= self.end {
                        return Ok(Flow::Stop);
                    }
                    Ok(match visit(id, payload) {
                        Flow::Continue => {
                            expected += 1;
                            Flow::Continue
                        }
                        Flow::Stop => Flow::Stop,
                    })
                },
            )?;
            if let Some(error) = out_of_order {
                return Err(error);
            }
            match stop {
                WalkStop::End { .. } => {}
                WalkStop::Stopped { .. } => return Ok(expected),
                bad @ (WalkStop::Invalid { .. } | WalkStop::Incomplete { .. }) => {
                    return Err(bad_record_error(&piece.path, &bad));
                }
            }
        }
        Ok(expected)
    }
}

/// What [`ReadPlan::verify`] checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifiedRange {
    pub records: u64,
    pub payload_bytes: u64,
}

/// The byte position of record `index` in `segment` (found by walking from the sparse index).
fn record_position(segment: &Segment, index: u64) -> Result<u64, SegmentError> {
    let mut found = None;
    let stop = walk(
        &segment.file,
        &segment.path,
        segment.start_position(index),
        segment.data_bytes,
        |position, id, _| {
            if id.index == index {
                found = Some(position);
                return Ok(Flow::Stop);
            }
            Ok(Flow::Continue)
        },
    )?;
    match (found, stop) {
        (Some(position), _) => Ok(position),
        (None, bad @ (WalkStop::Invalid { .. } | WalkStop::Incomplete { .. })) => {
            Err(bad_record_error(&segment.path, &bad))
        }
        (None, _) => Err(SegmentError::NotInLog {
            index,
            first: segment.base,
            next: segment.next_index(),
        }),
    }
}

fn bad_record_error(path: &Path, stop: &WalkStop) -> SegmentError {
    match stop {
        WalkStop::Invalid { position, reason } => SegmentError::Corrupt {
            path: path.to_path_buf(),
            position: *position,
            reason: reason.clone(),
        },
        WalkStop::Incomplete {
            position,
            needed,
            available,
        } => SegmentError::Truncated {
            path: path.to_path_buf(),
            position: *position,
            needed: *needed,
            available: *available,
        },
        WalkStop::End { position } | WalkStop::Stopped { position } => SegmentError::Truncated {
            path: path.to_path_buf(),
            position: *position,
            needed: 0,
            available: 0,
        },
    }
}

fn describe_stop(stop: &WalkStop) -> String {
    match stop {
        WalkStop::Invalid { reason, .. } => reason.to_string(),
        WalkStop::Incomplete {
            needed, available, ..
        } => format!("a record of {needed} bytes with only {available} written"),
        WalkStop::End { .. } | WalkStop::Stopped { .. } => "end of data".to_string(),
    }
}

/// Removes a segment's sidecar and then the segment; returns the paths removed.
fn remove_segment_files(dir: &Path, base: u64) -> Result<Vec<PathBuf>, SegmentError> {
    let mut removed = Vec::new();
    let sidecar = dir.join(index_file_name(base));
    if remove_file_if_present(&sidecar)? {
        removed.push(sidecar);
    }
    let segment = dir.join(segment_file_name(base));
    if remove_file_if_present(&segment)? {
        removed.push(segment);
    }
    Ok(removed)
}

fn remove_file(path: &Path) -> Result<(), SegmentError> {
    remove_file_if_present(path).map(|_| ())
}

fn remove_file_if_present(path: &Path) -> Result<bool, SegmentError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SegmentError::io("removing", path, e)),
    }
}
