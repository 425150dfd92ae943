//! The kinds of storage failure RaftMQ keeps apart, modelled on redb's `StorageError`: a full
//! disk, an I/O error, corrupt data, and a store that already failed on an earlier call are
//! different problems with different remedies, so the log store's and the state machine's
//! errors say which one they are ([`LogStoreError::kind`](crate::LogStoreError::kind),
//! [`StateMachineError::kind`](crate::StateMachineError::kind)) and carry their source.
//!
//! openraft 0.10's storage traits return `io::Error`; ours wrap the typed error as its source,
//! so `io_error.get_ref()` / `into_inner()` and `downcast` recover it.

use std::io;
use std::sync::{Arc, OnceLock};

use crate::log_store::LogStoreError;
use crate::snapshot::SnapshotFileError;
use crate::state_machine::StateMachineError;

/// What kind of storage failure an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The disk or the quota is full (ENOSPC, EDQUOT): free space, then restart the member.
    NoSpace,
    /// Reading, writing or syncing failed for another reason.
    Io,
    /// What is on disk is not what was written: restore the file or rebuild the member.
    Corrupt,
    /// The store already failed on an earlier call and refuses everything since; the error
    /// carries the first failure.
    PreviousFailure,
    /// Anything else (a file locked by another process, a value too large, a bug).
    Other,
}

impl FailureKind {
    /// A few words for an operator, e.g. in the reason a member stops with.
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::NoSpace => "disk full",
            FailureKind::Io => "I/O error",
            FailureKind::Corrupt => "corrupt data",
            FailureKind::PreviousFailure => "failed earlier",
            FailureKind::Other => "storage error",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// The first storage failure that stopped a member (see
/// [`RaftNode::storage_failure`](crate::RaftNode::storage_failure)).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StorageFailure {
    #[error(transparent)]
    Log(#[from] LogStoreError),
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    #[error(transparent)]
    SnapshotFile(#[from] SnapshotFileError),
}

impl StorageFailure {
    pub fn kind(&self) -> FailureKind {
        match self {
            StorageFailure::Log(e) => e.first_failure().kind(),
            StorageFailure::StateMachine(e) => e.first_failure().kind(),
            StorageFailure::SnapshotFile(e) => e.kind(),
        }
    }
}

/// Remembers the first storage failure of the state-machine side (openraft keeps only its
/// text), for the node to report.
#[derive(Clone, Debug, Default)]
pub(crate) struct FailureLatch(Arc<OnceLock<StorageFailure>>);

impl FailureLatch {
    /// Records `failure` if it is the first one.
    pub(crate) fn record(&self, failure: impl Into<StorageFailure>) {
        let failure = failure.into();
        if self.0.set(failure.clone()).is_ok() {
            tracing::error!(error = %failure, kind = %failure.kind(), "state machine storage failed");
        }
    }

    pub(crate) fn get(&self) -> Option<StorageFailure> {
        self.0.get().cloned()
    }
}

/// Whether an I/O error means the disk (or the quota) is full.
pub fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// A redb error split into the kinds above (redb reports I/O errors of its backend as
/// `Error::Io`, a damaged file as `Error::Corrupted`, and every call after a failed write as
/// `Error::PreviousIo`).
pub(crate) enum RedbFault {
    NoSpace(io::Error),
    Io(io::Error),
    Corrupt(String),
    PreviousIo(redb::Error),
    Other(redb::Error),
}

impl From<redb::Error> for RedbFault {
    fn from(error: redb::Error) -> Self {
        match error {
            redb::Error::Io(io) if is_no_space(&io) => RedbFault::NoSpace(io),
            // No errno maps to InvalidData: redb itself says so of a file that is not (or no
            // longer) a redb database, e.g. "magic number mismatch".
            redb::Error::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
                RedbFault::Corrupt(io.to_string())
            }
            redb::Error::Io(io) => RedbFault::Io(io),
            redb::Error::Corrupted(reason) => RedbFault::Corrupt(reason),
            previous @ redb::Error::PreviousIo => RedbFault::PreviousIo(previous),
            other => RedbFault::Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_other_io_errors() {
        let enospc = io::Error::from_raw_os_error(28);
        assert!(is_no_space(&enospc));
        assert!(enospc.to_string().contains("No space left on device"));
        assert!(!is_no_space(&io::Error::other("bad sector")));
        assert!(matches!(
            RedbFault::from(redb::Error::Io(enospc)),
            RedbFault::NoSpace(_)
        ));
        assert!(matches!(
            RedbFault::from(redb::Error::Io(io::Error::from_raw_os_error(5))),
            RedbFault::Io(_)
        ));
        assert!(matches!(
            RedbFault::from(redb::Error::Corrupted("bad page".into())),
            RedbFault::Corrupt(_)
        ));
        let not_redb = io::Error::new(io::ErrorKind::InvalidData, "magic number mismatch");
        assert!(matches!(
            RedbFault::from(redb::Error::Io(not_redb)),
            RedbFault::Corrupt(_)
        ));
        assert!(matches!(
            RedbFault::from(redb::Error::PreviousIo),
            RedbFault::PreviousIo(_)
        ));
        assert!(matches!(
            RedbFault::from(redb::Error::DatabaseAlreadyOpen),
            RedbFault::Other(_)
        ));
    }
}
