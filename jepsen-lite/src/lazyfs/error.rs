//! The lazy filesystem's one error type and the one function that maps it to an errno.

use std::io;
use std::path::PathBuf;

/// Everything the lazy filesystem can refuse or fail at. Operations on the mount report
/// [`LazyFsError::errno`] to the kernel; the library API returns the error itself.
#[derive(Debug, thiserror::Error)]
pub enum LazyFsError {
    #[error("no such file or directory")]
    NotFound,
    /// The inode or handle belongs to the time before the last power loss.
    #[error("stale file: it was dropped by a power loss")]
    Stale,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("directory not empty")]
    NotEmpty,
    #[error("{0} is reserved by the lazy filesystem")]
    Reserved(&'static str),
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("not supported by the lazy filesystem: {0}")]
    Unsupported(&'static str),
    #[error("file too large")]
    TooLarge,
    /// The write would take the unsynced bytes held in memory past the cap (ENOSPC).
    #[error(
        "unsynced data cap reached: {held} bytes held unsynced + {wanted} written > cap \
         {cap} (fsync more often or raise --max-unsynced-mib)"
    )]
    UnsyncedCapReached { held: u64, wanted: u64, cap: u64 },
    /// The filesystem's size limit (a full-disk fault) leaves less than the write needs.
    #[error("no space left: {wanted} more bytes wanted, {left} left under the size limit")]
    NoSpace { wanted: u64, left: u64 },
    /// A control-file command that is not one of [`super::control::ControlCommand`].
    #[error(
        "unknown control command {0:?} (expected clear-cache, power-loss, space-left <bytes> or space-unlimited)"
    )]
    BadControlCommand(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount the lazy filesystem at {mountpoint}: {reason}")]
    Mount { mountpoint: PathBuf, reason: String },
    #[error("cannot unmount the lazy filesystem at {mountpoint}: {reason}")]
    Unmount { mountpoint: PathBuf, reason: String },
}

impl LazyFsError {
    /// An I/O error on the backing directory, with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The errno the kernel passes to the application.
    pub fn errno(&self) -> fuser::Errno {
        use fuser::Errno;
        match self {
            Self::NotFound => Errno::ENOENT,
            Self::Stale => Errno::from_i32(nix::errno::Errno::ESTALE as i32),
            Self::Exists => Errno::EEXIST,
            Self::NotADirectory => Errno::ENOTDIR,
            Self::IsADirectory => Errno::EISDIR,
            Self::NotEmpty => Errno::ENOTEMPTY,
            Self::Reserved(_) => Errno::EPERM,
            Self::Invalid(_) | Self::BadControlCommand(_) => Errno::EINVAL,
            Self::Unsupported(_) => Errno::EOPNOTSUPP,
            Self::TooLarge => Errno::EFBIG,
            Self::UnsyncedCapReached { .. } | Self::NoSpace { .. } => Errno::ENOSPC,
            Self::Io { source, .. } => source.raw_os_error().map_or(Errno::EIO, Errno::from_i32),
            Self::Mount { .. } | Self::Unmount { .. } => Errno::EIO,
        }
    }
}
