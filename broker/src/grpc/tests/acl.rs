//! ACL on the gRPC service, on a real in-process group: unsigned, wrongly signed and
//! under-privileged calls are refused (UNAUTHORIZED or FORBIDDEN in the answer's Status),
//! counted, and change nothing, on the leader and on a follower before anything is forwarded;
//! rightly signed calls succeed; an ACL change made through Raft holds on every member and
//! after a leader change.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use raftmq_protocol::acl::{Account, AclChange, GrpcAuthorization, Perm};
use tonic::transport::Channel;

use super::{client, code_of, message, request, resource, stored_count};
use crate::command::{Applied, Command};
use crate::config::BrokerOptions;
use crate::grpc::pb::{self, Code, MessageType, MessagingServiceClient};
use crate::metrics::AclDeniedLabels;
use crate::testing::{TestGroup, TestMember, wait_until};

const ROOT: (&str, &str) = ("root", "root-secret-key");
const PRODUCER: (&str, &str) = ("producer1", "producer1-secret");
const CONSUMER: (&str, &str) = ("consumer1", "consumer1-secret");
const TOPIC: &str = "GrpcAclOrders";
const GROUP: &str = "GrpcAclGroup";
/// The date a signature covers (any value the client chose; it is what is signed).
const DATE: &str = "20261206T010000Z";

/// Every member enforces ACL (`--acl`) and knows the bootstrap admin.
fn acl_on(options: &mut BrokerOptions) {
    options.acl = Some(true);
    options.acl_admin_access_key = Some(ROOT.0.into());
    options.acl_admin_secret_key = Some(ROOT.1.into());
}

fn producer_account() -> Account {
    Account {
        access_key: PRODUCER.0.into(),
        secret_key: PRODUCER.1.into(),
        topic_perms: BTreeMap::from([(TOPIC.to_string(), Perm::Pub)]),
        ..Account::default()
    }
}

fn consumer_account() -> Account {
    Account {
        access_key: CONSUMER.0.into(),
        secret_key: CONSUMER.1.into(),
        topic_perms: BTreeMap::from([(TOPIC.to_string(), Perm::Sub)]),
        group_perms: BTreeMap::from([(GROUP.to_string(), Perm::Sub)]),
        ..Account::default()
    }
}

/// Proposes an ACL change on the leader (through Raft, as `mq acl` and admin HTTP do).
async fn change_acl(group: &TestGroup, change: AclChange) -> Result<()> {
    let leader = group.wait_for_leader().await?;
    let applied = group
        .member(leader)
        .ctx
        .proposer
        .propose(Command::Acl(change))
        .await?;
    ensure!(matches!(applied, Applied::Done), "{applied:?}");
    Ok(())
}

/// `request` signed as a 5.x client signs: `authorization` over `x-mq-date-time`.
fn signed<T>(message: T, (access_key, secret_key): (&str, &str)) -> tonic::Request<T> {
    let mut call = request(message);
    let authorization = GrpcAuthorization::sign(access_key, secret_key, DATE);
    call.metadata_mut()
        .insert("authorization", authorization.parse().unwrap());
    call.metadata_mut()
        .insert("x-mq-date-time", DATE.parse().unwrap());
    call
}

fn send_request(id: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        messages: vec![message(TOPIC, id, b"acl", MessageType::Normal)],
    }
}

async fn send_code(
    to: &mut MessagingServiceClient<Channel>,
    call: tonic::Request<pb::SendMessageRequest>,
) -> Result<i32> {
    let answer = to.send_message(call).await?.into_inner();
    if answer
        .status
        .as_ref()
        .is_some_and(|s| s.code != Code::Ok as i32)
    {
        return Ok(code_of(&answer.status));
    }
    let entry = answer.entries.first().context("no entry")?;
    Ok(code_of(&entry.status))
}

fn receive_request() -> pb::ReceiveMessageRequest {
    pb::ReceiveMessageRequest {
        group: resource(GROUP),
        message_queue: Some(pb::MessageQueue {
            topic: resource(TOPIC),
            id: -1,
            ..pb::MessageQueue::default()
        }),
        batch_size: 32,
        invisible_duration: super::duration_ms(10_000),
        long_polling_timeout: super::duration_ms(1_000),
        ..pb::ReceiveMessageRequest::default()
    }
}

/// The status and the messages of a receive.
async fn receive(
    to: &mut MessagingServiceClient<Channel>,
    call: tonic::Request<pb::ReceiveMessageRequest>,
) -> Result<(i32, Vec<pb::Message>)> {
    use tokio_stream::StreamExt as _;
    let mut stream = to.receive_message(call).await?.into_inner();
    let (mut code, mut messages) = (0, Vec::new());
    while let Some(item) = stream.next().await {
        match item?.content.context("an empty receive item")? {
            pb::receive_message_response::Content::Status(status) => code = status.code,
            pb::receive_message_response::Content::Message(message) => messages.push(message),
            pb::receive_message_response::Content::DeliveryTimestamp(_) => {}
        }
    }
    Ok((code, messages))
}

