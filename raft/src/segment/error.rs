//! Why the segment log failed: kept apart so that an operator (and the member's exit message) can
//! tell a full disk from a corrupt file from an I/O failure, each naming the file.

use std::io;
use std::path::PathBuf;

use super::record::{InvalidRecord, PayloadTooLarge};

/// One error of the segment log. Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The disk (or the filesystem's quota) is full. Nothing of the failed operation was made
    /// durable; the operation may be tried again once space is freed.
    #[error("disk full while {op} {path}: {source}")]
    NoSpace {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Any other I/O error.
    #[error("I/O error while {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record that fails its CRC or has an impossible length where only whole records may be:
    /// inside a sealed segment, or followed by valid records in the last one.
    #[error("corrupt record in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: InvalidRecord,
    },
    /// Records whose indexes do not follow each other, or a segment whose name does not match
    /// its first record.
    #[error("{path} at byte {position}: expected log index {expected}, found {found}")]
    OutOfOrder {
        path: PathBuf,
        position: u64,
        expected: u64,
        found: u64,
    },
    /// A sealed segment that ends inside a record (cut short).
    #[error(
        "{path} is truncated: the record at byte {position} needs {needed} bytes, {available} are there"
    )]
    Truncated {
        path: PathBuf,
        position: u64,
        needed: u64,
        available: u64,
    },
    /// A finalized segment whose records end before the count its sidecar index records.
    #[error(
        "{path} holds records up to log index {found_next} (exclusive), its index says {expected_next}"
    )]
    ShortSegment {
        path: PathBuf,
        expected_next: u64,
        found_next: u64,
    },
    /// The segments do not cover a contiguous range of indexes: a file is missing.
    #[error(
        "segment files do not follow each other: {previous} ends at index {previous_last}, {next} starts at {next_first}"
    )]
    Gap {
        previous: PathBuf,
        previous_last: u64,
        next: PathBuf,
        next_first: u64,
    },
    /// A file in the log directory that is not ours (or a segment name that is not an index).
    #[error("unexpected file in the segment directory: {path}")]
    UnexpectedFile { path: PathBuf },
    /// An append that does not continue the log.
    #[error("append at index {got} does not continue the log (next index is {expected})")]
    NotConsecutive { expected: u64, got: u64 },
    /// A read of an index the log does not hold.
    #[error("log index {index} is not in the log (it holds {first}..{next})")]
    NotInLog { index: u64, first: u64, next: u64 },
    #[error(transparent)]
    PayloadTooLarge(#[from] PayloadTooLarge),
    /// The small metadata file (vote, purge point, ...) is unreadable.
    #[error("metadata file {path} is corrupt: {reason}")]
    CorruptMeta { path: PathBuf, reason: String },
    /// An earlier operation failed; the log refuses everything after it (a failed fsync must not
    /// be retried: the kernel may already have dropped the dirty pages).
    #[error("the segment log stopped after an earlier error: {first}")]
    Failed { first: String },
}

impl SegmentError {
    /// Wraps an I/O error from `op` on `path`, telling a full disk apart.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_no_space(&source) {
            SegmentError::NoSpace { op, path, source }
        } else {
            SegmentError::Io { op, path, source }
        }
    }

    /// Whether this is a full disk.
    pub fn is_no_space(&self) -> bool {
        matches!(self, SegmentError::NoSpace { .. })
    }

    /// Whether this means the data on disk is damaged (as opposed to an I/O failure).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            SegmentError::Corrupt { .. }
                | SegmentError::OutOfOrder { .. }
                | SegmentError::Truncated { .. }
                | SegmentError::ShortSegment { .. }
                | SegmentError::Gap { .. }
                | SegmentError::CorruptMeta { .. }
        )
    }
}

/// ENOSPC or EDQUOT.
pub fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
