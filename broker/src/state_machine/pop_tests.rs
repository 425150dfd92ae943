//! POP in the state machine: invisibility, redelivery after expiry with the attempt counted,
//! acks that are final, changes of invisibility, dead-lettering after the group's attempts,
//! orderly queues, retention, restart and snapshots.

use super::tests::{apply_one, normal, open, send};
use super::*;
use crate::command::{
    AckOutcome, Applied, Claim, Command, PopCommand, PopTarget, Popped, QueuePop, ReleaseBuilder,
    SendOutcome,
};
use crate::topic::{GroupConfig, TopicConfig};
use raftmq_protocol::names::dlq_topic;

const GROUP: &str = "pop-group";
const TOPIC: &str = "t";
const INVISIBLE_MS: u64 = 5_000;

/// A state machine with `count` messages in queue 0 of [`TOPIC`] (entry 1) and [`GROUP`]
/// allowing `retries` redeliveries (entry 2). The next free log index is 3.
fn setup(count: u32, retries: u32) -> (tempfile::TempDir, BrokerStateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(&dir);
    let (command, blob) = send(TOPIC, 0, count, 10);
    apply_one(&mut sm, normal(1, &command, &blob));
    let mut group = GroupConfig::new(GROUP);
    group.retry_max_times = retries;
    apply_one(&mut sm, normal(2, &Command::UpsertGroup(group), &[]));
    (dir, sm)
}

/// A pop of queue 0: the given redeliveries, and new offsets read from `from..to`.
fn pop_command(now_ms: i64, fifo: bool, redeliver: Vec<(u64, i64)>, new: (u64, u64)) -> Command {
    Command::Pop(PopCommand {
        group: GROUP.into(),
        topic: TOPIC.into(),
        now_ms,
        invisible_ms: INVISIBLE_MS,
        fifo,
        init_from_end: false,
        queues: vec![QueuePop {
            queue_id: 0,
            redeliver,
            from_cursor: new.0,
            to_cursor: new.1,
            offsets: (new.0..new.1).collect(),
        }],
    })
}

fn popped(applied: Applied) -> Vec<(u64, u32)> {
    let Applied::Popped(list) = applied else {
        panic!("not a pop answer: {applied:?}")
    };
    list.iter()
        .map(|p: &Popped| (p.offset, p.attempt))
        .collect()
}

fn target(offset: u64, pop_ms: i64) -> PopTarget {
    PopTarget {
        topic: TOPIC.into(),
        queue_id: 0,
        offset,
        pop_ms,
    }
}

fn ack(offset: u64, pop_ms: i64) -> Command {
    Command::Ack {
        group: GROUP.into(),
        acks: vec![target(offset, pop_ms)],
    }
}

fn acked(applied: Applied) -> AckOutcome {
    let Applied::Acked(outcomes) = applied else {
        panic!("not an ack answer: {applied:?}")
    };
    outcomes[0]
}

#[test]
fn a_popped_message_is_invisible_until_its_time_ends_then_comes_back_with_the_next_attempt() {
    let (_dir, mut sm) = setup(3, 16);
    let first = apply_one(
        &mut sm,
        normal(3, &pop_command(1_000, false, vec![], (0, 3)), &[]),
    );
    assert_eq!(popped(first), vec![(0, 1), (1, 1), (2, 1)]);
    let state = sm.state().pop_queue(GROUP, TOPIC, 0).unwrap();
    assert_eq!(state.cursor, 3);
    assert_eq!(
        state.in_flight[&0].invisible_until_ms,
        1_000 + INVISIBLE_MS as i64
    );

    // Before expiry: neither a redelivery nor the same new offsets again.
    let early = pop_command(2_000, false, vec![(0, 1_000)], (0, 3));
    assert_eq!(popped(apply_one(&mut sm, normal(4, &early, &[]))), vec![]);

    // After expiry: handed out again, attempt 2, with a new pop time.
    let later = pop_command(6_000, false, vec![(0, 1_000)], (3, 3));
    assert_eq!(
        popped(apply_one(&mut sm, normal(5, &later, &[]))),
        vec![(0, 2)]
    );
    let entry = sm.state().pop_queue(GROUP, TOPIC, 0).unwrap().in_flight[&0];
    assert_eq!((entry.attempt, entry.pop_ms), (2, 6_000));
    // The handle of the first delivery is stale now; the second's acks it.
    assert_eq!(
        acked(apply_one(&mut sm, normal(6, &ack(0, 1_000), &[]))),
        AckOutcome::Stale
    );
    assert_eq!(
        acked(apply_one(&mut sm, normal(7, &ack(0, 6_000), &[]))),
        AckOutcome::Done
    );
}

