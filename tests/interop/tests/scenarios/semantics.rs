//! RocketMQ's message semantics with the real client (issue 14):
//!
//! - a `TransactionMQProducer` with its check listener: committed transactions are delivered,
//!   rolled-back ones never, and ones left unknown are checked back by the broker (after its
//!   6 s transaction timeout) on the producer's connection and committed by the listener;
//! - push consumers filtering by tag and by an SQL92 expression on a user property;
//! - two broadcasting consumers of one group, each receiving every message.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, ensure};
use raftmq_interop::runtime::bounded;
use rocketmq_client_rust::{
    ClientConfig, ConsumeConcurrentlyStatus, DefaultMQPushConsumer, LocalTransactionState,
    MQPushConsumer, MessageSelector, TransactionListener, TransactionMQProducer,
};
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel;

use super::clients::{
    Env, LIFECYCLE_TIMEOUT, Selection, client_error, start_producer, start_selected_consumer,
    wait_for_route,
};

const TX_TOPIC: &str = "InteropTxTopic";
const FILTER_TOPIC: &str = "InteropFilterTopic";
const TX_GROUP: &str = "interop-tx-producer";
/// Transactions of each kind.
const PER_KIND: usize = 3;
/// Bound on every expected delivery: a check comes 6 s after the half message at the earliest.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);
/// After everything expected arrived, how long nothing unexpected may arrive.
const QUIET_PERIOD: Duration = Duration::from_secs(3);

/// Commits `commit-*`, rolls back `rollback-*`, leaves `unknown-*` to the check, which commits.
#[derive(Default)]
struct Listener {
    checks: Arc<Mutex<Vec<String>>>,
}

fn body_of(message: &dyn MessageTrait) -> String {
    message
        .get_body()
        .map(|body| String::from_utf8_lossy(body).into_owned())
        .unwrap_or_default()
}

impl TransactionListener for Listener {
    fn execute_local_transaction(
        &self,
        message: &dyn MessageTrait,
        _arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        let body = body_of(message);
        if body.starts_with("commit") {
            LocalTransactionState::CommitMessage
        } else if body.starts_with("rollback") {
            LocalTransactionState::RollbackMessage
        } else {
            LocalTransactionState::Unknown
        }
    }

    fn check_local_transaction(&self, message: &MessageExt) -> LocalTransactionState {
        let body = body_of(message);
        self.checks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(body.clone());
        if body.starts_with("unknown") {
            LocalTransactionState::CommitMessage
        } else {
            LocalTransactionState::RollbackMessage
        }
    }
}

type Bodies = Arc<Mutex<Vec<String>>>;

/// Starts a consumer whose callback records every delivered body.
async fn recording_consumer(
    env: &Env,
    selection: Selection<'_>,
) -> anyhow::Result<(DefaultMQPushConsumer, Bodies)> {
    let bodies: Bodies = Arc::default();
    let log = bodies.clone();
    // Two consumers of one group in one process need client instances of their own (the
    // client refuses a group registered twice on one instance): RocketMQ's instanceName.
    static CONSUMERS_STARTED: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);
    let mut config = ClientConfig::default();
    let nth = CONSUMERS_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config.set_instance_name(format!("interop-{}-{nth}", selection.group).into());
    let consumer = start_selected_consumer(env, selection, config, |consumer| {
        consumer.register_message_listener_concurrently(
            move |messages: &[&MessageExt],
                  _: &rocketmq_client_rust::ConsumeConcurrentlyContext| {
                let mut log = log.lock().unwrap_or_else(|poison| poison.into_inner());
                for message in messages {
                    log.push(body_of(*message));
                }
                Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
            },
        );
    })
    .await?;
    Ok((consumer, bodies))
}

fn snapshot(bodies: &Bodies) -> Vec<String> {
    bodies
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone()
}

