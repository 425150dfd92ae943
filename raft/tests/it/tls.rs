//! Raft links over mutual TLS: a group whose members hold certificates of one CA elects,
//! replicates and fails over; a connection without a certificate, with one of another CA, or
//! in plaintext is closed before any request of it reaches Raft.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use raftmq_raft::RaftTls;
use raftmq_tls::test_certs::TestCa;
use raftmq_tls::{ClientTlsConfig, TlsConnector, TlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::{Cluster, WAIT_MAX, put};

/// Sends one frame that is no Raft request and reads what comes back: a member answers a peer
/// it let in with a BadRequest frame (some bytes), and closes on one it refused (0 bytes or an
/// error).
async fn answered_garbage(connector: &TlsConnector, addr: SocketAddr) -> Result<bool> {
    let tcp = TcpStream::connect(addr).await?;
    let mut stream = match connector.connect(&addr.to_string(), tcp).await {
        Ok(stream) => stream,
        Err(_) => return Ok(false),
    };
    let garbage = b"not a raft request";
    let frame_length = u32::try_from(garbage.len())?.to_be_bytes();
    if stream.write_all(&frame_length).await.is_err() || stream.write_all(garbage).await.is_err() {
        return Ok(false);
    }
    let _ = stream.flush().await;
    let mut answer = [0u8; 64];
    let read = tokio::time::timeout(WAIT_MAX, stream.read(&mut answer))
        .await
        .context("the member neither answered nor closed")?;
    Ok(matches!(read, Ok(read) if read > 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_over_mutual_tls_replicates_fails_over_and_refuses_outsiders() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let ca = TestCa::new("cluster");
    let mut cluster = Cluster::start_with_tls(3, |id| {
        let config = ca.process_config(certs.path(), &format!("member-{id}"), TlsMode::Enforcing);
        RaftTls::from_config(&config).expect("member TLS")
    })
    .await?;

    let leader = cluster.leader().await?;
    let (index, _) = put(cluster.node(leader)?.raft(), "over", "tls").await?;
    cluster.wait_applied(index).await?;
    for id in cluster.running() {
        assert_eq!(cluster.kv(id)?.get("over")?.as_deref(), Some(&b"tls"[..]));
    }

    // The links reconnect (new handshakes) after the leader goes away.
    cluster.stop(leader).await?;
    let next = cluster.leader().await?;
    assert_ne!(next, leader);
    let (index, _) = put(cluster.node(next)?.raft(), "after", "failover").await?;
    cluster.wait_applied(index).await?;
    cluster.restart(leader).await?;
    cluster.wait_applied(index).await?;
    assert_eq!(
        cluster.kv(leader)?.get("after")?.as_deref(),
        Some(&b"failover"[..])
    );

    let target = cluster.node(next)?.local_addr();
    // A member's own credentials get an answer: the refusals below are the certificates'.
    let member = ca.process_config(certs.path(), "member-4", TlsMode::Enforcing);
    assert!(answered_garbage(&member.connector()?, target).await?);

    let no_certificate = ca.client_config(certs.path()).connector()?;
    assert!(!answered_garbage(&no_certificate, target).await?);

    let rogue_dir = tempfile::tempdir()?;
    let rogue_files = TestCa::new("rogue").issue(rogue_dir.path(), "intruder");
    let other_ca = ClientTlsConfig {
        enabled: true,
        ca: Some(ca.write_ca(rogue_dir.path())),
        cert: Some(rogue_files.cert),
        key: Some(rogue_files.key),
    }
    .connector()?;
    assert!(!answered_garbage(&other_ca, target).await?);
    assert!(!answered_garbage(&TlsConnector::plaintext(), target).await?);

    // The group is unharmed.
    let (index, _) = put(cluster.node(next)?.raft(), "still", "serving").await?;
    cluster.wait_applied(index).await?;
    cluster.shutdown().await
}
