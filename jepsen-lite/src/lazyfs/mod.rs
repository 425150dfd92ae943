//! The lazy filesystem: a FUSE passthrough over a backing directory that keeps everything not
//! yet synced in memory, so that a simulated power loss can drop it (jepsen-lite's answer to
//! "kill -9 keeps the page cache and never tests our fsyncs").
//!
//! Where to start reading:
//! - [`model`]: the model (what is visible, what is durable, what `fsync` of a file or a
//!   directory makes durable, what a power loss drops), pure logic over the backing directory.
//! - [`dirty`]: one file's unsynced writes and size changes.
//! - [`fuse`]: the `fuser::Filesystem` that maps kernel requests onto the model.
//! - [`control`]: the control file `/.lazyfs-control` (`echo clear-cache > ...`).
//! - [`mount`]: [`MountedLazyFs`], the handle the harness keeps: mount, `power_loss()`,
//!   unmount on drop.
//! - [`append`]: the append + fdatasync loop used by the tests and the throughput figures.

pub mod append;
pub mod control;
pub mod dirty;
pub mod error;
pub mod fuse;
pub mod model;
pub mod mount;

pub use error::LazyFsError;
pub use model::{CONTROL_FILE, PowerLossReport, STAGING_DIR, Stats};
pub use mount::{DEFAULT_MAX_UNSYNCED_BYTES, LazyFsOptions, MountedLazyFs};
