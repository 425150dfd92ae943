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

/// A transaction's half message and what becomes of it: invisible in its topic until its
/// producer commits it (then visible once, however often the commit is repeated), never visible
/// once rolled back; left pending, the leader asks a producer of its group about it (with
/// CHECK_TRANSACTION_STATE on the producer's own connection) and applies the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_once_roll_back_to_nothing_and_are_checked_when_left_pending()
-> Result<()> {
    use raftmq_protocol::body::{HeartbeatData, ProducerData};
    use raftmq_protocol::code::request;
    use raftmq_protocol::header::transaction::{
        CheckTransactionStateRequestHeader, EndTransactionRequestHeader,
    };
    use raftmq_protocol::message::{parse_offset_msg_id, sys_flag};
    use raftmq_remoting::InboundRequestHandler;
    use std::sync::{Arc, Mutex};

    const GROUP: &str = "tx-group";
    // Checks come quickly in this test.
    let group = TestGroup::start_with(1, |options| {
        options.transaction_timeout_ms = Some(500);
    })
    .await?;
    let leader = group.member(group.wait_for_leader().await?);

    /// Records the checks the broker sends this "producer".
    #[derive(Default)]
    struct Checks(Mutex<Vec<(CheckTransactionStateRequestHeader, StoredMessage)>>);
    impl InboundRequestHandler for Checks {
        fn on_request(&self, _addr: &str, request: RemotingCommand) -> Option<RemotingCommand> {
            if request.code == request::CHECK_TRANSACTION_STATE {
                let header =
                    CheckTransactionStateRequestHeader::from_ext_fields(&request.ext_fields)
                        .expect("a well-formed check");
                let (message, _) = StoredMessage::decode(&request.body).expect("a message body");
                self.0.lock().unwrap().push((header, message));
            }
            None
        }
    }
    let checks = Arc::new(Checks::default());
    let rpc = RpcClient::with_inbound_handler(Default::default(), checks.clone());
    let heartbeat = HeartbeatData {
        client_id: "tx-producer@1".into(),
        producer_data_set: vec![ProducerData {
            group_name: GROUP.into(),
        }],
        consumer_data_set: Vec::new(),
    };
    let answer = rpc
        .invoke(
            &leader.remoting,
            RemotingCommand::new_request(request::HEART_BEAT).with_body(heartbeat.encode()?),
            RPC_TIMEOUT,
        )
        .await?;
    assert_eq!(answer.code, response::SUCCESS);

    let send_half = |uniq: &str| {
        let mut request = send_request(TOPIC, QUEUE, uniq, uniq.as_bytes());
        request.ext_fields.insert("a".into(), GROUP.into());
        let properties = request.ext_fields.get_mut("i").expect("V2 properties");
        properties.push_str(&format!(
            "TRAN_MSG\u{1}true\u{2}PGROUP\u{1}{GROUP}\u{2}UNIQ_KEY\u{1}{uniq}\u{2}"
        ));
        request
    };
    let end = |half: &SendMessageResponseHeader, decision: i32, from_check: bool| {
        let (_, physical) = parse_offset_msg_id(&half.msg_id).unwrap();
        let header = EndTransactionRequestHeader {
            topic: Some(TOPIC.into()),
            producer_group: GROUP.into(),
            tran_state_table_offset: half.queue_offset,
            commit_log_offset: physical,
            commit_or_rollback: decision,
            from_transaction_check: Some(from_check),
            msg_id: "-".into(),
            transaction_id: None,
            broker_name: None,
        };
        RemotingCommand::new_request(request::END_TRANSACTION).with_header(&header)
    };
    let mut halves = Vec::new();
    for uniq in ["commit-me", "roll-me-back", "ask-me"] {
        let answer = rpc
            .invoke(&leader.remoting, send_half(uniq), RPC_TIMEOUT)
            .await?;
        assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
        let header = SendMessageResponseHeader::from_ext_fields(&answer.ext_fields)?;
        assert_eq!(header.queue_id, QUEUE, "the answer names the real queue");
        halves.push(header);
    }
    // Nothing is visible yet; the real topic exists (created by the first half message).
    assert!(leader.ctx.state.topic(TOPIC).is_some());
    assert_eq!(leader.ctx.state.queue(TOPIC, QUEUE as u32).next_offset, 0);
    assert_eq!(leader.ctx.state.pending_transactions()?, 3);

    // Commit twice (a retried END_TRANSACTION), roll back once.
    let commit = sys_flag::TRANSACTION_COMMIT_TYPE;
    let rollback = sys_flag::TRANSACTION_ROLLBACK_TYPE;
    let first = rpc
        .invoke(
            &leader.remoting,
            end(&halves[0], commit, false),
            RPC_TIMEOUT,
        )
        .await?;
    assert_eq!(first.code, response::SUCCESS, "{:?}", first.remark);
    let again = rpc
        .invoke(
            &leader.remoting,
            end(&halves[0], commit, false),
            RPC_TIMEOUT,
        )
        .await?;
    assert_eq!(
        again.code,
        response::SYSTEM_ERROR,
        "the second commit finds nothing pending"
    );
    let undone = rpc
        .invoke(
            &leader.remoting,
            end(&halves[1], rollback, false),
            RPC_TIMEOUT,
        )
        .await?;
    assert_eq!(undone.code, response::SUCCESS, "{:?}", undone.remark);
    let (_, messages) = pull_all(&rpc, leader, 1).await?;
    assert_eq!(messages.len(), 1);
    let committed = &messages[0];
    assert_eq!(committed.body.as_ref(), b"commit-me");
    assert_eq!(committed.topic, TOPIC);
    assert_eq!(committed.properties.get(property::TRAN_MSG), None);
    assert_eq!(committed.properties[property::UNIQ_KEY], "commit-me");

    // The third is left pending: after the transaction timeout the leader asks this producer.
    let (check, checked_message) = wait_until("a transaction check", || {
        checks.0.lock().unwrap().first().cloned()
    })
    .await?;
    let (_, ask_physical) = parse_offset_msg_id(&halves[2].msg_id)?;
    assert_eq!(check.commit_log_offset, ask_physical);
    assert_eq!(check.msg_id.as_deref(), Some("ask-me"));
    assert_eq!(
        checked_message.topic, TOPIC,
        "the body names the real topic"
    );
    assert_eq!(checked_message.body.as_ref(), b"ask-me");
    assert_eq!(
        leader
            .ctx
            .state
            .pending_half(ask_physical as u64)?
            .map(|h| h.checks),
        Some(1)
    );
    let answer = rpc
        .invoke(&leader.remoting, end(&halves[2], commit, true), RPC_TIMEOUT)
        .await?;
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    let (_, messages) = pull_all(&rpc, leader, 2).await?;
    let bodies: Vec<&[u8]> = messages.iter().map(|m| m.body.as_ref()).collect();
    assert_eq!(bodies, vec![b"commit-me".as_slice(), b"ask-me".as_slice()]);
    assert_eq!(leader.ctx.state.pending_transactions()?, 0);
    rpc.shutdown().await;
    group.shutdown().await
}

