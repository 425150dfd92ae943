//! The state machine's pending and key indexes: the dedup window, timers and transactions
//! released exactly once, key queries, retention drops, and snapshots carrying them.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use raftmq_protocol::message::{StoredMessage, property};
use raftmq_protocol::names::{TIMER_TOPIC, TRANS_HALF_TOPIC};

use super::indexes::KeyKind;
use super::*;
use crate::command::{
    Applied, Claim, Command, Duplicate, Location, MessageSlot, Refusal, ReleaseBuilder, SendBatch,
    SendOutcome, SendUnit, decode_applied, encode_entry, physical_offset,
};
use crate::topic::TopicConfig;
use raftmq_raft::AppRequest;

fn entry(index: u64, command: &Command, blob: &[u8]) -> Entry {
    Entry {
        log_id: raftmq_raft::log_id(1, 1, index),
        payload: EntryPayload::Normal(AppRequest(encode_entry(command, blob).unwrap())),
    }
}

fn apply_one(sm: &mut BrokerStateMachine, entry: Entry) -> Applied {
    let responses = sm.apply(vec![entry]).unwrap();
    decode_applied(&responses[0].0).unwrap()
}

/// A stored-layout message with these properties.
fn message(topic: &str, properties: &[(&str, &str)]) -> Bytes {
    let host = "127.0.0.1:1".parse().unwrap();
    let stored = StoredMessage {
        queue_id: 0,
        flag: 0,
        queue_offset: 0,
        physical_offset: 0,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: host,
        store_timestamp: 0,
        store_host: host,
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body: Bytes::from_static(b"body"),
        topic: topic.into(),
        properties: properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let mut bytes = BytesMut::new();
    stored.encode(&mut bytes).unwrap();
    bytes.freeze()
}

/// One unit of `messages` to `topic` queue 0, stored at `store_ms` with a dedup window.
fn send(topic: &str, messages: &[Bytes], store_ms: i64, window_ms: u64) -> (Command, Vec<u8>) {
    let mut blob = Vec::new();
    let mut slots = Vec::new();
    for bytes in messages {
        slots.push(MessageSlot {
            start: blob.len() as u32,
            len: bytes.len() as u32,
            tags_code: 0,
        });
        blob.extend_from_slice(bytes);
    }
    let command = Command::Send(SendBatch {
        store_timestamp_ms: store_ms,
        dedup_window_ms: window_ms,
        units: vec![SendUnit {
            topic: topic.into(),
            queue_id: 0,
            create_topic: Some(TopicConfig::new(topic, 1)),
            messages: slots,
        }],
    });
    (command, blob)
}

fn open(dir: &tempfile::TempDir) -> BrokerStateMachine {
    BrokerStateMachine::open(&dir.path().join("state.redb")).unwrap()
}

#[test]
fn a_retried_send_within_the_window_finds_its_first_copy_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let first = message("T", &[(property::UNIQ_KEY, "U1")]);
    let other = message("T", &[(property::UNIQ_KEY, "U2")]);
    let (a, blob) = send("T", std::slice::from_ref(&first), 1_000_000, 120_000);
    apply_one(&mut sm, entry(1, &a, &blob));
    // The retry comes in a batch after another message: only the retry is skipped.
    let (b, blob) = send("T", &[other, first.clone()], 1_050_000, 120_000);
    let first_copy = Location {
        queue_id: 0,
        queue_offset: 0,
        physical: physical_offset(1, 0),
    };
    let applied = apply_one(&mut sm, entry(2, &b, &blob));
    let Applied::Sent(outcomes) = &applied else {
        panic!("{applied:?}")
    };
    assert_eq!(
        outcomes[0],
        SendOutcome::Placed {
            first_offset: 1,
            log_index: 2,
            first_ordinal: 0,
            duplicates: vec![Duplicate {
                position: 1,
                first: first_copy
            }],
        }
    );
    assert_eq!(
        outcomes[0].for_request(1),
        SendOutcome::Duplicate(first_copy),
        "the retry's request is answered with the first copy"
    );
    assert_eq!(
        outcomes[0].for_request(0),
        SendOutcome::Stored {
            first_offset: 1,
            log_index: 2,
            first_ordinal: 0
        }
    );
    let state = sm.state();
    assert_eq!(
        state.queue("T", 0).next_offset,
        2,
        "two messages, not three"
    );
    // The retried copy's slot was not stored: nothing reads at its physical offset.
    assert!(state.find_row("T", 0, 2, 1).unwrap().is_none());
    assert_eq!(state.find_row("T", 0, 2, 0).unwrap().unwrap().count, 1);

    // Past the window the same key is a new message; with no window it always is.
    let (c, blob) = send("T", std::slice::from_ref(&first), 1_200_001, 120_000);
    assert!(matches!(
        apply_one(&mut sm, entry(3, &c, &blob)),
        Applied::Sent(ref o) if matches!(o[0], SendOutcome::Stored { first_offset: 2, .. })
    ));
    let (d, blob) = send("T", &[first], 1_200_002, 0);
    assert!(matches!(
        apply_one(&mut sm, entry(4, &d, &blob)),
        Applied::Sent(ref o) if matches!(o[0], SendOutcome::Stored { first_offset: 3, .. })
    ));
}

