//! GET_EARLIEST_MSG_STORETIME: the store time of a queue's first stored message.

use raftmq_protocol::header::offset::{
    GetEarliestMsgStoretimeRequestHeader, GetEarliestMsgStoretimeResponseHeader,
};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use super::{checked_queue_id, existing_topic};
use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = GetEarliestMsgStoretimeRequestHeader::from_ext_fields(&request.ext_fields)?;
    let config = existing_topic(ctx, &header.topic)?;
    let queue_id = checked_queue_id(&header.topic, header.queue_id, config.queue_nums())?;
    let queue = ctx.state.queue(&header.topic, queue_id);
    let timestamp = ctx
        .state
        .store_timestamp(&header.topic, queue_id, queue.min_offset)?
        .ok_or_else(|| {
            RequestError::NotFound(format!("queue {}:{} is empty", header.topic, queue_id))
        })?;
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.ext_fields = GetEarliestMsgStoretimeResponseHeader { timestamp }.to_ext_fields();
    Ok(answer)
}
