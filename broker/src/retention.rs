//! Retention: messages go after `--file-reserved-time` (72 hours), or sooner while the disk is
//! fuller than `--disk-max-used-space-ratio` (75 %), as RocketMQ deletes its CommitLog files.
//!
//! ```text
//! leader, every --retention-check-interval:
//!   by age:  the first log index stored at or after now - reserved time (state machine's
//!            LOG_TIMES), rounded down to a segment boundary: only whole segments go
//!   by disk: while the disk is over the ratio, the oldest sealed segments' ends
//!   -> propose Retain { from_index }   (through Raft: every member moves the same queue minimums)
//! every member, once a higher floor is applied:
//!   -> LogReader::retain_from(floor)    (the log may delete segment files below it)
//!   -> snapshot, then purge_log(floor - 1)  (openraft lets go of the entries; the log store
//!      deletes whole segment files below both the purge point and the floor)
//! ```
//!
//! The floor is replicated, so every member's queue minimums are the same; which files go is
//! each member's own business (their segment boundaries may differ).
//!
//! The same task snapshots the state machine every `--snapshot-every-entries` applied entries
//! or `--snapshot-every-bytes` written to the log, so that a member that needs a snapshot gets
//! a recent one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raftmq_protocol::names::now_ms;
use raftmq_raft::{LogReader, MetricsReceiver, Raft};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::command::Command;
use crate::config::RetentionConfig;
use crate::context::BrokerContext;

/// How long a member waits for the snapshot that lets openraft purge up to a new floor.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

/// What the leader decided, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub from_index: u64,
    /// The disk was over the ratio (segments went before their time).
    pub for_disk: bool,
}

/// One sealed segment: `[first, next)` and its size on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedSegment {
    pub first: u64,
    pub next: u64,
    pub bytes: u64,
}

/// How full a disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub total_bytes: u64,
    pub used_bytes: u64,
}

/// The retention floor to propose, from the sealed segments (oldest first), the first log index
/// that must stay by age (`None`: every entry with messages is older than the reserved time),
/// the index after the last applied entry, and the disk's usage. Pure, so tests can check every
/// case.
pub fn decide(
    config: &RetentionConfig,
    sealed: &[SealedSegment],
    keep_from_by_age: Option<u64>,
    applied_next: u64,
    disk: Option<DiskUsage>,
    floor: u64,
) -> Option<Decision> {
    let keep_from = keep_from_by_age.unwrap_or(applied_next).min(applied_next);
    // By age: every sealed segment that ends at or below the first entry to keep.
    let mut from = floor;
    for segment in sealed {
        if segment.next <= keep_from {
            from = from.max(segment.next);
        } else {
            break;
        }
    }
    // By disk: the oldest sealed segments until the disk would be under the ratio.
    let mut for_disk = false;
    if let Some(disk) = disk
        && disk.total_bytes > 0
    {
        let limit = disk.total_bytes / 100 * u64::from(config.disk_max_used_space_ratio);
        let mut used = disk.used_bytes;
        for segment in sealed {
            if used <= limit || segment.next > applied_next {
                break;
            }
            if segment.next > from {
                from = segment.next;
                for_disk = true;
            }
            used = used.saturating_sub(segment.bytes);
        }
    }
    (from > floor).then_some(Decision {
        from_index: from,
        for_disk,
    })
}

/// The disk usage of the file system holding `path`.
pub fn disk_usage(path: &Path) -> Option<DiskUsage> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let fragment = stat.fragment_size();
    let total_bytes = stat.blocks().saturating_mul(fragment);
    let free_bytes = stat.blocks_free().saturating_mul(fragment);
    Some(DiskUsage {
        total_bytes,
        used_bytes: total_bytes.saturating_sub(free_bytes),
    })
}

