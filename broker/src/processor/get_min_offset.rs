//! GET_MIN_OFFSET: the offset of a queue's first message still stored.

use raftmq_protocol::header::offset::{GetMinOffsetRequestHeader, OffsetResponseHeader};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use super::{checked_queue_id, existing_topic};
use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = GetMinOffsetRequestHeader::from_ext_fields(&request.ext_fields)?;
    let config = existing_topic(ctx, &header.topic)?;
    let queue_id = checked_queue_id(&header.topic, header.queue_id, config.queue_nums())?;
    let offset = ctx.state.queue(&header.topic, queue_id).min_offset;
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.ext_fields = OffsetResponseHeader {
        offset: offset as i64,
    }
    .to_ext_fields();
    Ok(answer)
}
