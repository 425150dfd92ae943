//! A broker member or NameServer asked to serve admin HTTP on an address other hosts can reach
//! (not loopback) without an admin token refuses to start, with an error naming the fix.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use raftmq_tests::workspace_binary;

/// Bound on a refused start: the check runs before anything is bound.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `binary args`, which must exit on its own within [`EXIT_TIMEOUT`]: its status and stderr.
fn run_to_exit(package: &str, binary: &str, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let path = workspace_binary(package, binary)?;
    let data = tempfile::tempdir()?;
    let mut child = Command::new(&path)
        .args(args)
        .current_dir(data.path())
        .env_remove(raftmq_protocol::admin::ADMIN_TOKEN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > EXIT_TIMEOUT {
            // Ours, by its own handle.
            child.kill()?;
            child.wait()?;
            bail!("{binary} {args:?} was still running after {EXIT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
    }
    Ok((status.success(), stderr))
}

#[test]
fn members_refuse_admin_off_loopback_without_a_token() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().join("member-1");
    let data_dir = data_dir.to_str().context("temp path")?;
    let (ok, stderr) = run_to_exit(
        "raftmq-server",
        "mqbroker",
        &[
            "--node-id",
            "1",
            "--data-dir",
            data_dir,
            "--listen",
            "127.0.0.1:0",
            "--raft-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
        ],
    )?;
    ensure!(!ok, "mqbroker started with admin on 0.0.0.0 and no token");
    ensure!(
        stderr.contains("--admin-token"),
        "mqbroker's error does not name the fix: {stderr}"
    );

    let (ok, stderr) = run_to_exit(
        "raftmq-server",
        "mqnamesrv",
        &["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"],
    )?;
    ensure!(!ok, "mqnamesrv started with admin on 0.0.0.0 and no token");
    ensure!(
        stderr.contains("--admin-token"),
        "mqnamesrv's error does not name the fix: {stderr}"
    );
    Ok(())
}
