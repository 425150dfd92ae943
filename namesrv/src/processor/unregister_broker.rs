//! UNREGISTER_BROKER: a broker leaving on shutdown.

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::UnregisterBrokerRequestHeader;
use tracing::{info, instrument};

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: UnregisterBrokerRequestHeader = request.decode_header()?;
    if let Some(removed) = state
        .routes()
        .unregister(&header.broker_name, &header.broker_addr)
    {
        info!(broker_name = %header.broker_name, broker_addr = %header.broker_addr, "broker unregistered");
        state.metrics.removed(removed.reason, 1);
    }
    Ok(request.new_response(response::SUCCESS, None))
}
