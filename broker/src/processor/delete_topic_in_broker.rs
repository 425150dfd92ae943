//! DELETE_TOPIC_IN_BROKER: delete a topic with its queue index and committed offsets, through
//! Raft. (Its messages stay in the log until retention exists.) The NameServers hear of it at
//! the next registration, which this request triggers at once.

use raftmq_protocol::header::topic::DeleteTopicRequestHeader;
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use crate::command::Command;
use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = DeleteTopicRequestHeader::from_ext_fields(&request.ext_fields)?;
    ctx.proposer
        .propose(Command::DeleteTopic {
            topic: header.topic,
        })
        .await?;
    ctx.register_now.notify_one();
    Ok(request.new_response(response::SUCCESS, None))
}
