//! The flusher: one dedicated thread that turns queued log writes into redb write transactions.
//!
//! Group commit: the thread takes the first queued command, drains everything else already
//! queued (up to [`MAX_COMMANDS_PER_FLUSH`]), writes it all in ONE write transaction with
//! `Durability::Immediate` (one fsync), and only after `commit()` returns fires the completion of
//! every command, in queue order. Appends, truncates, purges and votes share the one queue, so
//! every write reaches disk in the order openraft issued it.
//!
//! After the first failed transaction the store is failed for good: the error is remembered,
//! every command in that batch and every later one completes with it, and redb is not touched
//! again (a failed fsync must never be retried: the kernel may already have dropped the pages).

use std::io;
use std::sync::Arc;
use std::time::Instant;

use redb::Durability;
use tokio::sync::{mpsc, oneshot};

use super::{ENTRIES, LogStoreError, META, META_COMMITTED, META_LAST_PURGED, META_VOTE, Shared};
use crate::codec;
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
    /// Not waited for: a lost committed log id only makes openraft re-learn it from the leader.
    SaveCommitted {
        committed: Option<LogId>,
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
            | FlushCommand::SaveVote { done, .. } => {
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
            for command in after_stop {
                command.complete(Err(LogStoreError::Closed));
            }
            return;
        }
        flush_batch(&shared, &mut batch, &mut encode_buf);
    }
}

/// Writes one batch in one transaction and completes every command in it, in order.
fn flush_batch(shared: &Shared, batch: &mut Vec<FlushCommand>, encode_buf: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    let result = match shared.failure() {
        Some(failed) => Err(failed),
        None => write_batch(shared, batch, encode_buf).inspect_err(|e| shared.fail(e)),
    };
    if result.is_ok() {
        let written = batch.iter().flat_map(|command| match command {
            FlushCommand::Append { entries, .. } => entries.as_slice(),
            _ => &[],
        });
        shared.mem_write().mark_durable(written.map(|e| e.log_id));
    }
    for command in batch.drain(..) {
        command.complete(result.clone());
    }
}

fn write_batch(
    shared: &Shared,
    batch: &[FlushCommand],
    encode_buf: &mut Vec<u8>,
) -> Result<(), LogStoreError> {
    shared.with_db(|db| write_batch_to(db, shared, batch, encode_buf))
}

fn write_batch_to(
    db: &redb::Database,
    shared: &Shared,
    batch: &[FlushCommand],
    encode_buf: &mut Vec<u8>,
) -> Result<(), LogStoreError> {
    let only_committed = batch
        .iter()
        .all(|c| matches!(c, FlushCommand::SaveCommitted { .. }));
    let mut txn = db.begin_write().map_err(LogStoreError::storage)?;
    // A batch that only moves the committed pointer need not cost an fsync: redb makes it durable
    // with the next durable transaction, and losing it in a crash is harmless.
    let durable = !only_committed;
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(durability)
        .map_err(LogStoreError::storage)?;

    let mut entries_written = 0u64;
    let mut bytes_written = 0u64;
    {
        let mut entries = txn.open_table(ENTRIES).map_err(LogStoreError::storage)?;
        let mut meta = txn.open_table(META).map_err(LogStoreError::storage)?;
        for command in batch {
            match command {
                FlushCommand::Append { entries: new, .. } => {
                    for entry in new {
                        encode_buf.clear();
                        codec::encode_into(entry, encode_buf).map_err(LogStoreError::from)?;
                        entries
                            .insert(entry.log_id.index, encode_buf.as_slice())
                            .map_err(LogStoreError::storage)?;
                        entries_written += 1;
                        bytes_written += encode_buf.len() as u64;
                    }
                }
                FlushCommand::Truncate { since, .. } => {
                    entries
                        .retain_in(*since.., |_, _| false)
                        .map_err(LogStoreError::storage)?;
                }
                FlushCommand::Purge { upto, .. } => {
                    entries
                        .retain_in(..=upto.index, |_, _| false)
                        .map_err(LogStoreError::storage)?;
                    let value = codec::encode(upto).map_err(LogStoreError::from)?;
                    meta.insert(META_LAST_PURGED, value.as_slice())
                        .map_err(LogStoreError::storage)?;
                }
                FlushCommand::SaveVote { vote, .. } => {
                    let value = codec::encode(vote).map_err(LogStoreError::from)?;
                    meta.insert(META_VOTE, value.as_slice())
                        .map_err(LogStoreError::storage)?;
                }
                FlushCommand::SaveCommitted { committed } => {
                    let value = codec::encode(committed).map_err(LogStoreError::from)?;
                    meta.insert(META_COMMITTED, value.as_slice())
                        .map_err(LogStoreError::storage)?;
                }
                FlushCommand::Stop => {}
            }
        }
    }
    let started = Instant::now();
    txn.commit().map_err(LogStoreError::storage)?;
    let commit_nanos = started.elapsed().as_nanos();
    shared.metrics.record_flush(
        durable,
        batch.len() as u64,
        entries_written,
        bytes_written,
        u64::try_from(commit_nanos).unwrap_or(u64::MAX),
    );
    Ok(())
}
