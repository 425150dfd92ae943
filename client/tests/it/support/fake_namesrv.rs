//! A NameServer that answers from a route table the test sets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::{request, response};
use raftmq_protocol::route::{BrokerData, ClusterInfo, QueueData, TopicRouteData, perm};
use raftmq_remoting::{ConnectionInfo, RequestHandler, Server, ServerConfig};
use tokio::net::TcpListener;

#[derive(Default)]
pub struct NamesrvState {
    pub routes: Mutex<BTreeMap<String, TopicRouteData>>,
    pub route_requests: AtomicUsize,
}

struct Handler(Arc<NamesrvState>);

impl RequestHandler for Handler {
    async fn handle(
        &self,
        _connection: ConnectionInfo,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let state = &self.0;
        Some(match request.code {
            request::GET_ROUTEINFO_BY_TOPIC => {
                state.route_requests.fetch_add(1, Ordering::SeqCst);
                let topic = request.ext("topic").unwrap_or_default().to_owned();
                match state.routes.lock().unwrap().get(&topic) {
                    Some(route) => request
                        .new_response(response::SUCCESS, None)
                        .with_body(route.encode().unwrap()),
                    None => request.new_response(
                        response::TOPIC_NOT_EXIST,
                        Some(format!("no topic route info for {topic}")),
                    ),
                }
            }
            request::GET_BROKER_CLUSTER_INFO => {
                let mut info = ClusterInfo::default();
                for route in state.routes.lock().unwrap().values() {
                    for broker in &route.broker_datas {
                        info.broker_addr_table
                            .insert(broker.broker_name.clone(), broker.clone());
                        info.cluster_addr_table
                            .entry(broker.cluster.clone())
                            .or_insert_with(BTreeSet::new)
                            .insert(broker.broker_name.clone());
                    }
                }
                request
                    .new_response(response::SUCCESS, None)
                    .with_body(info.encode().unwrap())
            }
            request::DELETE_TOPIC_IN_NAMESRV => {
                let topic = request.ext("topic").unwrap_or_default().to_owned();
                state.routes.lock().unwrap().remove(&topic);
                request.new_response(response::SUCCESS, None)
            }
            code => request.new_response(
                response::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!("fake NameServer: {code} not supported")),
            ),
        })
    }
}

pub struct FakeNamesrv {
    pub addr: String,
    pub state: Arc<NamesrvState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeNamesrv {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(NamesrvState::default());
        let server = Server::new(
            listener,
            Arc::new(Handler(state.clone())),
            ServerConfig::default(),
        );
        let addr = server.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        FakeNamesrv {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn set_route(&self, topic: &str, route: TopicRouteData) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(topic.to_owned(), route);
    }

    pub fn route_requests(&self) -> usize {
        self.state.route_requests.load(Ordering::SeqCst)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// A broker group for a route: its name and members by brokerId (0 = the leader).
pub struct Group<'a> {
    pub name: &'a str,
    pub members: Vec<(u64, &'a str)>,
    pub queues: u32,
}

/// A route over `groups`, each with `queues` read and write queues.
pub fn route(groups: &[Group<'_>]) -> TopicRouteData {
    TopicRouteData {
        order_topic_conf: None,
        queue_datas: groups
            .iter()
            .map(|group| QueueData {
                broker_name: group.name.to_owned(),
                read_queue_nums: group.queues,
                write_queue_nums: group.queues,
                perm: perm::READ_WRITE,
                topic_sys_flag: 0,
            })
            .collect(),
        broker_datas: groups
            .iter()
            .map(|group| BrokerData {
                cluster: "DefaultCluster".into(),
                broker_name: group.name.to_owned(),
                broker_addrs: group
                    .members
                    .iter()
                    .map(|(id, addr)| (*id, (*addr).to_owned()))
                    .collect(),
                zone_name: None,
                enable_acting_master: false,
            })
            .collect(),
        filter_server_table: BTreeMap::new(),
    }
}
