//! UPDATE_CONSUMER_OFFSET: commit a group's offset on one queue, through Raft so it survives a
//! leader change. A consumer's commit never moves an offset backwards (the state machine keeps
//! the higher one); `mq offset reset` uses a reset command instead.

use raftmq_protocol::header::offset::UpdateConsumerOffsetRequestHeader;
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use crate::command::{Command, OffsetCommit, QueueOffset};
use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = UpdateConsumerOffsetRequestHeader::from_ext_fields(&request.ext_fields)?;
    let queue_id = u32::try_from(header.queue_id).map_err(|_| {
        RequestError::InvalidParameter(format!("queue id {} is negative", header.queue_id))
    })?;
    let offset = u64::try_from(header.commit_offset).map_err(|_| {
        RequestError::InvalidParameter(format!("offset {} is negative", header.commit_offset))
    })?;
    if ctx
        .state
        .consumer_offset(&header.consumer_group, &header.topic, queue_id)
        == Some(offset)
    {
        // Already committed: nothing to replicate.
        return Ok(request.new_response(response::SUCCESS, None));
    }
    let command = Command::CommitOffsets(OffsetCommit {
        group: header.consumer_group,
        offsets: vec![QueueOffset {
            topic: header.topic,
            queue_id,
            offset,
        }],
        reset: false,
    });
    ctx.proposer.propose(command).await?;
    Ok(request.new_response(response::SUCCESS, None))
}
