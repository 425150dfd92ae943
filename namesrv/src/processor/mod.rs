//! Request processing: one file per request code, each holding its header parsing, handling
//! and response. This module only dispatches, and maps errors to response codes in one place
//! ([`error_response`]).

use std::sync::Arc;

use raftmq_protocol::code::{request, response};
use raftmq_protocol::{RemotingCommand, WireError};
use raftmq_remoting::{ConnectionInfo, RequestHandler};
use tracing::info;

use crate::kv_config::KvError;
use crate::route_table::RegisterError;
use crate::state::NameServerState;

mod broker_heartbeat;
mod delete_kv_config;
mod delete_topic_in_namesrv;
mod get_all_topic_list_from_nameserver;
mod get_broker_cluster_info;
mod get_broker_member_group;
mod get_kv_config;
mod get_kvlist_by_namespace;
mod get_routeinfo_by_topic;
mod get_topics_by_cluster;
mod put_kv_config;
mod query_data_version;
mod register_broker;
mod unregister_broker;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("bad request: {0}")]
    BadRequest(#[from] WireError),
    #[error("registration refused: {0}")]
    Register(#[from] RegisterError),
    #[error("KV config: {0}")]
    Kv(#[from] KvError),
    #[error("{0}")]
    Invalid(String),
}

/// The one mapping from errors to response codes: RocketMQ answers all of these SYSTEM_ERROR,
/// with the reason in the remark.
pub fn error_response(request: &RemotingCommand, error: &ProcessError) -> RemotingCommand {
    request.new_response(response::SYSTEM_ERROR, Some(error.to_string()))
}

type Outcome = Result<RemotingCommand, ProcessError>;

/// Routes a request to its processor.
pub fn dispatch(
    state: &NameServerState,
    connection: &ConnectionInfo,
    request: &RemotingCommand,
) -> RemotingCommand {
    let outcome: Outcome = match request.code {
        request::REGISTER_BROKER => register_broker::process(state, connection, request),
        request::UNREGISTER_BROKER => unregister_broker::process(state, request),
        request::GET_ROUTEINFO_BY_TOPIC => get_routeinfo_by_topic::process(state, request),
        request::GET_BROKER_CLUSTER_INFO => get_broker_cluster_info::process(state, request),
        request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
            get_all_topic_list_from_nameserver::process(state, request)
        }
        request::GET_TOPICS_BY_CLUSTER => get_topics_by_cluster::process(state, request),
        request::DELETE_TOPIC_IN_NAMESRV => delete_topic_in_namesrv::process(state, request),
        request::QUERY_DATA_VERSION => query_data_version::process(state, request),
        request::BROKER_HEARTBEAT => broker_heartbeat::process(state, request),
        request::GET_BROKER_MEMBER_GROUP => get_broker_member_group::process(state, request),
        request::PUT_KV_CONFIG => put_kv_config::process(state, request),
        request::GET_KV_CONFIG => get_kv_config::process(state, request),
        request::DELETE_KV_CONFIG => delete_kv_config::process(state, request),
        request::GET_KVLIST_BY_NAMESPACE => get_kvlist_by_namespace::process(state, request),
        code => Ok(request.new_response(
            response::REQUEST_CODE_NOT_SUPPORTED,
            Some(format!(
                "request code {code} is not supported by this NameServer"
            )),
        )),
    };
    outcome.unwrap_or_else(|error| error_response(request, &error))
}

/// The remoting handler of the NameServer.
#[derive(Debug)]
pub struct NamesrvHandler {
    state: Arc<NameServerState>,
}

impl NamesrvHandler {
    pub fn new(state: Arc<NameServerState>) -> Self {
        NamesrvHandler { state }
    }
}

impl RequestHandler for NamesrvHandler {
    async fn handle(
        &self,
        connection: ConnectionInfo,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let answer = dispatch(&self.state, &connection, &request);
        self.state.metrics.request(request.code, answer.code);
        Some(answer)
    }

    async fn connection_closed(&self, connection: ConnectionInfo) {
        let removed = self.state.routes().drop_connection(connection.id.0);
        for member in &removed {
            info!(
                broker_name = %member.broker_name,
                broker_addr = %member.broker_addr,
                connection = %connection.id,
                "broker dropped: its connection closed"
            );
        }
        if let Some(first) = removed.first() {
            self.state.metrics.removed(first.reason, removed.len());
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::net::SocketAddr;

    use raftmq_protocol::RemotingCommand;
    use raftmq_remoting::{ConnectionInfo, RequestHandler, Server, ServerConfig};
    use tokio::net::TcpListener;
    use tokio::sync::Mutex;

    /// Captures the `ConnectionInfo` a real server hands out, so processors can be called
    /// directly in tests.
    pub(crate) async fn connection_info() -> ConnectionInfo {
        struct Capture(Mutex<Option<ConnectionInfo>>);
        impl RequestHandler for Capture {
            async fn handle(
                &self,
                connection: ConnectionInfo,
                request: RemotingCommand,
            ) -> Option<RemotingCommand> {
                *self.0.lock().await = Some(connection);
                Some(request.new_response(0, None))
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let capture = std::sync::Arc::new(Capture(Mutex::new(None)));
        let server = Server::new(listener, capture.clone(), ServerConfig::default());
        let addr: SocketAddr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let client = raftmq_remoting::RpcClient::default();
        client
            .invoke(
                &addr.to_string(),
                RemotingCommand::new_request(1),
                std::time::Duration::from_secs(10),
            )
            .await
            .unwrap();
        client.shutdown().await;
        let _ = stop.send(());
        task.await.unwrap();
        capture.0.lock().await.clone().unwrap()
    }
}
