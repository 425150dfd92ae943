//! LOCK_BATCH_MQ: an ordered consumer locks the queues it was allocated; the answer lists the
//! queues it now holds.

use std::time::Instant;

use raftmq_protocol::body::{LockBatchRequestBody, LockBatchResponseBody};
use raftmq_protocol::{RemotingCommand, code::response};

use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let body = LockBatchRequestBody::decode(&request.body)?;
    let held = ctx.queue_locks.lock(
        &body.consumer_group,
        &body.client_id,
        &body.mq_set,
        Instant::now(),
    );
    let answer_body = LockBatchResponseBody {
        lock_ok_mq_set: held,
    }
    .encode()?;
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.body = answer_body.into();
    Ok(answer)
}
