//! GET_ALL_TOPIC_LIST_FROM_NAMESERVER: every topic with a route.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let topics = state.routes().topics(None);
    Ok(request
        .new_response(response::SUCCESS, None)
        .with_body(topics.encode()?))
}
