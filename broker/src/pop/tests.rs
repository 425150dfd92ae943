//! POP through the remoting processors on a real in-process broker group: acks that stay
//! final across a leader change, redelivery by a new leader after the invisible time, handles
//! of the old leader that still ack, dead-lettering by the leader task, and bad input.

use std::time::Duration;

use anyhow::{Result, ensure};
use raftmq_protocol::code::{request, response};
use raftmq_protocol::header::pop::{
    AckMessageRequestHeader, ChangeInvisibleTimeRequestHeader, ChangeInvisibleTimeResponseHeader,
    NotificationRequestHeader, NotificationResponseHeader, PopMessageRequestHeader,
    PopMessageResponseHeader,
};
use raftmq_protocol::message::{StoredMessage, decode_stored};
use raftmq_protocol::names::dlq_topic;
use raftmq_protocol::{ExtHeader, RemotingCommand};
use raftmq_remoting::rpc_client::RpcClient;

use crate::command::Command;
use crate::testing::{RPC_TIMEOUT, TestGroup, TestMember, send_request, wait_until};
use crate::topic::GroupConfig;

const TOPIC: &str = "PopTopic";
const GROUP: &str = "pop-consumers";

fn pop_request(queue_id: i32, max: i32, invisible_ms: i64, poll_ms: i64) -> RemotingCommand {
    let mut command = RemotingCommand::new_request(request::POP_MESSAGE);
    command.ext_fields = PopMessageRequestHeader {
        consumer_group: GROUP.into(),
        topic: TOPIC.into(),
        queue_id,
        max_msg_nums: max,
        invisible_time: invisible_ms,
        poll_time: poll_ms,
        born_time: 0,
        init_mode: 0,
        exp_type: Some("TAG".into()),
        exp: Some("*".into()),
        order: Some(false),
        attempt_id: None,
    }
    .to_ext_fields();
    command
}

/// A popped message with the `extraInfo` a RocketMQ client builds from the pop answer.
struct Received {
    message: StoredMessage,
    extra_info: String,
}

async fn pop(
    rpc: &RpcClient,
    member: &TestMember,
    command: RemotingCommand,
) -> Result<(i32, Vec<Received>)> {
    let answer = rpc
        .invoke(&member.remoting, command, RPC_TIMEOUT * 3)
        .await?;
    if answer.code != response::SUCCESS {
        return Ok((answer.code, Vec::new()));
    }
    let header = PopMessageResponseHeader::from_ext_fields(&answer.ext_fields)?;
    let broker = &member.ctx.config.broker_name;
    let received = decode_stored(&answer.body)?
        .into_iter()
        .map(|message| {
            // As MQClientAPIImpl.processPopResponse builds POP_CK.
            let extra_info = format!(
                "{} {} {} {} 0 {broker} {} {}",
                message.queue_offset,
                header.pop_time,
                header.invisible_time,
                header.revive_qid,
                message.queue_id,
                message.queue_offset
            );
            Received {
                message,
                extra_info,
            }
        })
        .collect();
    Ok((answer.code, received))
}

fn ack_request(queue_id: i32, offset: i64, extra_info: &str) -> RemotingCommand {
    let mut command = RemotingCommand::new_request(request::ACK_MESSAGE);
    command.ext_fields = AckMessageRequestHeader {
        consumer_group: GROUP.into(),
        topic: TOPIC.into(),
        queue_id,
        extra_info: extra_info.into(),
        offset,
    }
    .to_ext_fields();
    command
}

async fn ack(rpc: &RpcClient, member: &TestMember, received: &Received) -> Result<RemotingCommand> {
    let request = ack_request(
        received.message.queue_id,
        received.message.queue_offset,
        &received.extra_info,
    );
    Ok(rpc.invoke(&member.remoting, request, RPC_TIMEOUT).await?)
}

async fn send_three(rpc: &RpcClient, member: &TestMember) -> Result<()> {
    for key in ["m0", "m1", "m2"] {
        let sent = rpc
            .invoke(
                &member.remoting,
                send_request(TOPIC, 0, key, key.as_bytes()),
                RPC_TIMEOUT,
            )
            .await?;
        ensure!(sent.code == response::SUCCESS, "send: {:?}", sent.remark);
    }
    Ok(())
}

