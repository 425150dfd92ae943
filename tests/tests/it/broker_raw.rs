//! A three-member broker group driven with raw remoting frames: sends are acknowledged with
//! consecutive queue offsets, every member serves the same messages in the same order, a write
//! to a follower is refused (and never applied), and bad input gets a clear answer while the
//! broker stays up and nothing stored changes.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use raftmq_protocol::code::{request, response};
use raftmq_protocol::header::offset::{GetMaxOffsetRequestHeader, OffsetResponseHeader};
use raftmq_protocol::header::pull::{
    PullMessageRequestHeader, PullMessageResponseHeader, pull_sys_flag,
};
use raftmq_protocol::header::send::{
    SendMessageRequestHeader, SendMessageRequestHeaderV2, SendMessageResponseHeader,
};
use raftmq_protocol::message::decode_stored;
use raftmq_protocol::{ExtHeader, RemotingCommand};
use raftmq_remoting::rpc_client::RpcClient;
use raftmq_tests::cluster::TestCluster;

const TIMEOUT: Duration = Duration::from_secs(10);
const TOPIC: &str = "RawTopic";

fn send_request(queue_id: i32, body: &str) -> RemotingCommand {
    let header: SendMessageRequestHeaderV2 = SendMessageRequestHeader {
        producer_group: "raw-producer".into(),
        topic: TOPIC.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 8,
        queue_id,
        sys_flag: 0,
        born_timestamp: 1_700_000_000_000,
        flag: 0,
        properties: Some(format!("KEYS\u{1}k-{body}\u{2}TAGS\u{1}raw\u{2}")),
        reconsume_times: Some(0),
        unit_mode: Some(false),
        batch: Some(false),
        max_reconsume_times: None,
        broker_name: None,
    }
    .into();
    let mut command = RemotingCommand::new_request(request::SEND_MESSAGE_V2);
    command.ext_fields = header.to_ext_fields();
    command.body = Bytes::from(body.to_string());
    command
}

fn pull_request(queue_id: i32, offset: i64, max: i32) -> RemotingCommand {
    let header = PullMessageRequestHeader {
        consumer_group: "raw-consumer".into(),
        topic: TOPIC.into(),
        queue_id,
        queue_offset: offset,
        max_msg_nums: max,
        sys_flag: pull_sys_flag::SUBSCRIPTION,
        commit_offset: 0,
        suspend_timeout_millis: 0,
        subscription: Some("*".into()),
        sub_version: 0,
        expression_type: Some("TAG".into()),
        max_msg_bytes: None,
        broker_name: None,
    };
    let mut command = RemotingCommand::new_request(request::PULL_MESSAGE);
    command.ext_fields = header.to_ext_fields();
    command
}