#[test]
fn an_ack_is_final_and_moves_the_committed_offset_to_the_lowest_unacked() {
    let (_dir, mut sm) = setup(3, 16);
    apply_one(
        &mut sm,
        normal(3, &pop_command(1_000, false, vec![], (0, 3)), &[]),
    );
    assert_eq!(sm.state().consumer_offset(GROUP, TOPIC, 0), Some(0));
    assert_eq!(
        acked(apply_one(&mut sm, normal(4, &ack(1, 1_000), &[]))),
        AckOutcome::Done
    );
    // Offset 0 is not acked: the committed offset stays.
    assert_eq!(sm.state().consumer_offset(GROUP, TOPIC, 0), Some(0));
    assert_eq!(
        acked(apply_one(&mut sm, normal(5, &ack(0, 1_000), &[]))),
        AckOutcome::Done
    );
    assert_eq!(sm.state().consumer_offset(GROUP, TOPIC, 0), Some(2));
    // Acked again (a retried ack): not in flight; never comes back, however late.
    assert_eq!(
        acked(apply_one(&mut sm, normal(6, &ack(0, 1_000), &[]))),
        AckOutcome::NotInFlight
    );
    let much_later = pop_command(1_000_000, false, vec![(0, 1_000), (1, 1_000)], (3, 3));
    assert_eq!(
        popped(apply_one(&mut sm, normal(7, &much_later, &[]))),
        vec![]
    );
    // An offset never handed out cannot be acked.
    assert_eq!(
        acked(apply_one(&mut sm, normal(8, &ack(7, 1_000), &[]))),
        AckOutcome::NeverPopped
    );
}

#[test]
fn a_change_of_invisibility_extends_it_and_makes_the_old_handle_stale() {
    let (_dir, mut sm) = setup(1, 16);
    apply_one(
        &mut sm,
        normal(3, &pop_command(1_000, false, vec![], (0, 1)), &[]),
    );
    let change = Command::ChangeInvisible {
        group: GROUP.into(),
        target: target(0, 1_000),
        now_ms: 2_000,
        invisible_ms: 60_000,
    };
    assert_eq!(
        apply_one(&mut sm, normal(4, &change, &[])),
        Applied::Changed {
            outcome: AckOutcome::Done,
            invisible_until_ms: 62_000
        }
    );
    // Past the first invisible time, before the new one: not handed out.
    let at_10s = pop_command(10_000, false, vec![(0, 2_000)], (1, 1));
    assert_eq!(popped(apply_one(&mut sm, normal(5, &at_10s, &[]))), vec![]);
    assert_eq!(
        acked(apply_one(&mut sm, normal(6, &ack(0, 1_000), &[]))),
        AckOutcome::Stale
    );
    let at_62s = pop_command(62_000, false, vec![(0, 2_000)], (1, 1));
    assert_eq!(
        popped(apply_one(&mut sm, normal(7, &at_62s, &[]))),
        vec![(0, 2)]
    );
}