/// The idempotent producer, query by key and SQL92 filters through the remoting requests: a send
/// retried with the same UNIQ_KEY is answered with the first copy's queue and offset and stored
/// once; QUERY_MESSAGE finds messages by key and by unique key; a pull with an SQL92
/// subscription returns only the messages whose properties match, and a bad expression is
/// refused at CHECK_CLIENT_CONFIG and at the pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_sends_are_stored_once_keys_are_queried_and_sql92_filters_pulls() -> Result<()> {
    use raftmq_protocol::body::{CheckClientRequestBody, SubscriptionData};
    use raftmq_protocol::code::request;
    use raftmq_protocol::header::transaction::QueryMessageRequestHeader;

    let group = TestGroup::start(1).await?;
    let leader = group.member(group.wait_for_leader().await?);
    let rpc = RpcClient::default();
    let send_with = |queue: i32, uniq: &str, level: u32| {
        let mut request = send_request(TOPIC, queue, &format!("order-{level}"), uniq.as_bytes());
        let properties = request.ext_fields.get_mut("i").expect("V2 properties");
        properties.push_str(&format!("UNIQ_KEY\u{1}{uniq}\u{2}level\u{1}{level}\u{2}"));
        request
    };
    let mut answers = Vec::new();
    for level in 1..=5u32 {
        let uniq = format!("U{level}");
        let answer = rpc
            .invoke(
                &leader.remoting,
                send_with(QUEUE, &uniq, level),
                RPC_TIMEOUT,
            )
            .await?;
        assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
        answers.push(SendMessageResponseHeader::from_ext_fields(
            &answer.ext_fields,
        )?);
    }
    // A retry of U3 (its first answer was "lost"), even to another queue: the first copy.
    let retry = rpc
        .invoke(&leader.remoting, send_with(QUEUE + 1, "U3", 3), RPC_TIMEOUT)
        .await?;
    assert_eq!(retry.code, response::SUCCESS, "{:?}", retry.remark);
    let retry = SendMessageResponseHeader::from_ext_fields(&retry.ext_fields)?;
    assert_eq!(retry, answers[2], "the same queue, offset and message id");
    assert_eq!(leader.ctx.state.queue(TOPIC, QUEUE as u32).next_offset, 5);
    assert_eq!(
        leader.ctx.state.queue(TOPIC, QUEUE as u32 + 1).next_offset,
        0
    );

    // Query by key and by unique key.
    let query = |key: &str, unique: bool| {
        RemotingCommand::new_request(request::QUERY_MESSAGE).with_header(
            &QueryMessageRequestHeader {
                topic: TOPIC.into(),
                key: key.into(),
                max_num: 32,
                begin_timestamp: 0,
                end_timestamp: i64::MAX,
                unique_key_query: Some(unique),
                broker_name: None,
            },
        )
    };
    let found = rpc
        .invoke(&leader.remoting, query("order-4", false), RPC_TIMEOUT)
        .await?;
    assert_eq!(found.code, response::SUCCESS, "{:?}", found.remark);
    let messages = decode_stored(&found.body)?;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body.as_ref(), b"U4");
    assert_eq!(messages[0].queue_offset, 3);
    let found = rpc
        .invoke(&leader.remoting, query("U2", true), RPC_TIMEOUT)
        .await?;
    assert_eq!(decode_stored(&found.body)?[0].body.as_ref(), b"U2");
    let missing = rpc
        .invoke(&leader.remoting, query("order-9", false), RPC_TIMEOUT)
        .await?;
    assert_eq!(missing.code, response::QUERY_NOT_FOUND);

    // SQL92: only the messages whose `level` property matches.
    let sql_pull = |expression: &str| {
        let mut pull = pull_request(TOPIC, QUEUE, 0, 32);
        pull.ext_fields
            .insert("subscription".into(), expression.into());
        pull.ext_fields
            .insert("expressionType".into(), "SQL92".into());
        pull
    };
    let pulled = rpc
        .invoke(
            &leader.remoting,
            sql_pull("level > 2 AND level <> 4"),
            RPC_TIMEOUT,
        )
        .await?;
    assert_eq!(pulled.code, response::SUCCESS, "{:?}", pulled.remark);
    let bodies: Vec<Vec<u8>> = decode_stored(&pulled.body)?
        .into_iter()
        .map(|m| m.body.to_vec())
        .collect();
    assert_eq!(bodies, vec![b"U3".to_vec(), b"U5".to_vec()]);
    let bad = rpc
        .invoke(&leader.remoting, sql_pull("level >"), RPC_TIMEOUT)
        .await?;
    assert_eq!(bad.code, response::SUBSCRIPTION_PARSE_FAILED);
    let check = |expression: &str| -> Result<RemotingCommand> {
        let body = CheckClientRequestBody {
            client_id: "c".into(),
            group: "g".into(),
            subscription_data: SubscriptionData {
                topic: TOPIC.into(),
                sub_string: expression.into(),
                expression_type: "SQL92".into(),
                ..SubscriptionData::default()
            },
        };
        Ok(RemotingCommand::new_request(request::CHECK_CLIENT_CONFIG).with_body(body.encode()?))
    };
    let refused = rpc
        .invoke(&leader.remoting, check("level LIKE 'x'")?, RPC_TIMEOUT)
        .await?;
    assert_eq!(refused.code, response::SUBSCRIPTION_PARSE_FAILED);
    assert!(
        remark_of(&refused)?.contains("not supported"),
        "{:?}",
        refused.remark
    );
    let accepted = rpc
        .invoke(&leader.remoting, check("level IN (1, 2)")?, RPC_TIMEOUT)
        .await?;
    assert_eq!(accepted.code, response::SUCCESS);
    rpc.shutdown().await;
    group.shutdown().await
}

