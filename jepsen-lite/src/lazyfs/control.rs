//! The control file `/.lazyfs-control` in the mount's root, for callers outside the process
//! that mounted (a shell, a harness that runs `jepsen-lite lazyfs`): one command per `write`,
//! as Jepsen's LazyFS takes them from its FIFO.
//!
//! ```sh
//! echo clear-cache > MOUNT/.lazyfs-control   # power loss (also: power-loss, lazyfs::clear-cache)
//! echo space-left 0 > MOUNT/.lazyfs-control  # a full disk: files may grow by 0 more bytes
//! echo space-unlimited > MOUNT/.lazyfs-control  # the disk has room again
//! cat MOUNT/.lazyfs-control                  # counters: power_losses, unsynced_bytes, ...
//! ```
//!
//! The file is not listed by `readdir` and cannot be created, renamed or removed.

use super::error::LazyFsError;
use super::model::Stats;

/// Longest command accepted (anything longer is not a command).
const MAX_COMMAND_BYTES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlCommand {
    /// Drop everything not synced, as a power loss would.
    PowerLoss,
    /// Files may grow by this many more bytes in total: past that, ENOSPC (a full disk).
    SpaceLeft(u64),
    /// Lift the size limit.
    SpaceUnlimited,
}

impl ControlCommand {
    /// Parses one write to the control file (surrounding whitespace ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, LazyFsError> {
        let shown = || String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_COMMAND_BYTES)]).into();
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(LazyFsError::BadControlCommand(shown()));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| LazyFsError::BadControlCommand(shown()))?
            .trim();
        match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["clear-cache" | "lazyfs::clear-cache" | "power-loss"] => Ok(Self::PowerLoss),
            ["space-left", bytes] => bytes
                .parse()
                .map(Self::SpaceLeft)
                .map_err(|_| LazyFsError::BadControlCommand(text.into())),
            ["space-unlimited"] => Ok(Self::SpaceUnlimited),
            _ => Err(LazyFsError::BadControlCommand(text.into())),
        }
    }
}

/// What reading the control file shows: one `name value` per line.
pub fn status_text(stats: &Stats) -> String {
    let mut text = format!(
        "power_losses {}\nunsynced_bytes {}\nmax_unsynced_bytes {}\nnodes {}\n",
        stats.power_losses, stats.unsynced_bytes, stats.max_unsynced_bytes, stats.nodes
    );
    if let Some(last) = &stats.last_power_loss {
        text.push_str(&format!(
            "last_dropped_bytes {}\nlast_dropped_files {}\nlast_dropped_entries {}\n",
            last.dropped_bytes, last.dropped_files, last.dropped_entries
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lazyfs::model::PowerLossReport;

    #[test]
    fn parses_the_commands_and_rejects_the_rest() {
        for text in [
            &b"clear-cache"[..],
            b"clear-cache\n",
            b"  power-loss \n",
            b"lazyfs::clear-cache\n",
        ] {
            assert_eq!(
                ControlCommand::parse(text).unwrap(),
                ControlCommand::PowerLoss
            );
        }
        assert_eq!(
            ControlCommand::parse(b"space-left 4096\n").unwrap(),
            ControlCommand::SpaceLeft(4096)
        );
        assert_eq!(
            ControlCommand::parse(b"space-unlimited").unwrap(),
            ControlCommand::SpaceUnlimited
        );
        for text in [
            &b""[..],
            b"clear",
            b"clear-cache please",
            b"space-left",
            b"space-left -1",
            b"space-left lots",
            &[0xff, 0xfe],
            &[b'x'; 100],
        ] {
            let error = ControlCommand::parse(text).unwrap_err();
            assert!(
                matches!(error, LazyFsError::BadControlCommand(_)),
                "{error}"
            );
        }
    }

    #[test]
    fn status_lists_the_counters() {
        let stats = Stats {
            power_losses: 2,
            unsynced_bytes: 10,
            max_unsynced_bytes: 100,
            nodes: 3,
            last_power_loss: Some(PowerLossReport {
                dropped_bytes: 7,
                dropped_files: 1,
                dropped_entries: 4,
            }),
        };
        let text = status_text(&stats);
        assert!(
            text.starts_with("power_losses 2\nunsynced_bytes 10\n"),
            "{text}"
        );
        assert!(text.contains("last_dropped_entries 4\n"), "{text}");
    }
}
