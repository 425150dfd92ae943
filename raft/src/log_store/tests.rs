//! Log store behaviour the openraft Suite does not pin down: group commit, durability before the
//! callback, ordering of truncate with pending appends, the first I/O error failing everything,
//! corrupt bytes on disk, and the cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::RaftLogReader;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use tokio::sync::oneshot;

use super::test_backend::Controls;
use super::*;
use crate::types::{AppRequest, EntryPayload};

/// Bound on every wait in these tests.
const WAIT_MAX: Duration = Duration::from_secs(20);

fn log_id(term: u64, index: u64) -> LogId {
    crate::types::log_id(term, 1, index)
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(AppRequest(Bytes::from(format!("t{term}-i{index}")))),
    }
}

fn open(dir: &Path, config: LogStoreConfig) -> LogStore {
    LogStore::open(dir, config).unwrap()
}

fn open_controlled(dir: &Path) -> (LogStore, Arc<Controls>) {
    let controls = Arc::new(Controls::default());
    let store = LogStore::open_with(dir, LogStoreConfig::default(), Some(controls.hook())).unwrap();
    (store, controls)
}

/// A config whose cache holds nothing durable, with small segments.
fn uncached() -> LogStoreConfig {
    LogStoreConfig {
        cache_bytes: 0,
        segment_bytes: 1024,
        ..LogStoreConfig::default()
    }
}

async fn close(store: LogStore) {
    store.flusher().stop().await;
    drop(store);
}

/// Appends and returns a receiver of the append's outcome.
async fn append(store: &mut LogStore, entries: Vec<Entry>) -> oneshot::Receiver<bool> {
    let (tx, rx) = oneshot::channel();
    store
        .append_with(
            entries,
            Box::new(move |result| {
                let _ = tx.send(result.is_ok());
            }),
        )
        .await
        .unwrap();
    rx
}

async fn durable(rx: oneshot::Receiver<bool>) -> bool {
    tokio::time::timeout(WAIT_MAX, rx).await.unwrap().unwrap()
}

fn ids(entries: &[Entry]) -> Vec<LogId> {
    entries.iter().map(|e| e.log_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_entries_are_readable_at_once_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), LogStoreConfig::default());
    let reader = store.reader();
    let rx = append(&mut store, (0..=5).map(|i| entry(1, i)).collect()).await;
    // Readable as soon as append() returned, durable or not.
    assert_eq!(
        ids(&reader.read_entries(0..100).await.unwrap()),
        (0..=5).map(|i| log_id(1, i)).collect::<Vec<_>>()
    );
    assert!(durable(rx).await);
    store.save_vote(&Vote::new(3, 2)).await.unwrap();
    store.save_committed(Some(log_id(1, 4))).await.unwrap();
    drop(reader);
    close(store).await;

    let mut store = open(dir.path(), LogStoreConfig::default());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(
        store.reader().read_vote().await.unwrap(),
        Some(Vote::new(3, 2))
    );
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
    let entries = store.reader().try_get_log_entries(2..=4).await.unwrap();
    assert_eq!(entries, (2..=4).map(|i| entry(1, i)).collect::<Vec<_>>());
    assert_eq!(store.metrics().entries_read_from_disk, 3);
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_flushes_pending_appends_together_and_acks_only_after_commit() {
    const APPENDS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let (mut store, controls) = open_controlled(dir.path());
    let shared = Arc::clone(&store.shared);
    let before = store.metrics();

    // Each callback records its index and whether a fresh read of the segments (not the memory tail)
    // already holds the entry, i.e. whether the transaction had committed when it fired.
    let fired: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
    let mut outcomes = Vec::new();
    controls.arm_gate();
    for index in 0..APPENDS {
        let (tx, rx) = oneshot::channel();
        let fired = Arc::clone(&fired);
        let shared = Arc::clone(&shared);
        let done: AppendDone = Box::new(move |result| {
            let on_disk = shared
                .read_durable_inner(index..index + 1)
                .is_ok_and(|found| found.len() == 1);
            fired.lock().unwrap().push((index, on_disk));
            let _ = tx.send(result.is_ok());
        });
        store
            .append_with(vec![entry(1, index)], done)
            .await
            .unwrap();
        outcomes.push(rx);
        if index == 0 {
            // The flusher now sits inside the first transaction's fsync; everything appended
            // meanwhile must queue and go out together.
            assert!(controls.wait_until_blocked(WAIT_MAX));
        }
    }
    assert!(
        fired.lock().unwrap().is_empty(),
        "no callback may fire before its transaction commits"
    );
    assert_eq!(
        store.reader().read_entries(0..APPENDS).await.unwrap().len() as u64,
        APPENDS
    );
    controls.open_gate();
    for rx in outcomes {
        assert!(durable(rx).await);
    }

    let fired = fired.lock().unwrap().clone();
    assert_eq!(
        fired.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..APPENDS).collect::<Vec<_>>(),
        "callbacks fire in append order"
    );
    assert!(
        fired.iter().all(|(_, on_disk)| *on_disk),
        "every callback saw its entry on disk"
    );
    let after = store.metrics();
    assert_eq!(after.appends - before.appends, APPENDS);
    assert_eq!(after.entries_flushed - before.entries_flushed, APPENDS);
    // The first append alone, then the other 199 in one transaction.
    assert_eq!(after.fsyncs - before.fsyncs, 2);
    close(store).await;
}

