//! Helpers: members on 127.0.0.1 over real TCP, each with its own data directory and the test
//! key-value state machine, plus bounded waits on openraft metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use openraft::ServerState;
use raftmq_raft::testing::{KvCommand, KvStateMachine};
use raftmq_raft::{InitializeOutcome, Node, NodeConfig, NodeId, Raft, RaftNode, RaftTls};

/// Bound on any single wait for the cluster to reach a state.
pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// The file of the test state machine inside a member's data directory.
pub const KV_FILE: &str = "kv.redb";

pub fn member_dir(root: &Path, id: NodeId) -> PathBuf {
    root.join(format!("node-{id}"))
}

/// Starts member `id` with its data in `root/node-<id>`, listening on `listen` (port 0 picks
/// one). Returns the node and a handle on its state machine for reading.
pub async fn start_member(
    root: &Path,
    id: NodeId,
    listen: SocketAddr,
) -> Result<(RaftNode, KvStateMachine)> {
    start_member_with_tls(root, id, listen, RaftTls::default()).await
}

/// [`start_member`] with its Raft links secured by `tls`.
pub async fn start_member_with_tls(
    root: &Path,
    id: NodeId,
    listen: SocketAddr,
    tls: RaftTls,
) -> Result<(RaftNode, KvStateMachine)> {
    let dir = member_dir(root, id);
    std::fs::create_dir_all(&dir)?;
    let kv = KvStateMachine::open(&dir.join(KV_FILE))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mut config = NodeConfig::new(id, &dir);
    config.tls = tls;
    let node = RaftNode::start(config, listener, kv.clone()).await?;
    Ok((node, kv))
}

/// A member as the tests track it.
pub struct Member {
    pub node: Option<RaftNode>,
    pub kv: Option<KvStateMachine>,
    pub addr: SocketAddr,
}

/// A group of members in this process.
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub members: BTreeMap<NodeId, Member>,
    /// Each member's link security (absent: plaintext).
    pub tls: BTreeMap<NodeId, RaftTls>,
}

pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Cluster {
    /// Starts members `1..=count` and initializes the group from member 1.
    pub async fn start(count: u64) -> Result<Cluster> {
        Self::start_with_tls(count, |_| RaftTls::default()).await
    }

    /// [`start`](Self::start), member `id`'s links secured by `tls(id)`.
    pub async fn start_with_tls(count: u64, tls: impl Fn(NodeId) -> RaftTls) -> Result<Cluster> {
        let root = tempfile::tempdir()?;
        let mut members = BTreeMap::new();
        let tls: BTreeMap<NodeId, RaftTls> = (1..=count).map(|id| (id, tls(id))).collect();
        for id in 1..=count {
            let (node, kv) =
                start_member_with_tls(root.path(), id, any_port(), tls[&id].clone()).await?;
            let addr = node.local_addr();
            members.insert(
                id,
                Member {
                    node: Some(node),
                    kv: Some(kv),
                    addr,
                },
            );
        }
        let cluster = Cluster { root, members, tls };
        let outcome = cluster.node(1)?.initialize(cluster.membership()).await?;
        if outcome != InitializeOutcome::Initialized {
            bail!("a fresh member 1 said {outcome:?}");
        }
        Ok(cluster)
    }

    pub fn membership(&self) -> BTreeMap<NodeId, Node> {
        self.members
            .iter()
            .map(|(id, m)| {
                (
                    *id,
                    Node {
                        addr: m.addr.to_string(),
                    },
                )
            })
            .collect()
    }

    pub fn node(&self, id: NodeId) -> Result<&RaftNode> {
        self.members
            .get(&id)
            .and_then(|m| m.node.as_ref())
            .ok_or_else(|| anyhow!("member {id} is not running"))
    }

    pub fn kv(&self, id: NodeId) -> Result<&KvStateMachine> {
        self.members
            .get(&id)
            .and_then(|m| m.kv.as_ref())
            .ok_or_else(|| anyhow!("member {id} is not running"))
    }

    pub fn running(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.node.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Waits until every running member names the same leader, one of the running members, and
    /// the leader takes writes (a quorum has acknowledged it: openraft refuses writes before).
    pub async fn leader(&self) -> Result<NodeId> {
        let running = self.running();
        let first = *running.first().context("no member running")?;
        let metrics = self
            .node(first)?
            .raft()
            .wait(Some(WAIT_MAX))
            .metrics(
                |m| m.current_leader.is_some_and(|l| running.contains(&l)),
                "a running member is leader",
            )
            .await?;
        let leader = metrics.current_leader.context("no leader")?;
        for id in &running {
            self.node(*id)?
                .raft()
                .wait(Some(WAIT_MAX))
                .current_leader(leader, "every member agrees on the leader")
                .await?;
        }
        wait_writable(self.node(leader)?.raft()).await?;
        Ok(leader)
    }

    /// Cleanly stops member `id`, keeping its data directory and address.
    pub async fn stop(&mut self, id: NodeId) -> Result<()> {
        let member = self.members.get_mut(&id).context("no such member")?;
        member.kv = None;
        let node = member.node.take().context("member already stopped")?;
        node.shutdown().await?;
        Ok(())
    }

    /// Restarts member `id` from its data directory on its old address.
    pub async fn restart(&mut self, id: NodeId) -> Result<()> {
        let addr = self.members.get(&id).context("no such member")?.addr;
        let tls = self.tls.get(&id).cloned().unwrap_or_default();
        let (node, kv) = start_member_with_tls(self.root.path(), id, addr, tls).await?;
        let member = self.members.get_mut(&id).context("no such member")?;
        member.node = Some(node);
        member.kv = Some(kv);
        Ok(())
    }

    /// Waits until every running member has applied at least `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        for id in self.running() {
            self.node(id)?
                .raft()
                .wait(Some(WAIT_MAX))
                .applied_index_at_least(Some(index), format!("member {id} applied {index}"))
                .await?;
        }
        Ok(())
    }

    /// Stops every running member.
    pub async fn shutdown(mut self) -> Result<()> {
        for id in self.running() {
            self.stop(id).await?;
        }
        Ok(())
    }
}

