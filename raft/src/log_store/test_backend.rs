//! A redb storage backend for tests: a real file backend whose `sync_data` can be made to fail
//! (to prove the store stops on its first I/O error), whose writes can fail as on a full disk
//! (ENOSPC), or whose `sync_data` waits at a gate (to hold the flusher inside an fsync while more
//! appends queue up, to prove group commit deterministically).

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// How long a gated `sync_data` waits for the test to open the gate before failing, so that a
/// broken test cannot hang.
const GATE_WAIT_MAX: Duration = Duration::from_secs(30);

/// Linux's errno for "No space left on device".
const ENOSPC: i32 = 28;

#[derive(Debug, Default)]
struct Gate {
    armed: bool,
    entered: bool,
    open: bool,
}

/// The switches a test flips; shared with the backend.
#[derive(Debug, Default)]
pub(crate) struct Controls {
    fail_sync: AtomicBool,
    disk_full: AtomicBool,
    gate: Mutex<Gate>,
    changed: Condvar,
}

impl Controls {
    /// Every later `sync_data` fails with an I/O error.
    pub(crate) fn fail_syncs(&self) {
        self.fail_sync.store(true, Ordering::SeqCst);
    }

    /// Every later write or file growth fails with ENOSPC, as on a full disk.
    pub(crate) fn fill_disk(&self) {
        self.disk_full.store(true, Ordering::SeqCst);
    }

    fn check_space(&self) -> std::io::Result<()> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }

    /// The next `sync_data` calls wait until [`open_gate`](Self::open_gate).
    pub(crate) fn arm_gate(&self) {
        let mut gate = self.gate.lock().unwrap();
        *gate = Gate {
            armed: true,
            entered: false,
            open: false,
        };
    }

    /// Waits until a `sync_data` is blocked at the armed gate; false on timeout.
    pub(crate) fn wait_until_blocked(&self, timeout: Duration) -> bool {
        let gate = self.gate.lock().unwrap();
        let (gate, _) = self
            .changed
            .wait_timeout_while(gate, timeout, |g| !g.entered)
            .unwrap();
        gate.entered
    }

    pub(crate) fn open_gate(&self) {
        let mut gate = self.gate.lock().unwrap();
        gate.open = true;
        self.changed.notify_all();
    }

    fn pass_gate(&self) -> std::io::Result<()> {
        let mut gate = self.gate.lock().unwrap();
        if !gate.armed {
            return Ok(());
        }
        gate.entered = true;
        self.changed.notify_all();
        let (gate, _) = self
            .changed
            .wait_timeout_while(gate, GATE_WAIT_MAX, |g| !g.open)
            .unwrap();
        if gate.open {
            Ok(())
        } else {
            Err(std::io::Error::other("test gate never opened"))
        }
    }
}

#[derive(Debug)]
pub(crate) struct ControlledBackend {
    inner: FileBackend,
    controls: Arc<Controls>,
}

impl ControlledBackend {
    pub(crate) fn open(path: &Path, controls: Arc<Controls>) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let inner = FileBackend::new(file).map_err(std::io::Error::other)?;
        Ok(ControlledBackend { inner, controls })
    }
}

impl StorageBackend for ControlledBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if len > self.inner.len()? {
            self.controls.check_space()?;
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.controls.fail_sync.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.controls.pass_gate()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.controls.check_space()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
