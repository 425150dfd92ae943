//! CHANGE_MESSAGE_INVISIBLETIME: a popped message stays invisible for the request's time from
//! now (more time to process it, or a nack with a backoff). The answer carries the new pop
//! time the consumer builds its next `extraInfo` from; the old one becomes stale.

use raftmq_protocol::header::pop::{
    ChangeInvisibleTimeRequestHeader, ChangeInvisibleTimeResponseHeader,
};
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use super::ack_message::receipt_handle;
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::pop::change_invisible;
use crate::pop::handle::ORDERLY_REVIVE_QID;

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = ChangeInvisibleTimeRequestHeader::from_ext_fields(&request.ext_fields)?;
    let invisible_ms = u64::try_from(header.invisible_time).map_err(|_| {
        RequestError::InvalidParameter(format!(
            "invisibleTime {} is negative",
            header.invisible_time
        ))
    })?;
    let handle = receipt_handle(
        ctx,
        &header.topic,
        header.queue_id,
        header.offset,
        &header.extra_info,
    )?;
    let changed = change_invisible(ctx, &header.consumer_group, &handle, invisible_ms).await?;
    let answer = ChangeInvisibleTimeResponseHeader {
        pop_time: changed.pop_ms,
        invisible_time: changed.invisible_ms as i64,
        revive_qid: if changed.orderly {
            ORDERLY_REVIVE_QID
        } else {
            0
        },
    };
    let mut response = request.new_response(response::SUCCESS, None);
    response.ext_fields = answer.to_ext_fields();
    Ok(response)
}
