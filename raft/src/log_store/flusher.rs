//! The flusher: one dedicated thread that turns queued log writes into segment writes.
//!
//! Group commit: the thread takes the first queued command, drains everything else already
//! queued (up to [`MAX_COMMANDS_PER_FLUSH`]), writes it all (appends to the active segment,
//! truncates, purges, the metadata file), fsyncs the segments once, and only then fires the
//! completion of every command, in queue order. Appends, truncates, purges and votes share the
//! one queue, so every write reaches disk in the order openraft issued it. The fsync runs
//! without the segment log's lock, so readers keep reading meanwhile.
//!
//! After the first failed batch the store is failed for good: the error is remembered, every
//! command in that batch and every later one completes with it, and the files are not touched
//! again (a failed fsync must never be retried: the kernel may already have dropped the pages).

use std::io;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{LogMeta, LogStoreError, Shared};
use crate::segment::SegmentLog;
use crate::types::{Entry, LogId, Vote};

/// How many queued commands may wait for the flusher before `append()` waits (backpressure).
pub const FLUSH_QUEUE_CAPACITY: usize = 1024;

/// The most commands written in one transaction, so that one transaction stays bounded.
pub const MAX_COMMANDS_PER_FLUSH: usize = 4096;

/// Called once with the outcome when an append is durable (or failed). For openraft this wraps
/// its `IOFlushed` callback: the leader counts itself toward the commit quorum only when it
/// fires, so it must never fire before the fsync that covers the entries.
pub(crate) type AppendDone = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

/// A completion for commands whose caller waits for durability.
pub(crate) type Ack = oneshot::Sender<Result<(), LogStoreError>>;

pub(crate) enum FlushCommand {
    Append {
        entries: Vec<Entry>,
        done: AppendDone,
    },
    Truncate {
        since: u64,
        done: Ack,
    },
    Purge {
        upto: LogId,
        done: Ack,
    },
    SaveVote {
        vote: Vote,
        done: Ack,
    },
    /// Not waited for: a lost committed log id only makes openraft re-learn it from the leader,
    /// so it is written with the next metadata change (or at stop), not on its own.
    SaveCommitted {
        committed: Option<LogId>,
    },
    /// Entries below `from` may be deleted from disk once openraft has purged them too.
    Retain {
        from: u64,
        done: Ack,
    },
    /// Replace the history segments with those in `dir` (a received snapshot's log part).
    InstallHistory {
        dir: std::path::PathBuf,
        first: u64,
        done: Ack,
    },
    /// Finish everything queued before it, then exit.
    Stop,
}

impl FlushCommand {
    fn complete(self, result: Result<(), LogStoreError>) {
        match self {
            FlushCommand::Append { done, .. } => {
                done(result.map_err(io::Error::other));
            }
            FlushCommand::Truncate { done, .. }
            | FlushCommand::Purge { done, .. }
            | FlushCommand::SaveVote { done, .. }
            | FlushCommand::Retain { done, .. }
            | FlushCommand::InstallHistory { done, .. } => {
                // The waiter may have gone away (openraft shutting down): nothing to tell then.
                let _ = done.send(result);
            }
            FlushCommand::SaveCommitted { .. } | FlushCommand::Stop => {}
        }
    }
}

