//! Building the real client's producer and push consumer the way a RocketMQ user would, and
//! turning what they report into the history types the checks read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use raftmq_interop::history::{Ack, Delivery, SendOutcome, Sent};
use raftmq_interop::runtime::bounded;
use raftmq_tests::cluster::HTTP_TIMEOUT;
use raftmq_tests::{AdminHttp, wait_until};
use rocketmq_client_rust::{
    ClientConfig, ClientError, ClientRuntime, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, ConsumeOrderlyContext, ConsumeOrderlyStatus, DefaultMQProducer,
    DefaultMQPushConsumer, MQPushConsumer, MessageSelector,
};
use rocketmq_error::ErrorClass;
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::result::SendResult;
use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel;

/// The client's send timeout: RocketMQ's default.
pub const SEND_TIMEOUT_MS: u64 = 3_000;
/// Retries after a failed send: RocketMQ's default.
pub const SEND_RETRIES: u32 = 2;
/// Bound on one sync send call, retries included: past it the outcome is unknown.
pub const SEND_CALL_TIMEOUT: Duration =
    Duration::from_millis(SEND_TIMEOUT_MS * (SEND_RETRIES as u64 + 1) + 5_000);
/// Consume callbacks at once. The client's default (20) overflows its blocking lane on two
/// cores and then hands messages back for redelivery, which is not what these tests are about.
pub const CONSUME_THREADS_MAX: u32 = 4;
/// Bound on starting or stopping a producer or consumer.
pub const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Message properties the checks read.
pub const PROPERTY_UNIQ_KEY: &str = "UNIQ_KEY";
pub const PROPERTY_RETRY_TOPIC: &str = "RETRY_TOPIC";
pub const PROPERTY_ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";

/// Bound on the NameServer learning of a topic the broker just created: RocketMQ's broker
/// registers at once after creating one, so clients need not wait for the next 30 s
/// registration to find it.
pub const ROUTE_ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Share of sends that must be acknowledged: with a settled leader every send should be; a
/// few unknown outcomes are tolerated in case leadership moves during a run, but an
/// incompatibility (every send refused) is not.
pub const MIN_ACKED_PERCENT: usize = 90;

/// Fails unless at least [`MIN_ACKED_PERCENT`] of `sent` were acknowledged, quoting the
/// first failures.
pub fn require_mostly_acked(sent: &[Sent]) -> anyhow::Result<()> {
    let acked = sent.iter().filter(|s| s.ack().is_some()).count();
    if acked * 100 >= sent.len() * MIN_ACKED_PERCENT {
        return Ok(());
    }
    let failures: Vec<String> = sent
        .iter()
        .filter(|s| s.ack().is_none())
        .take(5)
        .map(|s| format!("#{}: {:?}", s.seq, s.outcome))
        .collect();
    Err(anyhow!(
        "only {acked} of {} sends were acknowledged; first failures:\n{}",
        sent.len(),
        failures.join("\n")
    ))
}

/// What every scenario needs to build clients.
pub struct Env {
    pub client_runtime: Arc<ClientRuntime>,
    pub namesrv_addr: String,
    /// The NameServer's admin HTTP address (its route table at `/routes`).
    pub namesrv_admin: SocketAddr,
}

/// Waits until the NameServer has a route for `topic`, within [`ROUTE_ANNOUNCE_TIMEOUT`].
pub async fn wait_for_route(env: &Env, topic: &str) -> anyhow::Result<()> {
    let admin = env.namesrv_admin;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let http = AdminHttp::new(HTTP_TIMEOUT)?;
        wait_until(ROUTE_ANNOUNCE_TIMEOUT, || {
            Ok(http.routes(admin)?.contains_key(&topic))
        })
        .with_context(|| format!("the NameServer has no route for {topic}"))
    })
    .await
    .context("the route wait panicked")?
}

pub fn client_error(what: &str, err: ClientError) -> anyhow::Error {
    anyhow!("{what}: {err}")
}

