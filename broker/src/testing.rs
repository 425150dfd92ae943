//! In-process test harness: a broker group of real members (Raft, storage, remoting and admin
//! servers) running in the test's own runtime, each on `127.0.0.1:0` with its data in a
//! temporary directory. No child processes: a test reaches into any member's
//! [`BrokerContext`] and Raft handle, and talks remoting to it with an [`RpcClient`].
//!
//! ```text
//! let group = TestGroup::start(3).await?;
//! let leader = group.wait_for_leader().await?;          // a member that takes writes
//! rpc.invoke(&group.member(leader).remoting, send_request(..), TIMEOUT)
//! group.shutdown().await?;                               // every member stops cleanly
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use raftmq_protocol::code::request;
use raftmq_protocol::header::pull::{PullMessageRequestHeader, pull_sys_flag};
use raftmq_protocol::header::send::{SendMessageRequestHeader, SendMessageRequestHeaderV2};
use raftmq_protocol::names::AUTO_CREATE_TOPIC_KEY_TOPIC;
use raftmq_protocol::{ExtHeader, RemotingCommand};
use raftmq_raft::{NodeId, Raft};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerError, Listeners};
use crate::config::{BrokerConfig, BrokerOptions};
use crate::context::BrokerContext;

/// Bound on any wait for a group to reach a state (an election, replication to a follower).
pub const WAIT_MAX: Duration = Duration::from_secs(30);
/// How often a waited-for condition is checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Bound on one remoting request from a test.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// One running member.
pub struct TestMember {
    pub ctx: Arc<BrokerContext>,
    pub raft: Raft,
    /// Where its remoting server listens, as `RpcClient::invoke` takes it.
    pub remoting: String,
    /// Where its gRPC server listens.
    pub grpc: SocketAddr,
    /// Where its admin HTTP listens, `host:port`.
    pub admin: String,
    stop: CancellationToken,
    running: JoinHandle<Result<(), BrokerError>>,
}

/// A broker group whose members run in this process.
pub struct TestGroup {
    members: BTreeMap<NodeId, TestMember>,
    /// Dropped last: the members' data lives here.
    _dir: tempfile::TempDir,
}

async fn bind_any() -> Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("binding 127.0.0.1:0")
}

impl TestGroup {
    /// Starts members `1..=size` of group `broker-a`; member 1 forms the group. No NameServer.
    pub async fn start(size: u64) -> Result<Self> {
        Self::start_with(size, |_| {}).await
    }