/// A committed consumer offset is read from the leader, and only once it has applied what was
/// committed before its election; a follower (whose applied state may be behind) refuses the
/// read with SERVICE_NOT_AVAILABLE, so a committed offset never appears to go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_are_read_from_a_caught_up_leader_only() -> Result<()> {
    use raftmq_protocol::code::request;
    use raftmq_protocol::header::offset::{
        QueryConsumerOffsetRequestHeader, QueryConsumerOffsetResponseHeader,
        UpdateConsumerOffsetRequestHeader,
    };
    let group = TestGroup::start(3).await?;
    let leader_id = group.wait_for_leader().await?;
    let rpc = RpcClient::default();
    let accepted = send(&rpc, group.member(leader_id), "k", b"creates the topic").await?;
    assert_eq!(accepted.code, response::SUCCESS, "{:?}", accepted.remark);

    let mut commit = RemotingCommand::new_request(request::UPDATE_CONSUMER_OFFSET);
    commit.ext_fields = UpdateConsumerOffsetRequestHeader {
        consumer_group: "offsets-group".into(),
        topic: TOPIC.into(),
        queue_id: QUEUE,
        commit_offset: 1,
        broker_name: None,
    }
    .to_ext_fields();
    let committed = rpc
        .invoke(&group.member(leader_id).remoting, commit, RPC_TIMEOUT)
        .await?;
    assert_eq!(committed.code, response::SUCCESS, "{:?}", committed.remark);

    let query = || {
        let mut command = RemotingCommand::new_request(request::QUERY_CONSUMER_OFFSET);
        command.ext_fields = QueryConsumerOffsetRequestHeader {
            consumer_group: "offsets-group".into(),
            topic: TOPIC.into(),
            queue_id: QUEUE,
            set_zero_if_not_found: None,
            broker_name: None,
        }
        .to_ext_fields();
        command
    };
    let from_leader = rpc
        .invoke(&group.member(leader_id).remoting, query(), RPC_TIMEOUT)
        .await?;
    assert_eq!(
        from_leader.code,
        response::SUCCESS,
        "{:?}",
        from_leader.remark
    );
    let offset = QueryConsumerOffsetResponseHeader::from_ext_fields(&from_leader.ext_fields)?;
    assert_eq!(offset.offset, 1);
    for (follower_id, follower) in group.others(leader_id) {
        let refused = rpc.invoke(&follower.remoting, query(), RPC_TIMEOUT).await?;
        assert_eq!(
            refused.code,
            response::SERVICE_NOT_AVAILABLE,
            "follower {follower_id}: {:?}",
            refused.remark
        );
    }
    rpc.shutdown().await;
    group.shutdown().await
}
