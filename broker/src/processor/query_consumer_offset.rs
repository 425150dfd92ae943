//! QUERY_CONSUMER_OFFSET: a group's committed offset on one queue, from applied state, on a
//! leader that has applied everything committed before its election (a committed offset never
//! appears to go back, also right after a restart of the whole group).
//! QUERY_NOT_FOUND when the group has none there yet: the consumer then starts where its
//! consume-from-where setting says.

use raftmq_protocol::header::offset::{
    QueryConsumerOffsetRequestHeader, QueryConsumerOffsetResponseHeader,
};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    ctx.require_current_leader()?;
    let header = QueryConsumerOffsetRequestHeader::from_ext_fields(&request.ext_fields)?;
    let queue_id = u32::try_from(header.queue_id).map_err(|_| {
        RequestError::InvalidParameter(format!("queue id {} is negative", header.queue_id))
    })?;
    let offset = ctx
        .state
        .consumer_offset(&header.consumer_group, &header.topic, queue_id);
    let offset = match (offset, header.set_zero_if_not_found) {
        (Some(offset), _) => offset,
        (None, Some(true)) => 0,
        (None, _) => {
            return Ok(request.new_response(
                response::QUERY_NOT_FOUND,
                Some(format!(
                    "no committed offset for group {} on {}:{}",
                    header.consumer_group, header.topic, queue_id
                )),
            ));
        }
    };
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.ext_fields = QueryConsumerOffsetResponseHeader {
        offset: offset as i64,
    }
    .to_ext_fields();
    Ok(answer)
}
