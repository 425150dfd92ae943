//! VIEW_MESSAGE_BY_ID: the message at a physical offset (the second half of an offset message
//! id), with its offsets filled in.

use raftmq_protocol::header::client::ViewMessageRequestHeader;
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = ViewMessageRequestHeader::from_ext_fields(&request.ext_fields)?;
    let physical = u64::try_from(header.offset).map_err(|_| {
        RequestError::InvalidParameter(format!("offset {} is negative", header.offset))
    })?;
    let Some(found) = ctx.reader.read_physical(&ctx.state, physical).await? else {
        return Ok(request.new_response(
            response::SYSTEM_ERROR,
            Some(format!("can not find message by the offset {physical}")),
        ));
    };
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.body = found.bytes;
    Ok(answer)
}
