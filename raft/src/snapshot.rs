//! Snapshots that carry the retained log: how a new member, or one that fell behind the purge
//! point, catches up.
//!
//! The log is the commit log: the state machine's queue index points into log entries, so a
//! snapshot of the state machine alone would leave a new member unable to serve the messages
//! below the snapshot. A snapshot is therefore the state machine's image **plus the log entries
//! from the retention floor up to the snapshot** (`log_range`).
//!
//! ```text
//! <data_dir>/snapshot/
//!   current/          the current snapshot: `meta` (what it covers) and `state` (the image);
//!                     its log part is read from the node's own log (live segments or history)
//!   building-<n>/     a snapshot being built (removed at start if a crash left it)
//!   incoming-<n>/     a snapshot being received: `state` and `log/` (segment files of its log
//!                     part), installed when complete: `log/` becomes the node's history
//! ```
//!
//! On the wire ([`SnapshotChunk`]) a snapshot goes as a sequence of chunks, each answered before
//! the next is sent, so memory stays bounded on both sides: `Begin` (meta, log range), `State`
//! chunks of at most [`CHUNK_BYTES`], `Log` chunks of whole entries (at most [`CHUNK_BYTES`] of
//! payload or [`MAX_ENTRIES_PER_CHUNK`] entries), then `End`, whose answer is openraft's.
//!
//! Crash safety: a received snapshot is complete on disk (synced) before it is installed; the
//! history directory is replaced by a rename; the state machine installs its image in one
//! transaction; the snapshot becomes `current` by a rename last. A crash in between leaves the
//! member behind its leader, which sends the snapshot again.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::log_store::{LogReader, LogStoreError, append_entries};
use crate::segment::{SegmentConfig, SegmentLog, create_dir_all_durably, sync_dir};
use crate::types::{Entry, SnapshotMeta};

/// The folder, inside the data directory, that holds the snapshots.
pub const SNAPSHOT_DIR_NAME: &str = "snapshot";
/// The state machine's image inside a snapshot directory.
pub const STATE_FILE_NAME: &str = "state";
/// What a snapshot covers, inside a snapshot directory.
pub const META_FILE_NAME: &str = "meta";
/// The segment files of a received snapshot's log part.
pub const LOG_DIR_NAME: &str = "log";
const CURRENT: &str = "current";
const CURRENT_OLD: &str = "current.old";
const BUILDING_PREFIX: &str = "building-";
const INCOMING_PREFIX: &str = "incoming-";

/// The most bytes of one chunk (state bytes, or entry payloads).
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// The most entries in one log chunk.
pub const MAX_ENTRIES_PER_CHUNK: usize = 4096;

/// The snapshot openraft hands around (its `SnapshotData`): a directory holding the state
/// machine's image, and the range of log entries that travel with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotBundle {
    pub dir: PathBuf,
    /// `[first, next)` of the log entries the snapshot carries (empty: none).
    pub log_range: Range<u64>,
}

impl SnapshotBundle {
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE_NAME)
    }

    /// The segment files of a received snapshot's log part (absent once installed).
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join(LOG_DIR_NAME)
    }
}

/// Why a snapshot could not be written, read or received.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file {path} I/O failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::sync::Arc<io::Error>,
    },
    #[error("snapshot file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("snapshot log part: {0}")]
    Log(#[source] LogStoreError),
    #[error("snapshot transfer: {0}")]
    Transfer(String),
}

impl SnapshotFileError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        SnapshotFileError::Io {
            path: path.to_path_buf(),
            source: std::sync::Arc::new(source),
        }
    }

    pub fn kind(&self) -> crate::storage_fault::FailureKind {
        use crate::storage_fault::{FailureKind, is_no_space};
        match self {
            SnapshotFileError::Io { source, .. } if is_no_space(source) => FailureKind::NoSpace,
            SnapshotFileError::Io { .. } => FailureKind::Io,
            SnapshotFileError::Corrupt { .. } => FailureKind::Corrupt,
            SnapshotFileError::Log(error) => error.kind(),
            SnapshotFileError::Transfer(_) => FailureKind::Other,
        }
    }
}

