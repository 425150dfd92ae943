//! POP consumption, broker side: the one API the remoting processors (POP_MESSAGE,
//! ACK_MESSAGE, CHANGE_MESSAGE_INVISIBLETIME, NOTIFICATION) and the RocketMQ 5 gRPC service
//! (ReceiveMessage, AckMessage, ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue) use.
//!
//! # Using it (every call on the leader; a follower answers [`RequestError::NotLeader`])
//!
//! - [`pop`]: hand out up to `max_messages` messages of a topic (one queue or all) to a
//!   consumer group. Each [`PoppedMessage`] carries its stored bytes (offsets patched,
//!   `reconsumeTimes` = attempt - 1), its delivery `attempt` (1 first) and a
//!   [`ReceiptHandle`]; it is invisible to the group until `invisible_until_ms`.
//!   [`pop_or_wait`] is the same with a long poll: it waits up to `wait` for a message.
//! - [`ack`] / [`ack_batch`]: consumed, never handed out again. Acking a message that is no
//!   longer in flight (acked before, e.g. a retried ack) succeeds; a stale handle (the message
//!   was handed out again since) is [`HandleError::Stale`].
//! - [`change_invisible`]: stay invisible for `invisible_ms` from now; returns the new handle
//!   (the old one becomes stale). A nack with a backoff is this with the backoff as the time.
//! - [`forward_to_dlq`]: store the message in `%DLQ%<group>` now and take it out of flight.
//! - [`wait_for_message`]: the notification long poll: whether the group has something to pop.
//!
//! Errors are [`RequestError`]s (one mapping to response codes, `crate::error::error_code`);
//! handle problems are [`RequestError::ReceiptHandle`] with a [`HandleError`].
//!
//! # How it works, and why
//!
//! The state (per group and queue: a pop cursor, and the in-flight deliveries with attempt,
//! pop time and invisible-until) lives in the Raft state machine (`state_machine::pop`), so a
//! new leader knows what was handed out, acked and when it becomes visible again; handles name
//! only replicated state ([`handle`]). A pop is planned here, on the leader, and checked at
//! apply: the leader reads the messages (a tag or SQL filter needs their properties, which
//! apply cannot read) and proposes the offsets it matched and the cursor range it read; apply
//! takes them only if the cursor is still there, and takes an expired delivery again only if it
//! is still expired under the same pop time. So the decision is deterministic and two racing
//! pops never hand out one offset twice.
//!
//! Redelivery is in place (no retry topic): an unacked message is handed out again once its
//! invisible time ends; that invisible time is the backoff (RocketMQ's revive puts the retry
//! copy back at the same moment), and a consumer asks for a longer one with
//! [`change_invisible`]. A message handed out `retry_max_times + 1` times (the group's config,
//! 16 retries by default) and not acked is moved to `%DLQ%<group>` by [`dead_letter::run`] on
//! the leader, through a `Release` that consumes the delivery, so it happens once across
//! leader changes.
//!
//! Orderly (FIFO) pops hand out a queue's next message only when nothing of that queue is in
//! flight for the group: the previous one was acked or dead-lettered. The request says whether
//! it is orderly (RocketMQ's `order` header; the gRPC service from the group's settings):
//! the group config does not carry the flag yet (adding a field to it changes its stored
//! encoding).
//!
//! Memory: at most `state_machine::pop::MAX_IN_FLIGHT_PER_QUEUE` deliveries per group and
//! queue; a pop hands out at most [`MAX_POP_MESSAGES`].

pub mod dead_letter;
pub mod handle;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use raftmq_protocol::message::sys_flag;
use raftmq_protocol::names::now_ms;

use crate::command::{AckOutcome, Applied, Command, PopCommand, PopTarget, Popped, QueuePop};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::filter::MessageFilter;
use crate::message_reader::QueueReadRequest;
use crate::state_machine::pop::MAX_IN_FLIGHT_PER_QUEUE;
pub use handle::{HandleError, ReceiptHandle};

