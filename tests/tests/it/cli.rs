//! The `mq` binary against clusters started by `scripts/cluster.sh up` (the README's path):
//! every `--json` output parsed and checked, errors as one line and a failing exit code, a
//! member killed with `kill -9` by its pid file, and `down` leaving no process behind.

use std::collections::BTreeSet;
use std::time::Duration;

use raftmq_tests::script_cluster::{ScriptCluster, is_alive, signal};
use raftmq_tests::{Process, wait_until};
use serde_json::Value;

/// Bound on a consumer printing a message or exiting after SIGINT.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a group electing a new leader after its leader was killed.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn u64_of(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

/// The group's committed offsets, summed, and its total lag, from `mq group describe`.
fn group_totals(cluster: &ScriptCluster, group: &str) -> (u64, u64) {
    let described = cluster
        .mq_json(&["group", "describe", "-g", group])
        .unwrap();
    assert_eq!(described["group"], group);
    let committed = described["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|queue| u64_of(&queue["committed"], "committed"))
        .sum();
    (committed, u64_of(&described["total_lag"], "total_lag"))
}

/// One clean error line on stderr and a failing exit code.
fn assert_fails_cleanly(cluster: &ScriptCluster, args: &[&str], expected: &str) {
    let output = cluster.mq(args).unwrap();
    assert!(!output.success, "mq {args:?} succeeded: {}", output.stdout);
    assert_eq!(output.code, Some(1), "mq {args:?}: {}", output.stderr);
    let lines: Vec<&str> = output.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "mq {args:?} stderr: {}", output.stderr);
    assert!(
        lines[0].starts_with("mq: error: ") && lines[0].contains(expected),
        "mq {args:?} stderr: {}",
        output.stderr
    );
    assert!(!output.stderr.contains("panicked"), "{}", output.stderr);
}

