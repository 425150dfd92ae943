//! [`MountedLazyFs`]: the handle a harness keeps for one mounted lazy filesystem.
//!
//! Mount in the root mount namespace *before* starting the process that uses the mount:
//! `ip netns exec` gives that process a copy of the mount table taken when it starts, so a
//! mount made earlier is visible inside, and one made inside would be invisible outside.
//! A power loss is then: kill the process and wait for it to exit, [`MountedLazyFs::power_loss`],
//! start it again.
//!
//! Mounting goes through `fusermount3` with `auto_unmount`: if this process dies without
//! unmounting (even by SIGKILL), `fusermount3` unmounts, so no dead mount is left behind.
//! (Its helper process stays a zombie child of ours from the unmount until we exit: fuser
//! does not reap it.)

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fuser::{BackgroundSession, MountOption, SessionACL};
use tokio_util::sync::CancellationToken;

use super::error::LazyFsError;
use super::fuse::{LazyFilesystem, Shared};
use super::model::{Model, PowerLossReport, Stats};

/// Default cap on the unsynced file data held in memory (per mount).
pub const DEFAULT_MAX_UNSYNCED_BYTES: u64 = 256 << 20;
/// Threads serving kernel requests: one can wait on a disk flush while others serve.
const FUSE_THREADS: usize = 4;
/// How long unmounting waits for the kernel to end the session.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// The device FUSE talks through.
const DEV_FUSE: &str = "/dev/fuse";
/// The mount helper from Debian's fuse3 (`jepsen-lite/scripts/install-fuse.sh`).
const FUSERMOUNT: &str = "fusermount3";
/// The name `mount` shows for our mounts (`lazyfs on DIR type fuse.lazyfs`).
pub const FS_NAME: &str = "lazyfs";

#[derive(Clone, Debug)]
pub struct LazyFsOptions {
    /// Unsynced bytes held in memory at most; a write past it fails with ENOSPC.
    pub max_unsynced_bytes: u64,
}

impl Default for LazyFsOptions {
    fn default() -> Self {
        Self {
            max_unsynced_bytes: DEFAULT_MAX_UNSYNCED_BYTES,
        }
    }
}

/// `Err(reason)` when this machine cannot mount a lazy filesystem: not root, no `/dev/fuse`
/// or no `fusermount3`.
pub fn support() -> Result<(), String> {
    let uid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| format!("cannot read /proc/self: {e}"))?;
    if uid != 0 {
        return Err(format!("needs root (effective uid {uid})"));
    }
    if !Path::new(DEV_FUSE).exists() {
        return Err(format!("{DEV_FUSE} is missing"));
    }
    if find_in_path(FUSERMOUNT).is_none() {
        return Err(format!(
            "{FUSERMOUNT} is missing (jepsen-lite/scripts/install-fuse.sh installs Debian's fuse3)"
        ));
    }
    Ok(())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A mounted lazy filesystem; dropping it unmounts (see [`MountedLazyFs::unmount`]).
#[derive(Debug)]
pub struct MountedLazyFs {
    shared: Arc<Shared>,
    session: Option<BackgroundSession>,
    /// Disconnects (or receives) when the FUSE session has ended. In a mutex so that the
    /// handle is `Sync` and can sit in state shared between the harness's tasks.
    session_done: Mutex<Receiver<()>>,
    mountpoint: PathBuf,
}

