//! The scrub: a background thread that reads every finalized segment back and checks each
//! record's CRC, so that bits that rot on disk are found while the group still has good copies,
//! not when a lagging follower or an old consumer finally asks for them.
//!
//! Finalized segments are never written again and are not checked when the log opens (that
//! would make a start read the whole retained log), so the scrub is what looks at them: one pass
//! soon after the store opens, then one every [`ScrubConfig::interval`], paced to
//! [`ScrubConfig::bytes_per_sec`] so that it never competes hard with the data path. A bad record
//! fails the store as a read would ([`Shared::fail`]): the member stops, and the marker file
//! keeps it from starting again with the damaged log.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{LogStoreError, Shared};
use crate::segment::ReadPlan;

/// The scrub's default pace: well under what a disk serves, so the data path keeps the rest.
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 64 * 1024 * 1024;

/// How long the scrub sleeps at a time while it waits (so that it sees the store stop soon).
const NAP: Duration = Duration::from_millis(200);

/// When and how fast the scrub runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubConfig {
    /// From the start of one pass to the start of the next.
    pub interval: Duration,
    /// Reading pace, at most (segments are read whole, then the scrub sleeps off the excess).
    pub bytes_per_sec: u64,
}

/// The scrub thread: a pass at once, then one every interval, until the store stops or fails.
pub(super) fn run(shared: &Arc<Shared>, config: ScrubConfig) {
    loop {
        let started = Instant::now();
        match pass(shared, config) {
            Ok(Some((segments, bytes))) => {
                shared.metrics.scrub_passes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    segments,
                    bytes,
                    took = ?started.elapsed(),
                    "raft log scrub: every finalized segment checked"
                );
            }
            Ok(None) => return, // the store stopped
            Err(error) => {
                tracing::error!(%error, "raft log scrub found corrupt data; the log store stops");
                shared.fail(&error);
                return;
            }
        }
        if !nap_until(shared, started + config.interval) {
            return;
        }
    }
}

/// One pass over the finalized segments (as they are when it starts). `None` when the store
/// stopped or failed meanwhile.
fn pass(shared: &Shared, config: ScrubConfig) -> Result<Option<(u64, u64)>, LogStoreError> {
    let plans: Vec<ReadPlan> = shared.with_segments(|log| Ok(log.finalized_segment_plans()))?;
    let (mut segments, mut bytes) = (0u64, 0u64);
    for plan in plans {
        if shared.is_stopping() || shared.failure.get().is_some() {
            return Ok(None);
        }
        let began = Instant::now();
        let verified = plan.verify()?;
        segments += 1;
        bytes += verified.payload_bytes;
        shared
            .metrics
            .segments_scrubbed
            .fetch_add(1, Ordering::Relaxed);
        // Pace: this segment should have taken payload / rate; sleep off what it did not.
        let budget = Duration::from_secs_f64(
            verified.payload_bytes as f64 / config.bytes_per_sec.max(1) as f64,
        );
        if !nap_until(shared, began + budget) {
            return Ok(None);
        }
    }
    Ok(Some((segments, bytes)))
}

/// Sleeps until `deadline` in short naps; false when the store stops or fails meanwhile.
fn nap_until(shared: &Shared, deadline: Instant) -> bool {
    loop {
        if shared.is_stopping() || shared.failure.get().is_some() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep(NAP.min(deadline - now));
    }
}
