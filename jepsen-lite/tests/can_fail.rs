//! The suite can fail: the scripted `ack-loss` and `fsync-loss` scenarios against real
//! `mqbroker` processes.
//!
//! With `--unsafe-ack-before-commit` (brokers acknowledge before the write commits), the
//! leader is cut off from its peers, acknowledges sends it can never commit, and is killed; the
//! checkers must report every one of those acknowledged sends as lost and unseen, every time.
//! Without the flag the same script must pass, so the failure comes from the broker, not from
//! the scenario.
//!
//! With `--unsafe-skip-fsync` (the Raft log never fsyncs), members on lazy filesystems lose
//! power all at once after acknowledged sends; the checkers must report those sends lost.
//! Without the flag the same script must pass. (These two need root and FUSE, as
//! `tests/lazyfs.rs`; they print why and pass where the machine cannot mount, unless
//! `JEPSEN_LITE_REQUIRE_FUSE` is set.)
//!
//! Network namespaces are used when the machine allows them, TCP proxies otherwise (or with
//! `JEPSEN_LITE_NET=proxy`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jepsen_lite::checker::Verdict;
use jepsen_lite::history::{Call, OpType, read_history};
use jepsen_lite::lazyfs::mount::support;
use jepsen_lite::run::fsync_loss::{SENDS_AT_STAKE, SENDS_DURABLE};
use jepsen_lite::summary::{EXIT_PASS, EXIT_SAFETY_VIOLATION, Summary};

/// Longest a build of the broker binaries may take (cold, on two busy cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Longest the scripted run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// `<target>/<profile>` of this test binary (it lives in `<target>/<profile>/deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps")
        .to_path_buf()
}

