//! The real RocketMQ client (`rocketmq-client-rust` 1.0.0) against a three-member RaftMQ group
//! enforcing ACL (every member started with `--acl`): with its `AclClientRPCHook` and an
//! account allowed on the topic and group, it sends and consumes; without credentials, or with
//! a wrong secret key, its sends are refused with NO_PERMISSION.

// The client's futures are deeply nested types; its own examples raise the limit too.
#![recursion_limit = "512"]

// The shared client helpers; this binary uses only some of them.
#[allow(dead_code)]
#[path = "scenarios/clients.rs"]
mod clients;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use raftmq_interop::runtime::{ClientHarness, HeaderEncoding, bounded};
use raftmq_protocol::acl::{Account, AclChange, Perm};
use raftmq_tests::AdminHttp;
use raftmq_tests::cluster::{HTTP_TIMEOUT, START_TIMEOUT, TestCluster};
use rocketmq_client_rust::{
    AclClientRPCHook, ClientConfig, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    DefaultMQProducer, MQPushConsumer, SessionCredentials,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_transport::api::RPCHook;

use clients::{
    Env, LIFECYCLE_TIMEOUT, SEND_RETRIES, SEND_TIMEOUT_MS, Selection, client_error, delivery_of,
    message, start_signed_consumer,
};

const TOKEN: &str = "interop-admin-token-0123456789";
const ROOT: (&str, &str) = ("root", "root-secret-key");
const ACCOUNT: (&str, &str) = ("interop", "interop-secret-key");
const TOPIC: &str = "InteropAclTopic";
const PRODUCER_GROUP: &str = "interop-acl-producer";
const CONSUMER_GROUP: &str = "interop-acl-consumer";
const MESSAGES: usize = 20;
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

fn hook((access_key, secret_key): (&str, &str)) -> Arc<dyn RPCHook> {
    Arc::new(AclClientRPCHook::new(SessionCredentials::with_keys(
        access_key, secret_key,
    )))
}

async fn producer(env: &Env, hook: Option<Arc<dyn RPCHook>>) -> anyhow::Result<DefaultMQProducer> {
    let mut builder = DefaultMQProducer::builder(env.client_runtime.clone())
        .producer_group(PRODUCER_GROUP.to_owned())
        .name_server_addr(env.namesrv_addr.clone())
        .send_msg_timeout(SEND_TIMEOUT_MS as u32)
        .retry_times_when_send_failed(SEND_RETRIES);
    if let Some(hook) = hook {
        builder = builder.rpc_hook(hook);
    }
    let mut producer = builder.build();
    bounded("starting the producer", LIFECYCLE_TIMEOUT, producer.start())
        .await?
        .map_err(|err| client_error("starting the producer", err))?;
    Ok(producer)
}

async fn refused_send(env: &Env, hook: Option<Arc<dyn RPCHook>>, what: &str) -> anyhow::Result<()> {
    let mut producer = producer(env, hook).await?;
    let result = bounded(
        "a refused send",
        LIFECYCLE_TIMEOUT,
        producer.send_with_timeout(message(TOPIC, what)?, SEND_TIMEOUT_MS),
    )
    .await?;
    bounded(
        "stopping the producer",
        LIFECYCLE_TIMEOUT,
        producer.shutdown(),
    )
    .await?;
    match result {
        Ok(Some(sent)) => Err(anyhow!("{what}: the send was stored: {sent:?}")),
        Ok(None) => Err(anyhow!("{what}: a sync send returned no result")),
        // The client reports a broker refusal without its code ("Broker operation failed");
        // the broker's denied-request counter (checked by the caller) says why.
        Err(err) => {
            println!("{what}: refused: {err}");
            Ok(())
        }
    }
}

#[test]
fn real_rocketmq_client_with_its_acl_hook() -> anyhow::Result<()> {
    let cluster = TestCluster::start(
        3,
        &[
            "--acl",
            "--acl-admin-access-key",
            ROOT.0,
            "--acl-admin-secret-key",
            ROOT.1,
            "--admin-token",
            TOKEN,
        ],
    )?;
    let leader = cluster.wait_for_registered_leader(START_TIMEOUT)?;
    let account = Account {
        access_key: ACCOUNT.0.into(),
        secret_key: ACCOUNT.1.into(),
        topic_perms: BTreeMap::from([(TOPIC.to_string(), Perm::PubSub)]),
        group_perms: BTreeMap::from([(CONSUMER_GROUP.to_string(), Perm::Sub)]),
        ..Account::default()
    };
    AdminHttp::new(HTTP_TIMEOUT)?
        .change_acl(
            cluster.member(leader)?.admin(),
            TOKEN.parse().map_err(anyhow::Error::msg)?,
            AclChange::UpsertAccount(account),
        )
        .context("creating the interop account")?;

    let harness = ClientHarness::start("interop-acl", HeaderEncoding::Json)?;
    let env = Env {
        client_runtime: harness.client_runtime(),
        namesrv_addr: cluster.namesrv_addr.to_string(),
        namesrv_admin: cluster.namesrv_admin,
    };
    let outcome = harness.block_on(Box::pin(async {
        // Signed with the account: every send is acknowledged.
        let mut producer = producer(&env, Some(hook(ACCOUNT))).await?;
        let mut bodies = BTreeSet::new();
        for index in 0..MESSAGES {
            let body = format!("acl-{index}");
            let sent = bounded(
                "a signed send",
                LIFECYCLE_TIMEOUT,
                producer.send_with_timeout(message(TOPIC, &body)?, SEND_TIMEOUT_MS),
            )
            .await?
            .map_err(|err| client_error("a signed send", err))?;
            ensure!(sent.is_some(), "a signed send returned no result");
            bodies.insert(body);
        }
        bounded(
            "stopping the producer",
            LIFECYCLE_TIMEOUT,
            producer.shutdown(),
        )
        .await?;

        // Unsigned, or signed with a wrong secret: refused.
        refused_send(&env, None, "unsigned").await?;
        refused_send(
            &env,
            Some(hook((ACCOUNT.0, "wrong-secret-key"))),
            "wrongly signed",
        )
        .await?;
        // Refused by the ACL (NO_PERMISSION), as the leader's metrics count them.
        let leader_admin = cluster.member(leader)?.admin();
        let metrics = tokio::task::spawn_blocking(move || {
            AdminHttp::new(HTTP_TIMEOUT)?.metrics(leader_admin)
        })
        .await
        .context("the metrics read panicked")??;
        for reason in ["no_access_key", "bad_signature"] {
            ensure!(
                metrics.lines().any(|line| {
                    line.starts_with("raftmq_acl_denied_requests_total")
                        && line.contains(&format!("reason=\"{reason}\""))
                }),
                "the leader counted no request refused for {reason}"
            );
        }

        // A signed push consumer reads everything back.
        let received = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let seen = received.clone();
        let consumer = start_signed_consumer(
            &env,
            Selection {
                group: CONSUMER_GROUP,
                topic: TOPIC,
                selector: None,
                model:
                    rocketmq_protocol::protocol::heartbeat::message_model::MessageModel::Clustering,
            },
            ClientConfig::default(),
            Some(hook(ACCOUNT)),
            move |consumer| {
                consumer.register_message_listener_concurrently(
                    move |messages: &[&MessageExt], _: &ConsumeConcurrentlyContext| {
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        for message in messages {
                            seen.insert(delivery_of(message).body);
                        }
                        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
                    },
                )
            },
        )
        .await?;
        let deadline = tokio::time::Instant::now() + CONSUME_TIMEOUT;
        loop {
            let got = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if bodies.is_subset(&got) {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the signed consumer received {} of {} messages in {CONSUME_TIMEOUT:?}",
                got.intersection(&bodies).count(),
                bodies.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut consumer = consumer;
        bounded(
            "stopping the consumer",
            LIFECYCLE_TIMEOUT,
            consumer.shutdown(),
        )
        .await?;
        anyhow::Ok(())
    }));
    drop(env);
    let shutdown = harness.shutdown();
    outcome.with_context(|| {
        format!(
            "NameServer log: {}; leader at start: member {leader}",
            cluster.namesrv.log_path().display()
        )
    })?;
    shutdown
}
