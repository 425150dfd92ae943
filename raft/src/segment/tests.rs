//! Tests of the segment log: round trips across rolls, recovery (torn tail, corruption, gaps),
//! truncate and purge, a full disk, and a stop at every step of every mutating operation.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Small segments, so that a few records roll.
const TINY_SEGMENT_BYTES: u64 = 1024;

fn config() -> SegmentConfig {
    SegmentConfig {
        segment_bytes: TINY_SEGMENT_BYTES,
        ..SegmentConfig::default()
    }
}

fn payload(index: u64, term: u64) -> Vec<u8> {
    format!(
        "entry {index} of term {term}: {}",
        "x".repeat((index % 7) as usize * 20)
    )
    .into_bytes()
}

fn append_range(log: &mut SegmentLog, range: std::ops::RangeInclusive<u64>, term: u64) {
    let payloads: Vec<(RecordId, Vec<u8>)> = range
        .map(|index| (RecordId { index, term }, payload(index, term)))
        .collect();
    let records: Vec<(RecordId, &[u8])> =
        payloads.iter().map(|(id, p)| (*id, p.as_slice())).collect();
    log.append(&records).unwrap();
}

fn read_all(log: &SegmentLog) -> Vec<StoredRecord> {
    log.read(log.first_index(), log.next_index(), u64::MAX)
        .unwrap()
}

fn indexes(records: &[StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id.index).collect()
}

fn open(dir: &Path, purged: Option<u64>) -> (SegmentLog, OpenReport) {
    SegmentLog::open(dir, config(), purged).unwrap()
}

fn files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[test]
fn records_round_trip_across_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = open(dir.path(), None);
    assert_eq!(report, OpenReport::default());
    assert_eq!((log.first_index(), log.next_index()), (0, 0));
    append_range(&mut log, 0..=99, 1);
    log.sync().unwrap();
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    // Every sealed segment got its sidecar after the sync; the active one has none.
    assert_eq!(
        files(dir.path(), INDEX_SUFFIX).len(),
        log.segment_count() - 1
    );
    let records = read_all(&log);
    assert_eq!(indexes(&records), (0..100).collect::<Vec<_>>());
    for record in &records {
        assert_eq!(record.payload, payload(record.id.index, 1));
        assert_eq!(record.id.term, 1);
    }
    // Segments are cut to their data when sealed and never exceed the size (records are small).
    for (base, next, path) in log.segments() {
        let len = fs::metadata(&path).unwrap().len();
        assert!(len <= TINY_SEGMENT_BYTES, "{path:?} is {len} bytes");
        assert!(next > base);
    }
    drop(log);

    let (log, report) = open(dir.path(), None);
    assert_eq!(report, OpenReport::default());
    assert_eq!(log.next_index(), 100);
    assert_eq!(log.last_id(), Some(RecordId { index: 99, term: 1 }));
    assert_eq!(read_all(&log), records);
}

#[test]
fn reads_honour_ranges_budgets_and_the_purge_point() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=49, 3);
    log.sync().unwrap();
    assert_eq!(
        indexes(&log.read(17, 23, u64::MAX).unwrap()),
        (17..23).collect::<Vec<_>>()
    );
    // The end is clipped to the log; a budget stops early but returns at least one record.
    assert_eq!(log.read(45, 1000, u64::MAX).unwrap().len(), 5);
    assert_eq!(log.read(10, 50, 1).unwrap().len(), 1);
    let budget = payload(10, 3).len() as u64 + payload(11, 3).len() as u64;
    assert_eq!(indexes(&log.read(10, 50, budget).unwrap()), vec![10, 11]);
    assert!(log.read(50, 60, u64::MAX).unwrap().is_empty());
    assert!(matches!(
        log.read(51, 60, u64::MAX),
        Err(SegmentError::NotInLog { index: 51, .. })
    ));
    log.purge_upto(20).unwrap();
    assert_eq!(log.first_index(), 21);
    assert!(matches!(
        log.read(20, 30, u64::MAX),
        Err(SegmentError::NotInLog { index: 20, .. })
    ));
    assert_eq!(log.read(21, 22, u64::MAX).unwrap()[0].id.index, 21);
}