/// Most messages one pop hands out (RocketMQ caps `maxMsgNums` of a pop at 32).
pub const MAX_POP_MESSAGES: usize = 32;
/// About the most message bytes one pop hands out.
pub const MAX_POP_BYTES: usize = 8 << 20;
/// Shortest and longest invisible time (RocketMQ 5 allows up to 12 hours).
pub const MIN_INVISIBLE_MS: u64 = 1_000;
pub const MAX_INVISIBLE_MS: u64 = 12 * 3600 * 1000;
/// Longest long poll (RocketMQ's broker suspends at most 15 s... for pulls; pop clients ask for
/// up to 20 s in gRPC's long polling timeout, so allow that).
pub const MAX_POP_WAIT: Duration = Duration::from_secs(30);
/// POP long polls (and notifications) one member holds at once; a request past it is answered
/// [`RequestError::PollingFull`] at once (RocketMQ's POLLING_FULL, its `maxPopPollingSize`).
pub const MAX_POP_WAITERS: usize = 4096;
/// Bound on pop attempts within one long poll (each either hands something out, or waits).
const MAX_POP_ROUNDS: usize = 256;

/// What to pop.
#[derive(Debug, Clone)]
pub struct PopRequest<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    /// One queue, or `None` for every readable queue of the topic.
    pub queue_id: Option<u32>,
    /// Clamped to `1..=`[`MAX_POP_MESSAGES`].
    pub max_messages: usize,
    /// Clamped to [`MIN_INVISIBLE_MS`]`..=`[`MAX_INVISIBLE_MS`].
    pub invisible_ms: u64,
    pub filter: &'a MessageFilter,
    /// Orderly: a queue's next message only once the previous one is acked.
    pub fifo: bool,
    /// Where a queue the group never consumed starts: its end (else its first message).
    pub init_from_end: bool,
}

/// One message handed out.
#[derive(Debug, Clone)]
pub struct PoppedMessage {
    pub queue_id: u32,
    pub offset: u64,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub invisible_until_ms: i64,
    pub handle: ReceiptHandle,
    /// Stored layout, offsets and store time filled in, `reconsumeTimes` = attempt - 1.
    pub message: Bytes,
}

/// What a pop handed out.
#[derive(Debug, Clone, Default)]
pub struct PopResult {
    /// The pop time of every message handed out.
    pub pop_ms: i64,
    pub invisible_ms: u64,
    pub messages: Vec<PoppedMessage>,
    /// About how many messages of the popped queues were never handed out yet.
    pub rest: u64,
}