/// A started producer of `group`, with RocketMQ's default timeout and retries.
pub async fn start_producer(env: &Env, group: &str) -> anyhow::Result<DefaultMQProducer> {
    let mut producer = DefaultMQProducer::builder(env.client_runtime.clone())
        .producer_group(group.to_owned())
        .name_server_addr(env.namesrv_addr.clone())
        .send_msg_timeout(SEND_TIMEOUT_MS as u32)
        .retry_times_when_send_failed(SEND_RETRIES)
        .build();
    bounded("starting the producer", LIFECYCLE_TIMEOUT, producer.start())
        .await?
        .map_err(|err| client_error("starting the producer", err))?;
    Ok(producer)
}

/// A message with a unique body (the key the checks match on), a tag and a key.
pub fn message(topic: &str, body: &str) -> anyhow::Result<Message> {
    Message::builder()
        .topic(topic.to_owned())
        .tags("interop")
        .key(body.to_owned())
        .body_slice(body.as_bytes())
        .build()
        .map_err(|err| anyhow!("building a message: {err}"))
}

/// A send error: a timeout, or an error after retries (an earlier attempt may have stored
/// it). Both are unknown outcomes.
fn unknown(err: &ClientError) -> SendOutcome {
    SendOutcome::Unknown {
        timed_out: err.descriptor().class().as_str() == ErrorClass::TIMEOUT.as_str(),
        error: err.to_string(),
    }
}

/// The acknowledgement a sync send result carries; anything else is an interop failure.
fn ack_of(result: &SendResult) -> anyhow::Result<Ack> {
    let queue = result
        .message_queue
        .as_ref()
        .ok_or_else(|| anyhow!("send result without a message queue: {result:?}"))?;
    let msg_id = result
        .msg_id
        .as_ref()
        .ok_or_else(|| anyhow!("send result without a message id: {result:?}"))?;
    Ok(Ack {
        msg_id: msg_id.to_string(),
        queue_id: queue.queue_id(),
        queue_offset: result.queue_offset,
    })
}

/// What a sync send call's result (bounded by [`SEND_CALL_TIMEOUT`]) says about the message.
fn outcome_of(
    result: Result<
        rocketmq_client_rust::ClientResult<Option<SendResult>>,
        tokio::time::error::Elapsed,
    >,
) -> anyhow::Result<SendOutcome> {
    Ok(match result {
        Err(_) => SendOutcome::Unknown {
            timed_out: true,
            error: format!("the send call took longer than {SEND_CALL_TIMEOUT:?}"),
        },
        Ok(Err(err)) => unknown(&err),
        Ok(Ok(None)) => return Err(anyhow!("a sync send returned no result")),
        Ok(Ok(Some(result))) => SendOutcome::Acked(ack_of(&result)?),
    })
}

/// One sync send; the result becomes the message's history entry.
pub async fn send_one(
    producer: &DefaultMQProducer,
    topic: &str,
    seq: u64,
    body: String,
) -> anyhow::Result<Sent> {
    let message = message(topic, &body)?;
    let result = tokio::time::timeout(
        SEND_CALL_TIMEOUT,
        producer.send_with_timeout(message, SEND_TIMEOUT_MS),
    )
    .await;
    Ok(Sent {
        seq,
        body,
        outcome: outcome_of(result)?,
    })
}

/// One sync send to the queue that `key` picks (`key` modulo the topic's write queues), the
/// way RocketMQ users keep one order's messages in one queue.
pub async fn send_keyed(
    producer: &DefaultMQProducer,
    topic: &str,
    seq: u64,
    body: String,
    key: usize,
) -> anyhow::Result<Sent> {
    let message = message(topic, &body)?;
    let by_key = |queues: &[MessageQueue], _: &Message, key: &usize| {
        queues.get(key.checked_rem(queues.len())?).cloned()
    };
    let result = tokio::time::timeout(
        SEND_CALL_TIMEOUT,
        producer.send_with_selector_timeout(message, by_key, key, SEND_TIMEOUT_MS),
    )
    .await;
    Ok(Sent {
        seq,
        body,
        outcome: outcome_of(result)?,
    })
}