#[test]
fn appends_must_continue_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=4, 1);
    let error = log
        .append(&[(RecordId { index: 7, term: 1 }, b"x".as_slice())])
        .unwrap_err();
    assert!(matches!(
        error,
        SegmentError::NotConsecutive {
            expected: 5,
            got: 7
        }
    ));
    // A refused append is not a failure of the log.
    append_range(&mut log, 5..=6, 1);
    log.sync().unwrap();
    assert_eq!(log.next_index(), 7);
}

/// The position where the data of the active segment ends.
fn active_end(log: &SegmentLog) -> (PathBuf, u64) {
    let active = log.segments.back().unwrap();
    (active.path.clone(), active.data_bytes)
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=20, 1);
    log.sync().unwrap();
    let (path, end) = active_end(&log);
    let kept_in_active = log.segments.back().unwrap().count;
    drop(log);
    // Half of a record: a header claiming more bytes than were written.
    let mut torn = Vec::new();
    record::encode(RecordId { index: 21, term: 1 }, &[7u8; 300], &mut torn).unwrap();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &torn[..100], end).unwrap();
    drop(file);

    let (mut log, report) = open(dir.path(), None);
    let torn = report.torn_tail.expect("the torn record is reported");
    assert_eq!(torn.path, path);
    assert_eq!(torn.position, end);
    assert_eq!(torn.kept_records, kept_in_active);
    assert_eq!(log.next_index(), 21);
    // The log goes on where the valid data ends, and the torn bytes never come back.
    append_range(&mut log, 21..=25, 2);
    log.sync().unwrap();
    drop(log);
    let (log, report) = open(dir.path(), None);
    assert_eq!(report.torn_tail, None);
    let records = read_all(&log);
    assert_eq!(indexes(&records), (0..26).collect::<Vec<_>>());
    assert_eq!(records[21].payload, payload(21, 2));
}

#[test]
fn garbage_after_the_data_of_the_last_segment_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=3, 1);
    log.sync().unwrap();
    let (path, end) = active_end(&log);
    drop(log);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"\x55\x00\x00\x00garbage bytes here", end)
        .unwrap();
    drop(file);
    let (log, report) = open(dir.path(), None);
    assert!(report.torn_tail.is_some());
    assert_eq!(log.next_index(), 4);
}

/// Flips one bit in the payload of record `index` on disk.
fn flip_bit_in(log: &SegmentLog, index: u64) -> (PathBuf, u64) {
    let segment = log
        .segments
        .iter()
        .find(|s| s.base <= index && index < s.next_index())
        .unwrap();
    let position = record_position(segment, index).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment.path)
        .unwrap();
    let at = position + record::HEADER_BYTES as u64 + 3;
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, at).unwrap();
    byte[0] ^= 0x10;
    std::os::unix::fs::FileExt::write_all_at(&file, &byte, at).unwrap();
    (segment.path.clone(), position)
}

#[test]
fn a_corrupt_record_in_a_sealed_segment_is_an_error_naming_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=60, 1);
    log.sync().unwrap();
    let (path, position) = flip_bit_in(&log, 5);
    // A read that reaches it fails, naming the file and the position.
    let error = log.read(0, 61, u64::MAX).unwrap_err();
    match &error {
        SegmentError::Corrupt {
            path: p,
            position: at,
            ..
        } => assert_eq!((p, *at), (&path, position)),
        other => panic!("expected corruption, got {other}"),
    }
    assert!(error.to_string().contains(&path.display().to_string()));
    assert!(error.is_corruption());
    drop(log);

    // Without its sidecar the segment is scanned at open: corruption followed by durable
    // (finalized) segments refuses to open rather than cutting acknowledged data.
    let base = parse_base(path.file_name().unwrap().to_str().unwrap(), SEGMENT_SUFFIX).unwrap();
    fs::remove_file(dir.path().join(index_file_name(base))).unwrap();
    let error = SegmentLog::open(dir.path(), config(), None).unwrap_err();
    assert!(
        matches!(&error, SegmentError::Corrupt { path: p, position: at, .. } if *p == path && *at == position),
        "{error}"
    );
}

