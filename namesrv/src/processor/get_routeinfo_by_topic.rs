//! GET_ROUTEINFO_BY_TOPIC: which groups serve a topic and who is in them. TOPIC_NOT_EXIST
//! when none does (clients then fall back to the `TBW102` route, which brokers that
//! auto-create topics register like any topic).

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::response;
use raftmq_protocol::header::GetRouteInfoRequestHeader;
use tracing::instrument;

use super::Outcome;
use crate::kv_config::ORDER_TOPIC_CONFIG_NAMESPACE;
use crate::state::NameServerState;

#[instrument(skip_all)]
pub(super) fn process(state: &NameServerState, request: &RemotingCommand) -> Outcome {
    let header: GetRouteInfoRequestHeader = request.decode_header()?;
    let Some(mut route) = state.routes().topic_route(&header.topic) else {
        return Ok(request.new_response(
            response::TOPIC_NOT_EXIST,
            Some(format!(
                "No topic route info in name server for the topic: {}",
                header.topic
            )),
        ));
    };
    route.order_topic_conf = state
        .kv()
        .get(ORDER_TOPIC_CONFIG_NAMESPACE, &header.topic)
        .map(str::to_owned);
    Ok(request
        .new_response(response::SUCCESS, None)
        .with_body(route.encode()?))
}