/// What a snapshot's `meta` file holds.
#[derive(Serialize, Deserialize)]
struct BundleMeta {
    meta: SnapshotMeta,
    log_first: u64,
    log_next: u64,
}

/// The snapshot directory of a node.
#[derive(Debug)]
pub struct SnapshotDir {
    root: PathBuf,
    next_id: AtomicU64,
    /// Serializes making a snapshot current (a build and an install may race).
    commit_lock: Mutex<()>,
}

impl SnapshotDir {
    /// Opens (creating) `<data_dir>/snapshot`, removing what a crash left half-made.
    pub fn open(data_dir: &Path) -> Result<SnapshotDir, SnapshotFileError> {
        let root = data_dir.join(SNAPSHOT_DIR_NAME);
        create_dir_all_durably(&root).map_err(|e| SnapshotFileError::io(&root, e))?;
        let entries = fs::read_dir(&root).map_err(|e| SnapshotFileError::io(&root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SnapshotFileError::io(&root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let leftover = name.starts_with(BUILDING_PREFIX)
                || name.starts_with(INCOMING_PREFIX)
                || name == CURRENT_OLD;
            if leftover {
                remove_any(&entry.path())?;
            } else if name != CURRENT {
                // The snapshot file of the single-frame era, or anything else: not ours now.
                tracing::warn!(file = %entry.path().display(), "removing an unknown file from the snapshot directory");
                remove_any(&entry.path())?;
            }
        }
        Ok(SnapshotDir {
            root,
            next_id: AtomicU64::new(1),
            commit_lock: Mutex::new(()),
        })
    }

    fn new_dir(&self, prefix: &str) -> Result<PathBuf, SnapshotFileError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{prefix}{id}"));
        if dir.exists() {
            remove_any(&dir)?;
        }
        fs::create_dir_all(&dir).map_err(|e| SnapshotFileError::io(&dir, e))?;
        Ok(dir)
    }

    /// A fresh directory to build a snapshot in.
    pub fn new_build_dir(&self) -> Result<PathBuf, SnapshotFileError> {
        self.new_dir(BUILDING_PREFIX)
    }

    /// Makes the snapshot in `dir` (its `state` written and synced) the current one, durably:
    /// its `meta` is written, then it replaces `current` by renames.
    pub fn commit(
        &self,
        dir: &Path,
        meta: &SnapshotMeta,
        log_range: Range<u64>,
    ) -> Result<SnapshotBundle, SnapshotFileError> {
        let encoded = codec::encode(&BundleMeta {
            meta: meta.clone(),
            log_first: log_range.start,
            log_next: log_range.end,
        })
        .map_err(|e| SnapshotFileError::Corrupt {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let meta_path = dir.join(META_FILE_NAME);
        let mut file =
            File::create(&meta_path).map_err(|e| SnapshotFileError::io(&meta_path, e))?;
        file.write_all(&encoded)
            .and_then(|()| file.sync_all())
            .map_err(|e| SnapshotFileError::io(&meta_path, e))?;
        sync_dir(dir).map_err(|e| SnapshotFileError::Log(e.into()))?;

        let _commit = self
            .commit_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.root.join(CURRENT);
        let old = self.root.join(CURRENT_OLD);
        if current.exists() {
            fs::rename(&current, &old).map_err(|e| SnapshotFileError::io(&current, e))?;
        }
        fs::rename(dir, &current).map_err(|e| SnapshotFileError::io(&current, e))?;
        sync_dir(&self.root).map_err(|e| SnapshotFileError::Log(e.into()))?;
        if old.exists() {
            remove_any(&old)?;
        }
        Ok(SnapshotBundle {
            dir: current,
            log_range,
        })
    }

    /// Where the current snapshot lives.
    pub fn current_dir(&self) -> PathBuf {
        self.root.join(CURRENT)
    }

    /// The current snapshot, if there is one.
    pub fn current(&self) -> Result<Option<(SnapshotMeta, SnapshotBundle)>, SnapshotFileError> {
        let dir = self.root.join(CURRENT);
        let meta_path = dir.join(META_FILE_NAME);
        let bytes = match fs::read(&meta_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SnapshotFileError::io(&meta_path, e)),
        };
        let stored: BundleMeta = codec::decode(&bytes).map_err(|e| SnapshotFileError::Corrupt {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some((
            stored.meta,
            SnapshotBundle {
                dir,
                log_range: stored.log_first..stored.log_next,
            },
        )))
    }
}

fn remove_any(path: &Path) -> Result<(), SnapshotFileError> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SnapshotFileError::io(path, e)),
    }
}

