//! The offset RPCs: GetOffset (a group's committed offset on a queue), QueryOffset (a queue's
//! first, last or by-timestamp offset) and UpdateOffset (a commit, through Raft, forwarded to
//! the leader like every write).

use super::pb::{self, Code, QueryOffsetPolicy};
use super::status;
use crate::command::{Command, OffsetCommit, QueueOffset};
use crate::context::BrokerContext;
use crate::error::RequestError;

/// The topic and queue a request names; the queue must exist.
fn queue_of(
    ctx: &BrokerContext,
    queue: Option<&pb::MessageQueue>,
) -> Result<(String, u32), RequestError> {
    let queue =
        queue.ok_or_else(|| RequestError::InvalidParameter("the queue is missing".into()))?;
    let topic = queue.topic.as_ref().map_or("", |topic| topic.name.as_str());
    if topic.is_empty() {
        return Err(RequestError::InvalidParameter(
            "the topic is missing".into(),
        ));
    }
    let config = ctx
        .state
        .topic(topic)
        .ok_or_else(|| RequestError::TopicNotExist(topic.to_string()))?;
    let id = u32::try_from(queue.id)
        .ok()
        .filter(|id| *id < config.queue_nums())
        .ok_or_else(|| {
            RequestError::InvalidParameter(format!("topic {topic} has no queue {}", queue.id))
        })?;
    Ok((topic.to_string(), id))
}

fn group_of(group: Option<&pb::Resource>) -> Result<String, RequestError> {
    match group.map(|group| group.name.as_str()) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(RequestError::InvalidParameter(
            "the consumer group is missing".into(),
        )),
    }
}

pub fn get_offset(ctx: &BrokerContext, request: &pb::GetOffsetRequest) -> pb::GetOffsetResponse {
    let result = (|| {
        let group = group_of(request.group.as_ref())?;
        let (topic, queue_id) = queue_of(ctx, request.message_queue.as_ref())?;
        ctx.require_current_leader()?;
        Ok(ctx.state.consumer_offset(&group, &topic, queue_id))
    })();
    match result {
        Ok(Some(offset)) => pb::GetOffsetResponse {
            status: Some(status::ok()),
            offset: offset as i64,
        },
        Ok(None) => pb::GetOffsetResponse {
            status: Some(status::status(
                Code::OffsetNotFound,
                "the group committed no offset on this queue",
            )),
            offset: 0,
        },
        Err(err) => pb::GetOffsetResponse {
            status: Some(status::of_error(&err)),
            offset: 0,
        },
    }
}

pub fn query_offset(
    ctx: &BrokerContext,
    request: &pb::QueryOffsetRequest,
) -> pb::QueryOffsetResponse {
    let result = (|| {
        let (topic, queue_id) = queue_of(ctx, request.message_queue.as_ref())?;
        let queue = ctx.state.queue(&topic, queue_id);
        match QueryOffsetPolicy::try_from(request.query_offset_policy) {
            Ok(QueryOffsetPolicy::Beginning) => Ok(queue.min_offset),
            Ok(QueryOffsetPolicy::End) => Ok(queue.next_offset),
            Ok(QueryOffsetPolicy::Timestamp) => {
                let at = request.timestamp.as_ref().ok_or_else(|| {
                    RequestError::InvalidParameter("a TIMESTAMP query needs a timestamp".into())
                })?;
                let ms = at.seconds.saturating_mul(1000) + i64::from(at.nanos / 1_000_000);
                Ok(ctx.state.offset_for_timestamp(&topic, queue_id, ms)?)
            }
            Err(_) => Err(RequestError::InvalidParameter(format!(
                "query offset policy {} is unknown",
                request.query_offset_policy
            ))),
        }
    })();
    match result {
        Ok(offset) => pb::QueryOffsetResponse {
            status: Some(status::ok()),
            offset: offset as i64,
        },
        Err(err) => pb::QueryOffsetResponse {
            status: Some(status::of_error(&err)),
            offset: 0,
        },
    }
}

pub async fn update_offset(
    ctx: &BrokerContext,
    request: pb::UpdateOffsetRequest,
) -> pb::UpdateOffsetResponse {
    let result = async {
        let group = group_of(request.group.as_ref())?;
        let (topic, queue_id) = queue_of(ctx, request.message_queue.as_ref())?;
        let offset = u64::try_from(request.offset).map_err(|_| {
            RequestError::InvalidParameter(format!("offset {} is negative", request.offset))
        })?;
        ctx.require_leader()?;
        ctx.proposer
            .propose(Command::CommitOffsets(OffsetCommit {
                group,
                offsets: vec![QueueOffset {
                    topic,
                    queue_id,
                    offset,
                }],
                reset: false,
            }))
            .await?;
        Ok::<_, RequestError>(())
    }
    .await;
    pb::UpdateOffsetResponse {
        status: Some(match result {
            Ok(()) => status::ok(),
            Err(err) => status::of_error(&err),
        }),
    }
}
