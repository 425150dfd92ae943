//! UPDATE_AND_CREATE_TOPIC: create a topic or change its queues and permissions, through Raft;
//! then register with the NameServers at once so the route appears without waiting 30 s.

use raftmq_protocol::header::topic::CreateTopicRequestHeader;
use raftmq_protocol::{ExtHeader, RemotingCommand, code::response};

use crate::command::Command;
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::topic::{TopicConfig, validate_topic_config};

pub(super) async fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let header = CreateTopicRequestHeader::from_ext_fields(&request.ext_fields)?;
    let count = |value: i32, what: &str| {
        u32::try_from(value)
            .map_err(|_| RequestError::InvalidParameter(format!("{what} {value} is negative")))
    };
    let config = TopicConfig {
        name: header.topic.clone(),
        read_queue_nums: count(header.read_queue_nums, "readQueueNums")?,
        write_queue_nums: count(header.write_queue_nums, "writeQueueNums")?,
        perm: count(header.perm, "perm")?,
        topic_sys_flag: count(header.topic_sys_flag.unwrap_or(0), "topicSysFlag")?,
        order: header.order,
    };
    validate_topic_config(&config)
        .map_err(|err| RequestError::InvalidParameter(err.to_string()))?;
    ctx.proposer.propose(Command::UpsertTopic(config)).await?;
    ctx.register_now.notify_one();
    Ok(request.new_response(response::SUCCESS, None))
}
