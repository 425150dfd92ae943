//! `mq cluster health` and `mq topic route --explain` against a live cluster of processes,
//! taken down step by step: healthy (exit 0), a member down (3), no leader that takes writes
//! (4), the NameServer gone (5); and a route explained at each step that matters.

use std::process::Command;
use std::time::{Duration, Instant};

use raftmq_tests::cluster::{START_TIMEOUT, TestCluster};
use raftmq_tests::script_cluster::{COMMAND_TIMEOUT, CommandOutput, run_bounded};
use raftmq_tests::workspace_binary;

/// Bound on the cluster reaching the state a step waits for.
const STEP: Duration = Duration::from_secs(60);

struct Mq {
    binary: std::path::PathBuf,
    namesrv: String,
}

impl Mq {
    fn run(&self, args: &[&str]) -> anyhow::Result<CommandOutput> {
        run_bounded(
            Command::new(&self.binary)
                .arg("-n")
                .arg(&self.namesrv)
                .args(args)
                .env_remove("NAMESRV_ADDR"),
            COMMAND_TIMEOUT,
        )
    }

    /// Runs `mq cluster health` until it exits with `code` (bounded by [`STEP`]).
    fn health_until(&self, code: i32) -> anyhow::Result<CommandOutput> {
        let deadline = Instant::now() + STEP;
        loop {
            let output = self.run(&["cluster", "health"])?;
            if output.code == Some(code) {
                return Ok(output);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "mq cluster health never exited {code}; last {:?}:\n{}{}",
                output.code,
                output.stdout,
                output.stderr
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn health_exit_codes_follow_the_cluster_from_healthy_to_no_leader_to_no_namesrv()
-> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3, &[])?;
    let mq = Mq {
        binary: workspace_binary("raftmq-cli", "mq")?,
        namesrv: cluster.namesrv_addr.to_string(),
    };

    // Healthy: a watch ends at the first healthy check with 0.
    let watched = mq.run(&[
        "cluster",
        "health",
        "--watch",
        "--exit-when-healthy",
        "--interval-ms",
        "200",
        "--timeout-ms",
        "60000",
    ])?;
    assert_eq!(
        watched.code,
        Some(0),
        "{}{}",
        watched.stdout,
        watched.stderr
    );
    assert!(watched.stdout.contains("HEALTHY"), "{}", watched.stdout);
    let json = mq.run(&["--json", "cluster", "health"])?;
    assert_eq!(json.code, Some(0), "{}{}", json.stdout, json.stderr);
    let report: serde_json::Value = serde_json::from_str(&json.stdout)?;
    assert_eq!(report["verdict"], "healthy");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(
        report["groups"][0]["members"].as_array().map(Vec::len),
        Some(3)
    );

    // Routes: a topic that exists is routable; one that does not is explained.
    let created = mq.run(&["topic", "create", "-t", "HealthTopic", "--queues", "2"])?;
    assert!(created.success, "{}", created.stderr);
    let deadline = Instant::now() + STEP;
    loop {
        let routed = mq.run(&["topic", "route", "-t", "HealthTopic", "--explain"])?;
        if routed.success {
            assert!(
                routed.stdout.contains("topic HealthTopic: routable"),
                "{}",
                routed.stdout
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "HealthTopic never routable: {}",
            routed.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let unknown = mq.run(&["topic", "route", "-t", "NoSuchTopic", "--explain"])?;
    assert_eq!(unknown.code, Some(1), "{}", unknown.stdout);
    assert!(
        unknown.stdout.contains("topic NoSuchTopic: topic unknown"),
        "{}",
        unknown.stdout
    );
    assert!(
        unknown
            .stdout
            .contains("no broker group's leader has topic NoSuchTopic"),
        "{}",
        unknown.stdout
    );
    let plain = mq.run(&["topic", "route", "-t", "NoSuchTopic"])?;
    assert!(plain.stderr.contains("--explain"), "{}", plain.stderr);

    // A member down: degraded, 3.
    let leader = cluster.wait_for_registered_leader(START_TIMEOUT)?;
    let followers: Vec<u64> = cluster
        .members
        .iter()
        .map(|m| m.node_id)
        .filter(|id| *id != leader)
        .collect();
    cluster.kill_member(followers[0])?;
    // The leader's last contact with each follower: the dead one's grows, the live one's stays
    // within a few heartbeats (also the `raft_follower_last_contact_seconds` metric).
    raftmq_tests::wait_until(STEP, || {
        let status = cluster.raft_status(leader)?;
        let contact = |id: u64| status.followers.get(&id).and_then(|f| f.last_contact_ms);
        Ok(contact(followers[0]).is_some_and(|ms| ms >= 2_000)
            && contact(followers[1]).is_some_and(|ms| ms < 2_000))
    })?;
    let degraded = mq.health_until(3)?;
    assert!(
        degraded.stdout.contains("DEGRADED (exit 3)"),
        "{}",
        degraded.stdout
    );
    assert!(
        degraded.stdout.contains("does not answer"),
        "{}",
        degraded.stdout
    );

    // A majority down: the last member cannot be a writable leader, 4.
    cluster.kill_member(followers[1])?;
    let no_leader = mq.health_until(4)?;
    assert!(
        no_leader.stdout.contains("NO LEADER (exit 4)"),
        "{}",
        no_leader.stdout
    );

    // The NameServer gone: 5, and the route explanation says so.
    cluster.namesrv.terminate()?;
    let unreachable = mq.run(&["cluster", "health"])?;
    assert_eq!(
        unreachable.code,
        Some(5),
        "{}{}",
        unreachable.stdout,
        unreachable.stderr
    );
    assert!(
        unreachable.stdout.contains("UNREACHABLE (exit 5)"),
        "{}",
        unreachable.stdout
    );
    let no_namesrv = mq.run(&["topic", "route", "-t", "HealthTopic", "--explain"])?;
    assert_eq!(no_namesrv.code, Some(1), "{}", no_namesrv.stdout);
    assert!(
        no_namesrv.stdout.contains("name server unreachable")
            && no_namesrv.stdout.contains("no NameServer answered"),
        "{}",
        no_namesrv.stdout
    );
    Ok(())
}