#[test]
fn mq_json_outputs_kill_and_down_against_a_script_cluster() {
    let mut cluster = ScriptCluster::up(1).unwrap();
    // `up` showed a round trip and how to go on.
    let up = &cluster.up_output.stdout;
    assert!(up.contains("hello from cluster.sh"), "{up}");
    assert!(up.contains("consume -t TopicTest"), "{up}");

    // status: one group, three voters up, a leader the NameServer lists in slot 0.
    let status = cluster.mq_json(&["cluster", "status"]).unwrap();
    assert_eq!(strings(&status["namesrv"]), [cluster.namesrv_addr()]);
    let groups = status["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    assert_eq!(group["broker_name"], "broker-a");
    assert_eq!(group["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(group["leader_registered"], true);
    let leader = u64_of(&group["leader"], "leader");
    assert!(u64_of(&group["commit_index"], "commit_index") > 0);
    let members = group["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for member in members {
        assert_eq!(member["up"], true, "{member}");
        assert_eq!(member["role"], "voter");
        assert!(member["lag"].is_u64(), "{member}");
        assert!(member["admin_addr"].is_string(), "{member}");
        let expected_state = if member["node_id"] == leader {
            "Leader"
        } else {
            "Follower"
        };
        assert_eq!(member["state"], expected_state, "{member}");
    }

    // topic create / list / describe.
    let created = cluster
        .mq_json(&["topic", "create", "-t", "CliTest", "--queues", "4"])
        .unwrap();
    assert_eq!(created["topic"], "CliTest");
    assert_eq!(created["queues"], 4);
    assert_eq!(strings(&created["broker_names"]), ["broker-a"]);
    let listed = cluster.mq_json(&["topic", "list"]).unwrap();
    assert!(strings(&listed["topics"]).contains(&"CliTest".to_owned()));

    // produce: three messages with a key and a tag.
    let produced = cluster
        .mq_json(&[
            "produce", "-t", "CliTest", "--key", "k1", "--tag", "tA", "--window", "1", "a", "b",
            "c",
        ])
        .unwrap();
    assert_eq!(produced["sent"], 3);
    assert_eq!(produced["failed"], 0);
    assert_eq!(produced["unknown"], 0);
    let sent = produced["messages"].as_array().unwrap();
    assert_eq!(sent.len(), 3);
    for message in sent {
        assert_eq!(message["broker_name"], "broker-a");
        assert!(u64_of(&message["queue_id"], "queue_id") < 4);
        assert!(message["msg_id"].as_str().is_some_and(|id| !id.is_empty()));
    }

    // message get: the first message, by its queue and offset.
    let queue = sent[0]["queue_id"].to_string();
    let offset = sent[0]["queue_offset"].to_string();
    let message = cluster
        .mq_json(&[
            "message", "get", "-t", "CliTest", "-q", &queue, "-o", &offset,
        ])
        .unwrap();
    assert_eq!(message["body"], "a");
    assert_eq!(strings(&message["keys"]), ["k1"]);
    assert_eq!(message["tags"], "tA");
    assert_eq!(message["msg_id"], sent[0]["msg_id"]);
    assert_eq!(message["queue_offset"], sent[0]["queue_offset"]);

    let described = cluster
        .mq_json(&["topic", "describe", "-t", "CliTest"])
        .unwrap();
    let queues = described["groups"][0]["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 4);
    let stored: u64 = queues
        .iter()
        .map(|queue| u64_of(&queue["max_offset"], "max_offset"))
        .sum();
    assert_eq!(stored, 3);

    // consume all three, then the group shows them committed with no lag.
    let consume = [
        "consume",
        "-t",
        "CliTest",
        "-g",
        "cli_group",
        "--count",
        "3",
        "--idle-timeout-ms",
        "15000",
    ];
    let consumed = cluster.mq_json(&consume).unwrap();
    assert_eq!(consumed["consumed"], 3);
    let bodies: BTreeSet<String> = consumed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies, BTreeSet::from(["a".into(), "b".into(), "c".into()]));
    assert!(!consumed["committed"].as_array().unwrap().is_empty());
    assert_eq!(group_totals(&cluster, "cli_group"), (3, 0));
    let groups = cluster.mq_json(&["group", "list"]).unwrap();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|group| group["group"] == "cli_group" && group["total_lag"] == 0),
        "{groups}"
    );

    // offset reset to the first message: through Raft, on every queue; lag comes back.
    let reset = cluster
        .mq_json(&[
            "offset",
            "reset",
            "-g",
            "cli_group",
            "-t",
            "CliTest",
            "--offset",
            "first",
        ])
        .unwrap();
    let reset_queues = reset["queues"].as_array().unwrap();
    assert_eq!(reset_queues.len(), 4);
    assert!(reset_queues.iter().all(|queue| queue["offset"] == 0));
    assert_eq!(group_totals(&cluster, "cli_group"), (0, 3));
    // ... so the same messages are consumed again from the committed offsets.
    let again = cluster.mq_json(&consume).unwrap();
    assert_eq!(again["consumed"], 3);
    // Reset by time to the far future: every queue to its end.
    cluster
        .mq_json(&[
            "offset",
            "reset",
            "-g",
            "cli_group",
            "-t",
            "CliTest",
            "--timestamp",
            "4000000000000",
        ])
        .unwrap();
    assert_eq!(group_totals(&cluster, "cli_group"), (3, 0));

    // Ctrl-C (SIGINT) on a consume without --count: it commits what it printed and exits 0.
    let mut consumer = Process::spawn(
        &cluster.mq,
        &[
            "-n",
            &cluster.namesrv_addr(),
            "consume",
            "-t",
            "CliTest",
            "-g",
            "ctrl_c_group",
            "--from",
            "first",
        ],
    )
    .unwrap();
    for _ in 0..3 {
        consumer
            .wait_for_stdout_line(|line| line.starts_with("broker-a:"), CONSUME_TIMEOUT)
            .unwrap();
    }
    signal(consumer.pid(), "-INT").unwrap();
    let mut exit = None;
    wait_until(CONSUME_TIMEOUT, || {
        exit = consumer.try_status()?;
        Ok(exit.is_some())
    })
    .unwrap();
    assert!(exit.unwrap().success(), "{}", consumer.log_tail());
    assert_eq!(group_totals(&cluster, "ctrl_c_group"), (3, 0));

    // Failures: one line, exit code 1; usage errors are clap's (exit code 2).
    assert_fails_cleanly(
        &cluster,
        &["message", "get", "-t", "CliTest", "-q", "0", "-o", "999999"],
        "no message at",
    );
    assert_fails_cleanly(
        &cluster,
        &["topic", "describe", "-t", "NoSuchTopic"],
        "does not exist",
    );
    assert_fails_cleanly(
        &cluster,
        &["produce", "-t", "bad topic!", "x"],
        "topic name",
    );
    assert_fails_cleanly(
        &cluster,
        &[
            "cluster",
            "remove-member",
            "-b",
            "broker-a",
            "--node-id",
            "9",
        ],
        "not a member",
    );
    assert_fails_cleanly(
        &cluster,
        &["group", "describe", "-g", "nobody"],
        "no consumer group",
    );
    let usage = cluster.mq(&["cluster", "add-member"]).unwrap();
    assert_eq!(usage.code, Some(2), "{}", usage.stderr);
    let unreachable = raftmq_tests::script_cluster::run_bounded(
        std::process::Command::new(&cluster.mq).args(["-n", "127.0.0.1:1", "topic", "list"]),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(unreachable.code, Some(1));
    assert!(
        unreachable.stderr.starts_with("mq: error: "),
        "{}",
        unreachable.stderr
    );

    // transfer-leader moves leadership to a follower; the NameServer follows.
    let target = if leader == 1 { 2 } else { 1 };
    let target_text = target.to_string();
    let moved = cluster
        .mq_json(&[
            "cluster",
            "transfer-leader",
            "-b",
            "broker-a",
            "--node-id",
            &target_text,
        ])
        .unwrap();
    assert_eq!(moved["leader"], target, "{moved}");
    let leader = target;
    let status = cluster.mq_json(&["cluster", "status"]).unwrap();
    assert_eq!(status["groups"][0]["leader"], leader, "{status}");

    // kill -9 the leader by its pid file: status shows it down and another leader.
    let killed_pid = cluster.kill_member("broker-a", leader).unwrap();
    let mut last = Value::Null;
    wait_until(FAILOVER_TIMEOUT, || {
        let status = cluster.mq_json(&["cluster", "status"])?;
        let group = &status["groups"][0];
        let new_leader = group["leader"].as_u64();
        let killed_down = group["members"].as_array().is_some_and(|members| {
            members
                .iter()
                .any(|member| member["node_id"] == leader && member["up"] == false)
        });
        let done = new_leader.is_some_and(|id| id != leader)
            && group["leader_registered"] == true
            && killed_down;
        last = status;
        Ok(done)
    })
    .unwrap_or_else(|err| panic!("{err}; last status {last}\n{}", cluster.log_tails()));
    // ... and the group still takes writes.
    let after = cluster
        .mq_json(&["produce", "-t", "CliTest", "after the kill"])
        .unwrap();
    assert_eq!(after["sent"], 1);

    // down stops every process it started and leaves none behind.
    let pids = cluster.pids().unwrap();
    assert_eq!(pids.len(), 4, "{pids:?}");
    let down = cluster.down().unwrap();
    assert!(down.success, "{}{}", down.stdout, down.stderr);
    assert!(
        down.stdout.contains("stopped 3 process(es)"),
        "{}",
        down.stdout
    );
    for (name, pid) in &pids {
        assert!(!is_alive(*pid), "{name} (pid {pid}) still runs after down");
    }
    assert!(!is_alive(killed_pid));
    assert!(cluster.pids().unwrap().is_empty(), "pid files left behind");
}

#[test]
fn two_groups_each_elect_and_register_a_leader() {
    let mut cluster = ScriptCluster::up(2).unwrap();
    let status = cluster.mq_json(&["cluster", "status"]).unwrap();
    let groups = status["groups"].as_array().unwrap();
    let names: Vec<&str> = groups
        .iter()
        .map(|group| group["broker_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broker-a", "broker-b"]);
    for group in groups {
        assert_eq!(group["leader_registered"], true, "{group}");
        assert_eq!(group["members"].as_array().unwrap().len(), 3);
    }
    // A topic created on both groups spreads a produce over both.
    let created = cluster
        .mq_json(&["topic", "create", "-t", "TwoGroups", "--queues", "2"])
        .unwrap();
    assert_eq!(strings(&created["broker_names"]), ["broker-a", "broker-b"]);
    let produced = cluster
        .mq_json(&["produce", "-t", "TwoGroups", "--count", "8", "--size", "16"])
        .unwrap();
    assert_eq!(produced["sent"], 8);
    let brokers: BTreeSet<String> = produced["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["broker_name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(brokers.len(), 2, "{produced}");
    let consumed = cluster
        .mq_json(&[
            "consume",
            "-t",
            "TwoGroups",
            "--count",
            "8",
            "--idle-timeout-ms",
            "15000",
        ])
        .unwrap();
    assert_eq!(consumed["consumed"], 8);
    // Two members of a second cluster on another address never collide with this one.
    assert_ne!(cluster.member_addr(1, 1), cluster.member_addr(0, 1));
    let down = cluster.down().unwrap();
    assert!(
        down.stdout.contains("stopped 7 process(es)"),
        "{}",
        down.stdout
    );
}
