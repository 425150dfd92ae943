//! Bad storage never costs an acknowledged message and never panics: a member whose files are
//! corrupt refuses to start with a clear error, and a member whose disk fills up stops with a
//! clear error while its group carries on without losing anything it acknowledged.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftmq_client::{Admin, Message, MessageQueue, Producer};
use raftmq_tests::cluster::TestCluster;
use raftmq_tests::{Process, wait_until, workspace_binary};

const TOPIC: &str = "StorageTopic";
const STEP: Duration = Duration::from_secs(30);

async fn producer(cluster: &TestCluster) -> anyhow::Result<Producer> {
    Ok(Producer::builder()
        .namesrv(cluster.namesrv_addr.to_string())
        .group("storage-test")
        .build()
        .await?)
}

/// Starts a member that is expected to refuse to start; returns its exit status and log.
fn start_expecting_failure(cluster: &TestCluster, node_id: u64) -> anyhow::Result<(bool, String)> {
    let binary = workspace_binary("raftmq-server", "mqbroker")?;
    let args = cluster.member_args(node_id)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut process = Process::spawn(&binary, &args)?;
    let mut status = None;
    wait_until(STEP, || {
        status = process.try_status()?;
        Ok(status.is_some())
    })?;
    let success = status.is_some_and(|s| s.success());
    Ok((success, process.log_tail()))
}

fn overwrite_with_garbage(path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(path.exists(), "{} does not exist", path.display());
    std::fs::write(path, vec![0xA5u8; 64 * 1024])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_files_stop_a_member_with_a_clear_error() -> anyhow::Result<()> {
    // Small segments, so that sealed ones exist after a few sends.
    let mut cluster = TestCluster::start(3, &["--segment-size", "2KiB"])?;
    let producer = producer(&cluster).await?;
    for i in 0..60 {
        producer
            .send(Message::new(TOPIC, Bytes::from(format!("before-{i}"))))
            .await?;
    }
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let victim = cluster
        .members
        .iter()
        .map(|m| m.node_id)
        .find(|id| *id != leader)
        .unwrap();
    cluster.stop_member(victim)?;
    let data_dir = cluster.member(victim)?.data_dir.clone();

    // The state machine's file.
    let state = data_dir.join("broker-state.redb");
    let saved_state = std::fs::read(&state)?;
    overwrite_with_garbage(&state)?;
    let (success, log) = start_expecting_failure(&cluster, victim)?;
    assert!(
        !success,
        "a member with a corrupt state file must not start"
    );
    assert!(!log.contains("panicked"), "no panic:\n{log}");
    assert!(
        log.contains("mqbroker:") && log.contains("broker state") && log.contains("corrupt"),
        "a clear error that says the file is corrupt:\n{log}"
    );
    std::fs::write(&state, saved_state)?;

    // The Raft log's metadata file (vote, purge point; the segments beside it have their own
    // CRCs, tested in the raft crate).
    let log_file = data_dir.join("raft").join("raft-meta");
    let saved_meta = std::fs::read(&log_file)?;
    overwrite_with_garbage(&log_file)?;
    let (success, log) = start_expecting_failure(&cluster, victim)?;
    assert!(!success, "a member with a corrupt log must not start");
    assert!(!log.contains("panicked"), "no panic:\n{log}");
    assert!(
        log.contains("mqbroker:") && log.contains("raft log") && log.contains("corrupt"),
        "a clear error that says the log is corrupt:\n{log}"
    );
    std::fs::write(&log_file, saved_meta)?;

    // One bit flipped in a sealed segment, which nothing reads at start: the log scrub (a pass
    // right after the start) finds it, the member stops naming the file, and it then refuses
    // to start at all with that log, even though nothing would read the bad record again.
    let segments = data_dir.join("raft").join("log");
    let mut sealed: Vec<std::path::PathBuf> = std::fs::read_dir(&segments)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log") && p.with_extension("idx").exists())
        .collect();
    sealed.sort();
    let victim_segment = sealed
        .first()
        .ok_or_else(|| anyhow::anyhow!("no sealed segment in {}", segments.display()))?
        .clone();
    let mut bytes = std::fs::read(&victim_segment)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&victim_segment, &bytes)?;
    let name = victim_segment
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (success, log) = start_expecting_failure(&cluster, victim)?;
    assert!(!success, "a member with a damaged segment must stop");
    assert!(!log.contains("panicked"), "no panic:\n{log}");
    assert!(
        log.contains("corrupt") && log.contains(&name),
        "a clear error that names the damaged segment:\n{log}"
    );
    bytes[middle] ^= 0x10; // put right: the marker alone keeps it out now
    std::fs::write(&victim_segment, &bytes)?;
    let (success, log) = start_expecting_failure(&cluster, victim)?;
    assert!(!success, "a member once found corrupt must not start again");
    assert!(
        log.contains("found corrupt earlier") && log.contains("Replace the member"),
        "the refusal says why and what to do:\n{log}"
    );

    // The other two carry on.
    let result = producer
        .send(Message::new(TOPIC, Bytes::from_static(b"after")))
        .await?;
    assert!(result.queue_offset >= 0);
    producer.shutdown().await;
    Ok(())
}

