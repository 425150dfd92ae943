//! ACK_MESSAGE: a popped message was consumed; it is never handed out again. The `extraInfo`
//! is the message's receipt handle (`crate::pop::handle`); it must name this broker and the
//! queue and offset of the header. An ack of a message already acked answers SUCCESS (a retried
//! ack); a stale handle (the message was handed out again since) answers NO_MESSAGE.

use raftmq_protocol::header::pop::AckMessageRequestHeader;
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use super::existing_topic;
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::pop::{ReceiptHandle, ack};

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = AckMessageRequestHeader::from_ext_fields(&request.ext_fields)?;
    let handle = receipt_handle(
        ctx,
        &header.topic,
        header.queue_id,
        header.offset,
        &header.extra_info,
    )?;
    ack(ctx, &header.consumer_group, &handle).await?;
    Ok(request.new_response(response::SUCCESS, None))
}

/// The handle a remoting ack or change of invisibility names, checked against its header.
pub(super) fn receipt_handle(
    ctx: &BrokerContext,
    topic: &str,
    queue_id: i32,
    offset: i64,
    extra_info: &str,
) -> Result<ReceiptHandle, RequestError> {
    existing_topic(ctx, topic)?;
    let queue_id = u32::try_from(queue_id)
        .map_err(|_| RequestError::InvalidParameter(format!("queue id {queue_id} is negative")))?;
    let offset = u64::try_from(offset)
        .map_err(|_| RequestError::InvalidParameter(format!("offset {offset} is negative")))?;
    let handle = ReceiptHandle::parse_extra_info(extra_info, topic, queue_id, offset)?;
    handle.check_broker(&ctx.config.broker_name)?;
    Ok(handle)
}