fn denied_count(member: &TestMember, reason: &'static str) -> u64 {
    member
        .ctx
        .metrics
        .acl_denied
        .get_or_create(&AclDeniedLabels {
            protocol_type: "grpc",
            reason,
        })
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_calls_without_the_right_signature_or_permission_are_refused() -> Result<()> {
    let group = TestGroup::start_with(3, acl_on).await?;
    let leader = group.wait_for_leader().await?;
    change_acl(&group, AclChange::UpsertAccount(producer_account())).await?;
    change_acl(&group, AclChange::UpsertAccount(consumer_account())).await?;
    let (follower, _) = group.others(leader).next().context("no follower")?;
    let mut to_follower = client(group.member(follower).grpc).await?;
    let mut to_leader = client(group.member(leader).grpc).await?;

    // Rightly signed: the producer sends (through the follower), the consumer receives.
    let first = send_code(&mut to_follower, signed(send_request("ACL-1"), PRODUCER)).await?;
    ensure!(first == Code::Ok as i32, "a signed send answered {first}");
    for id in [leader, follower] {
        wait_until("every member applying the first send", || {
            (stored_count(group.member(id), TOPIC) == 1).then_some(())
        })
        .await?;
    }
    let route = to_follower
        .query_route(signed(
            pb::QueryRouteRequest {
                topic: resource(TOPIC),
                endpoints: None,
            },
            CONSUMER,
        ))
        .await?
        .into_inner();
    ensure!(code_of(&route.status) == Code::Ok as i32, "{route:?}");

    let unauthorized_before = denied_count(group.member(follower), "no_access_key")
        + denied_count(group.member(follower), "bad_signature");
    // Unsigned, on the follower (it must refuse before forwarding) and on the leader.
    for to in [&mut to_follower, &mut to_leader] {
        let code = send_code(to, request(send_request("ACL-unsigned"))).await?;
        ensure!(code == Code::Unauthorized as i32, "unsigned send: {code}");
    }
    // Wrongly signed: a guessed secret.
    let code = send_code(
        &mut to_follower,
        signed(send_request("ACL-wrong"), (PRODUCER.0, "guessed-secret")),
    )
    .await?;
    ensure!(code == Code::Unauthorized as i32, "wrongly signed: {code}");
    // An unknown account.
    let code = send_code(
        &mut to_follower,
        signed(send_request("ACL-nobody"), ("nobody", "nobody-secret")),
    )
    .await?;
    ensure!(code == Code::Unauthorized as i32, "unknown account: {code}");
    // A call claiming to be forwarded skips nothing.
    let mut spoofed = request(send_request("ACL-spoofed"));
    spoofed.metadata_mut().insert(
        super::super::forward::FORWARDED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    let code = send_code(&mut to_leader, spoofed).await?;
    ensure!(
        code == Code::Unauthorized as i32,
        "a spoofed forward: {code}"
    );
    // Under-privileged: the consumer may not send, the producer may not receive.
    let code = send_code(&mut to_follower, signed(send_request("ACL-sub"), CONSUMER)).await?;
    ensure!(
        code == Code::Forbidden as i32,
        "the consumer sending: {code}"
    );
    let (code, messages) = receive(&mut to_follower, signed(receive_request(), PRODUCER)).await?;
    ensure!(
        code == Code::Forbidden as i32 && messages.is_empty(),
        "the producer receiving: {code}"
    );
    let (code, _) = receive(&mut to_follower, request(receive_request())).await?;
    ensure!(
        code == Code::Unauthorized as i32,
        "an unsigned receive: {code}"
    );
    let route = to_follower
        .query_route(request(pb::QueryRouteRequest {
            topic: resource(TOPIC),
            endpoints: None,
        }))
        .await?
        .into_inner();
    ensure!(
        code_of(&route.status) == Code::Unauthorized as i32,
        "an unsigned route: {route:?}"
    );
    let ack = to_follower
        .ack_message(signed(
            pb::AckMessageRequest {
                group: resource(GROUP),
                topic: resource(TOPIC),
                entries: Vec::new(),
            },
            PRODUCER,
        ))
        .await?
        .into_inner();
    ensure!(
        code_of(&ack.status) == Code::Forbidden as i32,
        "the producer acking: {ack:?}"
    );
    let refused_reason = ack.status.map(|s| s.message).unwrap_or_default();
    ensure!(
        !refused_reason.contains(PRODUCER.1),
        "a refusal shows a secret: {refused_reason}"
    );

    // The refusals were counted where the client called, and nothing was stored or popped.
    let unauthorized_after = denied_count(group.member(follower), "no_access_key")
        + denied_count(group.member(follower), "bad_signature");
    ensure!(
        unauthorized_after >= unauthorized_before + 3,
        "{unauthorized_before} -> {unauthorized_after}"
    );
    ensure!(denied_count(group.member(follower), "no_permission") >= 3);
    for id in [leader, follower] {
        ensure!(stored_count(group.member(id), TOPIC) == 1);
    }
    ensure!(
        group
            .member(leader)
            .ctx
            .state
            .pop_queue(GROUP, TOPIC, 0)
            .is_none_or(|queue| queue.in_flight.is_empty()),
        "a refused receive popped something"
    );

    // The consumer receives what the producer sent, through the follower.
    let (code, messages) = receive(&mut to_follower, signed(receive_request(), CONSUMER)).await?;
    ensure!(
        code == Code::Ok as i32 && messages.len() == 1,
        "a signed receive: {code}, {} messages",
        messages.len()
    );
    group.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_acl_change_through_raft_holds_on_every_member_and_after_a_leader_change()
-> Result<()> {
    // No `--acl`: the replicated switch turns enforcement on for every member.
    let mut group = TestGroup::start(3).await?;
    let leader = group.wait_for_leader().await?;
    change_acl(&group, AclChange::UpsertAccount(producer_account())).await?;
    change_acl(&group, AclChange::SetEnabled(true)).await?;
    let ids: Vec<u64> = std::iter::once(leader)
        .chain(group.others(leader).map(|(id, _)| id))
        .collect();
    for id in &ids {
        wait_until("every member enforcing", || {
            group.member(*id).ctx.acl_enforced().then_some(())
        })
        .await?;
    }
    let mut sent: u64 = 0;
    for id in &ids {
        let mut to = client(group.member(*id).grpc).await?;
        let code = send_code(&mut to, request(send_request("ACL-none"))).await?;
        ensure!(
            code == Code::Unauthorized as i32,
            "member {id}, unsigned: {code}"
        );
        sent += 1;
        let code = send_code(
            &mut to,
            signed(send_request(&format!("ACL-{sent}")), PRODUCER),
        )
        .await?;
        ensure!(code == Code::Ok as i32, "member {id}, signed: {code}");
    }

    // The producer loses its permission through Raft: every member refuses it.
    let revoked = Account {
        topic_perms: BTreeMap::from([(TOPIC.to_string(), Perm::Deny)]),
        ..producer_account()
    };
    change_acl(&group, AclChange::UpsertAccount(revoked)).await?;
    for id in &ids {
        wait_until("every member applying the revocation", || {
            group
                .member(*id)
                .ctx
                .state
                .with_acl(|acl| acl.accounts[PRODUCER.0].topic_perms[TOPIC] == Perm::Deny)
                .then_some(())
        })
        .await?;
        let mut to = client(group.member(*id).grpc).await?;
        let code = send_code(&mut to, signed(send_request("ACL-revoked"), PRODUCER)).await?;
        ensure!(
            code == Code::Forbidden as i32,
            "member {id}, revoked: {code}"
        );
    }

    // The leader goes; the ACL stays as it was on the members left.
    group.stop_member(leader).await?;
    let new_leader = group.wait_for_leader().await?;
    ensure!(new_leader != leader);
    let left: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
    for id in &left {
        let mut to = client(group.member(*id).grpc).await?;
        let code = send_code(&mut to, signed(send_request("ACL-after"), PRODUCER)).await?;
        ensure!(
            code == Code::Forbidden as i32,
            "member {id} after the change: {code}"
        );
        let code = send_code(&mut to, request(send_request("ACL-after-none"))).await?;
        ensure!(
            code == Code::Unauthorized as i32,
            "member {id}, unsigned: {code}"
        );
    }
    // The new leader takes a new change: the permission comes back everywhere.
    change_acl(&group, AclChange::UpsertAccount(producer_account())).await?;
    for id in &left {
        wait_until("every member applying the grant", || {
            group
                .member(*id)
                .ctx
                .state
                .with_acl(|acl| acl.accounts[PRODUCER.0].topic_perms[TOPIC] == Perm::Pub)
                .then_some(())
        })
        .await?;
        let mut to = client(group.member(*id).grpc).await?;
        sent += 1;
        let code = send_code(
            &mut to,
            signed(send_request(&format!("ACL-{sent}")), PRODUCER),
        )
        .await?;
        ensure!(
            code == Code::Ok as i32,
            "member {id}, granted again: {code}"
        );
    }
    wait_until("every signed send stored once", || {
        left.iter()
            .all(|id| stored_count(group.member(*id), TOPIC) == sent)
            .then_some(())
    })
    .await?;
    group.shutdown().await
}
