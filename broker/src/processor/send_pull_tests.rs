//! The send and pull processors against a real three-member group in this process
//! ([`crate::testing`]): a send is answered once committed, and the leader and a follower serve
//! it back byte for byte; a follower refuses a send with SERVICE_NOT_AVAILABLE and stores
//! nothing.

use anyhow::{Result, ensure};
use raftmq_protocol::code::response;
use raftmq_protocol::header::pull::PullMessageResponseHeader;
use raftmq_protocol::header::send::SendMessageResponseHeader;
use raftmq_protocol::message::{StoredMessage, decode_stored, property};
use raftmq_protocol::{ExtHeader, RemotingCommand};
use raftmq_remoting::rpc_client::RpcClient;

use crate::testing::{
    RPC_TIMEOUT, TestGroup, TestMember, pull_request, remark_of, send_request, wait_until,
};

const TOPIC: &str = "InProcessTopic";
const QUEUE: i32 = 1;

/// Pulls `count` messages of `QUEUE` from offset 0 off `member`, once it has applied them:
/// the raw body (stored messages, as the consumer gets them) and the decoded messages.
async fn pull_all(
    rpc: &RpcClient,
    member: &TestMember,
    count: u64,
) -> Result<(bytes::Bytes, Vec<StoredMessage>)> {
    wait_until("the member applying every send", || {
        (member.ctx.state.queue(TOPIC, QUEUE as u32).next_offset >= count).then_some(())
    })
    .await?;
    let answer = rpc
        .invoke(
            &member.remoting,
            pull_request(TOPIC, QUEUE, 0, 32),
            RPC_TIMEOUT,
        )
        .await?;
    ensure!(
        answer.code == response::SUCCESS,
        "pull answered {} {:?}",
        answer.code,
        answer.remark
    );
    let header = PullMessageResponseHeader::from_ext_fields(&answer.ext_fields)?;
    ensure!(header.next_begin_offset == count as i64);
    let messages = decode_stored(&answer.body)?;
    Ok((answer.body, messages))
}

async fn send(
    rpc: &RpcClient,
    member: &TestMember,
    key: &str,
    body: &[u8],
) -> Result<RemotingCommand> {
    Ok(rpc
        .invoke(
            &member.remoting,
            send_request(TOPIC, QUEUE, key, body),
            RPC_TIMEOUT,
        )
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_send_is_pulled_back_identical_from_the_leader_and_a_follower() -> Result<()> {
    let group = TestGroup::start(3).await?;
    let leader_id = group.wait_for_leader().await?;
    let leader = group.member(leader_id);
    let rpc = RpcClient::default();

    let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
    let mut acknowledged = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let answer = send(&rpc, leader, &format!("k{i}"), body).await?;
        ensure!(
            answer.code == response::SUCCESS,
            "send answered {} {:?}",
            answer.code,
            answer.remark
        );
        let header = SendMessageResponseHeader::from_ext_fields(&answer.ext_fields)?;
        assert_eq!(header.queue_id, QUEUE);
        assert_eq!(header.queue_offset, i as i64, "consecutive queue offsets");
        acknowledged.push(header.msg_id);
    }
    // Acknowledged means committed: the leader has applied all of them already.
    assert_eq!(leader.ctx.state.queue(TOPIC, QUEUE as u32).next_offset, 5);

    let (leader_body, messages) = pull_all(&rpc, leader, 5).await?;
    assert_eq!(messages.len(), 5);
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(message.topic, TOPIC);
        assert_eq!(message.queue_id, QUEUE);
        assert_eq!(message.queue_offset, i as i64);
        assert_eq!(message.body.as_ref(), bodies[i].as_slice());
        assert_eq!(message.properties[property::KEYS], format!("k{i}"));
        assert_eq!(message.properties[property::TAGS], "test");
        assert_eq!(
            message.offset_msg_id(),
            acknowledged[i],
            "msgId of message {i}"
        );
    }
    for (follower_id, follower) in group.others(leader_id) {
        let (follower_body, _) = pull_all(&rpc, follower, 5).await?;
        assert_eq!(
            follower_body, leader_body,
            "follower {follower_id} serves the same bytes as the leader"
        );
    }
    rpc.shutdown().await;
    group.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_a_send_and_stores_nothing() -> Result<()> {
    let group = TestGroup::start(3).await?;
    let leader_id = group.wait_for_leader().await?;
    let rpc = RpcClient::default();
    let (follower_id, follower) = group
        .others(leader_id)
        .next()
        .ok_or_else(|| anyhow::anyhow!("a group of three has followers"))?;

    let refused = send(&rpc, follower, "refused", b"to a follower").await?;
    assert_eq!(refused.code, response::SERVICE_NOT_AVAILABLE);
    let remark = remark_of(&refused)?;
    assert!(
        remark.contains(&format!("member {follower_id} is not the leader"))
            && remark.contains(&format!("(leader: node {leader_id})")),
        "{remark}"
    );

    // A send to the leader afterwards: once every member has applied it, it is the only
    // message in the queue, everywhere.
    let accepted = send(&rpc, group.member(leader_id), "accepted", b"to the leader").await?;
    assert_eq!(accepted.code, response::SUCCESS, "{:?}", accepted.remark);
    for id in [leader_id, follower_id] {
        let (_, messages) = pull_all(&rpc, group.member(id), 1).await?;
        let bodies: Vec<&[u8]> = messages.iter().map(|m| m.body.as_ref()).collect();
        assert_eq!(bodies, vec![b"to the leader".as_slice()], "member {id}");
        assert_eq!(
            group
                .member(id)
                .ctx
                .state
                .queue(TOPIC, QUEUE as u32)
                .next_offset,
            1
        );
    }
    rpc.shutdown().await;
    group.shutdown().await
}

/// A transaction's half message must never become visible as a plain message: until the broker
/// keeps half messages apart, such a send is refused with a clear error and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_half_message_is_refused_and_never_stored() -> Result<()> {
    let group = TestGroup::start(1).await?;
    let leader = group.member(group.wait_for_leader().await?);
    let rpc = RpcClient::default();

    let by_property = {
        let mut request = send_request(TOPIC, QUEUE, "half", b"rolled back later");
        let properties = request.ext_fields.get_mut("i").expect("V2 properties");
        properties.push_str("TRAN_MSG\u{1}true\u{2}PGROUP\u{1}tx-group\u{2}");
        request
    };
    let by_sys_flag = {
        let mut request = send_request(TOPIC, QUEUE, "half", b"rolled back later");
        request.ext_fields.insert(
            "f".into(),
            raftmq_protocol::message::sys_flag::TRANSACTION_PREPARED_TYPE.to_string(),
        );
        request
    };
    for (what, request) in [("TRAN_MSG", by_property), ("sys flag", by_sys_flag)] {
        let answer = rpc.invoke(&leader.remoting, request, RPC_TIMEOUT).await?;
        assert_eq!(answer.code, response::NO_PERMISSION, "{what}");
        let remark = remark_of(&answer)?;
        assert!(remark.contains("transactional"), "{what}: {remark}");
    }
    assert_eq!(leader.ctx.state.queue(TOPIC, QUEUE as u32).next_offset, 0);
    assert!(leader.ctx.state.topic(TOPIC).is_none(), "nothing created");

    // A plain send still works.
    let plain = send(&rpc, leader, "plain", b"plain").await?;
    assert_eq!(plain.code, response::SUCCESS, "{:?}", plain.remark);
    rpc.shutdown().await;
    group.shutdown().await
}
