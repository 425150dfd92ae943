//! BATCH_ACK_MESSAGE: many POP acks in one request (RocketMQ's `BatchAckMessageRequestBody`):
//! per pop, the offsets acked as a bit set over a start offset, with the pop time they were
//! handed out at. All acks of one group go in one Raft entry (`crate::pop::ack_batch`).
//! Answers SUCCESS when every ack took effect (or its message was no longer in flight), else
//! the first failure's code.

use std::collections::BTreeMap;

use raftmq_protocol::body::{BatchAckMessageRequestBody, MAX_BATCH_ACK_OFFSETS};
use raftmq_protocol::{RemotingCommand, WireError, code::response};

use super::existing_topic;
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::pop::handle::ORDERLY_REVIVE_QID;
use crate::pop::{HandleError, ReceiptHandle, ack_batch};

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let body: BatchAckMessageRequestBody =
        serde_json::from_slice(&request.body).map_err(|source| WireError::Json {
            what: "BatchAckMessageRequestBody",
            source,
        })?;
    let mut by_group: BTreeMap<String, Vec<ReceiptHandle>> = BTreeMap::new();
    let mut count = 0usize;
    for batch in &body.acks {
        if batch.retry != "0" && !batch.retry.is_empty() {
            return Err(HandleError::Malformed(format!(
                "retry kind {:?}: this broker redelivers in place, never through a retry topic",
                batch.retry
            ))
            .into());
        }
        existing_topic(ctx, &batch.topic)?;
        let queue_id = u32::try_from(batch.queue_id).map_err(|_| {
            RequestError::InvalidParameter(format!("queue id {} is negative", batch.queue_id))
        })?;
        let invisible_ms = u64::try_from(batch.invisible_time).unwrap_or(0);
        for offset in batch.offsets()? {
            count += 1;
            if count > MAX_BATCH_ACK_OFFSETS {
                return Err(RequestError::InvalidParameter(format!(
                    "more than {MAX_BATCH_ACK_OFFSETS} acks in one request"
                )));
            }
            by_group
                .entry(batch.consumer_group.clone())
                .or_default()
                .push(ReceiptHandle {
                    broker_name: ctx.config.broker_name.clone(),
                    topic: batch.topic.clone(),
                    queue_id,
                    offset,
                    pop_ms: batch.pop_time,
                    invisible_ms,
                    attempt: 0,
                    orderly: batch.revive_queue_id == ORDERLY_REVIVE_QID,
                });
        }
    }
    let mut first_failure = None;
    for (group, handles) in by_group {
        for result in ack_batch(ctx, &group, &handles).await? {
            if let Err(err) = result {
                first_failure.get_or_insert(err);
            }
        }
    }
    match first_failure {
        Some(err) => Err(err),
        None => Ok(request.new_response(response::SUCCESS, None)),
    }
}