/// Pops once, without waiting.
pub async fn pop(ctx: &BrokerContext, request: &PopRequest<'_>) -> Result<PopResult, RequestError> {
    ctx.require_current_leader()?;
    let config = crate::processor::existing_topic(ctx, request.topic)?;
    if !config.is_readable() {
        return Err(RequestError::NoPermission(format!(
            "topic {} is not readable",
            request.topic
        )));
    }
    ensure_group(ctx, request.group).await?;
    let queue_ids: Vec<u32> = match request.queue_id {
        Some(queue_id) if queue_id < config.read_queue_nums => vec![queue_id],
        Some(queue_id) => {
            return Err(RequestError::InvalidParameter(format!(
                "topic {} has no readable queue {queue_id}",
                request.topic
            )));
        }
        None => {
            // Start at a different queue each time so that no queue starves.
            let count = config.read_queue_nums;
            let first = ctx.next_queue(count);
            (0..count).map(|i| (first + i) % count).collect()
        }
    };
    let max_messages = request.max_messages.clamp(1, MAX_POP_MESSAGES);
    let invisible_ms = request
        .invisible_ms
        .clamp(MIN_INVISIBLE_MS, MAX_INVISIBLE_MS);

    // One plan at a time on this member: plans read the cursor, and two plans from the same
    // cursor would have the second refused at apply.
    let planning = ctx.pop_planning.lock().await;
    let now = now_ms().max(ctx.state.read_last_store_timestamp_ms());
    let max_deliveries = ctx.state.pop_max_deliveries(request.group);
    let mut remaining = max_messages;
    let mut plans = Vec::new();
    for queue_id in queue_ids {
        if remaining == 0 {
            break;
        }
        let stored = ctx.state.pop_queue(request.group, request.topic, queue_id);
        let cursor = ctx.state.pop_cursor(
            request.group,
            request.topic,
            queue_id,
            request.init_from_end,
        );
        let mut plan = QueuePop {
            queue_id,
            redeliver: Vec::new(),
            from_cursor: cursor,
            to_cursor: cursor,
            offsets: Vec::new(),
        };
        let in_flight = stored.as_ref().map_or(0, |queue| queue.in_flight.len());
        if let Some(queue) = &stored {
            for (offset, entry) in &queue.in_flight {
                if remaining == 0 {
                    break;
                }
                if entry.invisible_until_ms <= now && entry.attempt < max_deliveries {
                    plan.redeliver.push((*offset, entry.pop_ms));
                    remaining -= 1;
                }
            }
        }
        let fifo_blocked = request.fifo && in_flight > 0;
        if !fifo_blocked && remaining > 0 && in_flight < MAX_IN_FLIGHT_PER_QUEUE {
            let want = if request.fifo { 1 } else { remaining };
            let want = want.min(MAX_IN_FLIGHT_PER_QUEUE - in_flight);
            let read = ctx
                .reader
                .read_queue(
                    &ctx.state,
                    &QueueReadRequest {
                        topic: request.topic,
                        queue_id,
                        offset: cursor,
                        max_messages: want,
                        max_bytes: MAX_POP_BYTES,
                        filter: request.filter,
                    },
                )
                .await?;
            plan.to_cursor = read.next_offset.max(cursor);
            for message in &read.messages {
                plan.offsets.push(queue_offset_of(message)?);
            }
            remaining = remaining.saturating_sub(plan.offsets.len());
        }
        // A queue the group never popped is planned even with nothing to hand out: apply
        // then pins where it starts (its end, with `init_from_end`), so later pops and the
        // notification long poll agree on it.
        if !plan.redeliver.is_empty() || plan.to_cursor > plan.from_cursor || stored.is_none() {
            plans.push(plan);
        }
    }
    let mut result = PopResult {
        pop_ms: now,
        invisible_ms,
        ..PopResult::default()
    };
    if plans.is_empty() {
        return Ok(result);
    }
    let command = Command::Pop(PopCommand {
        group: request.group.to_string(),
        topic: request.topic.to_string(),
        now_ms: now,
        invisible_ms,
        fifo: request.fifo,
        init_from_end: request.init_from_end,
        queues: plans,
    });
    let popped = match ctx.proposer.propose(command).await? {
        Applied::Popped(popped) => popped,
        Applied::Refused(refusal) => return Err(refusal.into()),
        other => {
            return Err(RequestError::Internal(format!(
                "a pop was answered with {other:?}"
            )));
        }
    };
    drop(planning);
    for handed in popped {
        let message = read_delivery(ctx, request.topic, &handed).await?;
        let Some(message) = message else {
            // Retention removed it between the pop and this read; it is gone for everyone.
            continue;
        };
        result.messages.push(PoppedMessage {
            queue_id: handed.queue_id,
            offset: handed.offset,
            attempt: handed.attempt,
            invisible_until_ms: handed.invisible_until_ms,
            handle: ReceiptHandle {
                broker_name: ctx.config.broker_name.clone(),
                topic: request.topic.to_string(),
                queue_id: handed.queue_id,
                offset: handed.offset,
                pop_ms: now,
                invisible_ms,
                attempt: handed.attempt,
                orderly: request.fifo,
            },
            message,
        });
    }
    result.rest = rest(ctx, request, &config);
    Ok(result)
}

/// Pops, and if nothing is handed out, waits up to `wait` (at most [`MAX_POP_WAIT`]) for a
/// message to pop: a new one, or one whose invisible time ends.
pub async fn pop_or_wait(
    ctx: &BrokerContext,
    request: &PopRequest<'_>,
    wait: Duration,
) -> Result<PopResult, RequestError> {
    let deadline = tokio::time::Instant::now() + wait.min(MAX_POP_WAIT);
    let mut result = first_pop(ctx, request, deadline).await?;
    if !result.messages.is_empty() || wait.is_zero() {
        return Ok(result);
    }
    let _waiting = ctx
        .pop_waiters
        .try_acquire()
        .map_err(|_| RequestError::PollingFull(MAX_POP_WAITERS))?;
    for _ in 0..MAX_POP_ROUNDS {
        if !result.messages.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !poppable_within(
            ctx,
            request.group,
            request.topic,
            request.queue_id,
            request.fifo,
            remaining,
        )
        .await?
        {
            break;
        }
        result = pop(ctx, request).await?;
    }
    Ok(result)
}

