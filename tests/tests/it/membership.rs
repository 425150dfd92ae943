//! Membership changes under load: while producers send continuously, a fourth member joins
//! (`mqbroker --join`, then `mq cluster add-member`: learner, then voter), an old member is
//! removed (`mq cluster remove-member`, leadership moved away first if it led), and afterwards
//! every acknowledged message is read back at its queue offset, from the leader and from the
//! new member; the NameServer's view follows (the removed member leaves, the new one is there).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftmq_client::{BrokerClient, Message, MessageQueue, Producer, PullRequest, PullStatus};
use raftmq_tests::script_cluster::{ScriptCluster, is_alive, signal};
use raftmq_tests::{Process, wait_until, workspace_binary};
use serde_json::Value;

/// Concurrent senders (each sends one message at a time).
const SENDERS: usize = 4;
/// Bound on the whole load, in messages and in time.
const MAX_MESSAGES: usize = 20_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(45);
/// Acknowledged messages wanted before the change starts, and after it ends.
const ACKS_BEFORE: usize = 100;
const ACKS_AFTER: usize = 100;
/// Bound on waiting for acknowledgements, a member starting, views converging.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Queues of the test topic.
const QUEUES: i32 = 4;
/// Messages per pull while reading everything back.
const READ_BATCH: i32 = 256;
const TOPIC: &str = "MembershipLoad";

/// What the producers got acknowledged: `(queue id, offset) -> body`.
type Acked = Arc<Mutex<BTreeMap<(i32, i64), String>>>;

fn acked_count(acked: &Acked) -> usize {
    acked.lock().unwrap_or_else(|p| p.into_inner()).len()
}

fn group_status(cluster: &ScriptCluster) -> anyhow::Result<Value> {
    let status = cluster.mq_json(&["cluster", "status", "-b", "broker-a"])?;
    Ok(status["groups"][0].clone())
}

/// Every message of every queue of the topic, read from `addr`: `(queue, offset) -> body`.
async fn read_all(
    broker: &BrokerClient,
    addr: &str,
) -> anyhow::Result<BTreeMap<(i32, i64), String>> {
    let mut stored = BTreeMap::new();
    for queue_id in 0..QUEUES {
        let queue = MessageQueue {
            topic: TOPIC.to_owned(),
            broker_name: "broker-a".to_owned(),
            queue_id,
        };
        let max = broker.max_offset(addr, &queue).await?;
        let mut offset = broker.min_offset(addr, &queue).await?;
        // Each round reads at least one message or stops: bounded by the queue's length.
        for _ in 0..=max {
            if offset >= max {
                break;
            }
            let pulled = broker
                .pull(
                    addr,
                    &PullRequest::new("membership_check", queue.clone(), offset, READ_BATCH),
                )
                .await?;
            if pulled.status != PullStatus::Found || pulled.messages.is_empty() {
                anyhow::bail!(
                    "{addr} returned {:?} at {queue_id}:{offset} (max {max})",
                    pulled.status
                );
            }
            for message in pulled.messages {
                stored.insert(
                    (queue_id, message.queue_offset),
                    String::from_utf8_lossy(&message.body).into_owned(),
                );
            }
            offset = pulled.next_begin_offset;
        }
    }
    Ok(stored)
}