#[test]
fn keys_and_unique_keys_are_found_by_time_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let m1 = message(
        "T",
        &[
            (property::KEYS, "order-1 user-7"),
            (property::UNIQ_KEY, "U1"),
        ],
    );
    let m2 = message(
        "T",
        &[
            (property::KEYS, "order-2 user-7"),
            (property::UNIQ_KEY, "U2"),
        ],
    );
    let (a, blob) = send("T", &[m1], 1_000_000, 0);
    apply_one(&mut sm, entry(1, &a, &blob));
    let (b, blob) = send("T", &[m2], 5_000_000, 0);
    apply_one(&mut sm, entry(2, &b, &blob));
    let state = sm.state();
    let offsets = |kind, key: &str, begin, end| -> Vec<u64> {
        state
            .query_keys("T", kind, key, begin, end, 10)
            .unwrap()
            .iter()
            .map(|hit| hit.queue_offset)
            .collect()
    };
    assert_eq!(offsets(KeyKind::Key, "user-7", 0, i64::MAX), vec![0, 1]);
    assert_eq!(
        offsets(KeyKind::Key, "user-7", 2_000_000, i64::MAX),
        vec![1]
    );
    assert_eq!(
        offsets(KeyKind::Key, "order-1", 0, 999_999),
        Vec::<u64>::new()
    );
    assert_eq!(offsets(KeyKind::Unique, "U2", 0, i64::MAX), vec![1]);
    assert_eq!(offsets(KeyKind::Key, "U2", 0, i64::MAX), Vec::<u64>::new());
    assert!(
        state
            .query_keys("Other", KeyKind::Key, "user-7", 0, i64::MAX, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        state
            .query_keys("T", KeyKind::Key, "user-7", 0, i64::MAX, 1)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_timer_is_indexed_by_due_time_and_released_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let timer = message(
        TIMER_TOPIC,
        &[
            (property::TIMER_OUT_MS, "2000000"),
            (property::REAL_TOPIC, "Orders"),
            (property::REAL_QID, "0"),
        ],
    );
    let (a, blob) = send(TIMER_TOPIC, std::slice::from_ref(&timer), 1_000_000, 0);
    apply_one(&mut sm, entry(1, &a, &blob));
    let state = sm.state();
    let physical = physical_offset(1, 0);
    assert!(state.due_timers(1_999_999, 10).unwrap().is_empty());
    assert_eq!(
        state.due_timers(2_000_000, 10).unwrap(),
        vec![(2_000_000, physical)]
    );
    assert_eq!(state.next_timer_due_ms().unwrap(), Some(2_000_000));
    assert_eq!(state.pending_timers().unwrap(), 1);

    let release = || {
        let mut builder = ReleaseBuilder::default();
        builder.deliver(
            Claim::Timer {
                due_ms: 2_000_000,
                physical,
            },
            ("Orders".into(), 0),
            Some(TopicConfig::new("Orders", 1)),
            &message("Orders", &[]),
            0,
        );
        builder.build(2_000_010)
    };
    let (command, blob) = release();
    assert!(matches!(
        apply_one(&mut sm, entry(2, &command, &blob)),
        Applied::Sent(ref o) if matches!(o[0], SendOutcome::Stored { first_offset: 0, .. })
    ));
    // Proposed again (a new leader that had not seen the first release): refused.
    let (command, blob) = release();
    assert_eq!(
        apply_one(&mut sm, entry(3, &command, &blob)),
        Applied::Sent(vec![SendOutcome::Refused(Refusal::NotPending(
            Claim::Timer {
                due_ms: 2_000_000,
                physical
            }
        ))])
    );
    assert_eq!(state.queue("Orders", 0).next_offset, 1, "delivered once");
    assert_eq!(state.pending_timers().unwrap(), 0);
    assert_eq!(state.next_timer_due_ms().unwrap(), None);
    // The released message is read back from the release entry.
    let rows = state.index_rows_from("Orders", 0, 0, 10).unwrap();
    assert_eq!((rows[0].log_index, rows[0].count), (2, 1));
}

#[test]
fn a_transaction_is_checked_then_ended_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let half = message(TRANS_HALF_TOPIC, &[(property::REAL_TOPIC, "Orders")]);
    let (a, blob) = send(TRANS_HALF_TOPIC, &[half], 1_000_000, 0);
    apply_one(&mut sm, entry(1, &a, &blob));
    let state = sm.state();
    let physical = physical_offset(1, 0);
    let pending = state.pending_half(physical).unwrap().unwrap();
    assert_eq!((pending.last_touch_ms, pending.checks), (1_000_000, 0));
    assert_eq!(
        state.halves_touched_before(1_000_000, 10).unwrap(),
        vec![pending]
    );
    assert!(state.halves_touched_before(999_999, 10).unwrap().is_empty());
    assert_eq!(
        state.halves_touched_after(999_999, 10).unwrap(),
        vec![pending]
    );
    assert!(
        state
            .halves_touched_after(1_000_000, 10)
            .unwrap()
            .is_empty()
    );

    let checked = Command::TransactionChecked {
        half: physical,
        checked_at_ms: 1_006_000,
    };
    assert_eq!(apply_one(&mut sm, entry(2, &checked, b"")), Applied::Done);
    let pending = state.pending_half(physical).unwrap().unwrap();
    assert_eq!((pending.last_touch_ms, pending.checks), (1_006_000, 1));
    assert!(
        state
            .halves_touched_before(1_005_999, 10)
            .unwrap()
            .is_empty()
    );

    let rollback = || {
        let mut builder = ReleaseBuilder::default();
        builder.drop_claim(
            Claim::Transaction { half: physical },
            TRANS_HALF_TOPIC.into(),
        );
        builder.build(1_007_000)
    };
    let (command, blob) = rollback();
    assert!(matches!(
        apply_one(&mut sm, entry(3, &command, &blob)),
        Applied::Sent(ref o) if matches!(o[0], SendOutcome::Stored { .. })
    ));
    let (command, blob) = rollback();
    assert!(matches!(
        apply_one(&mut sm, entry(4, &command, &blob)),
        Applied::Sent(ref o) if matches!(o[0], SendOutcome::Refused(Refusal::NotPending(_)))
    ));
    assert_eq!(
        apply_one(&mut sm, entry(5, &checked, b"")),
        Applied::Refused(Refusal::NotPending(Claim::Transaction { half: physical }))
    );
    assert_eq!(state.pending_transactions().unwrap(), 0);
    assert_eq!(
        state.queue("Orders", 0).next_offset,
        0,
        "a rollback stores nothing"
    );
}