/// The first pop of a long poll. A leader elected a moment ago has not applied an entry of its
/// term yet (`LeaderCatchingUp`, SYSTEM_BUSY); within the poll's time the pop waits for that
/// (every [`CATCH_UP_RETRY`]) rather than answering busy: a consumer that long-polls right
/// after a failover gets its messages, not an error.
async fn first_pop(
    ctx: &BrokerContext,
    request: &PopRequest<'_>,
    deadline: tokio::time::Instant,
) -> Result<PopResult, RequestError> {
    loop {
        match pop(ctx, request).await {
            Err(RequestError::LeaderCatchingUp { .. })
                if tokio::time::Instant::now() + CATCH_UP_RETRY < deadline =>
            {
                tokio::time::sleep(CATCH_UP_RETRY).await;
            }
            other => return other,
        }
    }
}

/// How often a long poll looks again whether a new leader has caught up.
const CATCH_UP_RETRY: Duration = Duration::from_millis(20);

/// Waits up to `wait` until the group has something to pop from the topic (one queue, or any):
/// a message past its cursor, or a delivery whose invisible time ended. `Ok(false)` when the
/// time ran out (or the broker stops).
pub async fn wait_for_message(
    ctx: &BrokerContext,
    group: &str,
    topic: &str,
    queue_id: Option<u32>,
    fifo: bool,
    wait: Duration,
) -> Result<bool, RequestError> {
    let _waiting = match ctx.pop_waiters.try_acquire() {
        Ok(permit) => Some(permit),
        Err(_) if wait.is_zero() => None,
        Err(_) => return Err(RequestError::PollingFull(MAX_POP_WAITERS)),
    };
    poppable_within(ctx, group, topic, queue_id, fifo, wait).await
}

/// [`wait_for_message`] without taking a place among the waiters (a pop's long poll has one).
async fn poppable_within(
    ctx: &BrokerContext,
    group: &str,
    topic: &str,
    queue_id: Option<u32>,
    fifo: bool,
    wait: Duration,
) -> Result<bool, RequestError> {
    let config = crate::processor::existing_topic(ctx, topic)?;
    let deadline = tokio::time::Instant::now() + wait.min(MAX_POP_WAIT);
    let mut applied = ctx.state.subscribe_applied();
    let queue_ids: Vec<u32> = match queue_id {
        Some(id) => vec![id],
        None => (0..config.read_queue_nums).collect(),
    };
    loop {
        applied.borrow_and_update();
        let now = now_ms();
        let max_deliveries = ctx.state.pop_max_deliveries(group);
        let mut next_expiry: Option<i64> = None;
        for queue_id in &queue_ids {
            let stored = ctx.state.pop_queue(group, topic, *queue_id);
            let cursor = ctx.state.pop_cursor(group, topic, *queue_id, false);
            let in_flight = stored.as_ref().map_or(0, |queue| queue.in_flight.len());
            let next_offset = ctx.state.queue(topic, *queue_id).next_offset;
            if cursor < next_offset
                && !(fifo && in_flight > 0)
                && in_flight < MAX_IN_FLIGHT_PER_QUEUE
            {
                return Ok(true);
            }
            for entry in stored.iter().flat_map(|queue| queue.in_flight.values()) {
                if entry.attempt >= max_deliveries {
                    continue;
                }
                if entry.invisible_until_ms <= now {
                    return Ok(true);
                }
                next_expiry = Some(next_expiry.map_or(entry.invisible_until_ms, |t| {
                    t.min(entry.invisible_until_ms)
                }));
            }
        }
        let mut wake = deadline;
        if let Some(expiry) = next_expiry {
            let until = Duration::from_millis(u64::try_from(expiry - now).unwrap_or(0));
            wake = wake.min(tokio::time::Instant::now() + until);
        }
        let woke = tokio::select! {
            changed = applied.changed() => changed.is_ok(),
            _ = tokio::time::sleep_until(wake) => wake < deadline,
            _ = ctx.shutdown.cancelled() => false,
        };
        if !woke {
            return Ok(false);
        }
    }
}

/// Acks one delivery. A message no longer in flight (acked before) is a success.
pub async fn ack(
    ctx: &BrokerContext,
    group: &str,
    handle: &ReceiptHandle,
) -> Result<(), RequestError> {
    let outcomes = ack_batch(ctx, group, std::slice::from_ref(handle)).await?;
    outcomes
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(RequestError::Internal("an ack was not answered".into())))
}