#[test]
fn membership_change_under_load_loses_no_acknowledged_message() {
    let cluster = ScriptCluster::up(1).unwrap();
    let created = cluster
        .mq_json(&[
            "topic",
            "create",
            "-t",
            TOPIC,
            "--queues",
            &QUEUES.to_string(),
        ])
        .unwrap();
    assert_eq!(created["queues"], QUEUES);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let producer = runtime
        .block_on(Producer::builder().namesrv(cluster.namesrv_addr()).build())
        .unwrap();
    let acked: Acked = Arc::default();
    let unknown = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let producer = producer.clone();
            let acked = acked.clone();
            let unknown = unknown.clone();
            let stop = stop.clone();
            runtime.spawn(async move {
                for seq in 0..MAX_MESSAGES / SENDERS {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_LOAD_TIME {
                        return;
                    }
                    let body = format!("load-{sender}-{seq}");
                    match producer.send(Message::new(TOPIC, body.clone())).await {
                        Ok(sent) => {
                            acked
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert((sent.queue.queue_id, sent.queue_offset), body);
                        }
                        // Not acknowledged: allowed to be lost (or stored) during the change.
                        Err(_) => *unknown.lock().unwrap_or_else(|p| p.into_inner()) += 1,
                    }
                }
            })
        })
        .collect();
    wait_until(WAIT_TIMEOUT, || Ok(acked_count(&acked) >= ACKS_BEFORE)).unwrap();

    // A fourth member, started to join later, with its own ports.
    let host = cluster.host;
    let joiner_addr = format!("{host}:10941");
    let mqbroker = workspace_binary("raftmq-server", "mqbroker").unwrap();
    let data_dir = cluster.path().join("data/broker-a-4");
    let namesrv = cluster.namesrv_addr();
    let raft_addr = format!("{host}:10942");
    let admin_addr = format!("{host}:10943");
    let mut joiner = Process::spawn(
        &mqbroker,
        &[
            "-n",
            &namesrv,
            "--broker-name",
            "broker-a",
            "--node-id",
            "4",
            "--join",
            "--listen",
            &joiner_addr,
            "--raft-listen",
            &raft_addr,
            "--admin-listen",
            &admin_addr,
            // No gRPC client in this test: any free port.
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
    )
    .unwrap();
    joiner
        .wait_for_stdout_line(|line| line.starts_with("mqbroker listening"), WAIT_TIMEOUT)
        .unwrap();
    // `cluster.sh down` stops it too.
    std::fs::write(
        cluster.pid_dir().join("mqbroker-broker-a-4.pid"),
        joiner.pid().to_string(),
    )
    .unwrap();

    let added = cluster
        .mq_json(&[
            "cluster",
            "add-member",
            "-b",
            "broker-a",
            "--addr",
            &joiner_addr,
        ])
        .unwrap();
    assert_eq!(added["node_id"], 4);
    assert_eq!(added["voters"], serde_json::json!([1, 2, 3, 4]));
    let acked_at_add = acked_count(&acked);

    let removed = cluster
        .mq_json(&[
            "cluster",
            "remove-member",
            "-b",
            "broker-a",
            "--node-id",
            "1",
        ])
        .unwrap();
    assert_eq!(removed["voters"], serde_json::json!([2, 3, 4]));
    assert_ne!(removed["leader"], 1);
    let removed_addr = cluster.member_addr(0, 1);
    assert_eq!(removed["unregistered"], serde_json::json!([removed_addr]));

    // The NameServer's view follows: node 1 is gone from the routes, node 4 is listed, and a
    // voter leads in slot 0.
    let mut last = Value::Null;
    wait_until(WAIT_TIMEOUT, || {
        let group = group_status(&cluster)?;
        let listed: Vec<String> = group["namesrv_members"]
            .as_object()
            .map(|slots| {
                slots
                    .values()
                    .filter_map(|addr| addr.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let done = !listed.contains(&removed_addr)
            && listed.contains(&joiner_addr)
            && group["leader_registered"] == true
            && group["voters"] == serde_json::json!([2, 3, 4]);
        last = group;
        Ok(done)
    })
    .unwrap_or_else(|err| panic!("{err}; last status {last}"));
    // The operator then stops the removed member.
    signal(cluster.member_pid("broker-a", 1).unwrap(), "-TERM").unwrap();

    // Load goes on after the change, then stops.
    let target = acked_count(&acked) + ACKS_AFTER;
    wait_until(WAIT_TIMEOUT, || Ok(acked_count(&acked) >= target)).unwrap();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        runtime.block_on(sender).unwrap();
    }
    runtime.block_on(producer.shutdown());
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > acked_at_add,
        "no send was acknowledged during the change"
    );

    // Every acknowledged message is at its offset, on the leader and on the new member.
    let group = group_status(&cluster).unwrap();
    let leader_addr = group["namesrv_leader_addr"].as_str().unwrap().to_owned();
    let leader_log = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member["state"] == "Leader")
        .and_then(|member| member["last_log_index"].as_u64())
        .unwrap();
    wait_until(WAIT_TIMEOUT, || {
        let group = group_status(&cluster)?;
        Ok(group["members"].as_array().is_some_and(|members| {
            members.iter().any(|member| {
                member["node_id"] == 4
                    && member["applied_index"]
                        .as_u64()
                        .is_some_and(|i| i >= leader_log)
            })
        }))
    })
    .unwrap();
    let broker = BrokerClient::new(Default::default());
    for addr in [leader_addr.as_str(), joiner_addr.as_str()] {
        let stored = runtime.block_on(read_all(&broker, addr)).unwrap();
        for (position, body) in &acked {
            assert_eq!(
                stored.get(position),
                Some(body),
                "acknowledged {body} at {position:?} is not there on {addr}"
            );
        }
        assert!(stored.len() >= acked.len());
    }

    // The removed member stopped; every process goes with `down`.
    let removed_pid = cluster.member_pid("broker-a", 1).unwrap();
    wait_until(WAIT_TIMEOUT, || Ok(!is_alive(removed_pid))).unwrap();
    drop(cluster);
    let status = joiner.try_status().unwrap();
    assert!(
        status.is_some(),
        "the joined member survived cluster.sh down"
    );
}
