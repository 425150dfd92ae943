//! GET_BROKER_MEMBER_GROUP: the members of one group by brokerId (admin tools).

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::GetBrokerMemberGroupRequestHeader;
use raftmq_protocol::route::{BrokerMemberGroup, GetBrokerMemberGroupResponseBody};
use tracing::instrument;

use super::Outcome;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: GetBrokerMemberGroupRequestHeader = request.decode_header()?;
    let group = state
        .routes()
        .member_group(&header.broker_name)
        .filter(|group| group.cluster == header.cluster_name);
    let body = GetBrokerMemberGroupResponseBody {
        broker_member_group: Some(BrokerMemberGroup {
            cluster: header.cluster_name,
            broker_name: header.broker_name,
            broker_addrs: group.map(|group| group.broker_addrs).unwrap_or_default(),
        }),
    };
    Ok(request
        .new_response(response::SUCCESS, None)
        .with_body(body.encode()?))
}
