//! POP_MESSAGE: hand out messages of a topic's queue (or any queue) to a consumer group,
//! invisible to the group for the request's invisible time (`crate::pop`). With a poll time
//! the request is held until a message can be handed out or the time runs out.
//!
//! Answers, as RocketMQ's broker gives them: SUCCESS with the messages (stored layout) and the
//! offsets per queue the consumer builds each message's `extraInfo` from; PULL_NOT_FOUND when
//! there was nothing (RocketMQ clients read it as POLLING_NOT_FOUND).

use std::time::Duration;

use bytes::BytesMut;
use raftmq_protocol::header::pop::{PopMessageRequestHeader, PopMessageResponseHeader};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::filter::MessageFilter;
use crate::pop::handle::ORDERLY_REVIVE_QID;
use crate::pop::{PopRequest, PopResult, pop_or_wait};

/// RocketMQ's `ConsumeInitMode.MAX`: a group new to a queue starts at its end.
const INIT_MODE_MAX: i32 = 1;

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = PopMessageRequestHeader::from_ext_fields(&request.ext_fields)?;
    let queue_id = match header.queue_id {
        -1 => None,
        id => Some(u32::try_from(id).map_err(|_| {
            RequestError::InvalidParameter(format!("queue id {id} is not a queue"))
        })?),
    };
    let max_messages = usize::try_from(header.max_msg_nums)
        .ok()
        .filter(|max| *max > 0)
        .ok_or_else(|| {
            RequestError::InvalidParameter(format!(
                "maxMsgNums {} is not positive",
                header.max_msg_nums
            ))
        })?;
    let invisible_ms = u64::try_from(header.invisible_time).map_err(|_| {
        RequestError::InvalidParameter(format!(
            "invisibleTime {} is negative",
            header.invisible_time
        ))
    })?;
    let filter = MessageFilter::parse(
        header.exp_type.as_deref(),
        header.exp.as_deref().unwrap_or("*"),
    )
    .map_err(|err| RequestError::SubscriptionParse(err.to_string()))?;
    let fifo = header.order.unwrap_or(false);
    let pop_request = PopRequest {
        group: &header.consumer_group,
        topic: &header.topic,
        queue_id,
        max_messages,
        invisible_ms,
        filter: &filter,
        fifo,
        init_from_end: header.init_mode == INIT_MODE_MAX,
    };
    let wait = Duration::from_millis(u64::try_from(header.poll_time).unwrap_or(0));
    let result = pop_or_wait(ctx, &pop_request, wait).await?;
    Ok(answer(ctx, request, &header, fifo, result))
}

fn answer(
    ctx: &BrokerContext,
    request: &RemotingCommand,
    header: &PopMessageRequestHeader,
    fifo: bool,
    result: PopResult,
) -> RemotingCommand {
    let code = if result.messages.is_empty() {
        response::PULL_NOT_FOUND
    } else {
        response::SUCCESS
    };
    let mut body = BytesMut::new();
    let mut queues: Vec<QueueOffsets> = Vec::new();
    for popped in &result.messages {
        body.extend_from_slice(&popped.message);
        let before = popped.attempt.saturating_sub(1);
        match queues.iter_mut().find(|q| q.queue_id == popped.queue_id) {
            Some(queue) => {
                queue.offsets.push(popped.offset);
                queue.deliveries_before = queue.deliveries_before.max(before);
            }
            None => queues.push(QueueOffsets {
                queue_id: popped.queue_id,
                offsets: vec![popped.offset],
                deliveries_before: before,
            }),
        }
    }
    // Per queue, `;`-separated: `0 queueId startOffset`, `0 queueId o1,o2`, and for orderly
    // pops `0 queueId deliveries-before` (the "0" says: not a retry topic).
    let join = |part: fn(&QueueOffsets) -> String| {
        (!queues.is_empty()).then(|| queues.iter().map(part).collect::<Vec<_>>().join(";"))
    };
    let start_offset_info = join(|q| {
        let start = q.offsets.iter().min().copied().unwrap_or(0);
        format!("0 {} {start}", q.queue_id)
    });
    let msg_offset_info = join(|q| {
        let offsets: Vec<String> = q.offsets.iter().map(u64::to_string).collect();
        format!("0 {} {}", q.queue_id, offsets.join(","))
    });
    let order_count_info = join(|q| format!("0 {} {}", q.queue_id, q.deliveries_before));
    let response_header = PopMessageResponseHeader {
        pop_time: result.pop_ms,
        invisible_time: result.invisible_ms as i64,
        revive_qid: if fifo { ORDERLY_REVIVE_QID } else { 0 },
        rest_num: result.rest as i64,
        start_offset_info,
        msg_offset_info,
        order_count_info: order_count_info.filter(|_| fifo),
    };
    let total: usize = result.messages.iter().map(|m| m.message.len()).sum();
    if !result.messages.is_empty() {
        ctx.metrics.messages_out(
            &header.topic,
            &header.consumer_group,
            result.messages.len() as u64,
            total as u64,
        );
    }
    let mut response = request.new_response(code, None);
    response.ext_fields = response_header.to_ext_fields();
    response.body = body.freeze();
    response
}

/// The messages of one queue in a pop answer.
struct QueueOffsets {
    queue_id: u32,
    offsets: Vec<u64>,
    /// How often the queue's messages here were handed out before (orderly pops report it).
    deliveries_before: u32,
}
