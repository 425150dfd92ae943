//! UNLOCK_BATCH_MQ: an ordered consumer releases queues it no longer consumes.

use raftmq_protocol::body::LockBatchRequestBody;
use raftmq_protocol::{RemotingCommand, code::response};

use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let body = LockBatchRequestBody::decode(&request.body)?;
    ctx.queue_locks
        .unlock(&body.consumer_group, &body.client_id, &body.mq_set);
    Ok(request.new_response(response::SUCCESS, None))
}
