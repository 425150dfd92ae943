//! GET_TOPICS_BY_CLUSTER: the topics of one cluster's groups.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::GetTopicsByClusterRequestHeader;
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: GetTopicsByClusterRequestHeader = request.decode_header()?;
    let topics = state.routes().topics(Some(&header.cluster));
    Ok(request
        .new_response(response::SUCCESS, None)
        .with_body(topics.encode()?))
}
