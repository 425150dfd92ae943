//! ACL end to end on a real in-process group: refused requests (unsigned, wrongly signed,
//! replayed with an altered body, under-privileged) get NO_PERMISSION and change nothing;
//! rightly signed ones succeed; ACL changes made through admin HTTP reach every member through
//! Raft and survive a leader change; admin HTTP needs its token for state changes.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use raftmq_protocol::RemotingCommand;
use raftmq_protocol::acl::{Account, AclChange, Perm, SessionCredentials};
use raftmq_protocol::code::{request, response};
use raftmq_protocol::header::offset::GetMaxOffsetRequestHeader;
use raftmq_protocol::header::topic::CreateTopicRequestHeader;
use raftmq_protocol::{ExtHeader, admin::AdminToken};
use raftmq_remoting::RpcClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::BrokerOptions;
use crate::testing::{RPC_TIMEOUT, TestGroup, TestMember, pull_request, send_request, wait_until};

const TOKEN: &str = "test-admin-token-0123456789";
const ROOT: (&str, &str) = ("root", "root-secret-key");
const PRODUCER: (&str, &str) = ("producer1", "producer1-secret");
const TOPIC: &str = "AclOrders";

fn credentials((access_key, secret_key): (&str, &str)) -> SessionCredentials {
    SessionCredentials::new(access_key, secret_key)
}

fn signed(mut command: RemotingCommand, keys: (&str, &str)) -> RemotingCommand {
    credentials(keys).sign(&mut command);
    command
}

/// Every member enforces ACL (`--acl`), knows the bootstrap admin and requires the token.
fn acl_on(options: &mut BrokerOptions) {
    options.acl = Some(true);
    options.acl_admin_access_key = Some(ROOT.0.into());
    options.acl_admin_secret_key = Some(ROOT.1.into());
    options.admin_token = Some(TOKEN.parse().unwrap());
}

/// Members that know the token only: ACL is turned on later through the replicated switch.
fn token_only(options: &mut BrokerOptions) {
    options.admin_token = Some(TOKEN.parse().unwrap());
}

/// One HTTP/1.1 exchange with a member's admin port: `(status, body)`.
async fn http(
    member: &TestMember,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let (status, _, body) = http_with(member, method, path, authorization.as_deref(), body).await?;
    Ok((status, body))
}

