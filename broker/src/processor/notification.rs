//! NOTIFICATION: the POP long poll without popping: held until the group has a message to pop
//! from the topic (a new one, or one whose invisible time ended) or the poll time runs out;
//! answers SUCCESS with `hasMsg`.

use std::time::Duration;

use raftmq_protocol::header::pop::{NotificationRequestHeader, NotificationResponseHeader};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use super::existing_topic;
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::pop::wait_for_message;

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = NotificationRequestHeader::from_ext_fields(&request.ext_fields)?;
    let config = existing_topic(ctx, &header.topic)?;
    let queue_id = match header.queue_id {
        -1 => None,
        id => Some(
            u32::try_from(id)
                .ok()
                .filter(|id| *id < config.read_queue_nums)
                .ok_or_else(|| {
                    RequestError::InvalidParameter(format!(
                        "topic {} has no readable queue {id}",
                        header.topic
                    ))
                })?,
        ),
    };
    let wait = Duration::from_millis(u64::try_from(header.poll_time).unwrap_or(0));
    let has_msg = wait_for_message(
        ctx,
        &header.consumer_group,
        &header.topic,
        queue_id,
        header.order.unwrap_or(false),
        wait,
    )
    .await?;
    let mut response = request.new_response(response::SUCCESS, None);
    response.ext_fields = NotificationResponseHeader { has_msg }.to_ext_fields();
    Ok(response)
}