#[test]
fn a_missing_segment_is_a_gap_naming_both_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=60, 1);
    log.sync().unwrap();
    let segments = log.segments();
    drop(log);
    let (missing_base, _, missing) = &segments[2];
    fs::remove_file(missing).unwrap();
    fs::remove_file(dir.path().join(index_file_name(*missing_base))).unwrap();
    let error = SegmentLog::open(dir.path(), config(), None).unwrap_err();
    match error {
        SegmentError::Gap { previous, next, .. } => {
            assert_eq!(previous, segments[1].2);
            assert_eq!(next, segments[3].2);
        }
        other => panic!("expected a gap, got {other}"),
    }
}

#[test]
fn a_truncated_sealed_segment_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=60, 1);
    log.sync().unwrap();
    let (_, _, path) = log.segments()[1].clone();
    drop(log);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    // The sidecar no longer matches the file; the scan finds the cut record, and finalized
    // segments after it make that corruption, not a torn tail.
    let error = SegmentLog::open(dir.path(), config(), None).unwrap_err();
    assert!(
        matches!(&error, SegmentError::Truncated { path: p, .. } if *p == path),
        "{error}"
    );
}

#[test]
fn unexpected_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), None));
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    assert!(matches!(
        SegmentLog::open(dir.path(), config(), None),
        Err(SegmentError::UnexpectedFile { .. })
    ));
}

#[test]
fn truncate_cuts_inside_sealed_segments_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=60, 1);
    log.sync().unwrap();
    let before = log.segment_count();
    log.truncate_after(Some(22)).unwrap();
    assert_eq!(log.next_index(), 23);
    assert!(log.segment_count() < before);
    // The segment holding the cut is active again: no sidecar for it.
    let active_base = log.segments.back().unwrap().base;
    assert!(!dir.path().join(index_file_name(active_base)).exists());
    append_range(&mut log, 23..=40, 2);
    log.sync().unwrap();
    drop(log);
    let (log, report) = open(dir.path(), None);
    assert_eq!(report, OpenReport::default());
    let records = read_all(&log);
    assert_eq!(indexes(&records), (0..41).collect::<Vec<_>>());
    assert!(records[..23].iter().all(|r| r.id.term == 1));
    assert!(records[23..].iter().all(|r| r.id.term == 2));

    // Truncating everything leaves an empty log that continues at the given index.
    let (mut log, _) = open(dir.path(), None);
    log.truncate_after(None).unwrap();
    assert_eq!(log.next_index(), 0);
    assert!(read_all(&log).is_empty());
    append_range(&mut log, 0..=2, 3);
    log.sync().unwrap();
    assert_eq!(indexes(&read_all(&log)), vec![0, 1, 2]);
}

#[test]
fn purge_deletes_whole_segments_and_open_finishes_an_interrupted_purge() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=60, 1);
    log.sync().unwrap();
    let segments = log.segments();
    // Purge to the middle of the third segment: the first two go, the third stays.
    let upto = segments[2].0 + 1;
    log.purge_upto(upto).unwrap();
    log.sync().unwrap();
    assert_eq!(log.segments()[0].0, segments[2].0);
    assert_eq!(log.first_index(), upto + 1);
    assert_eq!(read_all(&log)[0].id.index, upto + 1);
    drop(log);

    // A purged segment that came back (its deletion not yet durable) is removed by open.
    let (log, _) = open(dir.path(), Some(upto));
    assert_eq!(log.first_index(), upto + 1);
    drop(log);
    let resurrected = dir.path().join(segment_file_name(segments[0].0));
    fs::copy(&segments[2].2, &resurrected).unwrap();
    let (log, report) = open(dir.path(), Some(upto));
    assert!(report.removed.contains(&resurrected), "{report:?}");
    assert_eq!(log.segments()[0].0, segments[2].0);

    // A purge past the end empties the log; appends continue after the purge point.
    drop(log);
    let (mut log, _) = open(dir.path(), Some(upto));
    log.purge_upto(1000).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (1001, 1001));
    append_range(&mut log, 1001..=1003, 5);
    log.sync().unwrap();
    drop(log);
    let (log, _) = open(dir.path(), Some(1000));
    assert_eq!(indexes(&read_all(&log)), vec![1001, 1002, 1003]);
}