/// Reads a whole queue from one member: the bodies in offset order.
async fn read_queue(
    rpc: &RpcClient,
    addr: &str,
    queue_id: i32,
) -> anyhow::Result<Vec<(i64, String)>> {
    let mut offset = 0;
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let answer = rpc
            .invoke(addr, pull_request(queue_id, offset, 64), TIMEOUT)
            .await?;
        if answer.code == response::PULL_NOT_FOUND {
            return Ok(seen);
        }
        anyhow::ensure!(
            answer.code == response::SUCCESS,
            "pull answered {} {:?}",
            answer.code,
            answer.remark
        );
        let header = PullMessageResponseHeader::from_ext_fields(&answer.ext_fields)?;
        for message in decode_stored(&answer.body)? {
            anyhow::ensure!(
                message.queue_offset == offset,
                "expected offset {offset}, got {}",
                message.queue_offset
            );
            seen.push((
                message.queue_offset,
                String::from_utf8_lossy(&message.body).into_owned(),
            ));
            offset += 1;
        }
        anyhow::ensure!(
            header.next_begin_offset == offset,
            "next begin offset {} != {offset}",
            header.next_begin_offset
        );
    }
    anyhow::bail!("queue never ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_replicated_and_readable_in_order_on_every_member() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3, &[])?;
    let leader = cluster.wait_for_registered_leader(TIMEOUT)?;
    let leader_addr = cluster.member(leader)?.remoting().to_string();
    let rpc = RpcClient::default();

    // 200 sends over 4 queues, 16 at a time: each acknowledged with its queue offset.
    let mut acked: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for round in 0..(200 / 16 + 1) {
        let sends = (0..16)
            .map(|i| round * 16 + i)
            .filter(|n| *n < 200)
            .map(|n| {
                let rpc = rpc.clone();
                let addr = leader_addr.clone();
                async move {
                    let queue = n % 4;
                    let body = format!("m{n}");
                    let answer = rpc
                        .invoke(&addr, send_request(queue, &body), TIMEOUT)
                        .await?;
                    anyhow::ensure!(
                        answer.code == response::SUCCESS,
                        "send answered {} {:?}",
                        answer.code,
                        answer.remark
                    );
                    let header = SendMessageResponseHeader::from_ext_fields(&answer.ext_fields)?;
                    anyhow::ensure!(header.queue_id == queue);
                    anyhow::Ok((queue, header.queue_offset, body))
                }
            });
        for result in futures::future::join_all(sends).await {
            let (queue, offset, body) = result?;
            acked.entry(queue).or_default().push((offset, body));
        }
    }
    for entries in acked.values_mut() {
        entries.sort();
        let offsets: Vec<i64> = entries.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "offsets are consecutive from 0"
        );
    }

    // Every member, leader and followers, serves exactly what was acknowledged.
    let status = cluster.raft_status(leader)?;
    cluster.wait_for_applied(status.applied_index.unwrap_or(0), TIMEOUT)?;
    for member in &cluster.members {
        let addr = member.remoting().to_string();
        for (queue, expected) in &acked {
            let read = read_queue(&rpc, &addr, *queue).await?;
            assert_eq!(&read, expected, "member {} queue {queue}", member.node_id);
        }
    }

    // A write to a follower is refused before anything is proposed, and never applied.
    let follower = cluster
        .members
        .iter()
        .find(|m| m.node_id != leader)
        .unwrap();
    let answer = rpc
        .invoke(
            &follower.remoting().to_string(),
            send_request(0, "refused"),
            TIMEOUT,
        )
        .await?;
    assert_eq!(
        answer.code,
        response::SERVICE_NOT_AVAILABLE,
        "{:?}",
        answer.remark
    );
    let read = read_queue(&rpc, &leader_addr, 0).await?;
    assert!(!read.iter().any(|(_, body)| body == "refused"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3, &[])?;
    let leader = cluster.wait_for_registered_leader(TIMEOUT)?;
    let addr = cluster.member(leader)?.remoting().to_string();
    let rpc = RpcClient::default();
    let answer = rpc.invoke(&addr, send_request(0, "first"), TIMEOUT).await?;
    assert_eq!(answer.code, response::SUCCESS);

    // An unknown request code.
    let answer = rpc
        .invoke(&addr, RemotingCommand::new_request(9999), TIMEOUT)
        .await?;
    assert_eq!(answer.code, response::REQUEST_CODE_NOT_SUPPORTED);
    // A send with its header missing.
    let answer = rpc
        .invoke(
            &addr,
            RemotingCommand::new_request(request::SEND_MESSAGE_V2),
            TIMEOUT,
        )
        .await?;
    assert_eq!(answer.code, response::INVALID_PARAMETER);
    assert!(answer.remark.unwrap_or_default().contains("missing"));
    // A queue the topic does not have.
    let answer = rpc
        .invoke(&addr, send_request(99, "bad-queue"), TIMEOUT)
        .await?;
    assert_eq!(answer.code, response::MESSAGE_ILLEGAL);
    // A body over the 4 MiB message limit.
    let mut oversized = send_request(0, "");
    oversized.body = Bytes::from(vec![b'x'; (4 << 20) + 1]);
    let answer = rpc.invoke(&addr, oversized, TIMEOUT).await?;
    assert_eq!(answer.code, response::MESSAGE_ILLEGAL);
    // A batch send whose body is not a batch.
    let mut bad_batch = send_request(0, "not a batch");
    bad_batch.code = request::SEND_BATCH_MESSAGE;
    let answer = rpc.invoke(&addr, bad_batch, TIMEOUT).await?;
    assert_eq!(answer.code, response::MESSAGE_ILLEGAL);

    // Nothing of that was stored: queue 0 still holds one message.
    let mut max = RemotingCommand::new_request(request::GET_MAX_OFFSET);
    max.ext_fields = GetMaxOffsetRequestHeader {
        topic: TOPIC.into(),
        queue_id: 0,
        committed: None,
        broker_name: None,
    }
    .to_ext_fields();
    let answer = rpc.invoke(&addr, max, TIMEOUT).await?;
    assert_eq!(answer.code, response::SUCCESS);
    assert_eq!(
        OffsetResponseHeader::from_ext_fields(&answer.ext_fields)?.offset,
        1
    );
    // And the broker still serves.
    let answer = rpc
        .invoke(&addr, send_request(0, "second"), TIMEOUT)
        .await?;
    assert_eq!(answer.code, response::SUCCESS);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_one_takes_writes() -> anyhow::Result<()> {
    let cluster = TestCluster::start(1, &[])?;
    let leader = cluster.wait_for_registered_leader(TIMEOUT)?;
    let addr = cluster.member(leader)?.remoting().to_string();
    let rpc = RpcClient::default();
    for i in 0..3 {
        let answer = rpc
            .invoke(&addr, send_request(0, &format!("solo-{i}")), TIMEOUT)
            .await?;
        assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
        let header = SendMessageResponseHeader::from_ext_fields(&answer.ext_fields)?;
        assert_eq!(header.queue_offset, i);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_quorum_refuses_writes_instead_of_hanging() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3, &[])?;
    let leader = cluster.wait_for_registered_leader(TIMEOUT)?;
    let addr = cluster.member(leader)?.remoting().to_string();
    let rpc = RpcClient::default();
    let answer = rpc
        .invoke(&addr, send_request(0, "with-quorum"), TIMEOUT)
        .await?;
    assert_eq!(answer.code, response::SUCCESS);

    // Freeze both followers: the leader can no longer reach a quorum.
    let followers: Vec<u32> = cluster
        .members
        .iter()
        .filter(|m| m.node_id != leader)
        .filter_map(|m| m.process.as_ref().map(|p| p.pid()))
        .collect();
    let signal = |name: &str| -> anyhow::Result<()> {
        for pid in &followers {
            std::process::Command::new("kill")
                .args([name, &pid.to_string()])
                .status()?;
        }
        Ok(())
    };
    signal("-STOP")?;
    // Within a few election timeouts the leader answers "not the leader" (a definite refusal:
    // nothing proposed) rather than leaving sends to time out.
    let mut refused = None;
    for attempt in 0..40 {
        let answer = rpc
            .invoke(
                &addr,
                send_request(0, &format!("no-quorum-{attempt}")),
                Duration::from_secs(3),
            )
            .await;
        if let Ok(answer) = answer
            && answer.code == response::SERVICE_NOT_AVAILABLE
        {
            refused = Some(attempt);
            break;
        }
    }
    signal("-CONT")?;
    assert!(refused.is_some(), "the cut-off leader kept taking writes");
    Ok(())
}
