//! SEARCH_OFFSET_BY_TIMESTAMP: the first offset of a queue stored at or after a time (ms).
//! Store times never go back within a queue, so this bisects the queue's index.

use raftmq_protocol::header::offset::{OffsetResponseHeader, SearchOffsetRequestHeader};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use super::{checked_queue_id, existing_topic};
use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = SearchOffsetRequestHeader::from_ext_fields(&request.ext_fields)?;
    let config = existing_topic(ctx, &header.topic)?;
    let queue_id = checked_queue_id(&header.topic, header.queue_id, config.queue_nums())?;
    let offset = ctx
        .state
        .offset_for_timestamp(&header.topic, queue_id, header.timestamp)?;
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.ext_fields = OffsetResponseHeader {
        offset: offset as i64,
    }
    .to_ext_fields();
    Ok(answer)
}