/// The issue's proof: an acked message never returns after a leader change, an unacked one
/// returns from the new leader after its invisible time, and a handle the old leader issued
/// still acks on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_invisibility_and_handles_survive_a_leader_change() -> Result<()> {
    let mut group = TestGroup::start(3).await?;
    let old_leader = group.wait_for_leader().await?;
    let rpc = RpcClient::default();
    send_three(&rpc, group.member(old_leader)).await?;

    let (code, received) =
        pop(&rpc, group.member(old_leader), pop_request(0, 3, 60_000, 0)).await?;
    ensure!(code == response::SUCCESS, "pop answered {code}");
    let offsets: Vec<i64> = received.iter().map(|r| r.message.queue_offset).collect();
    assert_eq!(offsets, vec![0, 1, 2]);
    assert!(received.iter().all(|r| r.message.reconsume_times == 0));
    // Popped again at once: all three are invisible.
    let (code, _) = pop(&rpc, group.member(old_leader), pop_request(0, 3, 60_000, 0)).await?;
    assert_eq!(code, response::PULL_NOT_FOUND);

    // m0 is acked on the old leader; m2 is made visible again in 1 s.
    let acked = ack(&rpc, group.member(old_leader), &received[0]).await?;
    assert_eq!(acked.code, response::SUCCESS, "{:?}", acked.remark);
    let mut change = RemotingCommand::new_request(request::CHANGE_MESSAGE_INVISIBLETIME);
    change.ext_fields = ChangeInvisibleTimeRequestHeader {
        consumer_group: GROUP.into(),
        topic: TOPIC.into(),
        queue_id: 0,
        extra_info: received[2].extra_info.clone(),
        offset: 2,
        invisible_time: 1_000,
    }
    .to_ext_fields();
    let changed = rpc
        .invoke(&group.member(old_leader).remoting, change, RPC_TIMEOUT)
        .await?;
    assert_eq!(changed.code, response::SUCCESS, "{:?}", changed.remark);
    ChangeInvisibleTimeResponseHeader::from_ext_fields(&changed.ext_fields)?;

    group.stop_member(old_leader).await?;
    let new_leader = group.wait_for_leader().await?;
    assert_ne!(new_leader, old_leader);
    let member = group.member(new_leader);

    // From the new leader, a long poll: m2 comes back (its second delivery), never m0, and not
    // m1 (still invisible).
    let (code, again) = pop(&rpc, member, pop_request(0, 3, 60_000, 20_000)).await?;
    assert_eq!(code, response::SUCCESS);
    let offsets: Vec<(i64, i32)> = again
        .iter()
        .map(|r| (r.message.queue_offset, r.message.reconsume_times))
        .collect();
    assert_eq!(offsets, vec![(2, 1)]);

    // The old leader's handle of m1 acks on the new leader; m2 is acked with its new handle.
    let acked = ack(&rpc, member, &received[1]).await?;
    assert_eq!(acked.code, response::SUCCESS, "{:?}", acked.remark);
    // m2's first handle is stale now (it was handed out again since) ...
    let stale = ack(&rpc, member, &received[2]).await?;
    assert_eq!(stale.code, response::NO_MESSAGE, "{:?}", stale.remark);
    let acked = ack(&rpc, member, &again[0]).await?;
    assert_eq!(acked.code, response::SUCCESS, "{:?}", acked.remark);
    // ... and once acked, acking it again is a success with nothing to do (a retried ack).
    let retried = ack(&rpc, member, &again[0]).await?;
    assert_eq!(retried.code, response::SUCCESS, "{:?}", retried.remark);

    // Nothing is left: a pop that waits 1.5 s finds nothing, and every member agrees.
    let (code, _) = pop(&rpc, member, pop_request(0, 3, 60_000, 1_500)).await?;
    assert_eq!(code, response::PULL_NOT_FOUND);
    for id in [new_leader]
        .into_iter()
        .chain(group.others(new_leader).map(|(id, _)| id))
    {
        let ctx = &group.member(id).ctx;
        wait_until("every member applying the acks", || {
            let queue = ctx.state.pop_queue(GROUP, TOPIC, 0)?;
            (queue.in_flight.is_empty() && queue.cursor == 3).then_some(())
        })
        .await?;
        assert_eq!(ctx.state.consumer_offset(GROUP, TOPIC, 0), Some(3));
    }
    rpc.shutdown().await;
    group.shutdown().await
}

