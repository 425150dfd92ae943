//! State machine tests: offsets assigned at apply, refusals, offset commits that never go back,
//! restart, snapshots, determinism, and corruption stopping the machine.

use bytes::Bytes;

use super::*;
use crate::command::{
    Applied, Command, MessageSlot, OffsetCommit, QueueOffset, Refusal, SendBatch, SendOutcome,
    SendUnit, decode_applied, encode_entry,
};
use crate::topic::TopicConfig;
use raftmq_raft::{AppRequest, FailureKind, Membership};

fn log_id(index: u64) -> LogId {
    raftmq_raft::log_id(1, 1, index)
}

pub(super) fn normal(index: u64, command: &Command, blob: &[u8]) -> Entry {
    let payload = encode_entry(command, blob).unwrap();
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(AppRequest(payload)),
    }
}

/// A send of `count` one-byte messages to one queue, auto-creating the topic with 4 queues.
pub(super) fn send(topic: &str, queue_id: u32, count: u32, store_ms: i64) -> (Command, Vec<u8>) {
    let messages = (0..count)
        .map(|i| MessageSlot {
            start: i,
            len: 1,
            tags_code: 0,
        })
        .collect::<Vec<_>>();
    let command = Command::Send(SendBatch {
        store_timestamp_ms: store_ms,
        dedup_window_ms: 0,
        units: vec![SendUnit {
            topic: topic.into(),
            queue_id,
            create_topic: Some(TopicConfig::new(topic, 4)),
            messages,
        }],
    });
    (command, vec![b'x'; count as usize])
}

pub(super) fn apply_one(sm: &mut BrokerStateMachine, entry: Entry) -> Applied {
    let responses = sm.apply(vec![entry]).unwrap();
    decode_applied(&responses[0].0).unwrap()
}

pub(super) fn open(dir: &tempfile::TempDir) -> BrokerStateMachine {
    BrokerStateMachine::open(&dir.path().join("state.redb")).unwrap()
}

