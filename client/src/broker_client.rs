//! [`BrokerClient`]: one typed call per broker request, to an address the caller chooses. The
//! producer, the consumer and [`crate::admin::Admin`] are built on it; tools (the `mq` CLI,
//! jepsen-lite's final drain against one member) use it directly.

use std::time::Duration;

use bytes::Bytes;
use raftmq_protocol::body::{ConsumerListBody, HeartbeatData, KvTable};
use raftmq_protocol::code::{request, response};
use raftmq_protocol::header::pop::{
    AckMessageRequestHeader, ChangeInvisibleTimeRequestHeader, ChangeInvisibleTimeResponseHeader,
    PopMessageRequestHeader, PopMessageResponseHeader,
};
use raftmq_protocol::header::pull::pull_sys_flag;
use raftmq_protocol::header::{
    ConsumerSendMsgBackRequestHeader, CreateTopicRequestHeader, DeleteTopicRequestHeader,
    GetConsumerListByGroupRequestHeader, GetMaxOffsetRequestHeader, GetMinOffsetRequestHeader,
    OffsetResponseHeader, PullMessageRequestHeader, PullMessageResponseHeader,
    QueryConsumerOffsetRequestHeader, QueryConsumerOffsetResponseHeader, SearchOffsetRequestHeader,
    SendMessageRequestHeader, SendMessageRequestHeaderV2, SendMessageResponseHeader,
    UnregisterClientRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use raftmq_protocol::message::decode_stored;
use raftmq_protocol::route::{TopicConfig, perm};
use raftmq_protocol::{ExtHeader, RemotingCommand};

use crate::error::{ClientError, check_response, refusal};
use crate::message::{MessageQueue, ReceivedMessage};
use raftmq_remoting::RpcClient;

/// Deadline of requests that do not wait on purpose (offsets, heartbeats, admin).
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a broker may hold a pull waiting for messages (RocketMQ's 15 s).
pub const LONG_POLL_SUSPEND: Duration = Duration::from_secs(15);

/// Extra time a long-polling pull's deadline allows beyond the suspend time.
pub const LONG_POLL_MARGIN: Duration = Duration::from_secs(5);

/// Most messages one pull asks for (RocketMQ's pullBatchSize default).
pub const DEFAULT_PULL_BATCH: i32 = 32;

/// The most messages a pull may ask for (the broker's own cap).
pub const MAX_PULL_BATCH: i32 = 1024;

/// How a send was stored. RaftMQ answers `Ok` only; the others are RocketMQ brokers' "stored,
/// but not yet flushed or replicated as configured".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    Ok,
    FlushDiskTimeout,
    FlushSlaveTimeout,
    SlaveNotAvailable,
}

impl SendStatus {
    fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            response::SUCCESS => SendStatus::Ok,
            response::FLUSH_DISK_TIMEOUT => SendStatus::FlushDiskTimeout,
            response::FLUSH_SLAVE_TIMEOUT => SendStatus::FlushSlaveTimeout,
            response::SLAVE_NOT_AVAILABLE => SendStatus::SlaveNotAvailable,
            _ => return None,
        })
    }
}

/// A broker's answer to a successful send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReply {
    pub status: SendStatus,
    /// The offset message id (store host and physical offset); for a batch, RocketMQ brokers
    /// put the ids comma-separated.
    pub offset_msg_id: String,
    pub queue_id: i32,
    /// The queue offset of the (first) message.
    pub queue_offset: i64,
}

/// What a pull asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    pub group: String,
    pub queue: MessageQueue,
    pub offset: i64,
    pub max_messages: i32,
    /// The filter expression sent with the pull: tags (`*`, `a || b`), or with
    /// `sql92` an SQL92 expression on message properties.
    pub subscription: String,
    /// `subscription` is an SQL92 expression (RocketMQ's `expressionType=SQL92`).
    pub sql92: bool,
    /// `Some(t)`: the broker may hold the pull up to `t` waiting for messages.
    pub suspend: Option<Duration>,
}

impl PullRequest {
    /// A pull of up to `max_messages` from `offset`, all tags, no long polling.
    pub fn new(group: &str, queue: MessageQueue, offset: i64, max_messages: i32) -> Self {
        PullRequest {
            group: group.to_owned(),
            queue,
            offset,
            max_messages,
            subscription: "*".to_owned(),
            sql92: false,
            suspend: None,
        }
    }
}