/// openraft 0.10's leader replicates what `append` submitted before its own flush, and counts
/// itself toward the quorum only on the flush callback. Through openraft's own trait: entries
/// are readable by the log reader the moment `append` returns while their fsync is still
/// running, `IOFlushed` fires only after that fsync, and appends arriving meanwhile share the
/// next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_openraft_appends_are_readable_at_once_and_flushed_only_after_the_fsync() {
    const APPENDS: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let (mut store, controls) = open_controlled(dir.path());
    let mut reader = store.get_log_reader().await;
    let fsyncs_before = store.metrics().fsyncs;

    controls.arm_gate();
    let mut flushed = Vec::new();
    for index in 0..APPENDS {
        let (tx, rx) = TypeConfig::oneshot();
        RaftLogStorage::append(&mut store, [entry(1, index)], IOFlushed::signal(tx))
            .await
            .unwrap();
        flushed.push(rx);
        if index == 0 {
            // The first append's transaction now waits inside its fsync.
            assert!(controls.wait_until_blocked(WAIT_MAX));
        }
        // Readable as soon as append returned, although nothing after the gate is on disk.
        let read = reader.try_get_log_entries(index..=index).await.unwrap();
        assert_eq!(read, vec![entry(1, index)]);
    }
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, APPENDS - 1))
    );
    for rx in &mut flushed {
        assert!(
            matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
            "IOFlushed fired before its fsync"
        );
    }

    controls.open_gate();
    for rx in flushed {
        let result = tokio::time::timeout(WAIT_MAX, rx).await.unwrap().unwrap();
        assert!(result.is_ok(), "flush failed: {result:?}");
    }
    // The first append alone, then the other 49 together in the next transaction.
    assert_eq!(store.metrics().fsyncs - fsyncs_before, 2);
    drop(reader);
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_is_ordered_with_pending_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, controls) = open_controlled(dir.path());
    assert!(durable(append(&mut store, vec![entry(1, 0), entry(1, 1)]).await).await);

    controls.arm_gate();
    let blocker = append(&mut store, vec![entry(1, 2)]).await;
    assert!(controls.wait_until_blocked(WAIT_MAX));
    // Queued behind the blocked transaction: old entries, a truncate, their replacements.
    let old = append(&mut store, (3..=6).map(|i| entry(1, i)).collect()).await;
    let reader = store.reader();
    let (truncated, ()) = tokio::join!(store.truncate_after(Some(log_id(1, 3))), async {
        // While the truncate waits for its transaction, the memory tail already shows the
        // shortened log; then let the flusher go.
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        while reader.last_log_id() != Some(log_id(1, 3)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "truncate never reached memory"
            );
            tokio::task::yield_now().await;
        }
        controls.open_gate();
    });
    truncated.unwrap();
    let new = append(&mut store, (4..=5).map(|i| entry(2, i)).collect()).await;
    assert!(durable(blocker).await);
    assert!(durable(old).await);
    assert!(durable(new).await);
    drop(reader);
    close(store).await;

    let store = open(dir.path(), LogStoreConfig::default());
    let on_disk = store.reader().try_get_log_entries(0..100).await.unwrap();
    assert_eq!(
        ids(&on_disk),
        vec![
            log_id(1, 0),
            log_id(1, 1),
            log_id(1, 2),
            log_id(1, 3),
            log_id(2, 4),
            log_id(2, 5)
        ]
    );
    close(store).await;
}

