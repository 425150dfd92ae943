//! GET_BROKER_CLUSTER_INFO: every group with its members, and the groups of each cluster.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let info = state.routes().cluster_info();
    Ok(request
        .new_response(response::SUCCESS, None)
        .with_body(info.encode()?))
}
