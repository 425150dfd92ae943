//! BROKER_HEARTBEAT: a light liveness refresh between registrations.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::BrokerHeartbeatRequestHeader;
use tokio::time::Instant;
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: BrokerHeartbeatRequestHeader = request.decode_header()?;
    state
        .routes()
        .touch(&header.broker_name, &header.broker_addr, Instant::now());
    Ok(request.new_response(response::SUCCESS, None))
}