/// One step of a snapshot transfer (see the module docs).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SnapshotChunk {
    Begin {
        transfer: u64,
        meta: SnapshotMeta,
        log_first: u64,
        log_next: u64,
    },
    State {
        transfer: u64,
        offset: u64,
        data: Bytes,
    },
    Log {
        transfer: u64,
        entries: Vec<Entry>,
    },
    End {
        transfer: u64,
        state_bytes: u64,
    },
}

impl SnapshotChunk {
    pub(crate) fn transfer(&self) -> u64 {
        match self {
            SnapshotChunk::Begin { transfer, .. }
            | SnapshotChunk::State { transfer, .. }
            | SnapshotChunk::Log { transfer, .. }
            | SnapshotChunk::End { transfer, .. } => *transfer,
        }
    }
}

/// The sending side: the chunks of one snapshot, read from its state file and the node's log a
/// chunk at a time.
pub(crate) struct ChunkSource {
    transfer: u64,
    meta: SnapshotMeta,
    bundle: SnapshotBundle,
    reader: LogReader,
    state: Option<File>,
    state_offset: u64,
    log_next: u64,
    begun: bool,
    ended: bool,
}

impl ChunkSource {
    pub(crate) fn new(
        transfer: u64,
        meta: SnapshotMeta,
        bundle: SnapshotBundle,
        reader: LogReader,
    ) -> Self {
        let log_next = bundle.log_range.start;
        ChunkSource {
            transfer,
            meta,
            bundle,
            reader,
            state: None,
            state_offset: 0,
            log_next,
            begun: false,
            ended: false,
        }
    }

    /// The next chunk, `None` after `End`.
    pub(crate) async fn next(&mut self) -> Result<Option<SnapshotChunk>, SnapshotFileError> {
        let transfer = self.transfer;
        if !self.begun {
            self.begun = true;
            return Ok(Some(SnapshotChunk::Begin {
                transfer,
                meta: self.meta.clone(),
                log_first: self.bundle.log_range.start,
                log_next: self.bundle.log_range.end,
            }));
        }
        if self.state.is_none() && self.state_offset == 0 {
            let path = self.bundle.state_path();
            self.state = Some(File::open(&path).map_err(|e| SnapshotFileError::io(&path, e))?);
        }
        if let Some(state) = &self.state {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let path = self.bundle.state_path();
            let read = read_at_most(state, &mut buf, self.state_offset)
                .map_err(|e| SnapshotFileError::io(&path, e))?;
            if read > 0 {
                buf.truncate(read);
                let offset = self.state_offset;
                self.state_offset += read as u64;
                return Ok(Some(SnapshotChunk::State {
                    transfer,
                    offset,
                    data: Bytes::from(buf),
                }));
            }
            self.state = None;
        }
        if self.log_next < self.bundle.log_range.end {
            let end = self
                .bundle
                .log_range
                .end
                .min(self.log_next + MAX_ENTRIES_PER_CHUNK as u64);
            let mut entries = self
                .reader
                .read_entries(self.log_next..end)
                .await
                .map_err(SnapshotFileError::Log)?;
            // Keep a chunk near the byte budget (always at least one entry).
            let mut bytes = 0usize;
            let keep = entries
                .iter()
                .position(|entry| {
                    bytes += entry_bytes(entry);
                    bytes > CHUNK_BYTES
                })
                .map_or(entries.len(), |over| over.max(1));
            entries.truncate(keep);
            let expected = self.log_next;
            match entries.first() {
                Some(first) if first.log_id.index == expected => {}
                _ => {
                    return Err(SnapshotFileError::Transfer(format!(
                        "log entry {expected} of the snapshot is no longer on disk (retention moved on); a newer snapshot will be sent"
                    )));
                }
            }
            self.log_next += entries.len() as u64;
            return Ok(Some(SnapshotChunk::Log { transfer, entries }));
        }
        if self.ended {
            return Ok(None);
        }
        self.ended = true;
        Ok(Some(SnapshotChunk::End {
            transfer,
            state_bytes: self.state_offset,
        }))
    }
}