#[test]
fn offsets_are_assigned_per_queue_at_apply() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let (a, blob_a) = send("orders", 0, 3, 10);
    let (b, blob_b) = send("orders", 1, 2, 10);
    let (c, blob_c) = send("orders", 0, 2, 11);
    assert_eq!(
        apply_one(&mut sm, normal(1, &a, &blob_a)),
        Applied::Sent(vec![SendOutcome::Stored {
            first_offset: 0,
            log_index: 1,
            first_ordinal: 0
        }])
    );
    apply_one(&mut sm, normal(2, &b, &blob_b));
    assert_eq!(
        apply_one(&mut sm, normal(3, &c, &blob_c)),
        Applied::Sent(vec![SendOutcome::Stored {
            first_offset: 3,
            log_index: 3,
            first_ordinal: 0
        }])
    );
    let state = sm.state();
    assert_eq!(state.queue("orders", 0).next_offset, 5);
    assert_eq!(state.queue("orders", 1).next_offset, 2);
    assert_eq!(state.topic("orders").unwrap().write_queue_nums, 4);
    assert_eq!(state.applied(), Some(log_id(3)));

    // Offset 4 lives in the second row (log index 3), offset 1 in the first.
    let rows = state.index_rows_from("orders", 0, 4, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].first_offset, rows[0].log_index, rows[0].count),
        (3, 3, 2)
    );
    let rows = state.index_rows_from("orders", 0, 1, 10).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.log_index).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert!(
        state
            .index_rows_from("orders", 0, 5, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn units_in_one_entry_get_ordinals_and_refusals_are_per_unit() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let slot = |start| MessageSlot {
        start,
        len: 1,
        tags_code: 0,
    };
    let command = Command::Send(SendBatch {
        store_timestamp_ms: 5,
        dedup_window_ms: 0,
        units: vec![
            SendUnit {
                topic: "t".into(),
                queue_id: 0,
                create_topic: Some(TopicConfig::new("t", 2)),
                messages: vec![slot(0), slot(1)],
            },
            // Queue 7 does not exist on a two-queue topic.
            SendUnit {
                topic: "t".into(),
                queue_id: 7,
                create_topic: None,
                messages: vec![slot(2)],
            },
            // An unknown topic without permission to create it.
            SendUnit {
                topic: "u".into(),
                queue_id: 0,
                create_topic: None,
                messages: vec![slot(3)],
            },
            SendUnit {
                topic: "t".into(),
                queue_id: 0,
                create_topic: None,
                messages: vec![slot(4)],
            },
        ],
    });
    let applied = apply_one(&mut sm, normal(1, &command, b"abcde"));
    assert_eq!(
        applied,
        Applied::Sent(vec![
            SendOutcome::Stored {
                first_offset: 0,
                log_index: 1,
                first_ordinal: 0
            },
            SendOutcome::Refused(Refusal::QueueInvalid {
                topic: "t".into(),
                queue_id: 7
            }),
            SendOutcome::Refused(Refusal::TopicMissing("u".into())),
            SendOutcome::Stored {
                first_offset: 2,
                log_index: 1,
                first_ordinal: 4
            },
        ])
    );
    assert_eq!(sm.state().queue("t", 0).next_offset, 3);
    assert!(sm.state().topic("u").is_none());
}

#[test]
fn consumer_commits_never_go_back_but_a_reset_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let commit = |offset, reset| {
        Command::CommitOffsets(OffsetCommit {
            group: "g".into(),
            offsets: vec![QueueOffset {
                topic: "t".into(),
                queue_id: 0,
                offset,
            }],
            reset,
        })
    };
    apply_one(&mut sm, normal(1, &commit(10, false), b""));
    apply_one(&mut sm, normal(2, &commit(7, false), b""));
    assert_eq!(sm.state().consumer_offset("g", "t", 0), Some(10));
    apply_one(&mut sm, normal(3, &commit(12, false), b""));
    assert_eq!(sm.state().consumer_offset("g", "t", 0), Some(12));
    apply_one(&mut sm, normal(4, &commit(2, true), b""));
    assert_eq!(sm.state().consumer_offset("g", "t", 0), Some(2));
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    for index in 1..=10 {
        let (command, blob) = send("t", (index % 2) as u32, 2, index as i64);
        apply_one(&mut sm, normal(index, &command, &blob));
    }
    let before = sm.state();
    let expected = (
        before.applied(),
        before.queue("t", 0),
        before.queue("t", 1),
        before.topics(),
    );
    // Readers hold the database open too; all must be gone before it reopens.
    drop((sm, before));

    let sm = open(&dir);
    let after = sm.state();
    assert_eq!(
        after.read_last_store_timestamp_ms(),
        10,
        "store time survives a restart"
    );
    assert_eq!(
        (
            after.applied(),
            after.queue("t", 0),
            after.queue("t", 1),
            after.topics()
        ),
        expected
    );
    assert_eq!(after.index_rows_from("t", 0, 0, 100).unwrap().len(), 5);
}

