//! Bit flips in segment files (`.log` and `.idx`), at random places: opening and reading the
//! log never panics, and a record it returns is always the one written at its index (a record's
//! CRC covers its id and payload). Either the damage is reported as an error that names the
//! file, or it is cut off as a torn tail (the active segment), or it lies where no record is.
//!
//! The case count is 64 in `cargo test`; `scripts/fuzz.sh` runs it with `PROPTEST_CASES` in the
//! thousands for as long as it is given.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// Small segments, so that a few dozen records span several sealed ones.
const SEGMENT_BYTES: u64 = 1024;

fn config() -> SegmentConfig {
    SegmentConfig {
        segment_bytes: SEGMENT_BYTES,
        ..SegmentConfig::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    format!("record {index} {}", "y".repeat((index % 11) as usize * 9)).into_bytes()
}

/// The case count: `PROPTEST_CASES` if set (fuzzing runs), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every file of the log, in name order, with its length.
fn log_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files: Vec<(PathBuf, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.path(), entry.metadata().unwrap().len())
        })
        .filter(|(_, len)| *len > 0)
        .collect();
    files.sort();
    files
}

fn flip_bit(path: &Path, position: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn bit_flips_in_segment_files_never_panic_nor_return_another_record(
        count in 1u64..80,
        synced_twice in any::<bool>(),
        flips in proptest::collection::vec((any::<Index>(), 0u8..8), 1..5),
    ) {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = SegmentLog::open(dir.path(), config(), None).unwrap();
            let payloads: Vec<(RecordId, Vec<u8>)> = (1..=count)
                .map(|index| (RecordId { index, term: 1 }, payload(index)))
                .collect();
            let records: Vec<(RecordId, &[u8])> =
                payloads.iter().map(|(id, p)| (*id, p.as_slice())).collect();
            log.append(&records).unwrap();
            log.sync().unwrap();
            if synced_twice {
                // A second sync writes the sidecars of the segments sealed before the first.
                log.sync().unwrap();
            }
        }
        let files = log_files(dir.path());
        let total: u64 = files.iter().map(|(_, len)| len).sum();
        for (at, bit) in &flips {
            let mut position = at.index(total as usize) as u64;
            for (path, len) in &files {
                if position < *len {
                    flip_bit(path, position, *bit);
                    break;
                }
                position -= len;
            }
        }
        match SegmentLog::open(dir.path(), config(), None) {
            Err(error) => {
                let text = error.to_string();
                prop_assert!(!text.is_empty());
            }
            Ok((log, _report)) => {
                prop_assert!(log.next_index() <= count + 1);
                if let Ok(records) = log.read(log.first_index(), log.next_index(), u64::MAX) {
                    for record in records {
                        prop_assert_eq!(record.id.term, 1);
                        let written = payload(record.id.index);
                        prop_assert_eq!(
                            record.payload.as_ref(),
                            written.as_slice(),
                            "record {} came back changed", record.id.index
                        );
                    }
                }
            }
        }
    }
}