/// Acks many deliveries in one Raft entry; one result per handle, in order.
pub async fn ack_batch(
    ctx: &BrokerContext,
    group: &str,
    handles: &[ReceiptHandle],
) -> Result<Vec<Result<(), RequestError>>, RequestError> {
    ctx.require_leader()?;
    let mut results: Vec<Option<Result<(), RequestError>>> = Vec::with_capacity(handles.len());
    let mut acks = Vec::new();
    for handle in handles {
        match handle.check_broker(&ctx.config.broker_name) {
            Ok(()) => {
                acks.push(target_of(handle));
                results.push(None);
            }
            Err(err) => results.push(Some(Err(err.into()))),
        }
    }
    if !acks.is_empty() {
        let command = Command::Ack {
            group: group.to_string(),
            acks,
        };
        let outcomes = match ctx.proposer.propose(command).await? {
            Applied::Acked(outcomes) => outcomes,
            other => {
                return Err(RequestError::Internal(format!(
                    "an ack was answered with {other:?}"
                )));
            }
        };
        let mut outcomes = outcomes.into_iter();
        for slot in results.iter_mut().filter(|slot| slot.is_none()) {
            let outcome = outcomes.next().unwrap_or(AckOutcome::NeverPopped);
            *slot = Some(match outcome {
                AckOutcome::Done | AckOutcome::NotInFlight => Ok(()),
                other => Err(handle_error(other).into()),
            });
        }
    }
    Ok(results
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| Err(RequestError::Internal("unanswered".into()))))
        .collect())
}

/// Keeps a delivery invisible for `invisible_ms` from now; returns its new handle.
pub async fn change_invisible(
    ctx: &BrokerContext,
    group: &str,
    handle: &ReceiptHandle,
    invisible_ms: u64,
) -> Result<ReceiptHandle, RequestError> {
    ctx.require_leader()?;
    handle.check_broker(&ctx.config.broker_name)?;
    let invisible_ms = invisible_ms.min(MAX_INVISIBLE_MS);
    let now = now_ms().max(handle.pop_ms);
    let command = Command::ChangeInvisible {
        group: group.to_string(),
        target: target_of(handle),
        now_ms: now,
        invisible_ms,
    };
    match ctx.proposer.propose(command).await? {
        Applied::Changed {
            outcome: AckOutcome::Done,
            ..
        } => Ok(ReceiptHandle {
            pop_ms: now,
            invisible_ms,
            ..handle.clone()
        }),
        Applied::Changed { outcome, .. } => Err(handle_error(outcome).into()),
        other => Err(RequestError::Internal(format!(
            "a change of invisibility was answered with {other:?}"
        ))),
    }
}

/// Stores the delivery's message in `%DLQ%<group>` and takes it out of flight.
pub async fn forward_to_dlq(
    ctx: &BrokerContext,
    group: &str,
    handle: &ReceiptHandle,
) -> Result<(), RequestError> {
    ctx.require_leader()?;
    handle.check_broker(&ctx.config.broker_name)?;
    let target = target_of(handle);
    let stored = ctx
        .state
        .pop_queue(group, &target.topic, target.queue_id)
        .and_then(|queue| queue.in_flight.get(&target.offset).copied());
    match stored {
        Some(entry) if entry.pop_ms == target.pop_ms => {}
        Some(_) => return Err(HandleError::Stale.into()),
        None => return Err(HandleError::NotInFlight.into()),
    }
    let attempt = stored.map_or(1, |entry| entry.attempt);
    let moved = dead_letter::dead_letter(ctx, &[(group.to_string(), target, attempt)]).await?;
    if moved == 1 {
        Ok(())
    } else {
        Err(HandleError::Stale.into())
    }
}

fn target_of(handle: &ReceiptHandle) -> PopTarget {
    PopTarget {
        topic: handle.topic.clone(),
        queue_id: handle.queue_id,
        offset: handle.offset,
        pop_ms: handle.pop_ms,
    }
}

fn handle_error(outcome: AckOutcome) -> HandleError {
    match outcome {
        AckOutcome::Stale => HandleError::Stale,
        AckOutcome::NotInFlight => HandleError::NotInFlight,
        AckOutcome::NeverPopped | AckOutcome::Done => HandleError::NeverPopped,
    }
}