/// A commit rewrites the membership and the last store time only when they changed: what an
/// earlier commit wrote must still be what a restart reads, after applies that left them alone
/// and after a snapshot was installed.
#[test]
fn membership_and_store_time_survive_a_restart_when_later_applies_leave_them_alone() {
    let members = std::collections::BTreeSet::from([1u64, 2, 3]);
    let membership = Membership::new_with_defaults(vec![members], []);
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    sm.apply(vec![Entry {
        log_id: log_id(1),
        payload: EntryPayload::Membership(membership),
    }])
    .unwrap();
    for index in 2..=5 {
        // The same store time every time: only the first send writes it.
        let (command, blob) = send("t", 0, 1, 7);
        apply_one(&mut sm, normal(index, &command, &blob));
    }
    let expected = sm.applied_state();
    assert_eq!(expected.0, Some(log_id(5)));
    assert_eq!(expected.1.log_id(), &Some(log_id(1)));
    let mut data = Vec::new();
    sm.write_snapshot(&mut data).unwrap();
    drop(sm);
    let sm = open(&dir);
    assert_eq!(sm.applied_state(), expected);
    assert_eq!(sm.state().read_last_store_timestamp_ms(), 7);
    drop(sm);

    // Installed elsewhere (where the state machine had seen neither), then one more send with
    // the same store time, then a restart.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = open(&other_dir);
    let meta = SnapshotMeta {
        last_log_id: expected.0,
        last_membership: expected.1.clone(),
    };
    other.install_snapshot(&meta, &mut data.as_slice()).unwrap();
    let (command, blob) = send("t", 0, 1, 7);
    apply_one(&mut other, normal(6, &command, &blob));
    drop(other);
    let other = open(&other_dir);
    assert_eq!(other.applied_state(), (Some(log_id(6)), expected.1));
    assert_eq!(other.state().read_last_store_timestamp_ms(), 7);
    assert_eq!(other.state().queue("t", 0).next_offset, 5);
}

#[test]
fn snapshot_restores_the_same_state_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    for index in 1..=6 {
        let (command, blob) = send("t", 0, 3, index as i64);
        apply_one(&mut sm, normal(index, &command, &blob));
    }
    let members = std::collections::BTreeSet::from([1u64, 2, 3]);
    let membership = Membership::new_with_defaults(vec![members], []);
    sm.apply(vec![Entry {
        log_id: log_id(7),
        payload: EntryPayload::Membership(membership),
    }])
    .unwrap();
    let mut data = Vec::new();
    let (last_log_id, last_membership) = sm.write_snapshot(&mut data).unwrap();
    assert_eq!((last_log_id, last_membership.clone()), sm.applied_state());

    let other_dir = tempfile::tempdir().unwrap();
    let mut other = open(&other_dir);
    // Something the snapshot must replace.
    let (command, blob) = send("stale", 0, 1, 1);
    apply_one(&mut other, normal(1, &command, &blob));
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
    };
    other.install_snapshot(&meta, &mut data.as_slice()).unwrap();

    assert_eq!(other.applied_state(), sm.applied_state());
    assert!(other.state().topic("stale").is_none());
    assert_eq!(other.state().queue("t", 0).next_offset, 18);
    assert_eq!(
        other.state().index_rows_from("t", 0, 0, 100).unwrap(),
        sm.state().index_rows_from("t", 0, 0, 100).unwrap()
    );
    // And it keeps applying from there.
    let (command, blob) = send("t", 0, 1, 9);
    assert_eq!(
        apply_one(&mut other, normal(8, &command, &blob)),
        Applied::Sent(vec![SendOutcome::Stored {
            first_offset: 18,
            log_index: 8,
            first_ordinal: 0
        }])
    );
}

#[test]
fn a_corrupt_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(3)),
        last_membership: StoredMembership::default(),
    };
    let err = sm
        .install_snapshot(&meta, &mut &b"\x01\x00\x00\x00garbage"[..])
        .unwrap_err();
    assert!(
        matches!(err, StateMachineError::CorruptSnapshot(_)),
        "{err}"
    );
}

#[test]
fn apply_is_deterministic() {
    let entries = || {
        let mut entries = Vec::new();
        for index in 1..=20u64 {
            let (command, blob) = send("t", (index % 3) as u32, (index % 4 + 1) as u32, 100);
            entries.push(normal(index, &command, &blob));
        }
        entries
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, mut b) = (open(&dir_a), open(&dir_b));
    let answers_a = a.apply(entries()).unwrap();
    let answers_b = b.apply(entries()).unwrap();
    assert_eq!(answers_a, answers_b);
    let (mut image_a, mut image_b) = (Vec::new(), Vec::new());
    a.write_snapshot(&mut image_a).unwrap();
    b.write_snapshot(&mut image_b).unwrap();
    assert_eq!(image_a, image_b);
}