/// The flusher thread's body: runs until `Stop` or until every sender is gone.
pub(crate) fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<FlushCommand>) {
    let mut encode_buf = Vec::new();
    let mut batch: Vec<FlushCommand> = Vec::new();
    loop {
        let Some(first) = rx.blocking_recv() else {
            return;
        };
        batch.push(first);
        while batch.len() < MAX_COMMANDS_PER_FLUSH {
            match rx.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        // Commands after a Stop wait for nobody: they were sent after shutdown began.
        let stop_at = batch.iter().position(|c| matches!(c, FlushCommand::Stop));
        if let Some(stop_at) = stop_at {
            let after_stop = batch.split_off(stop_at);
            flush_batch(&shared, &mut batch, &mut encode_buf);
            // The committed log id is written lazily: write it once more on the way out.
            if shared.failure().is_none() {
                let meta = *shared.meta();
                if let Err(error) = shared.store_meta(&meta) {
                    tracing::warn!(%error, "raft log: could not write the metadata at shutdown");
                }
            }
            for command in after_stop {
                command.complete(Err(LogStoreError::Closed));
            }
            return;
        }
        flush_batch(&shared, &mut batch, &mut encode_buf);
    }
}

/// Writes one batch and completes every command in it, in order.
///
/// A full disk met before anything of a command was written (the segment log reserves space
/// before it writes; the metadata file is replaced whole) does not fail the store: the commands
/// before it are synced and completed, and the rest wait, retried every
/// [`NO_SPACE_RETRY_INTERVAL`], until space is freed or the store stops. Meanwhile this member
/// acknowledges nothing new, so its group carries on without it.
fn flush_batch(shared: &Shared, batch: &mut Vec<FlushCommand>, encode_buf: &mut Vec<u8>) {
    let mut waiting_since: Option<Instant> = None;
    while !batch.is_empty() {
        let outcome = match shared.failure() {
            Some(failed) => Err(BatchError::Failed(failed)),
            None => write_batch(shared, batch, encode_buf),
        };
        let (done, result) = match outcome {
            Ok(()) => {
                if let Some(since) = waiting_since.take() {
                    shared.metrics.set_waiting_for_space(false);
                    tracing::info!(waited = ?since.elapsed(), "raft log: space is back; writes go on");
                }
                (batch.len(), Ok(()))
            }
            Err(BatchError::WaitForSpace { written, error }) if !shared.is_stopping() => {
                if waiting_since.is_none() {
                    tracing::error!(
                        %error,
                        "raft log: disk full; this member stops taking writes until space is freed (retrying every {NO_SPACE_RETRY_INTERVAL:?})"
                    );
                    shared.metrics.set_waiting_for_space(true);
                }
                waiting_since.get_or_insert_with(Instant::now);
                complete_prefix(shared, batch, written, Ok(()));
                std::thread::sleep(NO_SPACE_RETRY_INTERVAL);
                continue;
            }
            Err(BatchError::WaitForSpace { error, .. }) | Err(BatchError::Failed(error)) => {
                shared.fail(&error);
                (batch.len(), Err(error))
            }
        };
        complete_prefix(shared, batch, done, result);
    }
    if waiting_since.is_some() {
        shared.metrics.set_waiting_for_space(false);
    }
}

/// Completes the first `count` commands of `batch` with `result` (and removes them).
fn complete_prefix(
    shared: &Shared,
    batch: &mut Vec<FlushCommand>,
    count: usize,
    result: Result<(), LogStoreError>,
) {
    let done: Vec<FlushCommand> = batch.drain(..count).collect();
    if result.is_ok() {
        let written = done.iter().flat_map(|command| match command {
            FlushCommand::Append { entries, .. } => entries.as_slice(),
            _ => &[],
        });
        shared.mem_write().mark_durable(written.map(|e| e.log_id));
    }
    for command in done {
        command.complete(result.clone());
    }
}

/// How often a flusher that met a full disk tries again.
pub const NO_SPACE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a batch stopped.
enum BatchError {
    /// The disk is full and command `written` changed nothing: the commands before it are
    /// durable, it and the rest can be tried again.
    WaitForSpace {
        written: usize,
        error: LogStoreError,
    },
    /// Anything else: the store fails for good.
    Failed(LogStoreError),
}

impl From<LogStoreError> for BatchError {
    fn from(error: LogStoreError) -> Self {
        BatchError::Failed(error)
    }
}

/// Whether `error` is a full disk met before anything was written (the segment log did not
/// fail: it refuses such an append cleanly; a metadata write leaves the old file whole).
fn is_clean_no_space(error: &LogStoreError) -> bool {
    error.kind() == crate::storage_fault::FailureKind::NoSpace
}

fn write_batch(
    shared: &Shared,
    batch: &[FlushCommand],
    encode_buf: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let started = Instant::now();
    let mut entries_written = 0u64;
    let mut bytes_written = 0u64;
    let mut meta = *shared.meta();
    let mut meta_changed = false;
    // Writes go to the page cache under the lock; the fsync below runs without it.
    let mut stopped: Option<(usize, LogStoreError)> = None;
    let job = shared.with_segments_mut(|log| {
        for (position, command) in batch.iter().enumerate() {
            let result = write_command(shared, log, command, &mut meta, encode_buf);
            match result {
                Ok(written) => {
                    if let Some((entries, bytes)) = written {
                        entries_written += entries;
                        bytes_written += bytes;
                    }
                    meta_changed |= !matches!(command, FlushCommand::Append { .. });
                }
                Err(error) if is_clean_no_space(&error) && !log.is_failed() => {
                    stopped = Some((position, error));
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(log.sync_job()?)
    })?;
    let durable = !job.is_empty();
    let synced = job.run();
    shared.with_segments_mut(|log| Ok(log.finish_sync(synced)?))?;
    if meta_changed {
        *shared.meta() = meta;
    }
    let commands = stopped
        .as_ref()
        .map_or(batch.len(), |(written, _)| *written);
    shared.metrics.record_flush(
        durable,
        commands as u64,
        entries_written,
        bytes_written,
        u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
    );
    match stopped {
        None => Ok(()),
        Some((written, error)) => Err(BatchError::WaitForSpace { written, error }),
    }
}

/// Writes one command (not yet synced, except what must be durable before it returns).
/// Returns the entries and bytes an append wrote.
fn write_command(
    shared: &Shared,
    log: &mut SegmentLog,
    command: &FlushCommand,
    meta: &mut LogMeta,
    encode_buf: &mut Vec<u8>,
) -> Result<Option<(u64, u64)>, LogStoreError> {
    match command {
        FlushCommand::Append { entries, .. } => {
            let bytes = super::append_entries(log, entries, encode_buf)?;
            return Ok(Some((entries.len() as u64, bytes)));
        }
        FlushCommand::Truncate { since, .. } => {
            // Durable before it returns (a truncate cuts and syncs at once).
            log.truncate_after(since.checked_sub(1))?;
        }
        FlushCommand::Purge { upto, .. } => {
            // The purge point is recorded before any file goes: `open` then finishes an
            // interrupted deletion.
            let mut next = *meta;
            next.last_purged = next.last_purged.max(Some(*upto));
            shared.store_meta(&next)?;
            *meta = next;
            if let Some(upto) = meta.deletable_upto() {
                log.purge_upto(upto)?;
            }
        }
        FlushCommand::Retain { from, .. } => {
            let mut next = *meta;
            next.retention_floor = next.retention_floor.max(*from);
            shared.store_meta(&next)?;
            *meta = next;
            if let Some(upto) = meta.deletable_upto() {
                log.purge_upto(upto)?;
            }
            if let Some(below_floor) = meta.retention_floor.checked_sub(1) {
                shared.with_history_mut(|history| match history.as_mut() {
                    Some(history) => Ok(history.purge_upto(below_floor)?),
                    None => Ok(()),
                })?;
            }
        }
        FlushCommand::InstallHistory { dir, first, .. } => {
            install_history(shared, dir, *first)?;
            let mut next = *meta;
            next.retention_floor = next.retention_floor.max(*first);
            shared.store_meta(&next)?;
            *meta = next;
        }
        FlushCommand::SaveVote { vote, .. } => {
            let mut next = *meta;
            next.vote = Some(*vote);
            shared.store_meta(&next)?;
            *meta = next;
        }
        FlushCommand::SaveCommitted { committed } => {
            meta.committed = *committed;
        }
        // Handled by `run` (it never reaches a batch).
        FlushCommand::Stop => {}
    }
    Ok(None)
}

/// Moves the segment files in `dir` into place as the history (the old history goes), durably.
fn install_history(
    shared: &Shared,
    dir: &std::path::Path,
    first: u64,
) -> Result<(), LogStoreError> {
    use super::HISTORY_DIR_NAME;
    let target = shared.data_dir.join(HISTORY_DIR_NAME);
    let old = shared.data_dir.join(format!("{HISTORY_DIR_NAME}.old"));
    shared.with_history_mut(|history| {
        // Close the old history's files before moving them away.
        history.take();
        let io = |e| {
            LogStoreError::from(crate::segment::SegmentError::io(
                "installing history",
                &target,
                e,
            ))
        };
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io)?;
        }
        if target.exists() {
            std::fs::rename(&target, &old).map_err(io)?;
        }
        std::fs::rename(dir, &target).map_err(io)?;
        crate::segment::sync_dir(&shared.data_dir)?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io)?;
        }
        let (log, _) =
            SegmentLog::open(&target, shared.segment_config.clone(), first.checked_sub(1))?;
        *history = Some(log);
        Ok(())
    })
}
