//! PULL_MESSAGE: read a queue from an offset, served from applied state on any member. With
//! the suspend flag the request is held (long polling) until messages arrive, its suspend time
//! runs out, or the connection or broker closes.
//!
//! Answers, as RocketMQ's broker gives them:
//! - SUCCESS with the messages and `nextBeginOffset`;
//! - PULL_NOT_FOUND when there is nothing new (after waiting, if suspended);
//! - PULL_RETRY_IMMEDIATELY when every message looked at was filtered out by tag (the next
//!   offset moves past them);
//! - PULL_OFFSET_MOVED when the offset is below the queue's first message, or (on the leader)
//!   past its end, with the offset to continue from.

use std::time::Duration;

use bytes::BytesMut;
use raftmq_protocol::header::pull::{
    PullMessageRequestHeader, PullMessageResponseHeader, pull_sys_flag,
};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};
use raftmq_remoting::server::ConnectionInfo;

use super::{checked_queue_id, existing_topic};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::filter::{FilterError, MessageFilter};
use crate::message_reader::QueueReadRequest;

/// RocketMQ's long-poll limit (brokerSuspendMaxTimeMillis 15 s).
pub const MAX_SUSPEND: Duration = Duration::from_secs(15);
/// Most messages one pull returns.
pub const MAX_PULL_MESSAGES: usize = 1024;
/// About the most bytes one pull returns (a single larger message is still returned whole).
pub const MAX_PULL_BYTES: usize = 8 << 20;

pub(super) async fn handle(
    ctx: &BrokerContext,
    connection: &ConnectionInfo,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = PullMessageRequestHeader::from_ext_fields(&request.ext_fields)?;
    let config = existing_topic(ctx, &header.topic)?;
    if !config.is_readable() {
        return Err(RequestError::NoPermission(format!(
            "topic {} is not readable",
            header.topic
        )));
    }
    let queue_id = checked_queue_id(&header.topic, header.queue_id, config.queue_nums())?;
    let offset = u64::try_from(header.queue_offset).map_err(|_| {
        RequestError::InvalidParameter(format!("queue offset {} is negative", header.queue_offset))
    })?;
    // The piggybacked commit offset is ignored on purpose: consumers also commit every 5 s with
    // UPDATE_CONSUMER_OFFSET, and proposing on every pull would flood the log.
    let filter = subscription_filter(ctx, &header)
        .map_err(|err| RequestError::SubscriptionParse(err.to_string()))?;
    let max_messages = usize::try_from(header.max_msg_nums)
        .unwrap_or(1)
        .clamp(1, MAX_PULL_MESSAGES);
    let max_bytes = header
        .max_msg_bytes
        .and_then(|bytes| usize::try_from(bytes).ok())
        .filter(|bytes| *bytes > 0)
        .map_or(MAX_PULL_BYTES, |bytes| bytes.min(MAX_PULL_BYTES));
    let suspend = header.sys_flag & pull_sys_flag::SUSPEND != 0;
    let suspend_for =
        Duration::from_millis(u64::try_from(header.suspend_timeout_millis).unwrap_or(0))
            .min(MAX_SUSPEND);
    let deadline = tokio::time::Instant::now() + if suspend { suspend_for } else { Duration::ZERO };

    let mut applied = ctx.state.subscribe_applied();
    loop {
        // Mark the current applied index seen before reading, so a change after the read wakes
        // the wait below.
        applied.borrow_and_update();
        let queue = ctx.state.queue(&header.topic, queue_id);
        if offset < queue.min_offset {
            ctx.metrics
                .offset_moved(&header.topic, &header.consumer_group);
            return Ok(answer(
                request,
                response::PULL_OFFSET_MOVED,
                queue.min_offset,
                queue,
                None,
            ));
        }
        if offset < queue.next_offset {
            let wanted = QueueReadRequest {
                topic: &header.topic,
                queue_id,
                offset,
                max_messages,
                max_bytes,
                filter: &filter,
            };
            let read = ctx.reader.read_queue(&ctx.state, &wanted).await?;
            if read.messages.is_empty() {
                return Ok(answer(
                    request,
                    response::PULL_RETRY_IMMEDIATELY,
                    read.next_offset,
                    queue,
                    None,
                ));
            }
            let total: usize = read.messages.iter().map(|m| m.len()).sum();
            ctx.metrics.messages_out(
                &header.topic,
                &header.consumer_group,
                read.messages.len() as u64,
                total as u64,
            );
            ctx.clients.pulled(
                &header.consumer_group,
                (&header.topic, queue_id),
                connection.id.0,
                read.next_offset,
                std::time::Instant::now(),
            );
            let mut body = BytesMut::with_capacity(total);
            for message in &read.messages {
                body.extend_from_slice(message);
            }
            return Ok(answer(
                request,
                response::SUCCESS,
                read.next_offset,
                queue,
                Some(body),
            ));
        }
        // Nothing at `offset` yet (or, on a lagging member, not yet applied): wait if allowed.
        let waited = tokio::select! {
            changed = applied.changed() => changed.is_ok(),
            _ = tokio::time::sleep_until(deadline) => false,
            _ = connection.closing() => false,
            _ = ctx.shutdown.cancelled() => false,
        };
        if !waited {
            ctx.metrics.pull_requests.inc();
            if offset > queue.next_offset && ctx.leadership.is_leader() {
                // Past the end on the leader: the consumer's offset is wrong; move it back.
                return Ok(answer(
                    request,
                    response::PULL_OFFSET_MOVED,
                    queue.next_offset,
                    queue,
                    None,
                ));
            }
            return Ok(answer(
                request,
                response::PULL_NOT_FOUND,
                offset,
                queue,
                None,
            ));
        }
    }
}

/// The filter (by tag, or SQL92): the expression sent with the pull, else the group's
/// registered subscription.
fn subscription_filter(
    ctx: &BrokerContext,
    header: &PullMessageRequestHeader,
) -> Result<MessageFilter, FilterError> {
    if header.sys_flag & pull_sys_flag::SUBSCRIPTION != 0
        && let Some(expression) = &header.subscription
    {
        return MessageFilter::parse(header.expression_type.as_deref(), expression);
    }
    match ctx
        .clients
        .subscription(&header.consumer_group, &header.topic)
    {
        Some(subscription) => MessageFilter::parse(
            Some(subscription.expression_type.as_str()).filter(|kind| !kind.is_empty()),
            &subscription.sub_string,
        ),
        None => Ok(MessageFilter::all()),
    }
}

fn answer(
    request: &RemotingCommand,
    code: i32,
    next_begin_offset: u64,
    queue: crate::state_machine::QueueState,
    body: Option<BytesMut>,
) -> RemotingCommand {
    let header = PullMessageResponseHeader {
        // Keep pulling from the leader slot, as RocketMQ consumers do from a master.
        suggest_which_broker_id: 0,
        next_begin_offset: next_begin_offset as i64,
        min_offset: queue.min_offset as i64,
        max_offset: queue.next_offset as i64,
        offset_delta: None,
        topic_sys_flag: None,
        group_sys_flag: None,
        forbidden_type: None,
    };
    let mut response = request.new_response(code, None);
    response.ext_fields = header.to_ext_fields();
    if let Some(body) = body {
        response.body = body.freeze();
    }
    response
}