impl MountedLazyFs {
    /// Mounts a lazy filesystem over `backing` (an existing directory, which then holds
    /// exactly the durable state) at `mountpoint` (an existing directory; neither may contain
    /// the other). Blocking: call it from `spawn_blocking` in async code.
    pub fn mount(
        backing: &Path,
        mountpoint: &Path,
        options: &LazyFsOptions,
    ) -> Result<Self, LazyFsError> {
        let refuse = |reason: String| LazyFsError::Mount {
            mountpoint: mountpoint.to_path_buf(),
            reason,
        };
        support().map_err(refuse)?;
        let backing = backing
            .canonicalize()
            .map_err(|e| refuse(format!("backing directory {}: {e}", backing.display())))?;
        let mount_at = mountpoint
            .canonicalize()
            .map_err(|e| refuse(format!("mount point: {e}")))?;
        if !mount_at.is_dir() {
            return Err(refuse("the mount point is not a directory".into()));
        }
        if mount_at.starts_with(&backing) || backing.starts_with(&mount_at) {
            // Loading the backing directory would stat the mount point, which would ask us.
            return Err(refuse(
                "the mount point and the backing directory must not contain each other".into(),
            ));
        }
        let model = Model::new(&backing, options.max_unsynced_bytes)?;
        let shared = Arc::new(Shared::new(model));
        let (done_tx, session_done) = sync_channel(1);
        let filesystem = LazyFilesystem::new(Arc::clone(&shared), done_tx);
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName(FS_NAME.into()),
            MountOption::Subtype(FS_NAME.into()),
            MountOption::AutoUnmount,
            MountOption::DefaultPermissions,
        ];
        // auto_unmount needs allow_other; as root that is allowed without /etc/fuse.conf.
        config.acl = SessionACL::All;
        config.n_threads = Some(FUSE_THREADS);
        let session = fuser::spawn_mount(filesystem, &mount_at, &config)
            .map_err(|e| refuse(e.to_string()))?;
        tracing::info!(backing = %backing.display(), mountpoint = %mount_at.display(), "lazyfs: mounted");
        Ok(Self {
            shared,
            session: Some(session),
            session_done: Mutex::new(session_done),
            mountpoint: mount_at,
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Drops every unsynced write and directory change: the mount then shows what a machine
    /// would find after losing power. Kill the processes using the mount first and wait for
    /// them to exit (a file still open sees stale data and gets ESTALE).
    pub fn power_loss(&self) -> Result<PowerLossReport, LazyFsError> {
        self.shared.power_loss()
    }

    /// A full disk (`Some(0)`), a nearly full one, or room again (`None`): see
    /// [`Model::set_space_left`].
    pub fn set_space_left(&self, left: Option<u64>) {
        self.shared.model().set_space_left(left);
        tracing::info!(mountpoint = %self.mountpoint.display(), ?left, "lazyfs: size limit");
    }

    pub fn stats(&self) -> Stats {
        self.shared.model().stats()
    }

    /// Cancelled when the session ends, also when someone else unmounted it.
    pub fn ended(&self) -> CancellationToken {
        self.shared.ended.clone()
    }

    /// Unmounts and waits (at most [`UNMOUNT_TIMEOUT`]) for the session to end. Unsynced data
    /// is dropped, not written: the backing directory holds exactly what was synced.
    pub fn unmount(mut self) -> Result<(), LazyFsError> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> Result<(), LazyFsError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let failed = |reason: String| LazyFsError::Unmount {
            mountpoint: self.mountpoint.clone(),
            reason,
        };
        // fusermount3's auto_unmount only unmounts once this process has closed /dev/fuse
        // (it checks that the filesystem no longer answers), so a clean unmount is ours to do.
        // A busy mount is detached lazily: it goes away once its last file is closed.
        let unmounted = fusermount_unmount(&self.mountpoint, false)
            .or_else(|busy| {
                tracing::warn!(reason = %busy, "lazyfs: unmount failed; detaching lazily");
                fusermount_unmount(&self.mountpoint, true)
            })
            .map_err(failed);
        // The kernel has ended the session, or will once the last file is closed; dropping the
        // rest of the session closes the socket that keeps fusermount3's helper waiting.
        let guard = {
            let session = session;
            let BackgroundSession { guard, .. } = session;
            guard
        };
        unmounted?;
        let session_done = self
            .session_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv_timeout(UNMOUNT_TIMEOUT);
        match session_done {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Timeout) => {
                return Err(failed(format!(
                    "detached, but the session did not end within {UNMOUNT_TIMEOUT:?}: a \
                     process still has files open in it"
                )));
            }
        }
        guard
            .join()
            .map_err(|_| failed("a FUSE thread panicked".into()))?
            .map_err(|e| failed(e.to_string()))?;
        tracing::info!(mountpoint = %self.mountpoint.display(), "lazyfs: unmounted");
        Ok(())
    }
}

/// `fusermount3 -u [-z] -- MOUNTPOINT`; `Err` carries what it printed.
fn fusermount_unmount(mountpoint: &Path, lazy: bool) -> Result<(), String> {
    let mut command = Command::new(FUSERMOUNT);
    command.arg("-u");
    if lazy {
        command.arg("-z");
    }
    let output = command
        .arg("--")
        .arg(mountpoint)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {FUSERMOUNT}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{FUSERMOUNT} -u{}: {} {}",
            if lazy { " -z" } else { "" },
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Drop for MountedLazyFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_now() {
            tracing::warn!(error = %e, "lazyfs: unmount on drop");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<MountedLazyFs>();
    }
}