/// Payload bytes of an entry (for chunk budgets).
fn entry_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        crate::types::EntryPayload::Normal(request) => request.0.len(),
        _ => 64,
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The receiving side of one transfer: the state file and the log part's segment files being
/// written in an `incoming-<n>` directory.
pub(crate) struct Incoming {
    transfer: u64,
    pub(crate) meta: SnapshotMeta,
    dir: PathBuf,
    state: File,
    state_bytes: u64,
    log: SegmentLog,
    log_range: Range<u64>,
    encode_buf: Vec<u8>,
}

impl Incoming {
    pub(crate) fn begin(
        dir: PathBuf,
        segment_config: SegmentConfig,
        transfer: u64,
        meta: SnapshotMeta,
        log_range: Range<u64>,
    ) -> Result<Incoming, SnapshotFileError> {
        let state_path = dir.join(STATE_FILE_NAME);
        let state = File::create(&state_path).map_err(|e| SnapshotFileError::io(&state_path, e))?;
        let (log, _) = SegmentLog::open(
            &dir.join(LOG_DIR_NAME),
            segment_config,
            log_range.start.checked_sub(1),
        )
        .map_err(|e| SnapshotFileError::Log(e.into()))?;
        Ok(Incoming {
            transfer,
            meta,
            dir,
            state,
            state_bytes: 0,
            log,
            log_range,
            encode_buf: Vec::new(),
        })
    }

    pub(crate) fn transfer(&self) -> u64 {
        self.transfer
    }

    /// Appends state bytes; they must continue what came before.
    pub(crate) fn state(&mut self, offset: u64, data: &[u8]) -> Result<(), SnapshotFileError> {
        if offset != self.state_bytes {
            return Err(SnapshotFileError::Transfer(format!(
                "state chunk at byte {offset}, expected {}",
                self.state_bytes
            )));
        }
        self.state
            .write_all(data)
            .map_err(|e| SnapshotFileError::io(&self.dir.join(STATE_FILE_NAME), e))?;
        self.state_bytes += data.len() as u64;
        Ok(())
    }

    /// Appends log entries; they must continue the log part from its first index.
    pub(crate) fn log(&mut self, entries: &[Entry]) -> Result<(), SnapshotFileError> {
        let expected = self.log.next_index().max(self.log_range.start);
        let inside = entries.first().is_some_and(|e| e.log_id.index == expected)
            && entries
                .last()
                .is_some_and(|e| e.log_id.index < self.log_range.end);
        if !inside {
            return Err(SnapshotFileError::Transfer(format!(
                "log chunk does not continue at {expected} inside {:?}",
                self.log_range
            )));
        }
        append_entries(&mut self.log, entries, &mut self.encode_buf)
            .map_err(SnapshotFileError::Log)?;
        Ok(())
    }