#[test]
fn an_entry_applied_twice_or_corrupt_stops_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let (command, blob) = send("t", 0, 1, 1);
    apply_one(&mut sm, normal(1, &command, &blob));
    let err = sm.apply(vec![normal(1, &command, &blob)]).unwrap_err();
    assert!(
        matches!(err, StateMachineError::Invariant { index: 1, .. }),
        "{err}"
    );
    // After a failure nothing more is applied, and the refusal names the first failure.
    let later = sm.apply(vec![normal(2, &command, &blob)]).unwrap_err();
    assert_eq!(later.kind(), FailureKind::PreviousFailure);
    assert!(matches!(
        later.first_failure(),
        StateMachineError::Invariant { index: 1, .. }
    ));

    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let corrupt = Entry {
        log_id: log_id(1),
        payload: EntryPayload::Normal(AppRequest(Bytes::from_static(b"\x00\x00\x00\x09oops"))),
    };
    assert!(matches!(
        sm.apply(vec![corrupt]),
        Err(StateMachineError::Invariant { .. })
    ));
}

#[test]
fn a_corrupt_state_file_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    drop(BrokerStateMachine::open(&path).unwrap());
    std::fs::write(&path, vec![0xA5u8; 64 * 1024]).unwrap();
    let err = BrokerStateMachine::open(&path)
        .err()
        .expect("a garbage file must not open");
    assert!(
        matches!(err, StateMachineError::Open { .. }),
        "the error names the file: {err}"
    );
    assert_eq!(err.kind(), FailureKind::Corrupt, "{err:?}");
}

#[test]
fn deleting_a_topic_removes_its_queues_index_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let (command, blob) = send("t", 0, 2, 1);
    apply_one(&mut sm, normal(1, &command, &blob));
    let commit = Command::CommitOffsets(OffsetCommit {
        group: "g".into(),
        offsets: vec![QueueOffset {
            topic: "t".into(),
            queue_id: 0,
            offset: 1,
        }],
        reset: false,
    });
    apply_one(&mut sm, normal(2, &commit, b""));
    apply_one(
        &mut sm,
        normal(3, &Command::DeleteTopic { topic: "t".into() }, b""),
    );
    let state = sm.state();
    assert!(state.topic("t").is_none());
    assert_eq!(state.queue("t", 0).next_offset, 0);
    assert_eq!(state.consumer_offset("g", "t", 0), None);
    assert!(state.index_rows_from("t", 0, 0, 10).unwrap().is_empty());
}

#[test]
fn offsets_are_found_by_store_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    for (index, store_ms) in [(1u64, 100i64), (2, 200), (3, 300)] {
        let (command, blob) = send("t", 0, 2, store_ms);
        apply_one(&mut sm, normal(index, &command, &blob));
    }
    let state = sm.state();
    assert_eq!(state.offset_for_timestamp("t", 0, 50).unwrap(), 0);
    assert_eq!(state.offset_for_timestamp("t", 0, 150).unwrap(), 2);
    assert_eq!(state.offset_for_timestamp("t", 0, 300).unwrap(), 4);
    assert_eq!(state.offset_for_timestamp("t", 0, 301).unwrap(), 6);
    assert_eq!(state.store_timestamp("t", 0, 3).unwrap(), Some(200));

    // A leader whose clock is behind stores with the latest time instead of going back.
    let (command, blob) = send("t", 0, 1, 150);
    apply_one(&mut sm, normal(4, &command, &blob));
    assert_eq!(state.store_timestamp("t", 0, 6).unwrap(), Some(300));
}

#[test]
fn apply_wakes_whoever_waits_for_new_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let mut applied = sm.state().subscribe_applied();
    assert!(!applied.has_changed().unwrap());
    let (command, blob) = send("t", 0, 1, 1);
    apply_one(&mut sm, normal(1, &command, &blob));
    assert!(applied.has_changed().unwrap());
    assert_eq!(*applied.borrow_and_update(), 1);
}