/// Creates the subscription group on first use, as RocketMQ's broker does by default
/// (`autoCreateSubscriptionGroup`) and as a heartbeat here does.
async fn ensure_group(ctx: &BrokerContext, group: &str) -> Result<(), RequestError> {
    if group.is_empty() {
        return Err(RequestError::InvalidParameter(
            "consumer group is empty".into(),
        ));
    }
    crate::topic::validate_topic_name(group)
        .map_err(|err| RequestError::InvalidParameter(format!("consumer group: {err}")))?;
    if ctx.state.group(group).is_none() {
        ctx.proposer
            .propose(Command::UpsertGroup(crate::topic::GroupConfig::new(group)))
            .await?;
    }
    Ok(())
}

/// Messages never handed out yet, over the queues of the request.
fn rest(ctx: &BrokerContext, request: &PopRequest<'_>, config: &crate::topic::TopicConfig) -> u64 {
    let queue_ids: Vec<u32> = match request.queue_id {
        Some(id) => vec![id],
        None => (0..config.read_queue_nums).collect(),
    };
    queue_ids
        .into_iter()
        .map(|queue_id| {
            let cursor = ctx.state.pop_cursor(
                request.group,
                request.topic,
                queue_id,
                request.init_from_end,
            );
            ctx.state
                .queue(request.topic, queue_id)
                .next_offset
                .saturating_sub(cursor)
        })
        .sum()
}

/// The message of a delivery, with its attempt in `reconsumeTimes`; `None` if retention
/// removed it.
async fn read_delivery(
    ctx: &BrokerContext,
    topic: &str,
    handed: &Popped,
) -> Result<Option<Bytes>, RequestError> {
    let all = MessageFilter::all();
    let read = ctx
        .reader
        .read_queue(
            &ctx.state,
            &QueueReadRequest {
                topic,
                queue_id: handed.queue_id,
                offset: handed.offset,
                max_messages: 1,
                max_bytes: MAX_POP_BYTES,
                filter: &all,
            },
        )
        .await?;
    let Some(message) = read.messages.into_iter().next() else {
        return Ok(None);
    };
    if queue_offset_of(&message)? != handed.offset {
        return Ok(None);
    }
    Ok(Some(with_reconsume_times(
        &message,
        handed.attempt.saturating_sub(1),
    )?))
}

// Field positions in RocketMQ's stored-message layout (see `protocol::message`).
const QUEUE_OFFSET_AT: usize = 20;
const SYS_FLAG_AT: usize = 36;
const BORN_HOST_AT: usize = 48;

fn layout_error(what: &str) -> RequestError {
    RequestError::Internal(format!("stored message too short for its {what}"))
}

/// The queue offset a read filled into a stored message.
fn queue_offset_of(message: &[u8]) -> Result<u64, RequestError> {
    let bytes = message
        .get(QUEUE_OFFSET_AT..QUEUE_OFFSET_AT + 8)
        .ok_or_else(|| layout_error("queue offset"))?;
    let mut raw = [0u8; 8];
    raw.copy_from_slice(bytes);
    Ok(i64::from_be_bytes(raw) as u64)
}

/// A copy of a stored message with `reconsumeTimes` set (it follows the two hosts, whose sizes
/// the sys flag gives).
fn with_reconsume_times(message: &[u8], times: u32) -> Result<Bytes, RequestError> {
    let flag_bytes = message
        .get(SYS_FLAG_AT..SYS_FLAG_AT + 4)
        .ok_or_else(|| layout_error("sys flag"))?;
    let flags = i32::from_be_bytes([flag_bytes[0], flag_bytes[1], flag_bytes[2], flag_bytes[3]]);
    let host = |v6: bool| if v6 { 20 } else { 8 };
    let at = BORN_HOST_AT
        + host(flags & sys_flag::BORNHOST_V6 != 0)
        + 8
        + host(flags & sys_flag::STOREHOST_V6 != 0);
    if message.len() < at + 4 {
        return Err(layout_error("reconsume times"));
    }
    let mut copy = BytesMut::from(message);
    copy[at..at + 4].copy_from_slice(&(times as i32).to_be_bytes());
    Ok(copy.freeze())
}

#[cfg(test)]
mod tests;