#[test]
fn retention_drops_pending_timers_transactions_and_keys_below_its_floor() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let timer = |due: &str| {
        message(
            TIMER_TOPIC,
            &[(property::TIMER_OUT_MS, due), (property::UNIQ_KEY, due)],
        )
    };
    let half = message(TRANS_HALF_TOPIC, &[(property::UNIQ_KEY, "H")]);
    for (index, (topic, bytes, store_ms)) in [
        (TIMER_TOPIC, timer("9000000"), 1_000_000),
        (TRANS_HALF_TOPIC, half.clone(), 1_000_000),
        (TIMER_TOPIC, timer("8000000"), 3_000_000),
        (TRANS_HALF_TOPIC, half, 3_000_000),
    ]
    .into_iter()
    .enumerate()
    {
        let (command, blob) = send(topic, &[bytes], store_ms, 0);
        apply_one(&mut sm, entry(index as u64 + 1, &command, &blob));
    }
    // Retention moves the floor to entry 3: the timer and the half message of entries 1 and 2
    // go with their log, and so do the key rows stored before entry 3's store time.
    apply_one(&mut sm, entry(5, &Command::Retain { from_index: 3 }, b""));
    let state = sm.state();
    assert_eq!(
        state.due_timers(i64::MAX, 10).unwrap(),
        vec![(8_000_000, physical_offset(3, 0))]
    );
    assert!(state.pending_half(physical_offset(2, 0)).unwrap().is_none());
    assert!(state.pending_half(physical_offset(4, 0)).unwrap().is_some());
    assert_eq!(state.halves_touched_before(i64::MAX, 10).unwrap().len(), 1);
    let hits = |key: &str| {
        state
            .query_keys(TIMER_TOPIC, KeyKind::Unique, key, 0, i64::MAX, 10)
            .unwrap()
            .len()
    };
    assert_eq!((hits("9000000"), hits("8000000")), (0, 1));
}