    /// Checks that everything came and makes it durable; returns the bundle to install. On
    /// error the directory goes.
    pub(crate) fn finish(self, state_bytes: u64) -> Result<SnapshotBundle, SnapshotFileError> {
        let dir = self.dir.clone();
        let result = self.finish_inner(state_bytes);
        if result.is_err()
            && let Err(error) = remove_any(&dir)
        {
            tracing::warn!(%error, "cannot remove a refused incoming snapshot");
        }
        result
    }

    fn finish_inner(mut self, state_bytes: u64) -> Result<SnapshotBundle, SnapshotFileError> {
        let complete_log = self.log_range.is_empty() || self.log.next_index() == self.log_range.end;
        if state_bytes != self.state_bytes || !complete_log {
            return Err(SnapshotFileError::Transfer(format!(
                "incomplete snapshot: {} of {state_bytes} state bytes, log up to {} of {:?}",
                self.state_bytes,
                self.log.next_index(),
                self.log_range
            )));
        }
        let state_path = self.dir.join(STATE_FILE_NAME);
        self.state
            .sync_all()
            .map_err(|e| SnapshotFileError::io(&state_path, e))?;
        self.log
            .sync()
            .map_err(|e| SnapshotFileError::Log(e.into()))?;
        drop(self.log);
        sync_dir(&self.dir).map_err(|e| SnapshotFileError::Log(e.into()))?;
        Ok(SnapshotBundle {
            dir: self.dir,
            log_range: self.log_range,
        })
    }

    /// Abandons the transfer: its directory goes.
    pub(crate) fn abandon(self) {
        let dir = self.dir.clone();
        drop(self);
        if let Err(error) = remove_any(&dir) {
            tracing::warn!(%error, "cannot remove an abandoned incoming snapshot");
        }
    }
}

/// Reads the whole state image of a bundle (for state machines that want a reader).
pub fn open_state(bundle: &SnapshotBundle) -> Result<impl Read, SnapshotFileError> {
    let path = bundle.state_path();
    File::open(&path)
        .map(io::BufReader::new)
        .map_err(|e| SnapshotFileError::io(&path, e))
}

/// The most bytes one image frame may claim ([`read_frame`] refuses more before allocating).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Writes one frame of a state machine's image: `[u32 length][codec bytes]`. State machines write
/// their image as a sequence of frames of bounded size, so neither writing nor reading it ever
/// holds the whole state in memory.
pub fn write_frame<T: Serialize>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    let bytes = codec::encode(value).map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&len| len as usize <= MAX_FRAME_BYTES)
        .ok_or_else(|| io::Error::other(format!("an image frame of {} bytes", bytes.len())))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&bytes)
}

