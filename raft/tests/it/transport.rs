//! The RPC server refuses a frame over the cap without reading it, and keeps serving.

use anyhow::Result;
use raftmq_raft::network::MAX_FRAME_BYTES;
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
