//! A broker member with an in-memory queue store: enough of send, pull (with long polling),
//! offsets, heartbeats, the consumer list and topic admin to drive the client, plus knobs to
//! refuse, hold or swallow sends.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use raftmq_protocol::body::{ConsumerListBody, HeartbeatData};
use raftmq_protocol::code::{request, response};
use raftmq_protocol::header::pull::pull_sys_flag;
use raftmq_protocol::header::*;
use raftmq_protocol::message::{
    StoredMessage, decode_batch, encode_stored, offset_msg_id, properties,
};
use raftmq_protocol::{ExtHeader, RemotingCommand};
use raftmq_remoting::{ConnectionHandle, ConnectionInfo, RequestHandler, Server, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// What the broker does with the next send, before anything else.
#[derive(Clone, Debug)]
pub enum SendScript {
    /// Answer with this code and remark; store nothing.
    Refuse(i32, &'static str),
    /// Store the message, then never answer (the client times out: unknown outcome).
    Swallow,
}

pub type QueueKey = (String, i32);

pub struct BrokerState {
    store_host: Mutex<SocketAddr>,
    pub topics: Mutex<BTreeMap<String, u32>>,
    pub queues: Mutex<BTreeMap<QueueKey, Vec<StoredMessage>>>,
    /// (group, topic, queue id) -> committed offset.
    pub offsets: Mutex<BTreeMap<(String, String, i32), i64>>,
    /// Every UPDATE_CONSUMER_OFFSET taken, in order.
    pub commits: Mutex<Vec<(String, String, i32, i64)>>,
    consumers: Mutex<BTreeMap<String, BTreeMap<String, ConnectionHandle>>>,
    pub script: Mutex<VecDeque<SendScript>>,
    /// Answer every send with SERVICE_NOT_AVAILABLE (this member is a follower).
    pub follower: AtomicBool,
    /// Hold every send until released.
    pub hold_sends: AtomicBool,
    gate: Semaphore,
    pub sends_received: AtomicUsize,
    pub sends_waiting: AtomicUsize,
    pub pulls: AtomicUsize,
    pub heartbeats: AtomicUsize,
    pub dead_letters: Mutex<Vec<String>>,
    arrived: Notify,
    physical: AtomicI64,
}

impl BrokerState {
    fn new() -> Self {
        BrokerState {
            store_host: Mutex::new(SocketAddr::from(([127, 0, 0, 1], 0))),
            topics: Mutex::new(BTreeMap::new()),
            queues: Mutex::new(BTreeMap::new()),
            offsets: Mutex::new(BTreeMap::new()),
            commits: Mutex::new(Vec::new()),
            consumers: Mutex::new(BTreeMap::new()),
            script: Mutex::new(VecDeque::new()),
            follower: AtomicBool::new(false),
            hold_sends: AtomicBool::new(false),
            gate: Semaphore::new(0),
            sends_received: AtomicUsize::new(0),
            sends_waiting: AtomicUsize::new(0),
            pulls: AtomicUsize::new(0),
            heartbeats: AtomicUsize::new(0),
            dead_letters: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            physical: AtomicI64::new(0),
        }
    }

    /// Stores one message; returns its queue offset and offset message id.
    fn store(
        &self,
        topic: &str,
        queue_id: i32,
        flag: i32,
        body: Bytes,
        props: BTreeMap<String, String>,
        born: (i64, SocketAddr),
    ) -> (i64, String) {
        let store_host = *self.store_host.lock().unwrap();
        let physical = self.physical.fetch_add(1000, Ordering::SeqCst);
        let mut queues = self.queues.lock().unwrap();
        let queue = queues.entry((topic.to_owned(), queue_id)).or_default();
        let offset = queue.len() as i64;
        queue.push(StoredMessage {
            queue_id,
            flag,
            queue_offset: offset,
            physical_offset: physical,
            sys_flag: 0,
            born_timestamp: born.0,
            born_host: born.1,
            store_timestamp: raftmq_protocol::names::now_ms(),
            store_host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body,
            topic: topic.to_owned(),
            properties: props,
        });
        (offset, offset_msg_id(store_host, physical))
    }

    pub fn queue_len(&self, topic: &str, queue_id: i32) -> i64 {
        self.queues
            .lock()
            .unwrap()
            .get(&(topic.to_owned(), queue_id))
            .map_or(0, |queue| queue.len() as i64)
    }

    pub fn messages(&self, topic: &str, queue_id: i32) -> Vec<StoredMessage> {
        self.queues
            .lock()
            .unwrap()
            .get(&(topic.to_owned(), queue_id))
            .cloned()
            .unwrap_or_default()
    }

    pub fn stored_total(&self) -> usize {
        self.queues.lock().unwrap().values().map(Vec::len).sum()
    }

    pub fn committed(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.offsets
            .lock()
            .unwrap()
            .get(&(group.to_owned(), topic.to_owned(), queue_id))
            .copied()
    }

    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.consumers
            .lock()
            .unwrap()
            .get(group)
            .map(|members| members.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn create_topic(&self, topic: &str, queues: u32) {
        self.topics.lock().unwrap().insert(topic.to_owned(), queues);
    }

    /// Lets every held send through.
    pub fn release_sends(&self) {
        self.hold_sends.store(false, Ordering::SeqCst);
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    fn notify_group(&self, group: &str) {
        let handles: Vec<ConnectionHandle> = self
            .consumers
            .lock()
            .unwrap()
            .get(group)
            .map(|members| members.values().cloned().collect())
            .unwrap_or_default();
        let notify = RemotingCommand::new_request(request::NOTIFY_CONSUMER_IDS_CHANGED)
            .with_header(&NotifyConsumerIdsChangedRequestHeader {
                consumer_group: group.to_owned(),
            })
            .into_oneway();
        for handle in handles {
            let _ = handle.try_send(&notify);
        }
    }
}

struct Handler(Arc<BrokerState>);

fn error(request: &RemotingCommand, code: i32, remark: impl Into<String>) -> RemotingCommand {
    request.new_response(code, Some(remark.into()))
}

impl Handler {
    async fn send(
        &self,
        connection: &ConnectionInfo,
        request: &RemotingCommand,
    ) -> Option<RemotingCommand> {
        let state = &self.0;
        state.sends_received.fetch_add(1, Ordering::SeqCst);
        let header = match SendMessageRequestHeader::from_command(request) {
            Ok(header) => header,
            Err(e) => return Some(error(request, response::MESSAGE_ILLEGAL, e.to_string())),
        };
        if state.hold_sends.load(Ordering::SeqCst) {
            state.sends_waiting.fetch_add(1, Ordering::SeqCst);
            state.gate.acquire().await.ok()?.forget();
            state.sends_waiting.fetch_sub(1, Ordering::SeqCst);
        }
        let scripted = state.script.lock().unwrap().pop_front();
        let swallow = match scripted {
            Some(SendScript::Refuse(code, remark)) => return Some(error(request, code, remark)),
            Some(SendScript::Swallow) => true,
            None => false,
        };
        if state.follower.load(Ordering::SeqCst) {
            return Some(error(
                request,
                response::SERVICE_NOT_AVAILABLE,
                "not the leader of this broker group",
            ));
        }
        let queues = {
            let mut topics = state.topics.lock().unwrap();
            match topics.get(&header.topic) {
                Some(queues) => *queues,
                None if header.default_topic == "TBW102" => {
                    let queues =
                        u32::try_from(header.default_topic_queue_nums.clamp(1, 8)).unwrap();
                    topics.insert(header.topic.clone(), queues);
                    queues
                }
                None => {
                    return Some(error(request, response::TOPIC_NOT_EXIST, "no such topic"));
                }
            }
        };
        if header.queue_id < 0 || header.queue_id as u32 >= queues {
            return Some(error(request, response::SYSTEM_ERROR, "bad queue id"));
        }
        let born = (header.born_timestamp, connection.peer);
        let (queue_offset, msg_id) = if header.is_batch() {
            let elements = match decode_batch(&request.body) {
                Ok(elements) => elements,
                Err(e) => return Some(error(request, response::MESSAGE_ILLEGAL, e.to_string())),
            };
            let mut first = None;
            let mut ids = Vec::new();
            for element in elements {
                let (offset, id) = state.store(
                    &header.topic,
                    header.queue_id,
                    element.flag,
                    element.body,
                    element.properties,
                    born,
                );
                first.get_or_insert(offset);
                ids.push(id);
            }
            (first.unwrap_or(0), ids.join(","))
        } else {
            let props = properties::parse(header.properties.as_deref().unwrap_or_default());
            state.store(
                &header.topic,
                header.queue_id,
                header.flag,
                request.body.clone(),
                props,
                born,
            )
        };
        state.arrived.notify_waiters();
        if swallow {
            connection.closing().await;
            return None;
        }
        let mut answer = request.new_response(response::SUCCESS, None);
        answer.ext_fields = SendMessageResponseHeader {
            msg_id,
            queue_id: header.queue_id,
            queue_offset,
            transaction_id: None,
            batch_uniq_id: None,
        }
        .to_ext_fields();
        Some(answer)
    }

    async fn pull(
        &self,
        connection: &ConnectionInfo,
        request: &RemotingCommand,
    ) -> RemotingCommand {
        let state = &self.0;
        state.pulls.fetch_add(1, Ordering::SeqCst);
        let header = match PullMessageRequestHeader::from_ext_fields(&request.ext_fields) {
            Ok(header) => header,
            Err(e) => return error(request, response::INVALID_PARAMETER, e.to_string()),
        };
        if !state.topics.lock().unwrap().contains_key(&header.topic) {
            return error(request, response::TOPIC_NOT_EXIST, "no such topic");
        }
        let suspend = header.sys_flag & pull_sys_flag::SUSPEND != 0;
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(if suspend {
                header.suspend_timeout_millis.clamp(0, 15_000) as u64
            } else {
                0
            });
        loop {
            let arrived = state.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let messages = state.messages(&header.topic, header.queue_id);
            let len = messages.len() as i64;
            let answer = |code, next: i64, body: Option<Bytes>| {
                let mut answer = request.new_response(code, None);
                answer.ext_fields = PullMessageResponseHeader {
                    suggest_which_broker_id: 0,
                    next_begin_offset: next,
                    min_offset: 0,
                    max_offset: len,
                    offset_delta: None,
                    topic_sys_flag: None,
                    group_sys_flag: None,
                    forbidden_type: None,
                }
                .to_ext_fields();
                if let Some(body) = body {
                    answer.body = body;
                }
                answer
            };
            if header.queue_offset > len || header.queue_offset < 0 {
                return answer(response::PULL_OFFSET_MOVED, len, None);
            }
            if header.queue_offset < len {
                let start = header.queue_offset as usize;
                let end = (start + header.max_msg_nums.max(1) as usize).min(messages.len());
                let mut body = BytesMut::new();
                encode_stored(&messages[start..end], &mut body).unwrap();
                return answer(response::SUCCESS, end as i64, Some(body.freeze()));
            }
            let woken = tokio::select! {
                _ = &mut arrived => true,
                _ = tokio::time::sleep_until(deadline) => false,
                _ = connection.closing() => false,
            };
            if !woken {
                return answer(response::PULL_NOT_FOUND, header.queue_offset, None);
            }
        }
    }

    fn heartbeat(&self, connection: &ConnectionInfo, request: &RemotingCommand) -> RemotingCommand {
        let state = &self.0;
        state.heartbeats.fetch_add(1, Ordering::SeqCst);
        let data = match HeartbeatData::decode(&request.body) {
            Ok(data) => data,
            Err(e) => return error(request, response::SYSTEM_ERROR, e.to_string()),
        };
        for consumer in &data.consumer_data_set {
            let joined = state
                .consumers
                .lock()
                .unwrap()
                .entry(consumer.group_name.clone())
                .or_default()
                .insert(data.client_id.clone(), connection.handle())
                .is_none();
            if joined {
                state.notify_group(&consumer.group_name);
            }
        }
        request.new_response(response::SUCCESS, None)
    }
}

impl RequestHandler for Handler {
    async fn handle(
        &self,
        connection: ConnectionInfo,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let state = &self.0;
        Some(match request.code {
            request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE | request::SEND_MESSAGE => {
                return self.send(&connection, &request).await;
            }
            request::PULL_MESSAGE => self.pull(&connection, &request).await,
            request::QUERY_CONSUMER_OFFSET => {
                let header =
                    QueryConsumerOffsetRequestHeader::from_ext_fields(&request.ext_fields).unwrap();
                match state.committed(&header.consumer_group, &header.topic, header.queue_id) {
                    Some(offset) => {
                        let mut answer = request.new_response(response::SUCCESS, None);
                        answer.ext_fields =
                            QueryConsumerOffsetResponseHeader { offset }.to_ext_fields();
                        answer
                    }
                    None => error(&request, response::QUERY_NOT_FOUND, "no offset"),
                }
            }
            request::UPDATE_CONSUMER_OFFSET => {
                let header =
                    UpdateConsumerOffsetRequestHeader::from_ext_fields(&request.ext_fields)
                        .unwrap();
                state.offsets.lock().unwrap().insert(
                    (
                        header.consumer_group.clone(),
                        header.topic.clone(),
                        header.queue_id,
                    ),
                    header.commit_offset,
                );
                state.commits.lock().unwrap().push((
                    header.consumer_group,
                    header.topic,
                    header.queue_id,
                    header.commit_offset,
                ));
                request.new_response(response::SUCCESS, None)
            }
            request::GET_MAX_OFFSET | request::GET_MIN_OFFSET => {
                let topic = request.ext("topic").unwrap_or_default().to_owned();
                let queue_id: i32 = request.ext("queueId").unwrap_or("0").parse().unwrap();
                let offset = if request.code == request::GET_MAX_OFFSET {
                    state.queue_len(&topic, queue_id)
                } else {
                    0
                };
                let mut answer = request.new_response(response::SUCCESS, None);
                answer.ext_fields = OffsetResponseHeader { offset }.to_ext_fields();
                answer
            }
            request::SEARCH_OFFSET_BY_TIMESTAMP => {
                let header =
                    SearchOffsetRequestHeader::from_ext_fields(&request.ext_fields).unwrap();
                let messages = state.messages(&header.topic, header.queue_id);
                let offset = messages
                    .iter()
                    .find(|m| m.store_timestamp >= header.timestamp)
                    .map_or(messages.len() as i64, |m| m.queue_offset);
                let mut answer = request.new_response(response::SUCCESS, None);
                answer.ext_fields = OffsetResponseHeader { offset }.to_ext_fields();
                answer
            }
            request::HEART_BEAT => self.heartbeat(&connection, &request),
            request::UNREGISTER_CLIENT => {
                let header =
                    UnregisterClientRequestHeader::from_ext_fields(&request.ext_fields).unwrap();
                if let Some(group) = header.consumer_group {
                    let removed = state
                        .consumers
                        .lock()
                        .unwrap()
                        .get_mut(&group)
                        .and_then(|members| members.remove(&header.client_id))
                        .is_some();
                    if removed {
                        state.notify_group(&group);
                    }
                }
                request.new_response(response::SUCCESS, None)
            }
            request::GET_CONSUMER_LIST_BY_GROUP => {
                let group = request.ext("consumerGroup").unwrap_or_default().to_owned();
                let body = ConsumerListBody {
                    consumer_id_list: state.consumer_ids(&group),
                };
                request
                    .new_response(response::SUCCESS, None)
                    .with_body(body.encode().unwrap())
            }
            request::CONSUMER_SEND_MSG_BACK => {
                let header =
                    ConsumerSendMsgBackRequestHeader::from_ext_fields(&request.ext_fields).unwrap();
                state
                    .dead_letters
                    .lock()
                    .unwrap()
                    .push(header.origin_msg_id.unwrap_or_default());
                request.new_response(response::SUCCESS, None)
            }
            request::UPDATE_AND_CREATE_TOPIC => {
                let header =
                    CreateTopicRequestHeader::from_ext_fields(&request.ext_fields).unwrap();
                state.create_topic(&header.topic, header.write_queue_nums as u32);
                request.new_response(response::SUCCESS, None)
            }
            request::DELETE_TOPIC_IN_BROKER => {
                let topic = request.ext("topic").unwrap_or_default().to_owned();
                state.topics.lock().unwrap().remove(&topic);
                state.queues.lock().unwrap().retain(|(t, _), _| *t != topic);
                request.new_response(response::SUCCESS, None)
            }
            code => error(
                &request,
                response::REQUEST_CODE_NOT_SUPPORTED,
                format!("fake broker: {code} not supported"),
            ),
        })
    }

    async fn connection_closed(&self, connection: ConnectionInfo) {
        let state = &self.0;
        let mut changed = Vec::new();
        for (group, members) in state.consumers.lock().unwrap().iter_mut() {
            let before = members.len();
            members.retain(|_, handle| handle.id() != connection.id);
            if members.len() != before {
                changed.push(group.clone());
            }
        }
        for group in changed {
            state.notify_group(&group);
        }
    }
}

pub struct FakeBroker {
    pub addr: String,
    pub state: Arc<BrokerState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeBroker {
    /// A member; `_name` is the broker group it belongs to (for readers of the test).
    pub async fn start(_name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(BrokerState::new());
        let server = Server::new(
            listener,
            Arc::new(Handler(state.clone())),
            ServerConfig::default(),
        );
        let local = server.local_addr().unwrap();
        *state.store_host.lock().unwrap() = local;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        FakeBroker {
            addr: local.to_string(),
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        // Held sends would keep their connections open: let them go.
        self.state.release_sends();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}