/// Reads the next frame written by [`write_frame`]; `None` at the end of the image.
pub fn read_frame<T: serde::de::DeserializeOwned>(input: &mut dyn Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a torn frame length",
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("an image frame claims {len} bytes (at most {MAX_FRAME_BYTES})"),
        ));
    }
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    codec::decode(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// The receiving end of snapshot transfers on a node's Raft server: at most one transfer at a
/// time (a new one replaces an unfinished one, whose directory goes).
#[derive(Debug)]
pub struct SnapshotInbox {
    root: PathBuf,
    segment_config: SegmentConfig,
    next_id: AtomicU64,
    incoming: Mutex<Option<Incoming>>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("transfer", &self.transfer)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SnapshotInbox {
    /// Receives into `<data_dir>/snapshot/incoming-<n>`, writing log parts in segments of
    /// `segment_config`.
    pub fn new(data_dir: &Path, segment_config: SegmentConfig) -> SnapshotInbox {
        SnapshotInbox {
            root: data_dir.join(SNAPSHOT_DIR_NAME),
            segment_config,
            next_id: AtomicU64::new(1),
            incoming: Mutex::new(None),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        self.incoming
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one chunk (blocking file I/O: call it off the async threads). Returns the complete
    /// snapshot after `End`.
    pub(crate) fn take(
        &self,
        chunk: SnapshotChunk,
    ) -> Result<Option<(SnapshotMeta, SnapshotBundle)>, SnapshotFileError> {
        let mut slot = self.slot();
        if let SnapshotChunk::Begin {
            transfer,
            meta,
            log_first,
            log_next,
        } = chunk
        {
            if let Some(unfinished) = slot.take() {
                unfinished.abandon();
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let dir = self.root.join(format!("{INCOMING_PREFIX}{id}"));
            if dir.exists() {
                remove_any(&dir)?;
            }
            fs::create_dir_all(&dir).map_err(|e| SnapshotFileError::io(&dir, e))?;
            let incoming = Incoming::begin(
                dir,
                self.segment_config.clone(),
                transfer,
                meta,
                log_first..log_next,
            )?;
            *slot = Some(incoming);
            return Ok(None);
        }
        let transfer = chunk.transfer();
        let Some(incoming) = slot.as_mut().filter(|i| i.transfer() == transfer) else {
            return Err(SnapshotFileError::Transfer(format!(
                "no transfer {transfer} in progress (it was replaced or never begun)"
            )));
        };
        let result = match chunk {
            SnapshotChunk::Begin { .. } => Ok(None),
            SnapshotChunk::State { offset, data, .. } => {
                incoming.state(offset, &data).map(|()| None)
            }
            SnapshotChunk::Log { entries, .. } => incoming.log(&entries).map(|()| None),
            SnapshotChunk::End { state_bytes, .. } => match slot.take() {
                Some(incoming) => {
                    let meta = incoming.meta.clone();
                    incoming
                        .finish(state_bytes)
                        .map(|bundle| Some((meta, bundle)))
                }
                None => Ok(None),
            },
        };
        if result.is_err()
            && let Some(failed) = slot.take()
        {
            failed.abandon();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{AppRequest, EntryPayload, StoredMembership, log_id};

    fn meta(last: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(log_id(1, 1, last)),
            last_membership: StoredMembership::default(),
        }
    }

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(AppRequest(Bytes::from(vec![index as u8; 100]))),
        }
    }

    fn inbox(dir: &Path) -> SnapshotInbox {
        SnapshotInbox::new(
            dir,
            SegmentConfig {
                segment_bytes: 1024,
                ..SegmentConfig::default()
            },
        )
    }

    fn begin(transfer: u64, range: Range<u64>) -> SnapshotChunk {
        SnapshotChunk::Begin {
            transfer,
            meta: meta(range.end.saturating_sub(1)),
            log_first: range.start,
            log_next: range.end,
        }
    }

    #[test]
    fn a_transfer_arrives_whole_or_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(SNAPSHOT_DIR_NAME)).unwrap();
        let inbox = inbox(dir.path());
        assert!(inbox.take(begin(7, 10..20)).unwrap().is_none());
        let state = SnapshotChunk::State {
            transfer: 7,
            offset: 0,
            data: Bytes::from_static(b"image"),
        };
        assert!(inbox.take(state).unwrap().is_none());
        // Out of order: refused, and the transfer is dropped.
        let gap = SnapshotChunk::Log {
            transfer: 7,
            entries: vec![entry(12)],
        };
        assert!(inbox.take(gap).is_err());
        let late = SnapshotChunk::End {
            transfer: 7,
            state_bytes: 5,
        };
        assert!(inbox.take(late).is_err(), "the transfer is gone");

        // A whole one: state, then entries 10..20 in two chunks.
        assert!(inbox.take(begin(8, 10..20)).unwrap().is_none());
        let state = SnapshotChunk::State {
            transfer: 8,
            offset: 0,
            data: Bytes::from_static(b"image"),
        };
        inbox.take(state).unwrap();
        for chunk in [10..15, 15..20] {
            let log = SnapshotChunk::Log {
                transfer: 8,
                entries: chunk.map(entry).collect(),
            };
            inbox.take(log).unwrap();
        }
        // An End that claims more state than came is refused.
        let wrong = SnapshotChunk::End {
            transfer: 8,
            state_bytes: 6,
        };
        assert!(inbox.take(wrong).is_err());

        assert!(inbox.take(begin(9, 10..20)).unwrap().is_none());
        inbox
            .take(SnapshotChunk::State {
                transfer: 9,
                offset: 0,
                data: Bytes::from_static(b"image"),
            })
            .unwrap();
        inbox
            .take(SnapshotChunk::Log {
                transfer: 9,
                entries: (10..20).map(entry).collect(),
            })
            .unwrap();
        let (got_meta, bundle) = inbox
            .take(SnapshotChunk::End {
                transfer: 9,
                state_bytes: 5,
            })
            .unwrap()
            .expect("complete");
        assert_eq!(got_meta, meta(19));
        assert_eq!(bundle.log_range, 10..20);
        assert_eq!(fs::read(bundle.state_path()).unwrap(), b"image");
        let (log, _) =
            SegmentLog::open(&bundle.log_dir(), SegmentConfig::default(), Some(9)).unwrap();
        let records = log.read(10, 20, u64::MAX).unwrap();
        assert_eq!(records.len(), 10);
        // Abandoned transfers left nothing behind.
        let incoming: Vec<_> = fs::read_dir(dir.path().join(SNAPSHOT_DIR_NAME))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(incoming.len(), 1, "{incoming:?}");
    }

    #[test]
    fn the_current_snapshot_is_replaced_whole_and_leftovers_go_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::open(dir.path()).unwrap();
        assert!(snapshots.current().unwrap().is_none());
        let first = snapshots.new_build_dir().unwrap();
        fs::write(first.join(STATE_FILE_NAME), b"one").unwrap();
        snapshots.commit(&first, &meta(5), 0..6).unwrap();
        let second = snapshots.new_build_dir().unwrap();
        fs::write(second.join(STATE_FILE_NAME), b"two").unwrap();
        let bundle = snapshots.commit(&second, &meta(9), 3..10).unwrap();
        let (current_meta, current) = snapshots.current().unwrap().unwrap();
        assert_eq!(current_meta, meta(9));
        assert_eq!(current, bundle);
        assert_eq!(fs::read(current.state_path()).unwrap(), b"two");

        // A crash left a half-built and a half-received snapshot: they go at the next open.
        let half = snapshots.new_build_dir().unwrap();
        fs::write(half.join(STATE_FILE_NAME), b"half").unwrap();
        fs::create_dir_all(dir.path().join(SNAPSHOT_DIR_NAME).join("incoming-3")).unwrap();
        drop(snapshots);
        let snapshots = SnapshotDir::open(dir.path()).unwrap();
        assert!(!half.exists());
        let names: Vec<_> = fs::read_dir(dir.path().join(SNAPSHOT_DIR_NAME))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![CURRENT.to_string()]);
        assert_eq!(snapshots.current().unwrap().unwrap().0, meta(9));
    }

    #[test]
    fn image_frames_round_trip_and_refuse_garbage() {
        let mut out = Vec::new();
        write_frame(&mut out, &vec![1u64, 2, 3]).unwrap();
        write_frame(&mut out, &"second".to_string()).unwrap();
        let mut input = out.as_slice();
        assert_eq!(
            read_frame::<Vec<u64>>(&mut input).unwrap(),
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            read_frame::<String>(&mut input).unwrap().as_deref(),
            Some("second")
        );
        assert_eq!(read_frame::<String>(&mut input).unwrap(), None);
        // A length over the cap is refused before anything is allocated.
        let huge = (u32::MAX).to_le_bytes();
        assert!(read_frame::<String>(&mut &huge[..]).is_err());
        // A torn frame is an error, not an end.
        assert!(read_frame::<Vec<u64>>(&mut &out[..6]).is_err());
    }
}
