//! A member stopped without a clean shutdown (its tokio runtime is dropped: no raft shutdown,
//! no flusher stop, no redb close) restarts with every committed entry present.
//!
//! The member runs in its own runtime on its own thread and is made the leader. openraft 0.10's
//! leader replicates before its own fsync and counts itself only once flushed, so a write it
//! acknowledged was fsynced by a majority, not necessarily by itself: what its disk holds must
//! agree with what was acknowledged, and every acknowledged entry must be on a majority.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use raftmq_raft::log_store::{LogStore, LogStoreConfig};
use raftmq_raft::testing::{KvCommand, KvStateMachine};
use raftmq_raft::{Entry, EntryPayload, Node, NodeId, Raft, RaftNode, codec};

use crate::cluster::{
    KV_FILE, WAIT_MAX, any_port, member_dir, put, put_many, start_member, wait_writable,
};

const CRASHING: NodeId = 1;
const WRITES: u64 = 300;
/// Attempts to make the crashing member the leader.
const ELECTION_ATTEMPTS: usize = 5;
/// Pause between attempts to reopen files the crashed member may still be releasing.
const REOPEN_PAUSE: Duration = Duration::from_millis(50);

/// A member running in a runtime of its own, which the test can drop at any moment.
struct Crashable {
    raft: Raft,
    addr: SocketAddr,
    crash: mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start_crashable(root: PathBuf, id: NodeId) -> Result<Crashable> {
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(Raft, SocketAddr)>>(1);
    let (crash_tx, crash_rx) = mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name(format!("member-{id}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            match runtime.block_on(start_member(&root, id, any_port())) {
                Ok((node, kv)) => {
                    drop(kv);
                    let _ = ready_tx.send(Ok((node.raft().clone(), node.local_addr())));
                    // Bounded: if the test dies, the member does not outlive it for long.
                    let _ = crash_rx.recv_timeout(WAIT_MAX * 4);
                    // The crash: every task stops wherever it stands.
                    drop(runtime);
                    drop(node);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
    let (raft, addr) = ready_rx
        .recv_timeout(WAIT_MAX)
        .context("crashable member did not start")??;
    Ok(Crashable {
        raft,
        addr,
        crash: crash_tx,
        thread,
    })
}

/// Retries `open` while the crashed member's threads are still letting go of its files.
fn reopen<T>(what: &str, mut open: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match open() {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "{what} not yet released");
                std::thread::sleep(REOPEN_PAUSE);
            }
            Err(e) => return Err(e.context(format!("cannot reopen {what}"))),
        }
    }
}

/// Reads the crashed member's log and state machine straight from disk: what they hold agrees
/// with what was acknowledged, and every acknowledged entry is on a majority (the crashed disk
/// plus the survivors' logs).
async fn check_after_crash(
    dir: &Path,
    acknowledged: &BTreeMap<u64, KvCommand>,
    survivors: [&RaftNode; 2],
) -> Result<()> {
    let last_acknowledged = *acknowledged.keys().max().context("no writes")?;
    let log = reopen("the log", || {
        Ok(LogStore::open(dir, LogStoreConfig::default())?)
    })?;
    let on_disk = log.reader().read_entries(0..last_acknowledged + 1).await?;
    log.flusher().stop().await;
    drop(log);
    let mut survivor_logs = Vec::new();
    for survivor in survivors {
        survivor_logs.push(
            survivor
                .log_reader()
                .read_entries(0..last_acknowledged + 1)
                .await?,
        );
    }
    let holds = |entries: &[Entry], index: u64, command: &KvCommand| -> Result<bool> {
        let Some(entry) = entries.iter().find(|e| e.log_id.index == index) else {
            return Ok(false);
        };
        let EntryPayload::Normal(request) = &entry.payload else {
            bail!("entry {index} is not a command");
        };
        let stored: KvCommand = codec::decode(&request.0)?;
        assert_eq!(&stored, command, "entry {index} changed");
        Ok(true)
    };
    for (index, command) in acknowledged {
        let mut copies = usize::from(holds(&on_disk, *index, command)?);
        for entries in &survivor_logs {
            copies += usize::from(holds(entries, *index, command)?);
        }
        assert!(
            copies >= 2,
            "acknowledged entry {index} is on {copies} of 3 members"
        );
    }

    // The state machine applied only acknowledged commands, each at its log index. (It may be
    // ahead of the crashed member's own log: an entry a majority fsynced is committed and
    // applied even if the leader's own fsync had not finished.)
    let kv = reopen("the state machine", || {
        Ok(KvStateMachine::open(&dir.join(KV_FILE))?)
    })?;
    for (index, key) in kv.history()? {
        let command = acknowledged
            .get(&index)
            .with_context(|| format!("applied entry {index} was never acknowledged"))?;
        assert_eq!(
            command.key, key,
            "applied entry {index} differs from the log"
        );
    }
    Ok(())
}

async fn wait_leader(raft: &Raft, among: &[NodeId]) -> Result<NodeId> {
    let metrics = raft
        .wait(Some(WAIT_MAX))
        .metrics(
            |m| m.current_leader.is_some_and(|l| among.contains(&l)),
            "a leader among the live members",
        )
        .await?;
    metrics.current_leader.context("no leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_without_shutdown_restarts_with_every_committed_entry() -> Result<()> {
    let root = tempfile::tempdir()?;
    let crashable = start_crashable(root.path().to_path_buf(), CRASHING)?;
    let (node2, kv2) = start_member(root.path(), 2, any_port()).await?;
    let (node3, kv3) = start_member(root.path(), 3, any_port()).await?;
    let members: BTreeMap<NodeId, Node> = [
        (CRASHING, crashable.addr),
        (2, node2.local_addr()),
        (3, node3.local_addr()),
    ]
    .into_iter()
    .map(|(id, addr)| {
        (
            id,
            Node {
                addr: addr.to_string(),
            },
        )
    })
    .collect();
    crashable
        .raft
        .initialize(members)
        .await
        .map_err(|e| anyhow!("initialize: {e}"))?;

    // Make the crashing member the leader.
    let mut leader = wait_leader(&crashable.raft, &[1, 2, 3]).await?;
    for _ in 0..ELECTION_ATTEMPTS {
        if leader == CRASHING {
            break;
        }
        crashable.raft.trigger().elect(false).await?;
        leader = wait_leader(&crashable.raft, &[1, 2, 3]).await?;
    }
    assert_eq!(
        leader, CRASHING,
        "could not make member {CRASHING} the leader"
    );
    wait_writable(&crashable.raft).await?;

    let indexes = put_many(&crashable.raft, "pre-crash", WRITES, 32).await?;
    let acknowledged: BTreeMap<u64, KvCommand> = indexes
        .iter()
        .enumerate()
        .map(|(i, index)| {
            (
                *index,
                KvCommand::new(format!("pre-crash-{i:06}"), format!("v{i}")),
            )
        })
        .collect();

    // Crash: drop its runtime mid-flight.
    crashable
        .crash
        .send(())
        .map_err(|_| anyhow!("crashable member already gone"))?;
    drop(crashable.raft);
    crashable
        .thread
        .join()
        .map_err(|_| anyhow!("crashable member thread panicked"))?;

    let dir = member_dir(root.path(), CRASHING);
    check_after_crash(&dir, &acknowledged, [&node2, &node3]).await?;

    // The survivors carry on.
    let new_leader = wait_leader(node2.raft(), &[2, 3]).await?;
    let survivor = if new_leader == 2 { &node2 } else { &node3 };
    wait_writable(survivor.raft()).await?;
    put_many(survivor.raft(), "post-crash", 100, 16).await?;

    // The crashed member restarts from its data directory and catches up.
    let (node1, kv1) = start_member(root.path(), CRASHING, crashable.addr).await?;
    let (index, _) = put(survivor.raft(), "after-restart", "x").await?;
    for node in [&node1, &node2, &node3] {
        node.raft()
            .wait(Some(WAIT_MAX))
            .applied_index_at_least(Some(index), "caught up")
            .await?;
    }
    let reference = kv2.history()?;
    assert_eq!(reference.len() as u64, WRITES + 100 + 1);
    assert_eq!(kv1.history()?, reference);
    assert_eq!(kv3.history()?, reference);

    drop((kv1, kv2, kv3));
    for node in [node1, node2, node3] {
        node.shutdown().await?;
    }
    Ok(())
}