#[test]
fn after_the_groups_attempts_the_message_goes_to_the_dlq_and_never_pops_again() {
    // One retry: two deliveries at most.
    let (_dir, mut sm) = setup(1, 1);
    apply_one(
        &mut sm,
        normal(3, &pop_command(1_000, false, vec![], (0, 1)), &[]),
    );
    let second = pop_command(7_000, false, vec![(0, 1_000)], (1, 1));
    assert_eq!(
        popped(apply_one(&mut sm, normal(4, &second, &[]))),
        vec![(0, 2)]
    );
    // Expired again: a third delivery is refused, it is for the DLQ now.
    let third = pop_command(20_000, false, vec![(0, 7_000)], (1, 1));
    assert_eq!(popped(apply_one(&mut sm, normal(5, &third, &[]))), vec![]);
    let exhausted = sm.state().pop_exhausted(20_000, 10);
    assert_eq!(exhausted.len(), 1);
    assert_eq!((exhausted[0].1, exhausted[0].2.attempt), (0, 2));

    let dead_letter = |pop_ms| {
        let mut release = ReleaseBuilder::default();
        let dlq = dlq_topic(GROUP);
        release.deliver(
            Claim::Pop {
                group: GROUP.into(),
                target: target(0, pop_ms),
            },
            (dlq.clone(), 0),
            Some(TopicConfig::new(&dlq, 1)),
            b"dead",
            0,
        );
        release.build(20_000)
    };
    let (command, blob) = dead_letter(7_000);
    let Applied::Sent(outcomes) = apply_one(&mut sm, normal(6, &command, &blob)) else {
        panic!("not a send answer")
    };
    assert!(matches!(outcomes[0], SendOutcome::Stored { .. }));
    assert_eq!(sm.state().queue(&dlq_topic(GROUP), 0).next_offset, 1);
    let queue = sm.state().pop_queue(GROUP, TOPIC, 0).unwrap();
    assert!(queue.in_flight.is_empty());
    assert_eq!(sm.state().consumer_offset(GROUP, TOPIC, 0), Some(1));
    // Proposed again (by a new leader): nothing is stored twice.
    let (command, blob) = dead_letter(7_000);
    let Applied::Sent(outcomes) = apply_one(&mut sm, normal(7, &command, &blob)) else {
        panic!("not a send answer")
    };
    assert!(matches!(outcomes[0], SendOutcome::Refused(_)));
    assert_eq!(sm.state().queue(&dlq_topic(GROUP), 0).next_offset, 1);
    let retry = pop_command(100_000, false, vec![(0, 7_000)], (1, 1));
    assert_eq!(popped(apply_one(&mut sm, normal(8, &retry, &[]))), vec![]);
    assert!(sm.state().pop_exhausted(100_000, 10).is_empty());
}

#[test]
fn an_orderly_queue_hands_out_its_next_message_only_after_the_previous_is_acked() {
    let (_dir, mut sm) = setup(3, 16);
    let first = pop_command(1_000, true, vec![], (0, 3));
    assert_eq!(
        popped(apply_one(&mut sm, normal(3, &first, &[]))),
        vec![(0, 1)]
    );
    assert_eq!(sm.state().pop_queue(GROUP, TOPIC, 0).unwrap().cursor, 1);
    let blocked = pop_command(2_000, true, vec![], (1, 3));
    assert_eq!(popped(apply_one(&mut sm, normal(4, &blocked, &[]))), vec![]);
    // Expired: the head comes back, still before anything after it.
    let expired = pop_command(7_000, true, vec![(0, 1_000)], (1, 3));
    assert_eq!(
        popped(apply_one(&mut sm, normal(5, &expired, &[]))),
        vec![(0, 2)]
    );
    assert_eq!(
        acked(apply_one(&mut sm, normal(6, &ack(0, 7_000), &[]))),
        AckOutcome::Done
    );
    let next = pop_command(8_000, true, vec![], (1, 3));
    assert_eq!(
        popped(apply_one(&mut sm, normal(7, &next, &[]))),
        vec![(1, 1)]
    );
}

#[test]
fn a_pop_from_a_cursor_that_moved_hands_out_nothing_new() {
    let (_dir, mut sm) = setup(4, 16);
    apply_one(
        &mut sm,
        normal(3, &pop_command(1_000, false, vec![], (0, 2)), &[]),
    );
    // Planned from the old cursor (a racing pop): refused, nothing handed out twice.
    let racing = pop_command(1_001, false, vec![], (0, 4));
    assert_eq!(popped(apply_one(&mut sm, normal(4, &racing, &[]))), vec![]);
    assert_eq!(sm.state().pop_queue(GROUP, TOPIC, 0).unwrap().cursor, 2);
}