/// One sync batch send of `bodies` (seq numbers from `first_seq`): an acknowledged batch
/// stores its messages at consecutive offsets from the one acknowledged.
pub async fn send_batch(
    producer: &DefaultMQProducer,
    topic: &str,
    first_seq: u64,
    bodies: Vec<String>,
) -> anyhow::Result<Vec<Sent>> {
    let messages = bodies
        .iter()
        .map(|body| message(topic, body))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let result = tokio::time::timeout(
        SEND_CALL_TIMEOUT,
        producer.send_batch_with_timeout(messages, SEND_TIMEOUT_MS),
    )
    .await;
    let outcomes: Vec<SendOutcome> = match result {
        Err(_) => vec![
            SendOutcome::Unknown {
                timed_out: true,
                error: format!("the batch send call took longer than {SEND_CALL_TIMEOUT:?}"),
            };
            bodies.len()
        ],
        Ok(Err(err)) => vec![unknown(&err); bodies.len()],
        Ok(Ok(result)) => {
            let ack = ack_of(&result)?;
            // A batch's message id lists its messages' ids, comma-separated, in batch order.
            let ids: Vec<&str> = ack.msg_id.split(',').collect();
            if ids.len() != bodies.len() {
                return Err(anyhow!(
                    "a batch of {} messages was acknowledged with {} message ids: {:?}",
                    bodies.len(),
                    ids.len(),
                    ack.msg_id
                ));
            }
            ids.iter()
                .zip(0u64..)
                .map(|(id, index)| {
                    SendOutcome::Acked(Ack {
                        msg_id: (*id).to_owned(),
                        queue_id: ack.queue_id,
                        queue_offset: ack.queue_offset + index,
                    })
                })
                .collect()
        }
    };
    Ok(bodies
        .into_iter()
        .zip(outcomes)
        .zip(first_seq..)
        .map(|((body, outcome), seq)| Sent { seq, body, outcome })
        .collect())
}

fn property(message: &MessageExt, name: &str) -> Option<String> {
    message
        .properties()
        .iter()
        .find(|(key, _)| key.as_str() == name)
        .map(|(_, value)| value.to_string())
}

/// What the checks need of a delivered message.
pub fn delivery_of(message: &MessageExt) -> Delivery {
    Delivery {
        body: message
            .body()
            .map(|body| String::from_utf8_lossy(&body).into_owned())
            .unwrap_or_default(),
        uniq_key: property(message, PROPERTY_UNIQ_KEY),
        topic: message.topic().to_string(),
        queue_id: message.queue_id(),
        queue_offset: message.queue_offset(),
        reconsume_times: message.reconsume_times(),
    }
}

/// The client's message id of a delivered message and the properties a send-back adds.
pub struct RetryMarks {
    pub msg_id: String,
    pub retry_topic: Option<String>,
    pub origin_msg_id: Option<String>,
}

pub fn retry_marks(message: &MessageExt) -> RetryMarks {
    RetryMarks {
        msg_id: message.msg_id().to_string(),
        retry_topic: property(message, PROPERTY_RETRY_TOPIC),
        origin_msg_id: property(message, PROPERTY_ORIGIN_MESSAGE_ID),
    }
}