#[test]
fn a_purge_recorded_past_the_end_resets_the_log_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), None);
    append_range(&mut log, 0..=9, 1);
    log.sync().unwrap();
    drop(log);
    // As after installing a snapshot whose purge point was recorded before the files went.
    let (log, _) = open(dir.path(), Some(500));
    assert_eq!((log.first_index(), log.next_index()), (501, 501));
    assert_eq!(
        files(dir.path(), SEGMENT_SUFFIX),
        vec![segment_file_name(501)]
    );
}

/// What a scenario did, as far as a reader of the log after a crash may rely on it.
#[derive(Default)]
struct Model {
    /// Every version of every record ever appended: `(index, term) -> payload`.
    written: BTreeMap<(u64, u64), Vec<u8>>,
    /// Records known durable: synced, and not removed by a completed truncate since.
    acked: BTreeMap<u64, u64>,
    /// The purge point recorded before the purge started.
    purged: Option<u64>,
}

/// Runs the scenario on `log`, stopping at the first error (the injected fault).
fn scenario(log: &mut SegmentLog, model: &mut Model) -> Result<(), SegmentError> {
    let append = |log: &mut SegmentLog,
                  model: &mut Model,
                  range: std::ops::RangeInclusive<u64>,
                  term: u64| {
        let payloads: Vec<(RecordId, Vec<u8>)> = range
            .map(|index| (RecordId { index, term }, payload(index, term)))
            .collect();
        for (id, p) in &payloads {
            model.written.insert((id.index, id.term), p.clone());
        }
        let records: Vec<(RecordId, &[u8])> =
            payloads.iter().map(|(id, p)| (*id, p.as_slice())).collect();
        log.append(&records)?;
        log.sync()?;
        for (id, _) in &payloads {
            model.acked.insert(id.index, id.term);
        }
        Ok::<(), SegmentError>(())
    };
    for batch in 0..6 {
        append(log, model, batch * 5..=batch * 5 + 4, 1)?;
    }
    // From the moment a truncate starts, nobody relies on what it removes.
    model.acked.retain(|&index, _| index <= 22);
    log.truncate_after(Some(22))?;
    append(log, model, 23..=35, 2)?;
    model.purged = Some(10);
    log.purge_upto(10)?;
    append(log, model, 36..=40, 3)?;
    model.acked.retain(|&index, _| index <= 38);
    log.truncate_after(Some(38))?;
    append(log, model, 39..=45, 4)?;
    Ok(())
}

