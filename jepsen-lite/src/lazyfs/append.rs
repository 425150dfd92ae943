//! An append + `fdatasync` loop, as a log writer does it: creates a file, syncs its directory
//! (so the name is durable), then appends numbered fixed-size records with an `fdatasync`
//! after each. Run as `jepsen-lite lazyfs-append` by the power-loss tests (every record it
//! reports synced must survive) and for the throughput figures in the README.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes at the start of a record that hold its index (little-endian).
const INDEX_BYTES: usize = 8;
/// Smallest record: the index and at least as many bytes of pattern.
pub const MIN_RECORD_BYTES: usize = 2 * INDEX_BYTES;
/// Largest record (one write).
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// What a run did.
#[derive(Clone, Debug)]
pub struct AppendReport {
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl AppendReport {
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        format!(
            "appended {} records ({} bytes) with an fdatasync each in {:.3} s: {:.1} MiB/s, {:.0} fdatasync/s",
            self.records,
            self.bytes,
            secs,
            self.bytes as f64 / secs / f64::from(1 << 20),
            self.records as f64 / secs
        )
    }
}

/// Record `index`, `len` bytes: the index, then a pattern that depends on both.
pub fn record(index: u64, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&index.to_le_bytes());
    bytes.extend(
        (INDEX_BYTES..len).map(|at| (index as usize).wrapping_mul(31).wrapping_add(at) as u8),
    );
    bytes
}

/// Creates `path` (it must not exist), syncs its directory, then appends `records` records
/// of `record_bytes`, each followed by `fdatasync`; `synced(i)` is called after record `i`
/// is synced.
pub fn run(
    path: &Path,
    records: u64,
    record_bytes: usize,
    mut synced: impl FnMut(u64) -> io::Result<()>,
) -> io::Result<AppendReport> {
    if !(MIN_RECORD_BYTES..=MAX_RECORD_BYTES).contains(&record_bytes) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("record size must be {MIN_RECORD_BYTES}..={MAX_RECORD_BYTES} bytes"),
        ));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let started = Instant::now();
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)?;
    File::open(dir)?.sync_all()?;
    for index in 0..records {
        file.write_all(&record(index, record_bytes))?;
        file.sync_data()?;
        synced(index)?;
    }
    Ok(AppendReport {
        records,
        bytes: records * record_bytes as u64,
        elapsed: started.elapsed(),
    })
}

/// How many whole, correct records `bytes` starts with, and whether anything follows them.
pub fn valid_records(bytes: &[u8], record_bytes: usize) -> (u64, bool) {
    let mut count = 0u64;
    for chunk in bytes.chunks(record_bytes) {
        if chunk != record(count, record_bytes).as_slice() {
            return (count, true);
        }
        count += 1;
    }
    (count, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_differ_and_a_torn_or_wrong_one_is_not_counted() {
        assert_ne!(record(0, 32), record(1, 32));
        let mut bytes: Vec<u8> = (0..3).flat_map(|i| record(i, 32)).collect();
        assert_eq!(valid_records(&bytes, 32), (3, false));
        bytes.extend_from_slice(&record(3, 32)[..10]);
        assert_eq!(valid_records(&bytes, 32), (3, true));
        bytes.truncate(64);
        bytes[40] ^= 1;
        assert_eq!(valid_records(&bytes, 32), (1, true));
    }

    #[test]
    fn run_writes_the_records_and_reports_each_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut seen = Vec::new();
        let report = run(&path, 5, 100, |i| {
            seen.push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(report.bytes, 500);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(valid_records(&bytes, 100), (5, false));
        assert!(run(&path, 1, 100, |_| Ok(())).is_err(), "the file exists");
        assert!(run(&dir.path().join("x"), 1, 4, |_| Ok(())).is_err());
    }
}