/// Appends and returns a receiver of the outcome its callback reports to openraft.
async fn append_reporting(
    store: &mut LogStore,
    entries: Vec<Entry>,
) -> oneshot::Receiver<Result<(), std::io::Error>> {
    let (tx, rx) = oneshot::channel();
    store
        .append_with(
            entries,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        )
        .await
        .unwrap();
    rx
}

/// The typed error inside an `io::Error` the store handed to openraft.
fn typed(error: &std::io::Error) -> &LogStoreError {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<LogStoreError>())
        .unwrap_or_else(|| panic!("no LogStoreError inside {error:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_io_error_fails_every_later_call() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, controls) = open_controlled(dir.path());
    assert!(durable(append(&mut store, vec![entry(1, 0), entry(1, 1)]).await).await);

    controls.fail_syncs();
    let failed = append_reporting(&mut store, vec![entry(1, 2)]).await;
    let error = tokio::time::timeout(WAIT_MAX, failed)
        .await
        .unwrap()
        .unwrap()
        .expect_err("the append whose fsync failed reports failure");
    assert_eq!(typed(&error).kind(), FailureKind::Io, "{error}");

    // Everything afterwards fails, without touching the disk again, as a previous failure
    // that names the first one.
    let flushes = store.metrics().transactions;
    let later = store
        .append_with(vec![entry(1, 3)], Box::new(|_| {}))
        .await
        .unwrap_err();
    assert_eq!(later.kind(), FailureKind::PreviousFailure);
    assert_eq!(later.first_failure().kind(), FailureKind::Io);
    let vote_error = store.save_vote(&Vote::new(2, 1)).await.unwrap_err();
    assert_eq!(typed(&vote_error).kind(), FailureKind::PreviousFailure);
    assert!(store.reader().read_vote().await.is_err());
    assert!(store.get_log_state().await.is_err());
    assert!(store.reader().try_get_log_entries(0..10).await.is_err());
    assert!(store.truncate_after(Some(log_id(1, 0))).await.is_err());
    assert!(store.reader().read_entries(0..10).await.is_err());
    assert_eq!(store.metrics().transactions, flushes);
    let first = store.reader().first_failure().expect("the store failed");
    assert_eq!(first.kind(), FailureKind::Io);
    close(store).await;
}

/// A full disk met where the segment log reserves space (before anything is written) stops the
/// member's writes without failing the store: the appends wait, and go through once space is
/// freed, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_space_and_resume_when_it_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let controls = Arc::new(Controls::default());
    let mut store = LogStore::open_with(dir.path(), uncached(), Some(controls.hook())).unwrap();
    assert!(durable(append(&mut store, vec![entry(1, 0)]).await).await);

    controls.refuse_space();
    // Bigger than a segment: the append needs space reserved (and a new segment).
    let big = Entry {
        log_id: log_id(1, 1),
        payload: EntryPayload::Normal(AppRequest(Bytes::from(vec![0x22; 4096]))),
    };
    let mut waiting = append(&mut store, vec![big.clone()]).await;
    let still_waiting =
        tokio::time::timeout(flusher::NO_SPACE_RETRY_INTERVAL * 2, &mut waiting).await;
    assert!(
        still_waiting.is_err(),
        "no durability while the disk is full"
    );
    assert!(store.metrics().waiting_for_space);
    assert!(
        store.reader().first_failure().is_none(),
        "the store is not failed"
    );
    // Readers still read (the entry is in the memory tail).
    assert_eq!(
        store.reader().read_entry(1).await.unwrap(),
        Some(big.clone())
    );

    controls.free_space();
    assert!(durable(waiting).await, "durable once space is back");
    assert!(!store.metrics().waiting_for_space);
    assert!(durable(append(&mut store, vec![entry(1, 2)]).await).await);
    close(store).await;
    let store = open(dir.path(), uncached());
    assert_eq!(store.reader().read_entry(1).await.unwrap(), Some(big));
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_no_space_not_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, controls) = open_controlled(dir.path());
    assert!(durable(append(&mut store, vec![entry(1, 0)]).await).await);

    controls.fill_disk();
    // Enough bytes that the transaction must write (and grow) the file.
    let big = Entry {
        log_id: log_id(1, 1),
        payload: EntryPayload::Normal(AppRequest(Bytes::from(vec![0x11; 1 << 20]))),
    };
    let failed = append_reporting(&mut store, vec![big]).await;
    let error = tokio::time::timeout(WAIT_MAX, failed)
        .await
        .unwrap()
        .unwrap()
        .expect_err("a write to a full disk fails");
    let typed = typed(&error);
    assert_eq!(typed.kind(), FailureKind::NoSpace, "{typed:?}");
    assert!(
        error.to_string().contains("No space left on device"),
        "the operator sees why: {error}"
    );
    let first = store.reader().first_failure().expect("the store failed");
    assert_eq!(first.kind(), FailureKind::NoSpace);
    close(store).await;
}

