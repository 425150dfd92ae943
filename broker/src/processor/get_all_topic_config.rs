//! GET_ALL_TOPIC_CONFIG: every topic's configuration, as RocketMQ's admin tools read it.

use raftmq_protocol::names::AUTO_CREATE_TOPIC_KEY_TOPIC;
use raftmq_protocol::route::{DataVersion, TopicConfigSerializeWrapper};
use raftmq_protocol::{RemotingCommand, code::response};

use crate::context::BrokerContext;
use crate::error::RequestError;

pub(super) fn handle(
    ctx: &BrokerContext,
    request: &RemotingCommand,
) -> Result<RemotingCommand, RequestError> {
    let wrapper = topic_config_wrapper(ctx);
    let body = raftmq_protocol::route::encode_json("topic config table", &wrapper)?;
    let mut answer = request.new_response(response::SUCCESS, None);
    answer.body = body.into();
    Ok(answer)
}

/// Every topic (plus `TBW102` where topics are auto-created), in RocketMQ's wire shape. The data
/// version follows the applied log index, so it changes whenever topics may have.
pub(crate) fn topic_config_wrapper(ctx: &BrokerContext) -> TopicConfigSerializeWrapper {
    use raftmq_protocol::route::TopicConfig as WireTopic;
    let mut table = std::collections::BTreeMap::new();
    for topic in ctx.state.topics() {
        let mut wire = WireTopic::new(topic.name.clone(), topic.write_queue_nums);
        wire.read_queue_nums = topic.read_queue_nums;
        wire.write_queue_nums = topic.write_queue_nums;
        wire.perm = topic.perm;
        wire.topic_sys_flag = topic.topic_sys_flag;
        wire.order = topic.order;
        table.insert(topic.name, wire);
    }
    if ctx.config.auto_create_topic {
        let mut tbw = WireTopic::new(
            AUTO_CREATE_TOPIC_KEY_TOPIC,
            crate::topic::AUTO_CREATE_QUEUE_NUMS,
        );
        tbw.perm = crate::topic::PERM_READ | crate::topic::PERM_WRITE | crate::topic::PERM_INHERIT;
        table.insert(AUTO_CREATE_TOPIC_KEY_TOPIC.to_string(), tbw);
    }
    let applied = ctx.state.applied().map_or(0, |id| id.index) as i64;
    TopicConfigSerializeWrapper {
        topic_config_table: table,
        data_version: DataVersion {
            state_version: 0,
            timestamp: applied,
            counter: applied,
        },
    }
}