/// One admin HTTP request with this `Authorization` value; the status, the head and the body.
async fn http_with(
    member: &TestMember,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> Result<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(&member.admin).await?;
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        member.admin,
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(RPC_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .context("admin HTTP answer")??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status line in {answer:?}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .map_or((answer.as_str(), ""), |(head, body)| (head, body));
    Ok((status, head.to_string(), body.to_string()))
}

async fn change_acl(member: &TestMember, change: &AclChange) -> Result<()> {
    let (status, body) = http(
        member,
        "POST",
        "/acl",
        Some(TOKEN),
        &serde_json::to_string(change)?,
    )
    .await?;
    ensure!(status == 200, "POST /acl answered {status}: {body}");
    Ok(())
}

fn producer_account() -> Account {
    Account {
        access_key: PRODUCER.0.into(),
        secret_key: PRODUCER.1.into(),
        topic_perms: BTreeMap::from([(TOPIC.to_string(), Perm::Pub)]),
        ..Account::default()
    }
}

/// Every queue's next offset of `TOPIC`, and the topics, as `member` applied them.
fn snapshot(member: &TestMember) -> (Vec<u64>, Vec<String>) {
    let queues = (0..8)
        .map(|queue| member.ctx.state.queue(TOPIC, queue).next_offset)
        .collect();
    let topics = member
        .ctx
        .state
        .topics()
        .into_iter()
        .map(|topic| topic.name)
        .collect();
    (queues, topics)
}

async fn expect_refused(
    rpc: &RpcClient,
    addr: &str,
    command: RemotingCommand,
    what: &str,
) -> Result<()> {
    let answer = rpc.invoke(addr, command, RPC_TIMEOUT).await?;
    ensure!(
        answer.code == response::NO_PERMISSION,
        "{what}: answered {} ({:?}), not NO_PERMISSION",
        answer.code,
        answer.remark
    );
    let remark = answer.remark.unwrap_or_default();
    ensure!(!remark.is_empty(), "{what}: NO_PERMISSION without a reason");
    ensure!(
        !remark.contains(PRODUCER.1) && !remark.contains(ROOT.1),
        "{what}: the reason shows a secret: {remark}"
    );
    Ok(())
}

fn create_topic_request(topic: &str) -> RemotingCommand {
    let header = CreateTopicRequestHeader {
        topic: topic.into(),
        default_topic: "TBW102".into(),
        read_queue_nums: 8,
        write_queue_nums: 8,
        perm: 6,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_sys_flag: None,
        order: false,
        attributes: None,
        force: None,
    };
    let mut command = RemotingCommand::new_request(request::UPDATE_AND_CREATE_TOPIC);
    command.ext_fields = header.to_ext_fields();
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_get_no_permission_and_change_nothing() -> Result<()> {
    let group = TestGroup::start_with(3, acl_on).await?;
    let leader_id = group.wait_for_leader().await?;
    let leader = group.member(leader_id);
    let rpc = RpcClient::default();
    let addr = leader.remoting.as_str();

    // The bootstrap admin creates the topic and the producer's account.
    let created = rpc
        .invoke(addr, signed(create_topic_request(TOPIC), ROOT), RPC_TIMEOUT)
        .await?;
    ensure!(
        created.code == response::SUCCESS,
        "create topic: {:?}",
        created.remark
    );
    change_acl(leader, &AclChange::UpsertAccount(producer_account())).await?;
    let first = rpc
        .invoke(
            addr,
            signed(send_request(TOPIC, 0, "k0", b"first"), PRODUCER),
            RPC_TIMEOUT,
        )
        .await?;
    ensure!(
        first.code == response::SUCCESS,
        "signed send: {:?}",
        first.remark
    );
    for (_, member) in group.others(leader_id) {
        wait_until("every member applying the first send", || {
            (member.ctx.state.queue(TOPIC, 0).next_offset == 1).then_some(())
        })
        .await?;
    }
    let before = snapshot(leader);

    expect_refused(
        &rpc,
        addr,
        send_request(TOPIC, 0, "k1", b"unsigned"),
        "unsigned send",
    )
    .await?;
    expect_refused(
        &rpc,
        addr,
        signed(
            send_request(TOPIC, 0, "k1", b"wrong"),
            (PRODUCER.0, "guessed-secret"),
        ),
        "wrongly signed send",
    )
    .await?;
    let mut altered = signed(send_request(TOPIC, 0, "k1", b"original body"), PRODUCER);
    altered.body = bytes::Bytes::from_static(b"altered body!");
    expect_refused(&rpc, addr, altered, "replay with an altered body").await?;
    let mut moved = signed(send_request(TOPIC, 0, "k1", b"body"), PRODUCER);
    moved.ext_fields.insert("e".into(), "1".into());
    expect_refused(&rpc, addr, moved, "replay to another queue").await?;
    expect_refused(
        &rpc,
        addr,
        signed(send_request("AclOther", 0, "k1", b"elsewhere"), PRODUCER),
        "send without PUB on the topic",
    )
    .await?;
    expect_refused(
        &rpc,
        addr,
        signed(pull_request(TOPIC, 0, 0, 32), PRODUCER),
        "pull without SUB",
    )
    .await?;
    expect_refused(
        &rpc,
        addr,
        signed(create_topic_request("AclCreatedByProducer"), PRODUCER),
        "topic creation by a non-admin",
    )
    .await?;
    expect_refused(
        &rpc,
        addr,
        signed(
            send_request(TOPIC, 0, "k1", b"stranger"),
            ("stranger", "stranger-secret"),
        ),
        "unknown account",
    )
    .await?;

    // Nothing the refused requests asked for happened, on any member: the next signed send
    // lands right after the first.
    let second = rpc
        .invoke(
            addr,
            signed(send_request(TOPIC, 0, "k2", b"second"), PRODUCER),
            RPC_TIMEOUT,
        )
        .await?;
    ensure!(
        second.code == response::SUCCESS,
        "signed send: {:?}",
        second.remark
    );
    ensure!(
        second.ext_fields.get("queueOffset").map(String::as_str) == Some("1"),
        "the second stored send is not at offset 1: {:?}",
        second.ext_fields
    );
    for id in 1..=3 {
        let member = group.member(id);
        wait_until("every member applying the second send", || {
            (member.ctx.state.queue(TOPIC, 0).next_offset == 2).then_some(())
        })
        .await?;
        let (queues, topics) = snapshot(member);
        ensure!(
            queues[1..] == before.0[1..],
            "member {id}: other queues moved"
        );
        ensure!(
            topics == before.1,
            "member {id}: topics changed: {topics:?}"
        );
    }

    // Counted in the metrics, by reason.
    let (status, metrics) = http(leader, "GET", "/metrics", None, "").await?;
    ensure!(status == 200);
    for reason in [
        "no_access_key",
        "bad_signature",
        "no_permission",
        "not_admin",
        "unknown_account",
    ] {
        let counted = metrics.lines().any(|line| {
            line.starts_with("raftmq_acl_denied_requests_total")
                && line.contains(&format!("reason=\"{reason}\""))
        });
        ensure!(
            counted,
            "no denied-request count for {reason} in:\n{metrics}"
        );
    }
    group.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_changes_reach_every_member_and_survive_a_leader_change() -> Result<()> {
    let mut group = TestGroup::start_with(3, token_only).await?;
    let leader_id = group.wait_for_leader().await?;
    let rpc = RpcClient::default();
    let max_offset = || {
        let header = GetMaxOffsetRequestHeader {
            topic: TOPIC.into(),
            queue_id: 0,
            committed: None,
            broker_name: None,
        };
        let mut command = RemotingCommand::new_request(request::GET_MAX_OFFSET);
        command.ext_fields = header.to_ext_fields();
        command
    };
    // Off by default: unsigned requests are served.
    let open = rpc
        .invoke(&group.member(leader_id).remoting, max_offset(), RPC_TIMEOUT)
        .await?;
    ensure!(open.code != response::NO_PERMISSION, "refused with ACL off");

    // One switch on the leader turns it on for the whole group.
    let leader = group.member(leader_id);
    change_acl(leader, &AclChange::UpsertAccount(producer_account())).await?;
    change_acl(leader, &AclChange::SetEnabled(true)).await?;
    for id in 1..=3 {
        let member = group.member(id);
        wait_until("every member applying the ACL", || {
            member
                .ctx
                .state
                .with_acl(|acl| acl.enabled && acl.accounts.contains_key(PRODUCER.0))
                .then_some(())
        })
        .await?;
        expect_refused(
            &rpc,
            &member.remoting,
            max_offset(),
            "unsigned read on a member",
        )
        .await?;
        let answer = rpc
            .invoke(
                &member.remoting,
                signed(max_offset(), PRODUCER),
                RPC_TIMEOUT,
            )
            .await?;
        ensure!(
            answer.code != response::NO_PERMISSION,
            "member {id} refused a signed read: {:?}",
            answer.remark
        );
        // Listed without secrets on every member.
        let (status, listed) = http(member, "GET", "/acl", Some(TOKEN), "").await?;
        ensure!(
            status == 200 && listed.contains(PRODUCER.0),
            "GET /acl: {status} {listed}"
        );
        ensure!(
            !listed.contains(PRODUCER.1),
            "GET /acl shows a secret: {listed}"
        );
    }

    // The leader goes; the rules stay.
    group.stop_member(leader_id).await?;
    let new_leader_id = group.wait_for_leader().await?;
    ensure!(new_leader_id != leader_id);
    let new_leader = group.member(new_leader_id);
    let addr = new_leader.remoting.as_str();
    expect_refused(
        &rpc,
        addr,
        send_request(TOPIC, 0, "k", b"unsigned"),
        "unsigned send after the change",
    )
    .await?;
    expect_refused(
        &rpc,
        addr,
        signed(
            send_request(TOPIC, 0, "k", b"wrong"),
            (PRODUCER.0, "not-the-secret"),
        ),
        "wrongly signed send after the change",
    )
    .await?;
    let sent = rpc
        .invoke(
            addr,
            signed(send_request(TOPIC, 0, "k", b"after"), PRODUCER),
            RPC_TIMEOUT,
        )
        .await?;
    ensure!(
        sent.code == response::SUCCESS,
        "signed send on the new leader: {:?}",
        sent.remark
    );

    // And the new leader changes them for the members left.
    change_acl(new_leader, &AclChange::DeleteAccount(PRODUCER.0.into())).await?;
    for (_, member) in group.others(leader_id) {
        wait_until("the delete reaching every member", || {
            (!member
                .ctx
                .state
                .with_acl(|acl| acl.accounts.contains_key(PRODUCER.0)))
            .then_some(())
        })
        .await?;
        expect_refused(
            &rpc,
            &member.remoting,
            signed(max_offset(), PRODUCER),
            "deleted account",
        )
        .await?;
    }
    group.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_http_needs_the_token_for_state_changes() -> Result<()> {
    let group = TestGroup::start_with(1, token_only).await?;
    let leader_id = group.wait_for_leader().await?;
    let member = group.member(leader_id);
    let wrong = "wrong-token-0123456789abcdef";
    for (method, path, body) in [
        ("POST", "/raft/elect", ""),
        (
            "POST",
            "/offsets/reset",
            r#"{"group":"g","topic":"t","offset":0}"#,
        ),
        ("POST", "/raft/transfer-leader", r#"{"node_id":1}"#),
        ("POST", "/acl", r#"{"set_enabled":true}"#),
        ("GET", "/acl", ""),
    ] {
        for token in [None, Some(wrong)] {
            let (status, answer) = http(member, method, path, token, body).await?;
            ensure!(
                status == 401,
                "{method} {path} with {token:?} answered {status}: {answer}"
            );
        }
    }
    // Reads stay open; the token opens the rest.
    let (status, _) = http(member, "GET", "/raft", None, "").await?;
    ensure!(status == 200, "GET /raft answered {status}");
    let (status, _) = http(member, "GET", "/acl", Some(TOKEN), "").await?;
    ensure!(status == 200, "GET /acl with the token answered {status}");
    let (status, body) = http(member, "POST", "/raft/elect", Some(TOKEN), "").await?;
    ensure!(
        status == 200,
        "POST /raft/elect with the token answered {status}: {body}"
    );
    // A browser (the dashboard's action forms) answers the Basic challenge of a refusal with
    // the token as the password.
    use base64::Engine;
    let basic = |password: &str| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"));
        format!("Basic {encoded}")
    };
    let (status, head, _) = http_with(member, "POST", "/raft/elect", None, "").await?;
    ensure!(
        status == 401 && head.contains("www-authenticate: Basic realm=\"RaftMQ admin\""),
        "a refusal challenges a browser to authenticate: {status} {head}"
    );
    let (status, _, _) = http_with(member, "POST", "/raft/elect", Some(&basic(wrong)), "").await?;
    ensure!(
        status == 401,
        "Basic with a wrong password answered {status}"
    );
    let (status, _, body) =
        http_with(member, "POST", "/raft/elect", Some(&basic(TOKEN)), "").await?;
    ensure!(
        status == 200,
        "Basic with the token as password answered {status}: {body}"
    );
    // A bad change is refused before it is proposed.
    let bad = r#"{"upsert_account":{"access_key":"x","secret_key":"short"}}"#;
    let (status, body) = http(member, "POST", "/acl", Some(TOKEN), bad).await?;
    if status != 400 {
        bail!("a too-short secret answered {status}: {body}");
    }
    let _: AdminToken = TOKEN.parse().map_err(anyhow::Error::msg)?;
    group.shutdown().await
}