/// How often [`wait_for`] looks at its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Waits until `condition` holds, looking every [`POLL_INTERVAL`], for at most [`WAIT_MAX`].
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT_MAX;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {WAIT_MAX:?} waiting until {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(())
}

/// Waits until `raft` leads with a quorum's acknowledgement, i.e. takes writes.
pub async fn wait_writable(raft: &Raft) -> Result<()> {
    raft.wait(Some(WAIT_MAX))
        .metrics(
            |m| m.state == ServerState::Leader && m.last_quorum_acked.is_some(),
            "the leader has a quorum's acknowledgement",
        )
        .await?;
    Ok(())
}

/// Proposes `key = value` and returns the log index it was committed at and its apply sequence
/// number.
pub async fn put(raft: &Raft, key: &str, value: impl Into<Bytes>) -> Result<(u64, u64)> {
    let response = raft
        .client_write(KvCommand::new(key, value).to_request())
        .await
        .map_err(|e| anyhow!("client_write {key}: {e}"))?;
    let sequence: [u8; 8] = response
        .data
        .0
        .as_ref()
        .try_into()
        .map_err(|_| anyhow!("unexpected response {:?}", response.data))?;
    Ok((response.log_id.index, u64::from_le_bytes(sequence)))
}

/// Proposes `count` keys `prefix-<i>` from `concurrency` tasks at once; returns the log index of
/// every key, in key order.
pub async fn put_many(raft: &Raft, prefix: &str, count: u64, concurrency: u64) -> Result<Vec<u64>> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let raft = raft.clone();
        let prefix = prefix.to_string();
        tasks.spawn(async move {
            let mut indexes = Vec::new();
            let mut i = worker;
            while i < count {
                let (index, _) = put(&raft, &format!("{prefix}-{i:06}"), format!("v{i}")).await?;
                indexes.push((i, index));
                i += concurrency;
            }
            anyhow::Ok(indexes)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined??);
    }
    all.sort_unstable();
    Ok(all.into_iter().map(|(_, index)| index).collect())
}
