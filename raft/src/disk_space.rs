//! Free space on the data directory's file system, and the wait of the state machine for it.
//!
//! The Raft log handles a full disk by itself: its segments are preallocated, an append that
//! cannot reserve space changes nothing and is retried until space is freed
//! (`log_store/flusher.rs`). The state machine (redb) cannot do that: a write that meets ENOSPC
//! in the middle of a commit leaves redb refusing everything until the file is reopened, and the
//! member would stop. So the state machine never starts an apply on a nearly full disk: before
//! each apply, [`ApplySpace::wait_for_room`] checks that at least a reserve is free (a few MiB:
//! an apply writes index rows and copied B-tree pages, far less) and otherwise waits, retrying
//! every [`NO_SPACE_RETRY_INTERVAL`], until space is freed or the member stops. Meanwhile the
//! member applies nothing new (a leader answers no new write; the group goes on with the
//! others), and the log's metrics say so (`apply_waiting_for_space`, shown as `disk_full`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::log_store::LogReader;

/// How often a waiting apply looks at the free space again (the log's flusher uses the same).
pub const NO_SPACE_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// The most an apply asks to be free before it starts.
pub const APPLY_RESERVE_MAX_BYTES: u64 = 16 << 20;

/// Of a small file system (a test's tmpfs), the share kept free for applies instead.
const APPLY_RESERVE_SHARE: u64 = 16;

/// While this much is free, the space is looked at once per [`RELAXED_CHECK_INTERVAL`] rather
/// than before every apply (a `statvfs` is cheap, but applies come thousands per second).
const RELAXED_FREE_MULTIPLE: u64 = 8;
const RELAXED_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Free and total bytes of a file system, as an unprivileged writer sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// Where the free space comes from: `statvfs` of the data directory, or a test's own numbers.
pub trait SpaceProbe: Send + Sync + 'static {
    fn probe(&self) -> io::Result<DiskSpace>;
}

/// `statvfs` of a directory.
#[derive(Debug)]
pub struct StatvfsProbe(pub PathBuf);

impl SpaceProbe for StatvfsProbe {
    fn probe(&self) -> io::Result<DiskSpace> {
        disk_space(&self.0)
    }
}

/// The space of the file system holding `path`.
pub fn disk_space(path: &Path) -> io::Result<DiskSpace> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    let block = stat.fragment_size();
    Ok(DiskSpace {
        free_bytes: stat.blocks_available().saturating_mul(block),
        total_bytes: stat.blocks().saturating_mul(block),
    })
}

/// What an apply needs to be free on a file system of `total_bytes`.
pub fn apply_reserve(total_bytes: u64) -> u64 {
    APPLY_RESERVE_MAX_BYTES.min(total_bytes / APPLY_RESERVE_SHARE)
}

/// Why an apply did not get its room.
#[derive(Debug, thiserror::Error)]
pub enum NoRoom {
    #[error("the member stopped while its state machine waited for disk space")]
    Stopped,
}

/// The state machine's check of free space before each apply.
pub struct ApplySpace {
    probe: Arc<dyn SpaceProbe>,
    log: LogReader,
    stop: CancellationToken,
    /// When the space was last seen plentiful: no need to look again for a while.
    plentiful_at: Option<Instant>,
}

impl std::fmt::Debug for ApplySpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplySpace").finish_non_exhaustive()
    }
}

impl ApplySpace {
    /// Checks with `probe`; reports waits in `log`'s metrics; gives up when `stop` is cancelled.
    pub fn new(probe: Arc<dyn SpaceProbe>, log: LogReader, stop: CancellationToken) -> Self {
        ApplySpace {
            probe,
            log,
            stop,
            plentiful_at: None,
        }
    }

    /// Returns once the reserve is free (at once, nearly always). A probe that fails (the file
    /// system cannot say) lets the apply go: redb's own error handling is the fallback.
    pub async fn wait_for_room(&mut self) -> Result<(), NoRoom> {
        if self
            .plentiful_at
            .is_some_and(|at| at.elapsed() < RELAXED_CHECK_INTERVAL)
        {
            return Ok(());
        }
        let mut waiting_since: Option<Instant> = None;
        loop {
            let space = match self.probe.probe() {
                Ok(space) => space,
                Err(error) => {
                    tracing::debug!(%error, "state machine: cannot read the free disk space");
                    return Ok(());
                }
            };
            let reserve = apply_reserve(space.total_bytes);
            if space.free_bytes >= reserve {
                self.plentiful_at = (space.free_bytes
                    >= reserve.saturating_mul(RELAXED_FREE_MULTIPLE))
                .then(Instant::now);
                if let Some(since) = waiting_since {
                    self.log.set_apply_waiting_for_space(false);
                    tracing::info!(waited = ?since.elapsed(), "state machine: space is back; applies go on");
                }
                return Ok(());
            }
            if waiting_since.is_none() {
                tracing::error!(
                    free_bytes = space.free_bytes,
                    reserve_bytes = reserve,
                    "state machine: disk full: {} bytes free, an apply needs {reserve}; this member applies nothing more until space is freed (retrying every {NO_SPACE_RETRY_INTERVAL:?})",
                    space.free_bytes
                );
                self.log.set_apply_waiting_for_space(true);
                waiting_since = Some(Instant::now());
            }
            tokio::select! {
                () = tokio::time::sleep(NO_SPACE_RETRY_INTERVAL) => {}
                () = self.stop.cancelled() => {
                    self.log.set_apply_waiting_for_space(false);
                    return Err(NoRoom::Stopped);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_share_of_a_small_disk_and_capped_on_a_large_one() {
        assert_eq!(apply_reserve(24 << 20), (24 << 20) / 16);
        assert_eq!(apply_reserve(100 << 30), APPLY_RESERVE_MAX_BYTES);
        assert_eq!(apply_reserve(0), 0);
    }

    #[test]
    fn statvfs_of_a_real_directory_reports_some_space() {
        let dir = tempfile::tempdir().unwrap();
        let space = disk_space(dir.path()).unwrap();
        assert!(space.total_bytes > 0);
        assert!(space.free_bytes <= space.total_bytes);
        assert!(disk_space(&dir.path().join("missing")).is_err());
    }
}
