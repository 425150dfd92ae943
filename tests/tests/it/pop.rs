//! POP against a real 3-member group of processes: messages popped from the leader and acked
//! there, then the leader is killed (SIGKILL); from the new leader an acked message never
//! returns, an unacked one returns after its invisible time with its attempt counted, and a
//! receipt handle the killed leader issued still acks.

use std::time::{Duration, Instant};

use raftmq_client::{BrokerClient, Message, MessageQueue, PopRequest, Producer};
use raftmq_remoting::RpcClient;
use raftmq_tests::cluster::TestCluster;

const TOPIC: &str = "PopAcrossKill";
const GROUP: &str = "pop-kill-consumers";
const TIMEOUT: Duration = Duration::from_secs(60);

fn pop_request(broker_name: &str, invisible: Duration, poll: Option<Duration>) -> PopRequest {
    PopRequest {
        group: GROUP.into(),
        queue: MessageQueue {
            topic: TOPIC.into(),
            broker_name: broker_name.into(),
            queue_id: 0,
        },
        max_messages: 8,
        invisible,
        poll,
        expression: "*".into(),
        orderly: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_and_invisibility_survive_a_leader_kill() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3, &[])?;
    let leader = cluster.wait_for_registered_leader(TIMEOUT)?;
    cluster.create_routed_topic(TOPIC, 1).await?;
    let producer = Producer::builder()
        .namesrv(cluster.namesrv_addr.to_string())
        .group("pop-kill-producer")
        .build()
        .await?;
    for body in ["m0", "m1", "m2"] {
        producer.send(Message::new(TOPIC, body)).await?;
    }
    let client = BrokerClient::new(RpcClient::default());
    let broker_name = cluster.broker_name.clone();
    let leader_addr = cluster.member(leader)?.remoting().to_string();

    let long = Duration::from_secs(60);
    let popped = client
        .pop(&leader_addr, &pop_request(&broker_name, long, None))
        .await?;
    let bodies: Vec<&[u8]> = popped
        .messages
        .iter()
        .map(|p| p.message.body.as_ref())
        .collect();
    assert_eq!(bodies, vec![&b"m0"[..], b"m1", b"m2"]);
    client.ack(&leader_addr, GROUP, &popped.messages[0]).await?;
    // m2 becomes visible again in 1 s; m1 stays invisible for a minute.
    let mut m2 = popped.messages[2].clone();
    client
        .change_invisible_time(&leader_addr, GROUP, &mut m2, Duration::from_secs(1))
        .await?;

    cluster.kill_member(leader)?;
    let deadline = Instant::now() + TIMEOUT;
    let new_leader = loop {
        let candidate = cluster.wait_for_registered_leader(TIMEOUT)?;
        if candidate != leader {
            break candidate;
        }
        anyhow::ensure!(Instant::now() < deadline, "no new leader after the kill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let new_addr = cluster.member(new_leader)?.remoting().to_string();

    // A new leader may still be applying what the old one committed: retry until it serves.
    let deadline = Instant::now() + TIMEOUT;
    let again = loop {
        match client
            .pop(
                &new_addr,
                &pop_request(&broker_name, long, Some(Duration::from_secs(10))),
            )
            .await
        {
            Ok(result) if !result.messages.is_empty() => break result,
            Ok(_) => {}
            Err(err) => anyhow::ensure!(Instant::now() < deadline, "pop kept failing: {err}"),
        }
        anyhow::ensure!(Instant::now() < deadline, "m2 never came back");
    };
    let returned: Vec<(&[u8], i32)> = again
        .messages
        .iter()
        .map(|p| (p.message.body.as_ref(), p.message.reconsume_times))
        .collect();
    assert_eq!(returned, vec![(&b"m2"[..], 1)]);

    // The killed leader's handle of m1 acks on the new leader; m2 with its new handle.
    client.ack(&new_addr, GROUP, &popped.messages[1]).await?;
    client.ack(&new_addr, GROUP, &again.messages[0]).await?;
    let empty = client
        .pop(
            &new_addr,
            &pop_request(&broker_name, long, Some(Duration::from_millis(1_500))),
        )
        .await?;
    assert!(empty.messages.is_empty(), "{:?}", empty.messages.len());
    producer.shutdown().await;
    Ok(())
}