/// A small tmpfs for one member's data, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| SmallDisk {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Fills the file system at `path` with ballast files of 1 MiB until it is full; returns them.
fn fill_with_ballast(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let chunk = vec![0x5Au8; 1 << 20];
    let mut ballast = Vec::new();
    for n in 0..4096 {
        let path = dir.join(format!("ballast-{n}"));
        match std::fs::write(&path, &chunk) {
            Ok(()) => ballast.push(path),
            Err(err) if err.raw_os_error() == Some(28) => {
                // The last one is partial: keep it too (it holds space).
                ballast.push(path);
                return Ok(ballast);
            }
            Err(err) => return Err(err.into()),
        }
    }
    anyhow::bail!("{} never filled", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_one_members_writes_and_it_resumes_when_space_is_freed()
-> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let Some(disk) = SmallDisk::mount(&scratch.path().join("small"), "24m") else {
        eprintln!(
            "SKIPPED a_full_disk_stops_one_members_writes_and_it_resumes_when_space_is_freed: cannot mount a tmpfs (needs root)"
        );
        return Ok(());
    };
    // Small segments: the member reserves space 1 MiB at a time.
    let mut cluster = TestCluster::start(3, &["--segment-size", "1MiB"])?;
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let victim = cluster
        .members
        .iter()
        .map(|m| m.node_id)
        .find(|id| *id != leader)
        .unwrap();
    // Move one follower onto the small disk, then fill what is left of it.
    cluster.stop_member(victim)?;
    let small_dir = disk.path.join("member");
    copy_dir(&cluster.member(victim)?.data_dir.clone(), &small_dir)?;
    cluster.set_data_dir(victim, small_dir)?;
    cluster.start_member(victim)?;
    let ballast = fill_with_ballast(&disk.path)?;

    // Produce until the follower says its disk is full (bounded in count and time).
    let producer = producer(&cluster).await?;
    let mut acknowledged: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let body = "x".repeat(1024);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut disk_full = false;
    for batch in 0..2000 {
        let messages: Vec<Message> = (0..32)
            .map(|i| Message::new(TOPIC, Bytes::from(format!("{batch}-{i}-{body}"))))
            .collect();
        if let Ok(result) = producer.send_batch(messages).await {
            for (i, _) in result.msg_ids.iter().enumerate() {
                acknowledged.insert(
                    (result.queue.queue_id, result.queue_offset + i as i64),
                    format!("{batch}-{i}-"),
                );
            }
        }
        disk_full = cluster.raft_status(victim).is_ok_and(|s| s.disk_full);
        if disk_full || Instant::now() > deadline {
            break;
        }
    }
    assert!(disk_full, "the member on the full disk never reported it");
    // It stops taking writes but keeps running, with a clear error in its log.
    assert!(cluster.is_running(victim)?, "it keeps running");
    let log = cluster.log_tail(victim)?;
    assert!(!log.contains("panicked"), "no panic:\n{log}");
    assert!(
        // The log says "No space left on device" when an append meets ENOSPC; the state
        // machine stops before it would, and says how many bytes are free.
        log.contains("disk full")
            && (log.contains("No space left on device") || log.contains("bytes free")),
        "a clear error line that says the disk is full:\n{log}"
    );
    let stalled_at = cluster.raft_status(victim)?.last_log_index;

    // The group carries on without it.
    for i in 0..20 {
        let result = producer
            .send(Message::new(TOPIC, Bytes::from(format!("while-full-{i}"))))
            .await?;
        acknowledged.insert(
            (result.queue.queue_id, result.queue_offset),
            format!("while-full-{i}"),
        );
    }
    let leader_last = cluster.raft_status(leader)?.last_log_index;
    assert!(leader_last > stalled_at, "the group went on");
    assert!(
        cluster.raft_status(victim)?.disk_full,
        "still full: it does not pretend"
    );

    // Space is freed: the member goes on by itself, no restart, and catches up.
    for path in ballast {
        std::fs::remove_file(path)?;
    }
    let caught_up = wait_until(STEP, || {
        let victim_status = cluster.raft_status(victim)?;
        Ok(!victim_status.disk_full && victim_status.applied_index >= leader_last)
    });
    assert!(
        caught_up.is_ok(),
        "the member never caught up: {caught_up:?}"
    );
    assert!(cluster.is_running(victim)?, "it never stopped");

    // The group carries on, and everything acknowledged is there, at its offset.
    let after = producer
        .send(Message::new(
            TOPIC,
            Bytes::from_static(b"after the disk filled"),
        ))
        .await?;
    assert!(after.queue_offset >= 0);
    let leader = cluster.wait_for_registered_leader(STEP)?;
    let leader_addr = cluster.member(leader)?.remoting().to_string();
    let admin = Admin::new(Some(&cluster.namesrv_addr.to_string()))?;
    let mut by_queue: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for ((queue, offset), prefix) in &acknowledged {
        by_queue
            .entry(*queue)
            .or_default()
            .push((*offset, prefix.clone()));
    }
    for (queue_id, expected) in by_queue {
        let queue = MessageQueue {
            topic: TOPIC.into(),
            broker_name: cluster.broker_name.clone(),
            queue_id,
        };
        let read = admin.read_queue(&leader_addr, &queue, 0, 1_000_000).await?;
        let stored: BTreeMap<i64, String> = read
            .into_iter()
            .map(|m| {
                (
                    m.queue_offset,
                    String::from_utf8_lossy(&m.body).into_owned(),
                )
            })
            .collect();
        for (offset, prefix) in expected {
            let body = stored
                .get(&offset)
                .unwrap_or_else(|| panic!("acknowledged {queue_id}:{offset} is missing"));
            assert!(
                body.starts_with(&prefix),
                "{queue_id}:{offset} holds another message"
            );
        }
    }
    producer.shutdown().await;
    drop(cluster);
    drop(disk);
    Ok(())
}