#[test]
fn retention_drops_pop_state_below_the_queue_minimum() {
    let (_dir, mut sm) = setup(2, 16);
    // Entry 3 holds offsets 2 and 3.
    let (command, blob) = send(TOPIC, 0, 2, 11);
    apply_one(&mut sm, normal(3, &command, &blob));
    apply_one(
        &mut sm,
        normal(4, &pop_command(1_000, false, vec![], (0, 4)), &[]),
    );
    apply_one(&mut sm, normal(5, &Command::Retain { from_index: 3 }, &[]));
    assert_eq!(sm.state().queue(TOPIC, 0).min_offset, 2);
    let queue = sm.state().pop_queue(GROUP, TOPIC, 0).unwrap();
    assert_eq!(
        queue.in_flight.keys().copied().collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(sm.state().consumer_offset(GROUP, TOPIC, 0), Some(2));
}

#[test]
fn pop_state_survives_a_restart_and_a_snapshot() {
    let (dir, mut sm) = setup(3, 16);
    apply_one(
        &mut sm,
        normal(3, &pop_command(1_000, false, vec![], (0, 3)), &[]),
    );
    apply_one(&mut sm, normal(4, &ack(1, 1_000), &[]));
    let expected = sm.state().pop_queue(GROUP, TOPIC, 0).unwrap();
    assert_eq!(
        expected.in_flight.keys().copied().collect::<Vec<_>>(),
        vec![0, 2]
    );
    drop(sm);

    let mut sm = open(&dir);
    assert_eq!(
        sm.state().pop_queue(GROUP, TOPIC, 0),
        Some(expected.clone())
    );
    let mut image = Vec::new();
    let (last_log_id, last_membership) = sm.write_snapshot(&mut image).unwrap();

    let other_dir = tempfile::tempdir().unwrap();
    let mut other = open(&other_dir);
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
    };
    other
        .install_snapshot(&meta, &mut image.as_slice())
        .unwrap();
    assert_eq!(
        other.state().pop_queue(GROUP, TOPIC, 0),
        Some(expected.clone())
    );
    // And the installed state is on disk too.
    drop(other);
    let other = open(&other_dir);
    assert_eq!(other.state().pop_queue(GROUP, TOPIC, 0), Some(expected));
}

#[test]
fn a_group_new_to_a_queue_starts_where_it_asked_and_stays_there() {
    let (_dir, mut sm) = setup(3, 16);
    // Starting at the end: nothing is handed out, but the start is pinned at 3.
    let mut from_end = pop_command(1_000, false, vec![], (3, 3));
    if let Command::Pop(pop) = &mut from_end {
        pop.init_from_end = true;
    }
    assert_eq!(
        popped(apply_one(&mut sm, normal(3, &from_end, &[]))),
        vec![]
    );
    assert_eq!(sm.state().pop_queue(GROUP, TOPIC, 0).unwrap().cursor, 3);
    assert_eq!(sm.state().pop_cursor(GROUP, TOPIC, 0, false), 3);
    let (command, blob) = send(TOPIC, 0, 1, 11);
    apply_one(&mut sm, normal(4, &command, &blob));
    let next = pop_command(2_000, false, vec![], (3, 4));
    assert_eq!(
        popped(apply_one(&mut sm, normal(5, &next, &[]))),
        vec![(3, 1)]
    );
}

#[test]
fn a_pop_of_an_empty_queue_pins_its_cursor_and_a_queue_past_the_topic_is_ignored() {
    let (_dir, mut sm) = setup(1, 16);
    let mut empty = pop_command(1_000, false, vec![], (0, 0));
    if let Command::Pop(pop) = &mut empty {
        pop.queues[0].queue_id = 3;
        let mut beyond = pop.queues[0].clone();
        beyond.queue_id = 4;
        pop.queues.push(beyond);
    }
    assert_eq!(popped(apply_one(&mut sm, normal(3, &empty, &[]))), vec![]);
    assert_eq!(
        sm.state().pop_queue(GROUP, TOPIC, 3).map(|q| q.cursor),
        Some(0)
    );
    // The topic has 4 queues: no state for a fifth.
    assert_eq!(sm.state().pop_queue(GROUP, TOPIC, 4), None);
}
