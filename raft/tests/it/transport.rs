//! The RPC server refuses a frame over the cap without reading it, and keeps serving; append
//! requests over the byte budget are split.

use anyhow::{Context, Result};
use raftmq_raft::network::{MAX_APPEND_RPC_BYTES, MAX_FRAME_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::{Cluster, WAIT_MAX, put};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_cap_closes_only_that_connection() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let target = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap_or(leader);

    let mut stream = TcpStream::connect(cluster.node(target)?.local_addr()).await?;
    let claimed = u32::try_from(MAX_FRAME_BYTES + 1)?;
    stream.write_all(&claimed.to_be_bytes()).await?;
    stream.write_all(b"and a little body").await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT_MAX, stream.read(&mut buf)).await?;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the server closes the connection: {read:?}"
    );

    // The group still works, through that member too.
    let (index, _) = put(cluster.node(leader)?.raft(), "still-alive", "yes").await?;
    cluster.wait_applied(index).await?;
    assert_eq!(
        cluster.kv(target)?.get("still-alive")?.as_deref(),
        Some(&b"yes"[..])
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_splits_append_requests_over_the_byte_budget() -> Result<()> {
    const ENTRIES: u64 = 9;
    let value_bytes = MAX_APPEND_RPC_BYTES / 6;
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let lagging = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .context("a follower")?;
    cluster.stop(lagging).await?;

    // One and a half times the byte budget, written while the follower is away.
    let value = bytes::Bytes::from(vec![0x7E; value_bytes]);
    let mut last = 0;
    for i in 0..ENTRIES {
        let (index, _) = put(
            cluster.node(leader)?.raft(),
            &format!("big-{i}"),
            value.clone(),
        )
        .await?;
        last = index;
    }

    cluster.restart(lagging).await?;
    cluster.wait_applied(last).await?;
    let metrics = cluster.node(lagging)?.log_metrics();
    assert!(metrics.entries_appended >= ENTRIES);
    // Without the budget all of it would arrive in one append; with it, in at least as many
    // appends as the budget divides the bytes into.
    let min_appends = (ENTRIES * value_bytes as u64).div_ceil(MAX_APPEND_RPC_BYTES as u64);
    assert!(min_appends >= 2);
    assert!(
        metrics.appends >= min_appends,
        "{} entries of {} bytes came in {} appends: the requests were not split",
        metrics.entries_appended,
        value_bytes,
        metrics.appends
    );
    assert_eq!(cluster.kv(lagging)?.get("big-8")?, Some(value));
    cluster.shutdown().await
}
