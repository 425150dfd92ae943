//! The state machine contract: what an application (the broker) implements so that the raft
//! crate can drive it. The adapter that turns it into openraft's `RaftStateMachine` lives beside
//! it in this crate.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::storage_fault::{FailureKind, RedbFault, is_no_space};
use crate::types::{AppResponse, Entry, LogId, SnapshotMeta, StoredMembership};

/// Why a state machine could not apply, snapshot or restore. Any such error stops the node:
/// a state machine that failed half-way must not keep applying. The storage failures keep their
/// kind apart ([`kind`](Self::kind)) and carry their source; cloneable (sources are shared) so
/// that the node can remember the first failure and report it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<StateMachineError>,
    },
    /// The disk is full (ENOSPC): nothing more can be written.
    #[error("state machine disk is full: {source}")]
    NoSpace {
        #[source]
        source: Arc<io::Error>,
    },
    #[error("state machine I/O failed: {source}")]
    Io {
        #[source]
        source: Arc<io::Error>,
    },
    /// What is on disk is damaged or cannot be decoded.
    #[error("state machine data is corrupt: {reason}")]
    Corrupt { reason: String },
    /// Any other redb error (the file locked by another process, a value too large, ...).
    #[error("state machine database failed: {source}")]
    Database {
        #[source]
        source: Arc<redb::Error>,
    },
    /// The state machine failed earlier and refuses everything since; `first` is that failure.
    #[error("state machine stopped after an earlier failure: {first}")]
    PreviousFailure {
        #[source]
        first: Box<StateMachineError>,
    },
    #[error("cannot encode state machine data: {0}")]
    Encode(String),
    #[error("snapshot is corrupt: {0}")]
    CorruptSnapshot(String),
    #[error("invariant violated while applying log index {index}: {reason}")]
    Invariant { index: u64, reason: String },
}

impl StateMachineError {
    /// A redb error (of any redb operation), by kind.
    pub fn from_redb(e: impl Into<redb::Error>) -> Self {
        match RedbFault::from(e.into()) {
            RedbFault::NoSpace(source) => StateMachineError::NoSpace {
                source: Arc::new(source),
            },
            RedbFault::Io(source) => StateMachineError::Io {
                source: Arc::new(source),
            },
            RedbFault::Corrupt(reason) => StateMachineError::Corrupt { reason },
            RedbFault::PreviousIo(source) | RedbFault::Other(source) => {
                StateMachineError::Database {
                    source: Arc::new(source),
                }
            }
        }
    }

    /// An I/O error outside redb, by kind.
    pub fn from_io(source: io::Error) -> Self {
        if is_no_space(&source) {
            StateMachineError::NoSpace {
                source: Arc::new(source),
            }
        } else {
            StateMachineError::Io {
                source: Arc::new(source),
            }
        }
    }

    /// What kind of failure this is. An error from opening has the kind of its cause.
    pub fn kind(&self) -> FailureKind {
        match self {
            StateMachineError::Open { source, .. } => source.kind(),
            StateMachineError::NoSpace { .. } => FailureKind::NoSpace,
            StateMachineError::Io { .. } => FailureKind::Io,
            StateMachineError::Corrupt { .. } | StateMachineError::CorruptSnapshot(_) => {
                FailureKind::Corrupt
            }
            StateMachineError::Database { source }
                if matches!(**source, redb::Error::PreviousIo) =>
            {
                FailureKind::PreviousFailure
            }
            StateMachineError::PreviousFailure { .. } => FailureKind::PreviousFailure,
            StateMachineError::Database { .. }
            | StateMachineError::Encode(_)
            | StateMachineError::Invariant { .. } => FailureKind::Other,
        }
    }

    /// The failure that started it all: the first failure behind a `PreviousFailure`, else
    /// this error itself.
    pub fn first_failure(&self) -> &StateMachineError {
        match self {
            StateMachineError::PreviousFailure { first } => first.first_failure(),
            other => other,
        }
    }
}

/// An application state machine replicated by Raft.
///
/// Rules (STYLE.md rule 8): `apply` is deterministic (no clock, no network, no hash-map order in
/// its output) and writes the applied log id and the last membership in the same storage
/// transaction as the changes they cover, so a crash never leaves them out of step.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies committed entries in log order and returns one response per entry (blank and
    /// membership entries get `AppResponse::default()`). Everything, including the applied log
    /// id and membership, is made durable in one transaction before returning.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<Vec<AppResponse>, StateMachineError>;

    /// Whether the next [`apply`](Self::apply) may wait for the disk (an fsync). Such an apply
    /// runs on tokio's blocking pool; any other runs on the task that asked for it, which spares
    /// two thread hand-offs (a blocking-pool thread woken, the asking task woken back) per
    /// applied batch. The default, `true`, always uses the blocking pool.
    fn next_apply_waits_for_disk(&self) -> bool {
        true
    }

    /// The last applied log id and the last membership applied, as stored.
    fn applied_state(&self) -> (Option<LogId>, StoredMembership);

    /// Writes an image of the whole state to `out`, in a format of the state machine's own, a
    /// piece at a time (memory stays bounded however large the state); returns the applied log
    /// id and membership the image is as of.
    fn write_snapshot(
        &mut self,
        out: &mut dyn std::io::Write,
    ) -> Result<(Option<LogId>, StoredMembership), StateMachineError>;

    /// Replaces the whole state with an image written by `write_snapshot` on some member, read
    /// a piece at a time from `image`; atomically (a crash leaves the old state or the new).
    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        image: &mut dyn std::io::Read,
    ) -> Result<(), StateMachineError>;
}