#[test]
fn a_stop_at_any_step_of_roll_sync_truncate_and_purge_reopens_consistently() {
    // Count the steps of a full run, then stop at each of them in turn.
    let steps = Arc::new(AtomicUsize::new(0));
    {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), None);
        let counter = Arc::clone(&steps);
        log.set_fault_hook(Arc::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }));
        scenario(&mut log, &mut Model::default()).unwrap();
    }
    let total = steps.load(Ordering::SeqCst);
    assert!(total > 40, "the scenario takes {total} steps");
    for stop_at in 0..total {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), None);
        let counter = Arc::new(AtomicUsize::new(0));
        let hook_counter = Arc::clone(&counter);
        log.set_fault_hook(Arc::new(move |step| {
            if hook_counter.fetch_add(1, Ordering::SeqCst) == stop_at {
                return Err(io::Error::other(format!("stop before {step:?}")));
            }
            Ok(())
        }));
        let mut model = Model::default();
        let outcome = scenario(&mut log, &mut model);
        assert!(
            outcome.is_err(),
            "step {stop_at} of {total} did not stop the scenario"
        );
        // After the fault the log refuses everything.
        assert!(matches!(log.sync(), Err(SegmentError::Failed { .. })));
        drop(log);

        let (log, _) = SegmentLog::open(dir.path(), config(), model.purged)
            .unwrap_or_else(|e| panic!("reopen after a stop at step {stop_at}: {e}"));
        let records = read_all(&log);
        let found: Vec<u64> = indexes(&records);
        let contiguous = found.windows(2).all(|w| w[1] == w[0] + 1);
        assert!(contiguous, "step {stop_at}: {found:?}");
        for record in &records {
            let written = model.written.get(&(record.id.index, record.id.term));
            assert_eq!(
                written.map(Vec::as_slice),
                Some(record.payload.as_ref()),
                "step {stop_at}: record {:?} was never written",
                record.id
            );
        }
        let first = model.purged.map_or(0, |p| p + 1);
        for (&index, &term) in model.acked.range(first..) {
            let present = records.iter().find(|r| r.id.index == index);
            assert_eq!(
                present.map(|r| r.id.term),
                Some(term),
                "step {stop_at}: acknowledged record {index} (term {term}) is missing"
            );
        }
    }
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        fs::create_dir_all(path).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| SmallDisk {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_refuses_the_roll_cleanly_and_appends_resume_when_space_is_freed() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&scratch.path().join("small"), "256k") else {
        eprintln!("SKIPPED a_full_disk_...: cannot mount a tmpfs (needs root)");
        return;
    };
    let log_dir = disk.path.join("log");
    let segment_bytes = 64 * 1024;
    let config = SegmentConfig {
        segment_bytes,
        ..SegmentConfig::default()
    };
    let (mut log, _) = SegmentLog::open(&log_dir, config.clone(), None).unwrap();
    // Fill the disk around the log with a ballast file.
    let ballast = disk.path.join("ballast");
    let free = 256 * 1024 - 2 * segment_bytes as usize;
    fs::write(&ballast, vec![1u8; free]).unwrap();
    let body = vec![9u8; 4000];
    let mut index = 0u64;
    let error = loop {
        assert!(index < 1000, "the disk never filled");
        match log.append(&[(RecordId { index, term: 1 }, body.as_slice())]) {
            Ok(()) => {
                log.sync().unwrap();
                index += 1;
            }
            Err(error) => break error,
        }
    };
    assert!(error.is_no_space(), "{error}");
    assert!(error.to_string().contains("disk full"), "{error}");
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    // Nothing was written by the refused append, and the log is not failed.
    assert_eq!(log.next_index(), index);
    fs::remove_file(&ballast).unwrap();
    log.append(&[(RecordId { index, term: 1 }, body.as_slice())])
        .unwrap();
    log.sync().unwrap();
    drop(log);
    let (log, report) = SegmentLog::open(&log_dir, config, None).unwrap();
    assert_eq!(report.torn_tail, None);
    assert_eq!(log.next_index(), index + 1);
    assert!(read_all(&log).iter().all(|r| r.payload == body));
}

#[test]
fn the_unsafe_skip_fsync_flag_turns_the_group_commit_fsyncs_into_no_ops() {
    for skip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = SegmentConfig {
            unsafe_skip_fsync: skip,
            ..SegmentConfig::default()
        };
        let (mut log, _) = SegmentLog::open(dir.path(), config, None).unwrap();
        let syncs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&syncs);
        log.set_fault_hook(Arc::new(move |step| {
            // The segments' fdatasyncs (the group commit's); directory fsyncs of creating a
            // segment or writing a sidecar are not the group commit's and stay.
            if step == Step::Sync {
                seen.lock().unwrap().push(step);
            }
            Ok(())
        }));
        append_range(&mut log, 1..=3, 1);
        log.sync().unwrap();
        let syncs = syncs.lock().unwrap().clone();
        if skip {
            assert!(syncs.is_empty(), "skipped fsyncs ran: {syncs:?}");
        } else {
            assert!(syncs.contains(&Step::Sync), "{syncs:?}");
        }
        // Either way the records read back.
        assert_eq!(indexes(&read_all(&log)), vec![1, 2, 3]);
    }
}