/// The task: decides on the leader, follows the applied floor on every member.
pub async fn run(ctx: Arc<BrokerContext>, raft: Raft, log: LogReader, shutdown: CancellationToken) {
    let config = ctx.config.retention.clone();
    let mut ticks = tokio::time::interval(config.check_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The floor this member has passed on to its log (0: none yet; after a restart the log's
    // own durable floor may already be higher, which retain_from accepts).
    let mut handed_to_log = 0u64;
    let mut snapshot_at = SnapshotPoint::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if ctx.leadership.may_write() {
            propose_if_due(&ctx, &config, &log).await;
        }
        snapshot_if_due(&raft, &log, &config, &mut snapshot_at).await;
        let floor = ctx.state.retention_floor();
        if floor > handed_to_log {
            match follow_floor(&raft, &log, floor, &shutdown).await {
                Ok(()) => handed_to_log = floor,
                Err(error) => {
                    warn!(floor, %error, "retention: could not hand the floor to the log yet")
                }
            }
        }
    }
}

/// Where the last periodic snapshot was asked for: applied index and log bytes written.
#[derive(Debug, Default)]
struct SnapshotPoint {
    applied: u64,
    log_bytes: u64,
}

async fn snapshot_if_due(
    raft: &Raft,
    log: &LogReader,
    config: &RetentionConfig,
    last: &mut SnapshotPoint,
) {
    let metrics = raft.metrics().borrow_watched().clone();
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    let snapshotted = metrics.snapshot.map_or(0, |id| id.index);
    let log_bytes = log.metrics().bytes_flushed;
    last.applied = last.applied.max(snapshotted);
    let by_entries = applied.saturating_sub(last.applied) >= config.snapshot_every_entries;
    let by_bytes = log_bytes.saturating_sub(last.log_bytes) >= config.snapshot_every_bytes;
    if !(by_entries || by_bytes) {
        return;
    }
    match raft.trigger().snapshot().await {
        Ok(()) => *last = SnapshotPoint { applied, log_bytes },
        Err(error) => warn!(%error, "could not start a periodic snapshot"),
    }
}

async fn propose_if_due(ctx: &BrokerContext, config: &RetentionConfig, log: &LogReader) {
    let segments = log.segments();
    let Some((_, sealed)) = segments.split_last() else {
        return;
    };
    let sealed: Vec<SealedSegment> = sealed
        .iter()
        .map(|(first, next, path)| SealedSegment {
            first: *first,
            next: *next,
            bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
        })
        .collect();
    let reserved_ms = i64::try_from(config.file_reserved_time.as_millis()).unwrap_or(i64::MAX);
    let cutoff_ms = now_ms().saturating_sub(reserved_ms);
    let keep_from_by_age = match ctx.state.first_log_index_stored_since(cutoff_ms) {
        Ok(found) => found,
        Err(error) => {
            warn!(%error, "retention: cannot read the log times");
            return;
        }
    };
    let applied_next = ctx.state.applied().map_or(0, |id| id.index + 1);
    let disk = disk_usage(&ctx.config.data_dir);
    let floor = ctx.state.retention_floor();
    let Some(decision) = decide(config, &sealed, keep_from_by_age, applied_next, disk, floor)
    else {
        return;
    };
    if decision.for_disk {
        warn!(
            from_index = decision.from_index,
            ratio = config.disk_max_used_space_ratio,
            "retention: the disk is fuller than the ratio; the oldest segments go before their time"
        );
    }
    match ctx
        .proposer
        .propose(Command::Retain {
            from_index: decision.from_index,
        })
        .await
    {
        Ok(_) => info!(
            from_index = decision.from_index,
            previous = floor,
            "retention: messages below the new floor are gone"
        ),
        Err(error) => warn!(%error, "retention: could not propose the new floor"),
    }
}

/// Lets the log delete below `floor`: records it in the log, then makes openraft purge up to it
/// (after a snapshot that covers it: openraft purges only what a snapshot holds).
async fn follow_floor(
    raft: &Raft,
    log: &LogReader,
    floor: u64,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    log.retain_from(floor).await.map_err(|e| e.to_string())?;
    let Some(upto) = floor.checked_sub(1) else {
        return Ok(());
    };
    let covered = |raft: &Raft| {
        raft.metrics()
            .borrow_watched()
            .snapshot
            .is_some_and(|id| id.index >= upto)
    };
    if !covered(raft) {
        raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
        let mut metrics = raft.metrics();
        while !covered(raft) {
            tokio::select! {
                () = shutdown.cancelled() => return Err("shutting down".into()),
                () = tokio::time::sleep_until(deadline) => {
                    return Err(format!("no snapshot covering {upto} within {SNAPSHOT_WAIT:?}"));
                }
                changed = metrics.changed() => {
                    changed.map_err(|e| e.to_string())?;
                }
            }
        }
    }
    raft.trigger()
        .purge_log(upto)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ratio: u8) -> RetentionConfig {
        RetentionConfig {
            disk_max_used_space_ratio: ratio,
            ..RetentionConfig::default()
        }
    }

    fn segments(bounds: &[(u64, u64)]) -> Vec<SealedSegment> {
        bounds
            .iter()
            .map(|&(first, next)| SealedSegment {
                first,
                next,
                bytes: 100,
            })
            .collect()
    }

    #[test]
    fn only_whole_expired_segments_go_by_age() {
        let sealed = segments(&[(0, 10), (10, 25), (25, 40)]);
        // Entries from 30 on are young: segments ending at 10 and 25 go; 25..40 holds 30.
        let decided = decide(&config(75), &sealed, Some(30), 50, None, 0);
        assert_eq!(
            decided,
            Some(Decision {
                from_index: 25,
                for_disk: false
            })
        );
        // Nothing new past the floor in force: no proposal.
        assert_eq!(decide(&config(75), &sealed, Some(30), 50, None, 25), None);
        // Nothing expired.
        assert_eq!(decide(&config(75), &sealed, Some(0), 50, None, 0), None);
        // Every entry is old: every sealed segment goes (never past what is applied).
        assert_eq!(
            decide(&config(75), &sealed, None, 50, None, 0).map(|d| d.from_index),
            Some(40)
        );
        assert_eq!(
            decide(&config(75), &sealed, None, 20, None, 0).map(|d| d.from_index),
            Some(10)
        );
    }

    #[test]
    fn a_full_disk_takes_the_oldest_segments_until_under_the_ratio() {
        let sealed = segments(&[(0, 10), (10, 25), (25, 40)]);
        // 1000 bytes, 850 used, ratio 75%: 100 bytes must go: one segment of 100.
        let disk = DiskUsage {
            total_bytes: 1000,
            used_bytes: 850,
        };
        assert_eq!(
            decide(&config(75), &sealed, Some(0), 50, Some(disk), 0),
            Some(Decision {
                from_index: 10,
                for_disk: true
            })
        );
        // 950 used: two segments.
        let disk = DiskUsage {
            total_bytes: 1000,
            used_bytes: 950,
        };
        assert_eq!(
            decide(&config(75), &sealed, Some(0), 50, Some(disk), 0).map(|d| d.from_index),
            Some(25)
        );
        // Under the ratio: nothing.
        let disk = DiskUsage {
            total_bytes: 1000,
            used_bytes: 700,
        };
        assert_eq!(
            decide(&config(75), &sealed, Some(0), 50, Some(disk), 0),
            None
        );
    }

    #[test]
    fn disk_usage_of_this_machine_reads() {
        let usage = disk_usage(Path::new("/")).expect("statvfs of /");
        assert!(usage.total_bytes > 0 && usage.used_bytes <= usage.total_bytes);
    }
}