#[test]
fn a_snapshot_carries_pending_timers_transactions_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let timer = message(
        TIMER_TOPIC,
        &[(property::TIMER_OUT_MS, "5000000"), (property::KEYS, "k")],
    );
    let (a, blob) = send(TIMER_TOPIC, &[timer], 1_000_000, 0);
    apply_one(&mut sm, entry(1, &a, &blob));
    let half = message(TRANS_HALF_TOPIC, &[]);
    let (b, blob) = send(TRANS_HALF_TOPIC, &[half], 1_000_000, 0);
    apply_one(&mut sm, entry(2, &b, &blob));
    let checked = Command::TransactionChecked {
        half: physical_offset(2, 0),
        checked_at_ms: 1_100_000,
    };
    apply_one(&mut sm, entry(3, &checked, b""));
    let mut data = Vec::new();
    sm.write_snapshot(&mut data).unwrap();

    let other_dir = tempfile::tempdir().unwrap();
    let mut other = open(&other_dir);
    let meta = SnapshotMeta {
        last_log_id: Some(raftmq_raft::log_id(1, 1, 3)),
        last_membership: StoredMembership::default(),
    };
    other.install_snapshot(&meta, &mut data.as_slice()).unwrap();
    let state = other.state();
    assert_eq!(
        state.due_timers(i64::MAX, 10).unwrap(),
        vec![(5_000_000, physical_offset(1, 0))]
    );
    let pending = state.pending_half(physical_offset(2, 0)).unwrap().unwrap();
    assert_eq!((pending.last_touch_ms, pending.checks), (1_100_000, 1));
    assert_eq!(
        state
            .query_keys(TIMER_TOPIC, KeyKind::Key, "k", 0, i64::MAX, 10)
            .unwrap()
            .len(),
        1
    );
}