fn wait(child: &mut std::process::Child, timeout: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took longer than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds mqbroker and mqnamesrv into this test's target directory and profile.
fn build_brokers() -> PathBuf {
    let dir = profile_dir();
    let target = dir.parent().expect("target directory");
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile name")
        .to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        // The workspace's feature set, as `cargo test --workspace --all-targets` builds it, so
        // this reuses CI's artifacts instead of rebuilding dependencies with other features.
        .args(["build", "--quiet", "--workspace", "--all-targets"])
        .arg("--target-dir")
        .arg(target)
        .stdin(Stdio::null());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let mut child = command.spawn().expect("cargo build");
    let code = wait(&mut child, BUILD_TIMEOUT, "building mqbroker and mqnamesrv");
    assert_eq!(code, 0, "building mqbroker and mqnamesrv failed");
    dir
}

/// Runs the scripted scenario `profile`, with the run flag `unsafe` if given; returns the exit
/// status and the scenario directory.
fn run_script(profile: &str, unsafe_flag: Option<&str>, out: &Path) -> (i32, PathBuf) {
    let bin_dir = build_brokers();
    let mut command = Command::new(env!("CARGO_BIN_EXE_jepsen-lite"));
    command
        .args(["run", "--profile", profile, "--seed", "1"])
        .arg("--out")
        .arg(out)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(flag) = unsafe_flag {
        command.arg(flag);
    }
    // JEPSEN_LITE_NET=proxy exercises the proxy layout where namespaces would be used.
    if let Ok(net) = std::env::var("JEPSEN_LITE_NET") {
        command.args(["--net", &net]);
    }
    let mut child = command.spawn().expect("jepsen-lite run");
    let code = wait(
        &mut child,
        RUN_TIMEOUT,
        &format!("jepsen-lite run --profile {profile}"),
    );
    (code, out.join(format!("01-{profile}")))
}

/// Runs the scripted `ack-loss` scenario.
fn run_ack_loss(unsafe_ack: bool, out: &Path) -> (i32, PathBuf) {
    run_script(
        "ack-loss",
        unsafe_ack.then_some("--unsafe-ack-before-commit"),
        out,
    )
}

/// `true` (after printing why) when this machine cannot mount lazy filesystems.
fn no_fuse() -> bool {
    let Err(reason) = support() else {
        return false;
    };
    assert!(
        std::env::var_os("JEPSEN_LITE_REQUIRE_FUSE").is_none(),
        "lazy filesystems required but impossible here: {reason}"
    );
    println!("SKIPPED: the fsync-loss script needs root and FUSE: {reason}");
    true
}

/// The values of acknowledged sends of the `fsync-loss` script, in send order.
fn acknowledged_sends(dir: &Path) -> Vec<String> {
    let history = read_history(&dir.join("history.jsonl")).expect("history");
    history
        .ops
        .iter()
        .filter(|op| op.kind == OpType::Ok)
        .filter_map(|op| match &op.call {
            Call::Send(send) => Some(send.value.clone()),
            _ => None,
        })
        .collect()
}

fn summary(dir: &Path) -> Summary {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap_or_else(|e| {
        let report = std::fs::read_to_string(dir.join("report.json")).unwrap_or_default();
        panic!("no summary in {}: {e}; report: {report}", dir.display())
    });
    serde_json::from_str(&text).expect("summary.json")
}

/// Acknowledged sends of the directed processes (`d0`, `d1`, ...) in the history.
fn acknowledged_directed(dir: &Path) -> Vec<String> {
    let history = read_history(&dir.join("history.jsonl")).expect("history");
    history
        .ops
        .iter()
        .filter(|op| op.kind == OpType::Ok && op.process.starts_with('d'))
        .filter_map(|op| match &op.call {
            Call::Send(send) => Some(send.value.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn brokers_that_ack_before_commit_are_caught_losing_acknowledged_sends() {
    let out = tempfile::tempdir().expect("temp dir");
    let (code, dir) = run_ack_loss(true, out.path());
    let summary = summary(&dir);
    let acked = acknowledged_directed(&dir);
    assert!(
        !acked.is_empty(),
        "the cut-off leader acknowledged nothing, so nothing was at stake"
    );
    let check = |name: &str| {
        summary
            .checkers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no checker {name}"))
    };
    let unseen = check("unseen");
    assert_eq!(unseen.verdict, Verdict::Fail, "{unseen:?}");
    // Exactly the acknowledged directed sends are gone; everything else arrived.
    assert_eq!(unseen.get("unseen"), acked.len() as u64, "{unseen:?}");
    for example in &unseen.examples {
        let value = example["value"].as_str().unwrap_or_default();
        assert!(acked.iter().any(|v| v == value), "{example}");
    }
    let lost = check("lost_write");
    assert_eq!(lost.verdict, Verdict::Fail, "{lost:?}");
    assert_eq!(lost.get("lost"), acked.len() as u64, "{lost:?}");
    assert_eq!(code, EXIT_SAFETY_VIOLATION, "the run must exit 1");
    assert_eq!(summary.exit_code, EXIT_SAFETY_VIOLATION);
}

#[test]
fn the_same_script_passes_against_brokers_that_commit_first() {
    let out = tempfile::tempdir().expect("temp dir");
    let (code, dir) = run_ack_loss(false, out.path());
    let summary = summary(&dir);
    assert!(
        acknowledged_directed(&dir).is_empty(),
        "a leader cut off from its peers acknowledged a send"
    );
    let failed: Vec<String> = summary
        .checkers
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| format!("{c:?}"))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(code, EXIT_PASS, "verdict {:?}", summary.verdict);
}

#[test]
fn brokers_that_skip_fsync_are_caught_losing_acknowledged_sends_to_a_power_loss() {
    if no_fuse() {
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let (code, dir) = run_script("fsync-loss", Some("--unsafe-skip-fsync"), out.path());
    let summary = summary(&dir);
    let acked = acknowledged_sends(&dir);
    assert!(
        acked.len() > SENDS_AT_STAKE,
        "too few acknowledged sends for anything to be at stake: {acked:?}"
    );
    let lost = summary
        .checkers
        .iter()
        .find(|c| c.name == "lost_write")
        .expect("the lost_write checker");
    assert_eq!(lost.verdict, Verdict::Fail, "{lost:?}");
    // Exactly what was acknowledged between the restart with the flag and the power loss is
    // gone (the sends before were made durable by correct brokers).
    let at_stake: Vec<String> = (SENDS_DURABLE..SENDS_DURABLE + SENDS_AT_STAKE)
        .map(|i| format!("p1-{i}"))
        .filter(|value| acked.contains(value))
        .collect();
    assert!(!at_stake.is_empty(), "no send at stake was acknowledged");
    assert_eq!(lost.get("lost"), at_stake.len() as u64, "{lost:?}");
    for example in &lost.examples {
        let value = example["value"].as_str().unwrap_or_default();
        assert!(at_stake.iter().any(|v| v == value), "{example}");
    }
    assert_eq!(code, EXIT_SAFETY_VIOLATION, "the run must exit 1");
    assert_eq!(summary.exit_code, EXIT_SAFETY_VIOLATION);
}

#[test]
fn the_same_power_loss_passes_against_brokers_that_fsync() {
    if no_fuse() {
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let (code, dir) = run_script("fsync-loss", None, out.path());
    let summary = summary(&dir);
    assert!(
        acknowledged_sends(&dir).len() > SENDS_AT_STAKE,
        "too few acknowledged sends for anything to be at stake"
    );
    let failed: Vec<String> = summary
        .checkers
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| format!("{c:?}"))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(code, EXIT_PASS, "verdict {:?}", summary.verdict);
}