/// A message handed out as often as the group allows goes to `%DLQ%<group>` once its last
/// invisible time ends, by the leader's dead-letter task, and never pops again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_end_in_the_dlq() -> Result<()> {
    let group = TestGroup::start(1).await?;
    let leader = group.wait_for_leader().await?;
    let member = group.member(leader);
    let rpc = RpcClient::default();
    let mut config = GroupConfig::new(GROUP);
    config.retry_max_times = 1;
    member
        .ctx
        .proposer
        .propose(Command::UpsertGroup(config))
        .await?;
    let sent = rpc
        .invoke(
            &member.remoting,
            send_request(TOPIC, 0, "doomed", b"doomed"),
            RPC_TIMEOUT,
        )
        .await?;
    ensure!(sent.code == response::SUCCESS, "send: {:?}", sent.remark);

    let (_, first) = pop(&rpc, member, pop_request(0, 1, 1_000, 0)).await?;
    assert_eq!(first.len(), 1);
    let (_, second) = pop(&rpc, member, pop_request(0, 1, 1_000, 10_000)).await?;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message.reconsume_times, 1);
    // Never acked: after its second invisible time it is dead-lettered.
    let dlq = dlq_topic(GROUP);
    wait_until("the message reaching the DLQ", || {
        (member.ctx.state.queue(&dlq, 0).next_offset == 1).then_some(())
    })
    .await?;
    let queue = member.ctx.state.pop_queue(GROUP, TOPIC, 0);
    assert!(queue.is_some_and(|queue| queue.in_flight.is_empty()));
    let (code, _) = pop(&rpc, member, pop_request(0, 1, 1_000, 1_500)).await?;
    assert_eq!(code, response::PULL_NOT_FOUND);
    // Its second handle is no longer in flight: acking it is a success (nothing to do).
    let late = ack(&rpc, member, &second[0]).await?;
    assert_eq!(late.code, response::SUCCESS, "{:?}", late.remark);
    rpc.shutdown().await;
    group.shutdown().await
}

/// Malformed handles, handles of another broker or queue, unknown topics and bad headers get
/// clear error codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pop_input_gets_clear_errors() -> Result<()> {
    let group = TestGroup::start(1).await?;
    let leader = group.wait_for_leader().await?;
    let member = group.member(leader);
    let rpc = RpcClient::default();
    send_three(&rpc, member).await?;
    let (_, received) = pop(&rpc, member, pop_request(0, 1, 60_000, 0)).await?;
    assert_eq!(received.len(), 1);
    let good = &received[0].extra_info;

    let invoke = |command: RemotingCommand| {
        let rpc = &rpc;
        async move { rpc.invoke(&member.remoting, command, RPC_TIMEOUT).await }
    };
    let other_broker = good.replace(&member.ctx.config.broker_name, "broker-zz");
    for (extra_info, offset, code) in [
        ("", 0, response::INVALID_PARAMETER),
        ("not a handle at all", 0, response::INVALID_PARAMETER),
        ("1 2 3 0 0 b 0", 0, response::INVALID_PARAMETER),
        (good.as_str(), 1, response::INVALID_PARAMETER),
        (other_broker.as_str(), 0, response::INVALID_PARAMETER),
        (
            // A pop time that never was: stale.
            &good.replacen(' ', " 1", 1),
            0,
            response::NO_MESSAGE,
        ),
    ] {
        let answer = invoke(ack_request(0, offset, extra_info)).await?;
        assert_eq!(answer.code, code, "{extra_info:?}: {:?}", answer.remark);
        assert!(answer.remark.is_some());
    }
    // Unknown topic, negative queue, a header missing its fields.
    let mut unknown = pop_request(0, 1, 60_000, 0);
    unknown
        .ext_fields
        .insert("topic".into(), "NoSuchTopic".into());
    assert_eq!(invoke(unknown).await?.code, response::TOPIC_NOT_EXIST);
    assert_eq!(
        invoke(pop_request(-7, 1, 60_000, 0)).await?.code,
        response::INVALID_PARAMETER
    );
    assert_eq!(
        invoke(pop_request(0, 0, 60_000, 0)).await?.code,
        response::INVALID_PARAMETER
    );
    let mut bare = RemotingCommand::new_request(request::ACK_MESSAGE);
    bare.ext_fields.insert("topic".into(), TOPIC.into());
    assert_eq!(invoke(bare).await?.code, response::INVALID_PARAMETER);
    let mut unknown_ack = ack_request(0, 0, good);
    unknown_ack
        .ext_fields
        .insert("topic".into(), "NoSuchTopic".into());
    assert_eq!(invoke(unknown_ack).await?.code, response::TOPIC_NOT_EXIST);

    // The good handle still acks after all that.
    assert_eq!(
        invoke(ack_request(0, 0, good)).await?.code,
        response::SUCCESS
    );
    // NOTIFICATION: messages 1 and 2 are still to pop.
    let mut notify = RemotingCommand::new_request(request::NOTIFICATION);
    notify.ext_fields = NotificationRequestHeader {
        consumer_group: GROUP.into(),
        topic: TOPIC.into(),
        queue_id: 0,
        poll_time: 1_000,
        born_time: 0,
        order: None,
        attempt_id: None,
    }
    .to_ext_fields();
    let notified = invoke(notify).await?;
    assert_eq!(notified.code, response::SUCCESS);
    assert!(NotificationResponseHeader::from_ext_fields(&notified.ext_fields)?.has_msg);

    // BATCH_ACK_MESSAGE: the other two, by a bit set over their first offset; a body that is
    // not JSON, or a bit set that is not base64, is refused.
    let (_, rest) = pop(&rpc, member, pop_request(0, 2, 60_000, 0)).await?;
    assert_eq!(rest.len(), 2);
    let pop_time = rest[0].extra_info.split(' ').nth(1).unwrap_or_default();
    let batch = |bits: &str| {
        let mut command = RemotingCommand::new_request(request::BATCH_ACK_MESSAGE);
        command.body = format!(
            r#"{{"acks":[{{"c":"{GROUP}","t":"{TOPIC}","r":"0","so":1,"q":0,"rq":0,"pt":{pop_time},"it":60000,"b":"{bits}"}}]}}"#
        )
        .into_bytes()
        .into();
        command
    };
    let mut garbage = RemotingCommand::new_request(request::BATCH_ACK_MESSAGE);
    garbage.body = bytes::Bytes::from_static(b"{not json");
    assert_eq!(invoke(garbage).await?.code, response::INVALID_PARAMETER);
    assert_eq!(invoke(batch("**")).await?.code, response::INVALID_PARAMETER);
    let acked = invoke(batch("Aw==")).await?;
    assert_eq!(acked.code, response::SUCCESS, "{:?}", acked.remark);
    let queue = member.ctx.state.pop_queue(GROUP, TOPIC, 0);
    assert!(queue.is_some_and(|queue| queue.in_flight.is_empty() && queue.cursor == 3));

    // Every long-poll place taken: a pop that would wait answers POLLING_FULL at once; one
    // that would not wait is still served.
    let all = u32::try_from(crate::pop::MAX_POP_WAITERS)?;
    let held = member.ctx.pop_waiters.acquire_many(all).await?;
    assert_eq!(
        invoke(pop_request(0, 1, 60_000, 5_000)).await?.code,
        response::POLLING_FULL
    );
    assert_eq!(
        invoke(pop_request(0, 1, 60_000, 0)).await?.code,
        response::PULL_NOT_FOUND
    );
    drop(held);
    rpc.shutdown().await;
    group.shutdown().await
}