/// How a pull went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullStatus {
    /// Messages came (possibly none left after client-side filtering).
    Found,
    /// Nothing new at the offset (after the long poll, if any).
    NoNewMessages,
    /// Everything looked at was filtered out; pull again from `next_begin_offset` at once.
    RetryImmediately,
    /// The offset is outside the queue; continue from `next_begin_offset`.
    OffsetMoved,
}

/// The answer to a pull.
#[derive(Clone, Debug)]
pub struct PullResult {
    pub status: PullStatus,
    pub next_begin_offset: i64,
    pub min_offset: i64,
    pub max_offset: i64,
    /// The member the broker suggests pulling from next (0 = the leader slot).
    pub suggest_which_broker_id: i64,
    pub messages: Vec<ReceivedMessage>,
}

/// What to pop (POP_MESSAGE): up to `max_messages` of a queue (`queue.queue_id` -1: any queue
/// of the topic), invisible to the group for `invisible`.
#[derive(Clone, Debug)]
pub struct PopRequest {
    pub group: String,
    pub queue: MessageQueue,
    pub max_messages: i32,
    pub invisible: Duration,
    /// Long poll: wait up to this long for a message.
    pub poll: Option<Duration>,
    /// A tag expression (`*`, `a || b`).
    pub expression: String,
    /// Orderly: a queue's next message only after the previous one is acked.
    pub orderly: bool,
}

/// A popped message and its receipt handle (`extraInfo`, what an ack names it by).
#[derive(Clone, Debug)]
pub struct PoppedMessage {
    pub message: ReceivedMessage,
    pub extra_info: String,
}

/// The answer to a pop: empty when nothing was there (after the long poll, if any).
#[derive(Clone, Debug, Default)]
pub struct PopResult {
    pub pop_time_ms: i64,
    pub invisible_time_ms: i64,
    /// Messages of the popped queues never handed out yet.
    pub rest: i64,
    pub messages: Vec<PoppedMessage>,
}

/// Typed requests to brokers, by address. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BrokerClient {
    rpc: RpcClient,
    timeout: Duration,
}

impl BrokerClient {
    pub fn new(rpc: RpcClient) -> Self {
        BrokerClient {
            rpc,
            timeout: DEFAULT_RPC_TIMEOUT,
        }
    }