/// Waits until `bodies` holds every one of `expected`, then a quiet period; returns them all.
async fn wait_for_bodies(
    what: &str,
    bodies: &Bodies,
    expected: &BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let got: BTreeSet<String> = snapshot(bodies).into_iter().collect();
        if expected.is_subset(&got) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: after {DELIVERY_TIMEOUT:?} got {got:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(QUIET_PERIOD).await;
    Ok(snapshot(bodies))
}

async fn transactions(env: &Env) -> anyhow::Result<()> {
    let listener = Listener::default();
    let checks = listener.checks.clone();
    let mut producer = TransactionMQProducer::builder(env.client_runtime.clone())
        .producer_group(TX_GROUP.to_owned())
        .name_server_addr(env.namesrv_addr.clone())
        .topics(vec![TX_TOPIC])
        .transaction_listener(listener)
        .build();
    bounded(
        "starting the transaction producer",
        LIFECYCLE_TIMEOUT,
        producer.start(),
    )
    .await?
    .map_err(|err| client_error("starting the transaction producer", err))?;
    let mut expected = BTreeSet::new();
    for kind in ["commit", "rollback", "unknown"] {
        for n in 0..PER_KIND {
            let body = format!("{kind}-{n}");
            let message = Message::builder()
                .topic(TX_TOPIC)
                .tags("tx")
                .body_slice(body.as_bytes())
                .build()
                .map_err(|err| anyhow!("building a message: {err}"))?;
            bounded(
                "a transactional send",
                LIFECYCLE_TIMEOUT,
                producer.send_message_in_transaction::<(), _>(message, None),
            )
            .await?
            .map_err(|err| client_error("a transactional send", err))?;
            if kind != "rollback" {
                expected.insert(body);
            }
        }
    }
    wait_for_route(env, TX_TOPIC).await?;
    let (consumer, bodies) = recording_consumer(
        env,
        Selection {
            group: "interop-tx-consumer",
            topic: TX_TOPIC,
            selector: None,
            model: MessageModel::Clustering,
        },
    )
    .await?;
    let got = wait_for_bodies("transactional messages", &bodies, &expected).await;
    let mut consumer = consumer;
    bounded(
        "stopping the consumer",
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
    let got = got?;
    ensure!(
        !got.iter().any(|body| body.starts_with("rollback")),
        "a rolled-back message was delivered: {got:?}"
    );
    let checked = checks
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    ensure!(
        checked.iter().any(|body| body.starts_with("unknown")),
        "the unknown transactions were resolved without a check: {checked:?}"
    );
    Ok(())
}

async fn filters_and_broadcasting(env: &Env) -> anyhow::Result<()> {
    let producer = start_producer(env, "interop-filter-producer").await?;
    let mut all = BTreeSet::new();
    for n in 0..6u32 {
        let body = format!("filtered-{n}");
        let tag = if n % 2 == 0 { "even" } else { "odd" };
        let message = Message::builder()
            .topic(FILTER_TOPIC)
            .tags(tag)
            .body_slice(body.as_bytes())
            .raw_property("n", n.to_string())
            .map_err(|err| anyhow!("setting a property: {err}"))?
            .build()
            .map_err(|err| anyhow!("building a message: {err}"))?;
        bounded(
            "a send",
            LIFECYCLE_TIMEOUT,
            producer.send_with_timeout(message, super::clients::SEND_TIMEOUT_MS),
        )
        .await?
        .map_err(|err| client_error("a send", err))?;
        all.insert(body);
    }
    wait_for_route(env, FILTER_TOPIC).await?;
    let (tagged, tag_bodies) = recording_consumer(
        env,
        Selection {
            group: "interop-tag-consumer",
            topic: FILTER_TOPIC,
            selector: Some(MessageSelector::by_tag("even")),
            model: MessageModel::Clustering,
        },
    )
    .await?;
    let (sql, sql_bodies) = recording_consumer(
        env,
        Selection {
            group: "interop-sql-consumer",
            topic: FILTER_TOPIC,
            selector: Some(MessageSelector::by_sql("n BETWEEN 1 AND 4 AND n <> 2")),
            model: MessageModel::Clustering,
        },
    )
    .await?;
    let mut broadcast = Vec::new();
    for _ in 0..2 {
        broadcast.push(
            recording_consumer(
                env,
                Selection {
                    group: "interop-broadcast-consumer",
                    topic: FILTER_TOPIC,
                    selector: None,
                    model: MessageModel::Broadcasting,
                },
            )
            .await?,
        );
    }
    let even: BTreeSet<String> = ["filtered-0", "filtered-2", "filtered-4"]
        .map(String::from)
        .into();
    let sql_wanted: BTreeSet<String> = ["filtered-1", "filtered-3", "filtered-4"]
        .map(String::from)
        .into();
    let outcome = async {
        let got = wait_for_bodies("the tag-filtered consumer", &tag_bodies, &even).await?;
        let got: BTreeSet<String> = got.into_iter().collect();
        ensure!(got == even, "the tag filter let through {got:?}");
        let got = wait_for_bodies("the SQL92 consumer", &sql_bodies, &sql_wanted).await?;
        let got: BTreeSet<String> = got.into_iter().collect();
        ensure!(got == sql_wanted, "the SQL92 filter let through {got:?}");
        for (index, (_, bodies)) in broadcast.iter().enumerate() {
            let got = wait_for_bodies("a broadcasting consumer", bodies, &all).await?;
            let got: BTreeSet<String> = got.into_iter().collect();
            ensure!(got == all, "broadcasting consumer {index} got {got:?}");
        }
        Ok(())
    }
    .await;
    for mut consumer in [tagged, sql]
        .into_iter()
        .chain(broadcast.into_iter().map(|(consumer, _)| consumer))
    {
        bounded(
            "stopping a consumer",
            LIFECYCLE_TIMEOUT,
            consumer.shutdown(),
        )
        .await?;
    }
    let mut producer = producer;
    bounded(
        "stopping the producer",
        LIFECYCLE_TIMEOUT,
        producer.shutdown(),
    )
    .await?;
    outcome
}

pub async fn run(env: &Env) -> anyhow::Result<()> {
    transactions(env).await?;
    filters_and_broadcasting(env).await
}
