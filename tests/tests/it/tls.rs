//! TLS on every link of a real cluster (separate `mqnamesrv` and `mqbroker` processes): the
//! NameServer and the members serve remoting in enforcing mode, the members' Raft links are
//! mutual TLS, the members register with the NameServer over TLS, and the Rust client
//! produces and consumes over TLS, through a kill of the leader; the admin ports serve HTTPS
//! and the dashboards read the cluster over TLS; plaintext clients (remoting and HTTP) are
//! refused by the NameServer and by the brokers.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftmq_client::{Admin, ConsumeFrom, ConsumeStatus, Consumer, Message, Producer};
use raftmq_protocol::RemotingCommand;
use raftmq_protocol::code::request;
use raftmq_remoting::RpcClient;
use raftmq_tests::admin::AdminHttp;
use raftmq_tests::cluster::TestCluster;
use raftmq_tls::TlsMode;

const STEP: Duration = Duration::from_secs(60);
const TOPIC: &str = "OverTls";

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn send_all(producer: &Producer, bodies: std::ops::Range<usize>) -> anyhow::Result<()> {
    for i in bodies {
        producer
            .send(Message::new(TOPIC, Bytes::from(format!("m-{i}"))))
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_tls_on_every_link_round_trips_messages_and_refuses_plaintext()
-> anyhow::Result<()> {
    // Started means the group elected a leader over mutual TLS and that leader registered with
    // the NameServer over TLS.
    let mut cluster = TestCluster::start_tls(3, &[], TlsMode::Enforcing)?;
    cluster.create_routed_topic(TOPIC, 4).await?;

    let producer = Producer::builder()
        .namesrv(cluster.namesrv_addr.to_string())
        .group("p-tls")
        .tls(cluster.client_tls())
        .build()
        .await?;
    let received: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let log = received.clone();
    let consumer = Consumer::builder()
        .namesrv(cluster.namesrv_addr.to_string())
        .group("c-tls")
        .subscribe(TOPIC, "*")
        .consume_from(ConsumeFrom::First)
        .tls(cluster.client_tls())
        .start(move |messages: Vec<raftmq_client::ReceivedMessage>| {
            log.lock().unwrap().extend(
                messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
            );
            std::future::ready(ConsumeStatus::Success)
        })
        .await?;

    send_all(&producer, 0..100).await?;
    wait_for("the first 100 messages", STEP, || {
        received.lock().unwrap().len() >= 100
    })
    .await?;

    // Plaintext is refused on the NameServer's port and on a member's.
    let plaintext_admin = Admin::new(Some(&cluster.namesrv_addr.to_string()))?;
    assert!(
        plaintext_admin.route(TOPIC).await.is_err(),
        "a plaintext client gets no route from a TLS-only NameServer"
    );
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let leader_addr = cluster.member(leader)?.remoting().to_string();
    let plaintext = RpcClient::default();
    let refused = plaintext
        .invoke(
            &leader_addr,
            RemotingCommand::new_request(request::GET_BROKER_RUNTIME_INFO),
            Duration::from_secs(5),
        )
        .await;
    assert!(refused.is_err(), "a TLS-only member answered plaintext");

    // The admin ports serve HTTPS only, with the same certificates: the cluster's admin client
    // (HTTPS, trusting the CA) has been reading them all along; plain HTTP is refused.
    let leader_admin = cluster.member(leader)?.admin();
    assert_eq!(cluster.admin.healthz(leader_admin)?.trim(), "ok");
    let plain_http = AdminHttp::new(Duration::from_secs(5))?;
    for addr in [leader_admin, cluster.namesrv_admin] {
        assert!(
            plain_http.healthz(addr).is_err(),
            "the admin port {addr} answered plain HTTP"
        );
    }

    // A new leader is elected over the remaining mutual-TLS links and registers over TLS;
    // the clients find it and carry on.
    cluster.kill_member(leader)?;
    let new_leader = cluster.wait_for_registered_leader(STEP)?;
    assert_ne!(new_leader, leader);
    send_all(&producer, 100..150).await?;
    wait_for("all 150 messages", STEP, || {
        received.lock().unwrap().len() >= 150
    })
    .await?;
    let expected: BTreeSet<String> = (0..150).map(|i| format!("m-{i}")).collect();
    assert_eq!(*received.lock().unwrap(), expected);

    // The killed member rejoins over mutual TLS.
    cluster.start_member(leader)?;
    let status = cluster.raft_status(new_leader)?;
    cluster.wait_for_applied(status.applied_index.unwrap_or(0), STEP)?;

    // The dashboards read the cluster over TLS too: remoting for the routes, HTTPS for every
    // member's Raft view; the group shows healthy only when all three answered.
    for addr in [cluster.namesrv_admin, cluster.member(new_leader)?.admin()] {
        wait_for("a dashboard showing the group healthy", STEP, || {
            cluster
                .admin
                .page(addr, "/ui/cluster")
                .is_ok_and(|page| page.contains(r#"data-verdict="healthy""#))
        })
        .await?;
    }

    consumer.shutdown().await;
    producer.shutdown().await;
    plaintext.shutdown().await;
    Ok(())
}

/// Members started with `--tls-client-auth require`: a client presenting a certificate of the
/// cluster's CA sends and reads admin HTTP; one that trusts the CA but presents no certificate
/// is refused on the remoting port and on the admin port.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_requiring_client_certificates_refuse_clients_without_one() -> anyhow::Result<()> {
    let cluster = TestCluster::start_tls(1, &["--tls-client-auth", "require"], TlsMode::Enforcing)?;
    cluster.create_routed_topic(TOPIC, 1).await?;
    let tls = cluster.tls.as_ref().expect("a TLS cluster");
    let member = cluster.member(1)?;

    let producer = Producer::builder()
        .namesrv(cluster.namesrv_addr.to_string())
        .group("p-client-cert")
        .tls(tls.connector.clone())
        .build()
        .await?;
    send_all(&producer, 0..10).await?;
    assert_eq!(cluster.admin.healthz(member.admin())?.trim(), "ok");

    let anonymous = RpcClient::new(raftmq_remoting::RpcClientConfig {
        tls: tls.anonymous_connector.clone(),
        ..Default::default()
    });
    let refused = anonymous
        .invoke(
            &member.remoting().to_string(),
            RemotingCommand::new_request(request::GET_BROKER_RUNTIME_INFO),
            Duration::from_secs(5),
        )
        .await;
    assert!(
        refused.is_err(),
        "a client without a certificate was answered"
    );
    let anonymous_http =
        AdminHttp::new(Duration::from_secs(5))?.with_tls(&tls.anonymous_connector)?;
    assert!(
        anonymous_http.healthz(member.admin()).is_err(),
        "admin HTTP answered a client without a certificate"
    );

    producer.shutdown().await;
    anonymous.shutdown().await;
    Ok(())
}

#[test]
fn cluster_sh_up_tls_makes_certificates_and_round_trips_over_tls() -> anyhow::Result<()> {
    use raftmq_tests::script_cluster::ScriptCluster;

    let mut cluster = ScriptCluster::up_with(1, &["--tls"])?;
    let printed = &cluster.up_output.stdout;
    assert!(
        printed.contains("TLS on every remoting, gRPC and admin port"),
        "{printed}"
    );
    assert!(printed.contains("a plaintext mq was refused"), "{printed}");

    // mq with the CA the script made reads the cluster; without it, mq is refused.
    let ca = cluster.path().join("tls/ca.pem");
    let ca = ca.to_string_lossy();
    let status = cluster.mq(&["--tls-ca", &ca, "--json", "cluster", "status"])?;
    assert!(status.success, "{}{}", status.stderr, status.stdout);
    let plaintext = cluster.mq(&["topic", "route", "-t", "ClusterSmokeTest"])?;
    assert!(!plaintext.success, "{}", plaintext.stdout);
    let down = cluster.down()?;
    assert!(down.success, "{}", down.stderr);
    Ok(())
}
