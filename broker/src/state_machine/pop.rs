//! POP state in the state machine: per `(group, topic, queue)` a pop cursor (the next offset
//! never handed out) and the in-flight set (offsets handed out and neither acked nor
//! dead-lettered), each with its delivery attempt, pop time and invisible-until time.
//!
//! It is replicated state like consumer offsets (ARCHITECTURE.md decision 9), so invisibility,
//! acks and attempts survive a leader change: a new leader redelivers exactly what the old one
//! had not seen acked. Applying is deterministic: every time comes from the command.
//!
//! Memory is bounded: a queue holds at most [`MAX_IN_FLIGHT_PER_QUEUE`] deliveries (a pop
//! hands out no more until some are acked, expire into redelivery or are dead-lettered), and
//! the number of queues is bounded by the groups times the topics' queues.
//!
//! The group's committed consumer offset of a queue follows the lowest offset not yet acked
//! (never back), so a pull consumer, the admin tools and POP see the same progress.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::apply::Touched;
use super::state::{MemState, OffsetKey};
use crate::command::{AckOutcome, PopCommand, PopTarget, Popped, QueuePop};
use raftmq_protocol::names::DEFAULT_MAX_RECONSUME_TIMES;

/// The most deliveries in flight in one queue for one group (RocketMQ bounds its pop
/// checkpoints per queue similarly); a pop hands out nothing new from a full queue.
pub const MAX_IN_FLIGHT_PER_QUEUE: usize = 1024;

/// `(group, topic, queue id)`
pub type PopKey = (String, String, u32);

/// One queue's POP state for one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopQueue {
    /// The next offset never handed out.
    pub cursor: u64,
    /// Offsets handed out and not yet acked or dead-lettered.
    pub in_flight: BTreeMap<u64, InFlight>,
}

/// One delivery in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// How many times the message was handed out, 1 for the first.
    pub attempt: u32,
    /// When this delivery was handed out (or its invisibility last changed): with the offset it
    /// names the delivery, so a receipt handle of an earlier one is stale.
    pub pop_ms: i64,
    /// Invisible until then; after, the next pop hands it out again (or, past the group's
    /// attempts, the dead-letter task moves it to `%DLQ%<group>`).
    pub invisible_until_ms: i64,
}

impl PopQueue {
    /// The lowest offset not acked: where the group's committed offset may go.
    pub fn low_watermark(&self) -> u64 {
        self.in_flight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.cursor)
            .min(self.cursor)
    }
}

/// How many times a group's message is handed out before it is dead-lettered: the first
/// delivery and `retry_max_times` more (RocketMQ's `maxReconsumeTimes`, 16 by default).
pub fn max_deliveries(mem: &MemState, group: &str) -> u32 {
    let retries = mem
        .groups
        .get(group)
        .map_or(DEFAULT_MAX_RECONSUME_TIMES, |g| g.retry_max_times);
    retries.saturating_add(1)
}

/// Where a group's pop of a queue starts when it has no cursor yet: its committed offset if
/// it has one, else the queue's end (`init_from_end`) or its first message. Never below the
/// queue's first message (retention may have removed older ones).
pub fn effective_cursor(
    mem: &MemState,
    key: &PopKey,
    stored: Option<&PopQueue>,
    init_from_end: bool,
) -> u64 {
    let queue = mem
        .queues
        .get(&(key.1.clone(), key.2))
        .copied()
        .unwrap_or_default();
    let start = match stored {
        Some(pop) => pop.cursor,
        None => match mem.consumer_offsets.get(key) {
            Some(committed) => (*committed).min(queue.next_offset),
            None if init_from_end => queue.next_offset,
            None => queue.min_offset,
        },
    };
    start.max(queue.min_offset)
}

