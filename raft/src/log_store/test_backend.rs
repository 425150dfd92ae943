//! Controlled segment-file faults for the log store's tests: a fault hook whose fsyncs can be
//! made to fail (to prove the store stops on its first I/O error), to report a full disk, or to
//! wait at a gate (to hold the flusher inside an fsync while more appends queue up, to prove
//! group commit deterministically).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::segment::{FaultHook, Step};

/// How long a gated fsync waits for the test to open the gate before failing, so that a broken
/// test cannot hang.
const GATE_WAIT_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Gate {
    armed: bool,
    entered: bool,
    open: bool,
}

/// The switches a test flips; shared with the hook.
#[derive(Debug, Default)]
pub(crate) struct Controls {
    fail_sync: AtomicBool,
    disk_full: AtomicBool,
    no_space_to_reserve: AtomicBool,
    gate: Mutex<Gate>,
    changed: Condvar,
}

impl Controls {
    /// Every later fsync fails with an I/O error.
    pub(crate) fn fail_syncs(&self) {
        self.fail_sync.store(true, Ordering::SeqCst);
    }

    /// Every later write and fsync fails with ENOSPC, as on a full disk.
    pub(crate) fn fill_disk(&self) {
        self.disk_full.store(true, Ordering::SeqCst);
    }

    /// Reserving space for the log (the points where a full disk is met before anything is
    /// written) fails with ENOSPC until [`free_space`](Self::free_space).
    pub(crate) fn refuse_space(&self) {
        self.no_space_to_reserve.store(true, Ordering::SeqCst);
    }

    pub(crate) fn free_space(&self) {
        self.no_space_to_reserve.store(false, Ordering::SeqCst);
    }

    /// The next fsyncs wait until [`open_gate`](Self::open_gate).
    pub(crate) fn arm_gate(&self) {
        let mut gate = self.gate.lock().unwrap();
        *gate = Gate {
            armed: true,
            entered: false,
            open: false,
        };
    }

    /// Waits until an fsync is blocked at the armed gate; false on timeout.
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

    /// The hook to give the segment log.
    pub(crate) fn hook(self: &Arc<Self>) -> FaultHook {
        let controls = Arc::clone(self);
        Arc::new(move |step| controls.on_step(step))
    }

    fn on_step(&self, step: Step) -> io::Result<()> {
        let writes = matches!(
            step,
            Step::Write | Step::Reserve | Step::CreateSegment | Step::Sync
        );
        if writes && self.disk_full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28));
        }
        let reserves = matches!(step, Step::Reserve | Step::CreateSegment);
        if reserves && self.no_space_to_reserve.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28));
        }
        if step != Step::Sync {
            return Ok(());
        }
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        let mut gate = self.gate.lock().unwrap();
        if gate.armed && !gate.open {
            gate.entered = true;
            self.changed.notify_all();
            let (gate, timeout) = self
                .changed
                .wait_timeout_while(gate, GATE_WAIT_MAX, |g| !g.open)
                .unwrap();
            if timeout.timed_out() {
                return Err(io::Error::other("test gate never opened"));
            }
            drop(gate);
        }
        Ok(())
    }
}