/// A started clustering push consumer of `group` on `topic` ("*"), reading from the first
/// offset, with `listener` as its concurrent callback. `client_config` starts from the
/// client's defaults.
pub async fn start_push_consumer<L>(
    env: &Env,
    group: &str,
    topic: &str,
    client_config: ClientConfig,
    listener: L,
) -> anyhow::Result<DefaultMQPushConsumer>
where
    L: Fn(
            &[&MessageExt],
            &ConsumeConcurrentlyContext,
        ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus>
        + Send
        + Sync
        + 'static,
{
    start_consumer_with(env, group, topic, client_config, |consumer| {
        consumer.register_message_listener_concurrently(listener)
    })
    .await
}

/// Like [`start_push_consumer`], with an orderly callback: the client locks each of its
/// queues on the broker (LOCK_BATCH_MQ) and hands one queue's messages over one at a time.
pub async fn start_orderly_push_consumer<L>(
    env: &Env,
    group: &str,
    topic: &str,
    listener: L,
) -> anyhow::Result<DefaultMQPushConsumer>
where
    L: Fn(
            &[&MessageExt],
            &mut ConsumeOrderlyContext,
        ) -> rocketmq_client_rust::ClientResult<ConsumeOrderlyStatus>
        + Send
        + Sync
        + 'static,
{
    start_consumer_with(env, group, topic, ClientConfig::default(), |consumer| {
        consumer.register_message_listener_orderly(listener)
    })
    .await
}

async fn start_consumer_with(
    env: &Env,
    group: &str,
    topic: &str,
    client_config: ClientConfig,
    register_listener: impl FnOnce(&mut DefaultMQPushConsumer),
) -> anyhow::Result<DefaultMQPushConsumer> {
    start_selected_consumer(
        env,
        Selection {
            group,
            topic,
            selector: None,
            model: MessageModel::Clustering,
        },
        client_config,
        register_listener,
    )
    .await
}

/// Which messages a consumer asks for, and how the group shares them.
pub struct Selection<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    /// A tag or SQL92 selector; `None`: every message.
    pub selector: Option<MessageSelector>,
    pub model: MessageModel,
}

/// A started push consumer with a selector (tags or SQL92) and a message model (clustering or
/// broadcasting), reading from the first offset, with `register_listener` installing its
/// callback.
pub async fn start_selected_consumer(
    env: &Env,
    selection: Selection<'_>,
    client_config: ClientConfig,
    register_listener: impl FnOnce(&mut DefaultMQPushConsumer),
) -> anyhow::Result<DefaultMQPushConsumer> {
    start_signed_consumer(env, selection, client_config, None, register_listener).await
}

/// [`start_selected_consumer`] with an RPC hook on every request (RocketMQ's
/// `AclClientRPCHook` for brokers enforcing ACL).
pub async fn start_signed_consumer(
    env: &Env,
    selection: Selection<'_>,
    client_config: ClientConfig,
    rpc_hook: Option<Arc<dyn rocketmq_transport::api::RPCHook>>,
    register_listener: impl FnOnce(&mut DefaultMQPushConsumer),
) -> anyhow::Result<DefaultMQPushConsumer> {
    let Selection {
        group,
        topic,
        selector,
        model,
    } = selection;
    let mut consumer = DefaultMQPushConsumer::builder(env.client_runtime.clone())
        .client_config(client_config)
        .name_server_addr(env.namesrv_addr.clone())
        .consumer_group(group.to_owned())
        .message_model(model)
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .consume_thread_min(1)
        .consume_thread_max(CONSUME_THREADS_MAX)
        .rpc_hook(rpc_hook)
        .build();
    match selector {
        Some(selector) => bounded(
            "subscribing",
            LIFECYCLE_TIMEOUT,
            consumer.subscribe_with_selector(topic, Some(selector)),
        )
        .await?
        .map_err(|err| client_error("subscribing", err))?,
        None => bounded(
            "subscribing",
            LIFECYCLE_TIMEOUT,
            consumer.subscribe(topic, "*"),
        )
        .await?
        .map_err(|err| client_error("subscribing", err))?,
    }
    register_listener(&mut consumer);
    bounded(
        "starting the push consumer",
        LIFECYCLE_TIMEOUT,
        consumer.start(),
    )
    .await?
    .map_err(|err| client_error("starting the push consumer", err))?;
    Ok(consumer)
}

/// Stops a consumer and a producer, each within [`LIFECYCLE_TIMEOUT`].
pub async fn stop(
    mut consumer: DefaultMQPushConsumer,
    mut producer: DefaultMQProducer,
) -> anyhow::Result<()> {
    bounded(
        "stopping the push consumer",
        LIFECYCLE_TIMEOUT,
        consumer.shutdown(),
    )
    .await?;
    bounded(
        "stopping the producer",
        LIFECYCLE_TIMEOUT,
        producer.shutdown(),
    )
    .await?;
    Ok(())
}