/// Applies a planned pop.
pub fn apply_pop(mem: &mut MemState, touched: &mut Touched, pop: &PopCommand) -> Vec<Popped> {
    let max = max_deliveries(mem, &pop.group);
    let invisible_until_ms = pop.now_ms.saturating_add(pop.invisible_ms as i64);
    let mut handed = Vec::new();
    for plan in &pop.queues {
        let key: PopKey = (pop.group.clone(), pop.topic.clone(), plan.queue_id);
        let queue_nums = mem.topics.get(&pop.topic).map_or(0, |t| t.queue_nums());
        if plan.queue_id >= queue_nums {
            continue;
        }
        // A queue nothing was ever sent to is empty (and gets its cursor pinned all the same).
        let queue_state = mem
            .queues
            .get(&(pop.topic.clone(), plan.queue_id))
            .copied()
            .unwrap_or_default();
        let cursor = effective_cursor(mem, &key, mem.pop.get(&key), pop.init_from_end);
        let mut queue = mem.pop.get(&key).cloned().unwrap_or_default();
        queue.cursor = cursor;
        let before = queue.clone();
        let busy_before = !queue.in_flight.is_empty();
        redeliver(
            &mut queue,
            plan,
            pop.now_ms,
            invisible_until_ms,
            max,
            &mut handed,
        );
        // An orderly queue hands out a new message only when nothing of it is in flight.
        let may_take_new = !(pop.fifo && busy_before);
        if may_take_new && plan.from_cursor == cursor {
            take_new(
                &mut queue,
                plan,
                queue_state.min_offset,
                queue_state.next_offset,
                if pop.fifo { 1 } else { usize::MAX },
                (pop.now_ms, invisible_until_ms),
                &mut handed,
            );
        }
        if queue != before || !mem.pop.contains_key(&key) {
            mem.pop.insert(key.clone(), queue);
            touched.pop_queues.insert(key.clone());
            follow_low_watermark(mem, touched, &key);
        }
    }
    handed
}

fn redeliver(
    queue: &mut PopQueue,
    plan: &QueuePop,
    now_ms: i64,
    invisible_until_ms: i64,
    max: u32,
    handed: &mut Vec<Popped>,
) {
    for (offset, pop_ms) in &plan.redeliver {
        let Some(entry) = queue.in_flight.get_mut(offset) else {
            continue;
        };
        let expired = entry.invisible_until_ms <= now_ms;
        if entry.pop_ms != *pop_ms || !expired || entry.attempt >= max {
            continue;
        }
        entry.attempt += 1;
        entry.pop_ms = now_ms;
        entry.invisible_until_ms = invisible_until_ms;
        handed.push(Popped {
            queue_id: plan.queue_id,
            offset: *offset,
            attempt: entry.attempt,
            invisible_until_ms,
        });
    }
}

fn take_new(
    queue: &mut PopQueue,
    plan: &QueuePop,
    min_offset: u64,
    next_offset: u64,
    most: usize,
    (now_ms, invisible_until_ms): (i64, i64),
    handed: &mut Vec<Popped>,
) {
    let to_cursor = plan.to_cursor.min(next_offset);
    if to_cursor <= queue.cursor {
        return;
    }
    let mut taken = 0usize;
    let mut new_cursor = to_cursor;
    for offset in &plan.offsets {
        let offset = *offset;
        if offset < queue.cursor || offset >= to_cursor || offset < min_offset {
            continue;
        }
        if taken >= most || queue.in_flight.len() >= MAX_IN_FLIGHT_PER_QUEUE {
            // Full: the cursor stops at the first message not handed out.
            new_cursor = offset;
            break;
        }
        queue.in_flight.insert(
            offset,
            InFlight {
                attempt: 1,
                pop_ms: now_ms,
                invisible_until_ms,
            },
        );
        taken += 1;
        handed.push(Popped {
            queue_id: plan.queue_id,
            offset,
            attempt: 1,
            invisible_until_ms,
        });
    }
    queue.cursor = new_cursor.max(queue.cursor);
}

/// Where one delivery stands: found in flight (and current), or why not.
fn lookup<'a>(
    mem: &'a MemState,
    group: &str,
    target: &PopTarget,
) -> Result<&'a InFlight, AckOutcome> {
    let key: PopKey = (group.to_string(), target.topic.clone(), target.queue_id);
    let Some(queue) = mem.pop.get(&key) else {
        return Err(AckOutcome::NeverPopped);
    };
    match queue.in_flight.get(&target.offset) {
        Some(entry) if entry.pop_ms == target.pop_ms => Ok(entry),
        Some(_) => Err(AckOutcome::Stale),
        None if target.offset < queue.cursor => Err(AckOutcome::NotInFlight),
        None => Err(AckOutcome::NeverPopped),
    }
}