/// Overwrites `bytes.len()` bytes of `path` at `position`.
fn scribble(path: &Path, position: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, position).unwrap();
}

/// The segment file holding `index`, and where that entry's record starts.
fn record_of(store: &LogStore, index: u64) -> (PathBuf, u64) {
    let (_, _, path) = store
        .reader()
        .segments()
        .into_iter()
        .find(|(first, next, _)| (*first..*next).contains(&index))
        .unwrap();
    // Walk the records of that file from its start.
    let bytes = std::fs::read(&path).unwrap();
    let mut position = 0usize;
    loop {
        match crate::segment::record::decode(&bytes[position..]) {
            crate::segment::record::Decoded::Record { id, size, .. } => {
                if id.index == index {
                    return (path, position as u64);
                }
                position += size;
            }
            other => panic!("no record {index} in {path:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_bytes_on_disk_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), uncached());
    let entries: Vec<Entry> = (0..=100).map(|i| entry(1, i)).collect();
    assert!(durable(append(&mut store, entries).await).await);
    // Entry 2 sits in a sealed segment (the segments are small).
    let (path, position) = record_of(&store, 2);
    assert!(store.reader().segments().len() > 2);
    close(store).await;

    // A flipped byte in the payload of entry 2, behind the store's back: its CRC fails.
    let mut byte = [0u8; 1];
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&path).unwrap();
        file.read_exact_at(&mut byte, position + 30).unwrap();
    }
    scribble(&path, position + 30, &[byte[0] ^ 0x40]);
    let store = open(dir.path(), LogStoreConfig::default());
    let result = store.reader().read_entries(1..4).await;
    let error = result.expect_err("a corrupt record is an error");
    assert_eq!(error.kind(), FailureKind::Corrupt, "{error:?}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "the error names the file: {error}"
    );
    // The store is failed from now on.
    assert!(store.reader().try_get_log_entries(3..4).await.is_err());
    close(store).await;
    scribble(&path, position + 30, &byte);

    // And it was marked: even with the byte put back, the member refuses to start with this
    // data directory, saying where the corruption was and what to do.
    let error = LogStore::open(dir.path(), LogStoreConfig::default()).unwrap_err();
    assert_eq!(error.kind(), FailureKind::Corrupt, "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("Replace the member"), "{text}");
    std::fs::remove_file(dir.path().join(CORRUPT_MARKER_FILE_NAME)).unwrap();

    // A corrupt metadata file stops the open itself.
    let meta = dir.path().join(META_FILE_NAME);
    let mut bytes = std::fs::read(&meta).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&meta, &bytes).unwrap();
    let error = LogStore::open(dir.path(), LogStoreConfig::default()).unwrap_err();
    assert_eq!(error.kind(), FailureKind::Corrupt, "{error:?}");
    assert!(error.to_string().contains("raft-meta"), "{error}");
    std::fs::remove_file(&meta).unwrap();

    // A data directory of the redb era is refused with a clear error, not read as empty.
    std::fs::write(dir.path().join(LEGACY_LOG_FILE_NAME), b"old").unwrap();
    let error = LogStore::open(dir.path(), LogStoreConfig::default()).unwrap_err();
    assert!(error.to_string().contains("older RaftMQ"), "{error}");
}

/// A scrub that runs a pass at once and then not again during a test.
fn scrubbing() -> LogStoreConfig {
    LogStoreConfig {
        scrub: Some(ScrubConfig {
            interval: Duration::from_secs(3600),
            bytes_per_sec: u64::MAX,
        }),
        ..uncached()
    }
}

/// Waits (bounded) until `done` holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_finds_a_flipped_bit_in_a_finalized_segment_and_the_member_refuses_to_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), uncached());
    let entries: Vec<Entry> = (0..=100).map(|i| entry(1, i)).collect();
    assert!(durable(append(&mut store, entries).await).await);
    let (path, position) = record_of(&store, 5);
    close(store).await;

    // Untouched data: the scrub checks every finalized segment and finds nothing.
    let store = open(dir.path(), scrubbing());
    wait_until("a clean scrub pass", || store.metrics().scrub_passes == 1).await;
    assert!(
        store.metrics().segments_scrubbed > 2,
        "{:?}",
        store.metrics()
    );
    assert!(store.reader().first_failure().is_none());
    close(store).await;

    // One bit flipped in entry 5's payload. Nothing reads entry 5, yet the scrub finds it:
    // the store fails (the member stops) and marks the data directory.
    let mut byte = [0u8; 1];
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&path).unwrap();
        file.read_exact_at(&mut byte, position + 30).unwrap();
    }
    scribble(&path, position + 30, &[byte[0] ^ 0x08]);
    let store = open(dir.path(), scrubbing());
    // Whoever waits on the store's failure hears of it at once (the broker stops on it).
    let failure = tokio::time::timeout(WAIT_MAX, store.reader().failed())
        .await
        .expect("the scrub fails the store");
    assert_eq!(
        store.reader().first_failure().map(|f| f.to_string()),
        Some(failure.to_string())
    );
    assert_eq!(failure.kind(), FailureKind::Corrupt, "{failure:?}");
    assert!(
        failure.to_string().contains(&path.display().to_string()),
        "{failure}"
    );
    // Every later call fails (openraft sees it at its next write and stops the node).
    assert!(store.reader().try_get_log_entries(99..100).await.is_err());
    close(store).await;

    let error = LogStore::open(dir.path(), LogStoreConfig::default()).unwrap_err();
    assert!(
        matches!(error.first_failure(), LogStoreError::Open { source, .. } if matches!(**source, LogStoreError::MarkedCorrupt { .. })),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_bounded_and_reads_below_it_come_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache_bytes = 4 * 1024;
    let mut store = open(
        dir.path(),
        LogStoreConfig {
            cache_bytes,
            ..LogStoreConfig::default()
        },
    );
    let reader = store.reader();
    let mut last = None;
    for index in 0..=500 {
        last = Some(append(&mut store, vec![entry(1, index)]).await);
    }
    assert!(durable(last.unwrap()).await);
    let (cached_entries, cached_bytes) = reader.cache_usage();
    assert!(cached_bytes <= cache_bytes, "{cached_bytes} cached bytes");
    assert!(cached_entries > 0 && cached_entries < 501);

    let before = reader.metrics();
    let all = reader.read_entries(0..501).await.unwrap();
    assert_eq!(all, (0..=500).map(|i| entry(1, i)).collect::<Vec<_>>());
    let after = reader.metrics();
    assert_eq!(
        after.entries_read_from_disk - before.entries_read_from_disk,
        501 - cached_entries as u64
    );
    assert_eq!(
        reader.read_entries_blocking(499..600).unwrap(),
        vec![entry(1, 499), entry(1, 500)]
    );
    assert_eq!(reader.read_entry(250).await.unwrap(), Some(entry(1, 250)));
    assert_eq!(reader.read_entry(501).await.unwrap(), None);
    drop(reader);
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_truncate_returns_what_is_left_and_does_not_fail_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), uncached());
    assert!(durable(append(&mut store, (0..10).map(|i| entry(1, i)).collect()).await).await);
    // A reader planned [0, 10) from disk; before it reads, entries 5.. are truncated.
    store.truncate_after(Some(log_id(1, 4))).await.unwrap();
    let shared = Arc::clone(&store.shared);
    let found = shared.read_durable(0..10, None).unwrap();
    assert_eq!(
        ids(&found),
        (0..5).map(|i| log_id(1, i)).collect::<Vec<_>>()
    );
    assert!(
        store.get_log_state().await.is_ok(),
        "the store is not failed"
    );
    drop(shared);

    // A real hole (a segment file in the middle gone) is found at the next open: corruption,
    // naming the files on both sides.
    let more: Vec<Entry> = (5..120).map(|i| entry(2, i)).collect();
    assert!(durable(append(&mut store, more).await).await);
    let segments = store.reader().segments();
    assert!(segments.len() > 3, "{segments:?}");
    close(store).await;
    let (base, _, missing) = &segments[1];
    std::fs::remove_file(missing).unwrap();
    let _ = std::fs::remove_file(
        dir.path()
            .join(LOG_DIR_NAME)
            .join(format!("{base:020}{}", crate::segment::INDEX_SUFFIX)),
    );
    let error = LogStore::open(dir.path(), uncached()).unwrap_err();
    assert_eq!(error.kind(), FailureKind::Corrupt, "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&segments[0].2.display().to_string()),
        "{error}"
    );
}
