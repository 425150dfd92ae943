//! GET_CONSUMER_LIST_BY_GROUP: the client ids of a group's live consumers on this member,
//! sorted, which every consumer uses to pick its share of the queues.

use raftmq_protocol::body::ConsumerListBody;
use raftmq_protocol::header::client::GetConsumerListByGroupRequestHeader;
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = GetConsumerListByGroupRequestHeader::from_ext_fields(&request.ext_fields)?;
    let consumer_id_list = ctx.clients.consumer_ids(&header.consumer_group);
    if consumer_id_list.is_empty() {
        return Ok(request.new_response(
            response::SYSTEM_ERROR,
            Some(format!("no consumer for group {}", header.consumer_group)),
        ));
    }
    let body = ConsumerListBody { consumer_id_list }.encode()?;
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.body = body.into();
    Ok(answer)
}