    /// [`TestGroup::start`] with options of the test's own (`configure` sets them on every
    /// member's options before they are resolved).
    pub async fn start_with(size: u64, configure: impl Fn(&mut BrokerOptions)) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut bound = BTreeMap::new();
        for id in 1..=size {
            let listeners = Listeners {
                remoting: bind_any().await?,
                raft: bind_any().await?,
                admin: bind_any().await?,
                grpc: bind_any().await?,
            };
            bound.insert(id, listeners);
        }
        let mut peers = Vec::new();
        for (id, listeners) in &bound {
            peers.push(format!("{id}={}", listeners.raft.local_addr()?));
        }
        let peers = peers.join(",");
        let mut grpc_peers = Vec::new();
        for (id, listeners) in &bound {
            grpc_peers.push(format!("{id}={}", listeners.grpc.local_addr()?));
        }
        let grpc_peers = grpc_peers.join(",");
        let mut members = BTreeMap::new();
        for (id, listeners) in bound {
            let addr = |listener: &TcpListener| -> Result<Option<String>> {
                Ok(Some(listener.local_addr()?.to_string()))
            };
            // The same resolution as mqbroker's flags, with this member's bound addresses.
            let mut options = BrokerOptions {
                node_id: Some(id),
                data_dir: Some(dir.path().join(format!("member-{id}"))),
                peers: Some(peers.clone()),
                listen: addr(&listeners.remoting)?,
                raft_listen: addr(&listeners.raft)?,
                admin_listen: addr(&listeners.admin)?,
                grpc_listen: addr(&listeners.grpc)?,
                grpc_peers: Some(grpc_peers.clone()),
                ..BrokerOptions::default()
            };
            configure(&mut options);
            let config = BrokerConfig::from_options(options)?;
            let broker = Broker::start(config, listeners)
                .await
                .with_context(|| format!("starting member {id}"))?;
            let stop = CancellationToken::new();
            let member = TestMember {
                ctx: broker.context().clone(),
                raft: broker.raft().clone(),
                remoting: broker.remoting_addr().to_string(),
                grpc: broker.grpc_addr(),
                admin: broker.admin_addr().to_string(),
                stop: stop.clone(),
                running: tokio::spawn(broker.run(stop.cancelled_owned())),
            };
            members.insert(id, member);
        }
        Ok(Self { members, _dir: dir })
    }

    pub fn member(&self, id: NodeId) -> &TestMember {
        &self.members[&id]
    }

    /// The members other than `id`.
    pub fn others(&self, id: NodeId) -> impl Iterator<Item = (NodeId, &TestMember)> {
        self.members
            .iter()
            .filter(move |(other, _)| **other != id)
            .map(|(other, member)| (*other, member))
    }

    /// Waits until one member takes writes and every other member knows it leads; returns it.
    pub async fn wait_for_leader(&self) -> Result<NodeId> {
        let leader = wait_until("a member taking writes", || {
            self.members
                .iter()
                .find(|(_, member)| member.ctx.leadership.may_write())
                .map(|(id, _)| *id)
        })
        .await?;
        wait_until("every member knowing the leader", || {
            self.members
                .values()
                .all(|member| member.ctx.leadership.view().leader == Some(leader))
                .then_some(())
        })
        .await?;
        Ok(leader)
    }

    /// Stops one member as `mqbroker` does on SIGTERM (the rest keep running, and elect a new
    /// leader if it led); fails if it did not stop cleanly.
    pub async fn stop_member(&mut self, id: NodeId) -> Result<()> {
        let member = self
            .members
            .remove(&id)
            .ok_or_else(|| anyhow!("no running member {id}"))?;
        member.stop.cancel();
        member
            .running
            .await
            .with_context(|| format!("member {id} panicked"))?
            .with_context(|| format!("member {id} did not stop cleanly"))
    }

    /// Stops every member as `mqbroker` does on SIGTERM; fails if one did not stop cleanly.
    pub async fn shutdown(self) -> Result<()> {
        for member in self.members.values() {
            member.stop.cancel();
        }
        for (id, member) in self.members {
            member
                .running
                .await
                .with_context(|| format!("member {id} panicked"))?
                .with_context(|| format!("member {id} did not stop cleanly"))?;
        }
        Ok(())
    }
}

/// Checks `condition` every [`POLL_INTERVAL`] until it gives a value, for at most [`WAIT_MAX`].
pub async fn wait_until<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        if let Some(value) = condition() {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("waited {WAIT_MAX:?} for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A SEND_MESSAGE_V2 request as RocketMQ's clients send it: one message with a key and a tag.
pub fn send_request(topic: &str, queue_id: i32, key: &str, body: &[u8]) -> RemotingCommand {
    let header: SendMessageRequestHeaderV2 = SendMessageRequestHeader {
        producer_group: "test-producer".into(),
        topic: topic.into(),
        default_topic: AUTO_CREATE_TOPIC_KEY_TOPIC.into(),
        default_topic_queue_nums: 8,
        queue_id,
        sys_flag: 0,
        born_timestamp: 1_700_000_000_000,
        flag: 0,
        properties: Some(format!("KEYS\u{1}{key}\u{2}TAGS\u{1}test\u{2}")),
        reconsume_times: Some(0),
        unit_mode: Some(false),
        batch: Some(false),
        max_reconsume_times: None,
        broker_name: None,
    }
    .into();
    let mut command = RemotingCommand::new_request(request::SEND_MESSAGE_V2);
    command.ext_fields = header.to_ext_fields();
    command.body = Bytes::copy_from_slice(body);
    command
}

/// A PULL_MESSAGE request for up to `max` messages from `offset`, not held (no long poll).
pub fn pull_request(topic: &str, queue_id: i32, offset: i64, max: i32) -> RemotingCommand {
    let header = PullMessageRequestHeader {
        consumer_group: "test-consumer".into(),
        topic: topic.into(),
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

/// The remark of an answer, or an error saying there was none.
pub fn remark_of(answer: &RemotingCommand) -> Result<&str> {
    answer
        .remark
        .as_deref()
        .ok_or_else(|| anyhow!("answer {} has no remark", answer.code))
}