#[test]
fn rows_are_found_by_their_place_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    for index in 1..=9u64 {
        let (command, blob) = send("t", (index % 2) as u32, 3, 1);
        apply_one(&mut sm, normal(index, &command, &blob));
    }
    let state = sm.state();
    for index in 1..=9u64 {
        let queue = (index % 2) as u32;
        let row = state.find_row("t", queue, index, 0).unwrap().unwrap();
        assert_eq!(row.log_index, index);
        assert_eq!(row.first_offset, 3 * ((index - 1) / 2));
        assert!(state.find_row("t", 1 - queue, index, 0).unwrap().is_none());
    }
    assert!(state.find_row("t", 0, 99, 0).unwrap().is_none());
}

#[test]
fn create_topic_if_missing_never_changes_an_existing_topic() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let created = Command::CreateTopicIfMissing(TopicConfig::new("auto", 8));
    assert_eq!(apply_one(&mut sm, normal(1, &created, b"")), Applied::Done);
    assert_eq!(sm.state().topic("auto").unwrap().write_queue_nums, 8);
    // An operator resizes it; a late auto-creation (a delayed send) must not undo that.
    let resized = Command::UpsertTopic(TopicConfig::new("auto", 2));
    apply_one(&mut sm, normal(2, &resized, b""));
    assert_eq!(apply_one(&mut sm, normal(3, &created, b"")), Applied::Done);
    assert_eq!(sm.state().topic("auto").unwrap().write_queue_nums, 2);
}

#[test]
fn retention_moves_queue_minimums_drops_rows_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    // Entries 1..=6 alternate between two queues: 2 messages each, stored at 100, 200, ...
    for index in 1..=6u64 {
        let (command, blob) = send("orders", (index % 2) as u32, 2, index as i64 * 100);
        apply_one(&mut sm, normal(index, &command, &blob));
    }
    let state = sm.state();
    assert_eq!(state.queue("orders", 0).bytes, 6);
    assert_eq!(state.first_log_index_stored_since(250).unwrap(), Some(3));
    assert_eq!(state.first_log_index_stored_since(10_000).unwrap(), None);

    // Entries below 4 go: queue 1 held entries 1 and 3 (offsets 0..4), queue 0 held entry 2
    // (offsets 0..2) below the floor.
    let retain = Command::Retain { from_index: 4 };
    assert_eq!(apply_one(&mut sm, normal(7, &retain, &[])), Applied::Done);
    let q0 = state.queue("orders", 0);
    let q1 = state.queue("orders", 1);
    assert_eq!((q0.min_offset, q0.next_offset, q0.bytes), (2, 6, 4));
    assert_eq!((q1.min_offset, q1.next_offset, q1.bytes), (4, 6, 2));
    assert_eq!(state.retention_floor(), 4);
    assert_eq!(state.first_log_index_stored_since(0).unwrap(), Some(4));
    // A lower floor later changes nothing.
    let lower = Command::Retain { from_index: 2 };
    apply_one(&mut sm, normal(8, &lower, &[]));
    assert_eq!(state.retention_floor(), 4);
    assert_eq!(state.queue("orders", 1).min_offset, 4);

    // Everything below the end: queues are empty but keep their next offsets.
    let all = Command::Retain { from_index: 100 };
    apply_one(&mut sm, normal(9, &all, &[]));
    let q0 = state.queue("orders", 0);
    assert_eq!((q0.min_offset, q0.next_offset, q0.bytes), (6, 6, 0));
    drop(state);
    drop(sm);

    let sm = open(&dir);
    let state = sm.state();
    assert_eq!(state.retention_floor(), 100);
    let q1 = state.queue("orders", 1);
    assert_eq!((q1.min_offset, q1.next_offset, q1.bytes), (6, 6, 0));
    assert_eq!(state.first_log_index_stored_since(0).unwrap(), None);
}