    /// The deadline of every request but sends (their own) and long polls.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn call(
        &self,
        addr: &str,
        command: RemotingCommand,
        timeout: Duration,
        accepted: &[i32],
    ) -> Result<RemotingCommand, ClientError> {
        let code = command.code;
        let answer = self.rpc.invoke(addr, command, timeout).await?;
        check_response(addr, code, answer, accepted)
    }

    /// GET_BROKER_RUNTIME_INFO: RocketMQ's key/value table of a broker's runtime figures, to
    /// which a RaftMQ member adds its Raft view and addresses (`adminAddr`, `raftAddr`, ...).
    pub async fn runtime_info(
        &self,
        addr: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ClientError> {
        let command = RemotingCommand::new_request(request::GET_BROKER_RUNTIME_INFO);
        let answer = self
            .call(addr, command, self.timeout, &[response::SUCCESS])
            .await?;
        KvTable::decode(&answer.body)
            .map(|kv| kv.table)
            .map_err(|error| ClientError::bad_response(addr, error))
    }

    /// VIEW_MESSAGE_BY_ID: the message of an offset message id, asked of the member at the
    /// id's store address (`None`: that member has no message there).
    pub async fn view_message(
        &self,
        offset_msg_id: &str,
    ) -> Result<Option<raftmq_protocol::message::StoredMessage>, ClientError> {
        let (addr, physical_offset) = raftmq_protocol::message::parse_offset_msg_id(offset_msg_id)
            .map_err(|error| ClientError::InvalidMessage(error.to_string()))?;
        let addr = addr.to_string();
        let header = raftmq_protocol::header::client::ViewMessageRequestHeader {
            offset: physical_offset,
            topic: None,
        };
        let command =
            RemotingCommand::new_request(request::VIEW_MESSAGE_BY_ID).with_header(&header);
        let answer = self
            .call(
                &addr,
                command,
                self.timeout,
                &[response::SUCCESS, response::SYSTEM_ERROR],
            )
            .await?;
        if answer.code != response::SUCCESS {
            return Ok(None);
        }
        Ok(decode_stored(&answer.body)
            .map_err(|error| ClientError::bad_response(&addr, error))?
            .into_iter()
            .next())
    }

    /// SEND_MESSAGE_V2 (one message, `body` as it is) or SEND_BATCH_MESSAGE (when
    /// `header.batch` is true, `body` from `message::encode_batch`).
    pub async fn send_message(
        &self,
        addr: &str,
        header: SendMessageRequestHeader,
        body: Bytes,
        timeout: Duration,
    ) -> Result<SendReply, ClientError> {
        let code = if header.is_batch() {
            request::SEND_BATCH_MESSAGE
        } else {
            request::SEND_MESSAGE_V2
        };
        let command = RemotingCommand::new_request(code)
            .with_header(&SendMessageRequestHeaderV2::from(header))
            .with_body(body);
        let answer = self.rpc.invoke(addr, command, timeout).await?;
        let Some(status) = SendStatus::from_code(answer.code) else {
            return Err(refusal(addr, code, answer));
        };
        let header = SendMessageResponseHeader::from_ext_fields(&answer.ext_fields)
            .map_err(|error| ClientError::bad_response(addr, error))?;
        Ok(SendReply {
            status,
            offset_msg_id: header.msg_id,
            queue_id: header.queue_id,
            queue_offset: header.queue_offset,
        })
    }

    /// POP_MESSAGE: each message comes with the `extraInfo` RocketMQ's clients build for it
    /// (`startOffset popTime invisibleTime reviveQid 0 brokerName queueId offset`).
    pub async fn pop(&self, addr: &str, pop: &PopRequest) -> Result<PopResult, ClientError> {
        let header = PopMessageRequestHeader {
            consumer_group: pop.group.clone(),
            topic: pop.queue.topic.clone(),
            queue_id: pop.queue.queue_id,
            max_msg_nums: pop.max_messages,
            invisible_time: millis(pop.invisible),
            poll_time: pop.poll.map_or(0, millis),
            born_time: raftmq_protocol::names::now_ms(),
            init_mode: 0,
            exp_type: Some("TAG".into()),
            exp: Some(pop.expression.clone()),
            order: Some(pop.orderly),
            attempt_id: None,
        };
        let timeout = pop
            .poll
            .map_or(self.timeout, |poll| poll + LONG_POLL_MARGIN);
        let answer = self
            .call(
                addr,
                RemotingCommand::new_request(request::POP_MESSAGE).with_header(&header),
                timeout,
                &[
                    response::SUCCESS,
                    response::PULL_NOT_FOUND,
                    response::POLLING_TIMEOUT,
                ],
            )
            .await?;
        let header = PopMessageResponseHeader::from_ext_fields(&answer.ext_fields)
            .map_err(|error| ClientError::bad_response(addr, error))?;
        let mut result = PopResult {
            pop_time_ms: header.pop_time,
            invisible_time_ms: header.invisible_time,
            rest: header.rest_num,
            messages: Vec::new(),
        };
        if answer.code != response::SUCCESS {
            return Ok(result);
        }
        // `0 queueId startOffset` per queue, `;`-separated.
        let start_offsets: Vec<(i32, i64)> = header
            .start_offset_info
            .as_deref()
            .unwrap_or_default()
            .split(';')
            .filter_map(|entry| {
                let mut fields = entry.split(' ').skip(1);
                Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
            })
            .collect();
        for stored in
            decode_stored(&answer.body).map_err(|error| ClientError::bad_response(addr, error))?
        {
            let queue_id = stored.queue_id;
            let offset = stored.queue_offset;
            let start = start_offsets
                .iter()
                .find(|(id, _)| *id == queue_id)
                .map_or(offset, |(_, start)| *start);
            let extra_info = format!(
                "{start} {} {} {} 0 {} {queue_id} {offset}",
                header.pop_time, header.invisible_time, header.revive_qid, pop.queue.broker_name
            );
            result.messages.push(PoppedMessage {
                message: ReceivedMessage::from_stored(
                    &pop.queue.topic,
                    &pop.queue.broker_name,
                    stored,
                ),
                extra_info,
            });
        }
        Ok(result)
    }

    /// ACK_MESSAGE: a popped message was consumed; it never comes back.
    pub async fn ack(
        &self,
        addr: &str,
        group: &str,
        popped: &PoppedMessage,
    ) -> Result<(), ClientError> {
        let header = AckMessageRequestHeader {
            consumer_group: group.into(),
            topic: popped.message.queue.topic.clone(),
            queue_id: popped.message.queue.queue_id,
            extra_info: popped.extra_info.clone(),
            offset: popped.message.queue_offset,
        };
        self.call(
            addr,
            RemotingCommand::new_request(request::ACK_MESSAGE).with_header(&header),
            self.timeout,
            &[response::SUCCESS],
        )
        .await?;
        Ok(())
    }

    /// CHANGE_MESSAGE_INVISIBLETIME: the message stays invisible for `invisible` from now; its
    /// `extra_info` becomes the new handle (the old one is stale).
    pub async fn change_invisible_time(
        &self,
        addr: &str,
        group: &str,
        popped: &mut PoppedMessage,
        invisible: Duration,
    ) -> Result<(), ClientError> {
        let header = ChangeInvisibleTimeRequestHeader {
            consumer_group: group.into(),
            topic: popped.message.queue.topic.clone(),
            queue_id: popped.message.queue.queue_id,
            extra_info: popped.extra_info.clone(),
            offset: popped.message.queue_offset,
            invisible_time: millis(invisible),
        };
        let answer = self
            .call(
                addr,
                RemotingCommand::new_request(request::CHANGE_MESSAGE_INVISIBLETIME)
                    .with_header(&header),
                self.timeout,
                &[response::SUCCESS],
            )
            .await?;
        let changed = ChangeInvisibleTimeResponseHeader::from_ext_fields(&answer.ext_fields)
            .map_err(|error| ClientError::bad_response(addr, error))?;
        let mut fields: Vec<String> = popped.extra_info.split(' ').map(str::to_owned).collect();
        if fields.len() < 8 {
            return Err(ClientError::bad_response(
                addr,
                raftmq_protocol::WireError::InvalidField {
                    field: "extraInfo",
                    value: popped.extra_info.clone(),
                    reason: "has fewer than 8 fields",
                },
            ));
        }
        fields[1] = changed.pop_time.to_string();
        fields[2] = changed.invisible_time.to_string();
        fields[3] = changed.revive_qid.to_string();
        popped.extra_info = fields.join(" ");
        Ok(())
    }

    /// PULL_MESSAGE. Long polls when `pull.suspend` is set (the deadline allows for it).
    pub async fn pull(&self, addr: &str, pull: &PullRequest) -> Result<PullResult, ClientError> {
        let mut sys_flag = pull_sys_flag::SUBSCRIPTION;
        let suspend_ms = match pull.suspend {
            Some(suspend) => {
                sys_flag |= pull_sys_flag::SUSPEND;
                millis(suspend)
            }
            None => 0,
        };
        let header = PullMessageRequestHeader {
            consumer_group: pull.group.clone(),
            topic: pull.queue.topic.clone(),
            queue_id: pull.queue.queue_id,
            queue_offset: pull.offset,
            max_msg_nums: pull.max_messages.clamp(1, MAX_PULL_BATCH),
            sys_flag,
            commit_offset: 0,
            suspend_timeout_millis: suspend_ms,
            subscription: Some(pull.subscription.clone()),
            sub_version: 0,
            expression_type: Some(if pull.sql92 { "SQL92" } else { "TAG" }.to_owned()),
            max_msg_bytes: None,
            broker_name: Some(pull.queue.broker_name.clone()),
        };
        let timeout = pull
            .suspend
            .map_or(self.timeout, |suspend| suspend + LONG_POLL_MARGIN);
        let answer = self
            .call(
                addr,
                RemotingCommand::new_request(request::PULL_MESSAGE).with_header(&header),
                timeout,
                &[
                    response::SUCCESS,
                    response::PULL_NOT_FOUND,
                    response::PULL_RETRY_IMMEDIATELY,
                    response::PULL_OFFSET_MOVED,
                ],
            )
            .await?;
        let status = match answer.code {
            response::SUCCESS => PullStatus::Found,
            response::PULL_NOT_FOUND => PullStatus::NoNewMessages,
            response::PULL_RETRY_IMMEDIATELY => PullStatus::RetryImmediately,
            _ => PullStatus::OffsetMoved,
        };
        let header = PullMessageResponseHeader::from_ext_fields(&answer.ext_fields)
            .map_err(|error| ClientError::bad_response(addr, error))?;
        let messages = if status == PullStatus::Found {
            decode_stored(&answer.body)
                .map_err(|error| ClientError::bad_response(addr, error))?
                .into_iter()
                .map(|stored| {
                    ReceivedMessage::from_stored(&pull.queue.topic, &pull.queue.broker_name, stored)
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(PullResult {
            status,
            next_begin_offset: header.next_begin_offset,
            min_offset: header.min_offset,
            max_offset: header.max_offset,
            suggest_which_broker_id: header.suggest_which_broker_id,
            messages,
        })
    }

    /// QUERY_CONSUMER_OFFSET; `Ok(None)` when the group has no offset for the queue.
    pub async fn query_consumer_offset(
        &self,
        addr: &str,
        group: &str,
        queue: &MessageQueue,
    ) -> Result<Option<i64>, ClientError> {
        let header = QueryConsumerOffsetRequestHeader {
            consumer_group: group.to_owned(),
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            set_zero_if_not_found: Some(false),
            broker_name: Some(queue.broker_name.clone()),
        };
        let answer = self
            .call(
                addr,
                RemotingCommand::new_request(request::QUERY_CONSUMER_OFFSET).with_header(&header),
                self.timeout,
                &[response::SUCCESS, response::QUERY_NOT_FOUND],
            )
            .await?;
        if answer.code == response::QUERY_NOT_FOUND {
            return Ok(None);
        }
        let header = QueryConsumerOffsetResponseHeader::from_ext_fields(&answer.ext_fields)
            .map_err(|error| ClientError::bad_response(addr, error))?;
        Ok(Some(header.offset))
    }

    /// UPDATE_CONSUMER_OFFSET, waiting for the answer (so the commit is known to be taken).
    pub async fn update_consumer_offset(
        &self,
        addr: &str,
        group: &str,
        queue: &MessageQueue,
        offset: i64,
    ) -> Result<(), ClientError> {
        let header = UpdateConsumerOffsetRequestHeader {
            consumer_group: group.to_owned(),
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            commit_offset: offset,
            broker_name: Some(queue.broker_name.clone()),
        };
        self.call(
            addr,
            RemotingCommand::new_request(request::UPDATE_CONSUMER_OFFSET).with_header(&header),
            self.timeout,
            &[response::SUCCESS],
        )
        .await?;
        Ok(())
    }

    async fn offset_call(&self, addr: &str, command: RemotingCommand) -> Result<i64, ClientError> {
        let answer = self
            .call(addr, command, self.timeout, &[response::SUCCESS])
            .await?;
        let header = OffsetResponseHeader::from_ext_fields(&answer.ext_fields)
            .map_err(|error| ClientError::bad_response(addr, error))?;
        Ok(header.offset)
    }

    /// GET_MAX_OFFSET: the offset after the queue's last message.
    pub async fn max_offset(&self, addr: &str, queue: &MessageQueue) -> Result<i64, ClientError> {
        let header = GetMaxOffsetRequestHeader {
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            committed: Some(true),
            broker_name: Some(queue.broker_name.clone()),
        };
        self.offset_call(
            addr,
            RemotingCommand::new_request(request::GET_MAX_OFFSET).with_header(&header),
        )
        .await
    }

    /// GET_MIN_OFFSET: the queue's first stored offset.
    pub async fn min_offset(&self, addr: &str, queue: &MessageQueue) -> Result<i64, ClientError> {
        let header = GetMinOffsetRequestHeader {
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            broker_name: Some(queue.broker_name.clone()),
        };
        self.offset_call(
            addr,
            RemotingCommand::new_request(request::GET_MIN_OFFSET).with_header(&header),
        )
        .await
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP: the first offset stored at or after `timestamp_ms`.
    pub async fn search_offset(
        &self,
        addr: &str,
        queue: &MessageQueue,
        timestamp_ms: i64,
    ) -> Result<i64, ClientError> {
        let header = SearchOffsetRequestHeader {
            topic: queue.topic.clone(),
            queue_id: queue.queue_id,
            timestamp: timestamp_ms,
            boundary_type: Some("LOWER".to_owned()),
            broker_name: Some(queue.broker_name.clone()),
        };
        self.offset_call(
            addr,
            RemotingCommand::new_request(request::SEARCH_OFFSET_BY_TIMESTAMP).with_header(&header),
        )
        .await
    }

    /// HEART_BEAT with the client's groups and subscriptions.
    pub async fn heartbeat(&self, addr: &str, data: &HeartbeatData) -> Result<(), ClientError> {
        let body = data.encode().map_err(|error| {
            ClientError::Config(format!("heartbeat cannot be encoded: {error}"))
        })?;
        self.call(
            addr,
            RemotingCommand::new_request(request::HEART_BEAT).with_body(body),
            self.timeout,
            &[response::SUCCESS],
        )
        .await?;
        Ok(())
    }

    /// UNREGISTER_CLIENT for one producer or consumer group.
    pub async fn unregister_client(
        &self,
        addr: &str,
        client_id: &str,
        producer_group: Option<&str>,
        consumer_group: Option<&str>,
    ) -> Result<(), ClientError> {
        let header = UnregisterClientRequestHeader {
            client_id: client_id.to_owned(),
            producer_group: producer_group.map(str::to_owned),
            consumer_group: consumer_group.map(str::to_owned),
        };
        self.call(
            addr,
            RemotingCommand::new_request(request::UNREGISTER_CLIENT).with_header(&header),
            self.timeout,
            &[response::SUCCESS],
        )
        .await?;
        Ok(())
    }

    /// GET_CONSUMER_LIST_BY_GROUP: the ids of the group's live consumers, sorted.
    pub async fn consumer_list(&self, addr: &str, group: &str) -> Result<Vec<String>, ClientError> {
        let header = GetConsumerListByGroupRequestHeader {
            consumer_group: group.to_owned(),
        };
        let answer = self
            .call(
                addr,
                RemotingCommand::new_request(request::GET_CONSUMER_LIST_BY_GROUP)
                    .with_header(&header),
                self.timeout,
                &[response::SUCCESS],
            )
            .await?;
        let mut ids = ConsumerListBody::decode(&answer.body)
            .map_err(|error| ClientError::bad_response(addr, error))?
            .consumer_id_list;
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// CONSUMER_SEND_MSG_BACK: hand a failed message to the broker for redelivery through
    /// `%RETRY%<group>`, or to `%DLQ%<group>` when `delay_level` is negative.
    pub async fn send_message_back(
        &self,
        addr: &str,
        group: &str,
        message: &ReceivedMessage,
        delay_level: i32,
        max_reconsume_times: i32,
    ) -> Result<(), ClientError> {
        let header = ConsumerSendMsgBackRequestHeader {
            offset: message.physical_offset,
            group: group.to_owned(),
            delay_level,
            origin_msg_id: Some(message.msg_id.clone()),
            origin_topic: Some(message.topic.clone()),
            unit_mode: Some(false),
            max_reconsume_times: Some(max_reconsume_times),
            broker_name: Some(message.queue.broker_name.clone()),
        };
        self.call(
            addr,
            RemotingCommand::new_request(request::CONSUMER_SEND_MSG_BACK).with_header(&header),
            self.timeout,
            &[response::SUCCESS],
        )
        .await?;
        Ok(())
    }

    /// END_TRANSACTION: commits or rolls back the half message at `header.commit_log_offset`
    /// (a request with an answer, not RocketMQ's oneway: the caller learns whether it took
    /// effect). A broker that finds the transaction no longer pending (ended before, or given
    /// up) answers SYSTEM_ERROR.
    pub async fn end_transaction(
        &self,
        addr: &str,
        header: &raftmq_protocol::header::transaction::EndTransactionRequestHeader,
    ) -> Result<(), ClientError> {
        self.call(
            addr,
            RemotingCommand::new_request(request::END_TRANSACTION).with_header(header),
            self.timeout,
            &[response::SUCCESS],
        )
        .await?;
        Ok(())
    }

    /// QUERY_MESSAGE on one member: messages of `topic` with `key` (a `KEYS` key, or with
    /// `unique` a `UNIQ_KEY`) stored within `begin_ms ..= end_ms`, at most `max`. A member
    /// with none answers QUERY_NOT_FOUND, returned as an empty list.
    pub async fn query_message(
        &self,
        addr: &str,
        topic: &str,
        key: &str,
        unique: bool,
        (begin_ms, end_ms): (i64, i64),
        max: i32,
    ) -> Result<Vec<raftmq_protocol::message::StoredMessage>, ClientError> {
        let header = raftmq_protocol::header::transaction::QueryMessageRequestHeader {
            topic: topic.to_owned(),
            key: key.to_owned(),
            max_num: max,
            begin_timestamp: begin_ms,
            end_timestamp: end_ms,
            unique_key_query: Some(unique),
            broker_name: None,
        };
        let answer = self
            .call(
                addr,
                RemotingCommand::new_request(request::QUERY_MESSAGE).with_header(&header),
                self.timeout,
                &[response::SUCCESS, response::QUERY_NOT_FOUND],
            )
            .await?;
        if answer.code == response::QUERY_NOT_FOUND {
            return Ok(Vec::new());
        }
        raftmq_protocol::message::decode_stored(&answer.body)
            .map_err(|error| ClientError::bad_response(addr, error))
    }

    /// CHECK_CLIENT_CONFIG: whether the broker can serve `subscription` (an SQL92 expression
    /// that does not parse is refused with SUBSCRIPTION_PARSE_FAILED and the reason).
    pub async fn check_client_config(
        &self,
        addr: &str,
        client_id: &str,
        group: &str,
        subscription: &raftmq_protocol::body::SubscriptionData,
    ) -> Result<(), ClientError> {
        let body = raftmq_protocol::body::CheckClientRequestBody {
            client_id: client_id.to_owned(),
            group: group.to_owned(),
            subscription_data: subscription.clone(),
        };
        let body = body.encode().map_err(|error| {
            ClientError::Config(format!("the subscription cannot be encoded: {error}"))
        })?;
        self.call(
            addr,
            RemotingCommand::new_request(request::CHECK_CLIENT_CONFIG).with_body(body),
            self.timeout,
            &[response::SUCCESS],
        )
        .await?;
        Ok(())
    }

    /// UPDATE_AND_CREATE_TOPIC on one broker (its group's leader).
    pub async fn create_topic(&self, addr: &str, config: &TopicConfig) -> Result<(), ClientError> {
        let header = CreateTopicRequestHeader {
            topic: config.topic_name.clone(),
            default_topic: raftmq_protocol::names::AUTO_CREATE_TOPIC_KEY_TOPIC.to_owned(),
            read_queue_nums: i32::try_from(config.read_queue_nums)
                .map_err(|_| ClientError::Config("too many read queues".to_owned()))?,
            write_queue_nums: i32::try_from(config.write_queue_nums)
                .map_err(|_| ClientError::Config("too many write queues".to_owned()))?,
            perm: i32::try_from(config.perm & (perm::READ_WRITE | perm::INHERIT | perm::PRIORITY))
                .unwrap_or(6),
            topic_filter_type: config.topic_filter_type.clone(),
            topic_sys_flag: Some(i32::try_from(config.topic_sys_flag).unwrap_or(0)),
            order: config.order,
            attributes: None,
            force: None,
        };
        self.call(
            addr,
            RemotingCommand::new_request(request::UPDATE_AND_CREATE_TOPIC).with_header(&header),
            self.timeout,
            &[response::SUCCESS],
        )
        .await?;
        Ok(())
    }

    /// DELETE_TOPIC_IN_BROKER on one broker (its group's leader).
    pub async fn delete_topic(&self, addr: &str, topic: &str) -> Result<(), ClientError> {
        self.call(
            addr,
            RemotingCommand::new_request(request::DELETE_TOPIC_IN_BROKER).with_header(
                &DeleteTopicRequestHeader {
                    topic: topic.to_owned(),
                },
            ),
            self.timeout,
            &[response::SUCCESS],
        )
        .await?;
        Ok(())
    }
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
