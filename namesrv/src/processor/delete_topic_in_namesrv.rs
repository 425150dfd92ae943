//! DELETE_TOPIC_IN_NAMESRV: forget a topic's route (after deleting it on the brokers; a broker
//! that still has it brings it back with its next registration).

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::DeleteTopicFromNamesrvRequestHeader;
use tracing::{info, instrument};

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: DeleteTopicFromNamesrvRequestHeader = request.decode_header()?;
    if state
        .routes()
        .delete_topic(&header.topic, header.cluster_name.as_deref())
    {
        info!(topic = %header.topic, cluster = ?header.cluster_name, "topic route deleted");
    }
    Ok(request.new_response(response::SUCCESS, None))
}