/// The gRPC helper's entry points, straight: pop with a handle string, change, ack, forward to
/// the DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_api_round_trips_handles_and_forwards_to_the_dlq() -> Result<()> {
    use crate::filter::MessageFilter;
    use crate::pop::{PopRequest, ReceiptHandle};
    let group = TestGroup::start(1).await?;
    let leader = group.wait_for_leader().await?;
    let member = group.member(leader);
    let ctx = &member.ctx;
    let rpc = RpcClient::default();
    send_three(&rpc, member).await?;
    let filter = MessageFilter::all();
    let request = PopRequest {
        group: GROUP,
        topic: TOPIC,
        queue_id: None,
        max_messages: 2,
        invisible_ms: 60_000,
        filter: &filter,
        fifo: false,
        init_from_end: false,
    };
    let result = crate::pop::pop(ctx, &request).await?;
    assert_eq!(result.messages.len(), 2);
    let first = &result.messages[0];
    assert_eq!(first.attempt, 1);
    let handle = ReceiptHandle::parse(&first.handle.encode())?;
    assert_eq!(handle, first.handle);
    let changed = crate::pop::change_invisible(ctx, GROUP, &handle, 30_000).await?;
    // The old handle is stale; the new one acks.
    assert!(crate::pop::ack(ctx, GROUP, &handle).await.is_err());
    crate::pop::ack(ctx, GROUP, &changed).await?;
    // The second goes to the DLQ on request.
    crate::pop::forward_to_dlq(ctx, GROUP, &result.messages[1].handle).await?;
    assert_eq!(ctx.state.queue(&dlq_topic(GROUP), 0).next_offset, 1);
    let again = crate::pop::forward_to_dlq(ctx, GROUP, &result.messages[1].handle).await;
    assert!(again.is_err());
    // The third is still to pop, once.
    let rest = crate::pop::pop_or_wait(ctx, &request, Duration::from_millis(500)).await?;
    assert_eq!(rest.messages.len(), 1);
    assert_eq!(rest.messages[0].offset, 2);
    rpc.shutdown().await;
    group.shutdown().await
}