/// Applies acks: each removes its delivery from the in-flight set if it is current.
pub fn apply_ack(
    mem: &mut MemState,
    touched: &mut Touched,
    group: &str,
    acks: &[PopTarget],
) -> Vec<AckOutcome> {
    acks.iter()
        .map(|target| {
            if let Err(outcome) = lookup(mem, group, target) {
                return outcome;
            }
            remove(mem, touched, group, target);
            AckOutcome::Done
        })
        .collect()
}

/// Applies a change of invisibility: the delivery gets pop time `now_ms` (a new handle) and is
/// invisible until `now_ms + invisible_ms`. Returns the outcome and the new invisible time.
pub fn apply_change_invisible(
    mem: &mut MemState,
    touched: &mut Touched,
    group: &str,
    target: &PopTarget,
    now_ms: i64,
    invisible_ms: u64,
) -> (AckOutcome, i64) {
    if let Err(outcome) = lookup(mem, group, target) {
        return (outcome, 0);
    }
    let key: PopKey = (group.to_string(), target.topic.clone(), target.queue_id);
    let until = now_ms.saturating_add(invisible_ms as i64);
    if let Some(entry) = mem
        .pop
        .get_mut(&key)
        .and_then(|queue| queue.in_flight.get_mut(&target.offset))
    {
        entry.pop_ms = now_ms;
        entry.invisible_until_ms = until;
        touched.pop_queues.insert(key);
    }
    (AckOutcome::Done, until)
}

/// Takes a delivery out of flight for the dead-letter queue, if it is current.
pub fn take(mem: &mut MemState, touched: &mut Touched, group: &str, target: &PopTarget) -> bool {
    if lookup(mem, group, target).is_err() {
        return false;
    }
    remove(mem, touched, group, target);
    true
}

fn remove(mem: &mut MemState, touched: &mut Touched, group: &str, target: &PopTarget) {
    let key: PopKey = (group.to_string(), target.topic.clone(), target.queue_id);
    if let Some(queue) = mem.pop.get_mut(&key) {
        queue.in_flight.remove(&target.offset);
        touched.pop_queues.insert(key.clone());
        follow_low_watermark(mem, touched, &key);
    }
}

/// Moves the group's committed offset of the queue up to the lowest offset not acked.
fn follow_low_watermark(mem: &mut MemState, touched: &mut Touched, key: &PopKey) {
    let Some(low) = mem.pop.get(key).map(PopQueue::low_watermark) else {
        return;
    };
    let offset_key: OffsetKey = key.clone();
    let current = mem.consumer_offsets.get(&offset_key).copied();
    if current.is_none_or(|current| low > current) {
        mem.consumer_offsets.insert(offset_key.clone(), low);
        touched.consumer_offsets.insert(offset_key);
    }
}

/// Retention: deliveries below each queue's first message are gone with it, and cursors move
/// up to it.
pub fn drop_below_queue_minimum(mem: &mut MemState, touched: &mut Touched) {
    let keys: Vec<PopKey> = mem.pop.keys().cloned().collect();
    for key in keys {
        let min_offset = mem
            .queues
            .get(&(key.1.clone(), key.2))
            .map_or(0, |queue| queue.min_offset);
        let Some(queue) = mem.pop.get_mut(&key) else {
            continue;
        };
        let dropped_any = queue
            .in_flight
            .first_key_value()
            .is_some_and(|(offset, _)| *offset < min_offset);
        if dropped_any || queue.cursor < min_offset {
            queue.in_flight = queue.in_flight.split_off(&min_offset);
            queue.cursor = queue.cursor.max(min_offset);
            touched.pop_queues.insert(key.clone());
            follow_low_watermark(mem, touched, &key);
        }
    }
}

/// Removes the POP state of a deleted topic or group.
pub fn forget(mem: &mut MemState, touched: &mut Touched, matches: impl Fn(&PopKey) -> bool) {
    let keys: Vec<PopKey> = mem.pop.keys().filter(|key| matches(key)).cloned().collect();
    for key in keys {
        mem.pop.remove(&key);
        touched.pop_queues.insert(key);
    }
}
