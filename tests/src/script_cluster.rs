//! A cluster started by `scripts/cluster.sh up` itself (the README's first command), with
//! `RAFTMQ_BIN_DIR` pointing at this test profile's binaries, on a loopback address of its own
//! (`--host 127.x.y.1`) so that tests can run several side by side. [`ScriptCluster::mq`] runs
//! the built `mq` binary against it; dropping it runs `cluster.sh down` and kills whatever
//! its pid files still name.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::{wait_with_timeout, workspace_binary, workspace_root};

/// Bound on `cluster.sh up` (processes start, a leader registers, a round trip).
pub const UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on `cluster.sh down` and on one `mq` command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The NameServer port the script uses on its host.
pub const NAMESRV_PORT: u16 = 9876;

/// What a finished command printed.
#[derive(Debug)]
pub struct CommandOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CommandOutput {
    fn from(output: Output) -> Self {
        CommandOutput {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A loopback address `127.a.b.1` unlikely to be used by another cluster on this machine
/// (`TestCluster` uses 127.100-249.x.y; these use 127.20-99.x.1).
fn loopback_host() -> Ipv4Addr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_729));
    Ipv4Addr::new(
        127,
        20 + (seed % 80) as u8,
        ((seed / 80) % 250) as u8 + 1,
        1,
    )
}

/// Runs `command` to completion within `timeout`, capturing its output.
pub fn run_bounded(command: &mut Command, timeout: Duration) -> anyhow::Result<CommandOutput> {
    let dir = tempfile::tempdir()?;
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let status = wait_with_timeout(&mut child, timeout)?
        .ok_or_else(|| anyhow!("{command:?} did not finish within {timeout:?}"))?;
    Ok(CommandOutput {
        success: status.success(),
        code: status.code(),
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    })
}

/// A cluster of processes started by `scripts/cluster.sh up`.
pub struct ScriptCluster {
    pub host: Ipv4Addr,
    pub dir: tempfile::TempDir,
    pub bin_dir: PathBuf,
    pub mq: PathBuf,
    /// What `up` printed.
    pub up_output: CommandOutput,
    stopped: bool,
}

impl ScriptCluster {
    /// `cluster.sh up --groups <groups> --dir <temp> --host <own loopback address>`.
    pub fn up(groups: u32) -> anyhow::Result<ScriptCluster> {
        Self::up_with(groups, &[])
    }

    /// [`up`](Self::up) with more arguments of `cluster.sh up` (`--acl`, `--tls`).
    pub fn up_with(groups: u32, extra_args: &[&str]) -> anyhow::Result<ScriptCluster> {
        workspace_binary("raftmq-server", "mqnamesrv")?;
        let broker = workspace_binary("raftmq-server", "mqbroker")?;
        let mq = workspace_binary("raftmq-cli", "mq")?;
        let bin_dir = broker
            .parent()
            .ok_or_else(|| anyhow!("no directory above {}", broker.display()))?
            .to_path_buf();
        let dir = tempfile::tempdir().context("creating the cluster's directory")?;
        let host = loopback_host();
        let mut cluster = ScriptCluster {
            host,
            dir,
            bin_dir,
            mq,
            up_output: CommandOutput {
                success: false,
                code: None,
                stdout: String::new(),
                stderr: String::new(),
            },
            stopped: false,
        };
        let groups = groups.to_string();
        let host_arg = host.to_string();
        let mut args = vec!["up", "--groups", &groups, "--host", &host_arg];
        args.extend_from_slice(extra_args);
        let output = cluster.script(&args, UP_TIMEOUT)?;
        if !output.success {
            bail!(
                "cluster.sh up failed ({:?}):\n{}\n{}\nlogs:\n{}",
                output.code,
                output.stdout,
                output.stderr,
                cluster.log_tails()
            );
        }
        cluster.up_output = output;
        Ok(cluster)
    }

    /// Runs `scripts/cluster.sh <args> --dir <dir>`.
    pub fn script(&self, args: &[&str], timeout: Duration) -> anyhow::Result<CommandOutput> {
        let script = workspace_root().join("scripts/cluster.sh");
        run_bounded(
            Command::new("bash")
                .arg(script)
                .args(args)
                .arg("--dir")
                .arg(self.dir.path())
                .env("RAFTMQ_BIN_DIR", &self.bin_dir)
                .env_remove("NAMESRV_ADDR"),
            timeout,
        )
    }

    pub fn namesrv_addr(&self) -> String {
        format!("{}:{NAMESRV_PORT}", self.host)
    }

    /// The remoting address of member `node_id` of group `group_index` (0 = broker-a).
    pub fn member_addr(&self, group_index: u16, node_id: u16) -> String {
        format!(
            "{}:{}",
            self.host,
            10911 + 1000 * group_index + 10 * (node_id - 1)
        )
    }

    /// Runs `mq -n <namesrv> <args>`.
    pub fn mq(&self, args: &[&str]) -> anyhow::Result<CommandOutput> {
        run_bounded(
            Command::new(&self.mq)
                .arg("-n")
                .arg(self.namesrv_addr())
                .args(args)
                .env_remove("NAMESRV_ADDR"),
            COMMAND_TIMEOUT,
        )
    }

    /// Runs `mq --json <args>`, which must succeed, and parses its stdout.
    pub fn mq_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.mq(&all)?;
        if !output.success {
            bail!(
                "mq {args:?} failed ({:?}): {}{}",
                output.code,
                output.stderr,
                output.stdout
            );
        }
        serde_json::from_str(&output.stdout)
            .with_context(|| format!("mq {args:?} printed no JSON document: {}", output.stdout))
    }

    pub fn pid_dir(&self) -> PathBuf {
        self.dir.path().join("pids")
    }

    /// Every pid file and the pid it holds.
    pub fn pids(&self) -> anyhow::Result<BTreeMap<String, u32>> {
        let mut pids = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(self.pid_dir()) else {
            return Ok(pids);
        };
        for entry in entries {
            let path = entry?.path();
            let name = path
                .file_stem()
                .and_then(|name| name.to_str())
                .unwrap_or_default()
                .to_owned();
            let text = std::fs::read_to_string(&path)?;
            let pid = text
                .trim()
                .parse()
                .with_context(|| format!("pid file {} holds {text:?}", path.display()))?;
            pids.insert(name, pid);
        }
        Ok(pids)
    }

    /// The pid of broker member `node_id` of `broker_name`, from its pid file.
    pub fn member_pid(&self, broker_name: &str, node_id: u64) -> anyhow::Result<u32> {
        let name = format!("mqbroker-{broker_name}-{node_id}");
        self.pids()?
            .get(&name)
            .copied()
            .ok_or_else(|| anyhow!("no pid file {name}.pid"))
    }

    /// `kill -9` a broker member by its pid file.
    pub fn kill_member(&self, broker_name: &str, node_id: u64) -> anyhow::Result<u32> {
        let pid = self.member_pid(broker_name, node_id)?;
        signal(pid, "-KILL")?;
        Ok(pid)
    }

    /// `cluster.sh down`.
    pub fn down(&mut self) -> anyhow::Result<CommandOutput> {
        let output = self.script(&["down"], COMMAND_TIMEOUT)?;
        self.stopped = true;
        Ok(output)
    }

    /// The last lines of every log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("logs")) else {
            return out;
        };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(8);
            out.push_str(&format!(
                "== {}\n{}\n",
                entry.path().display(),
                lines[start..].join("\n")
            ));
        }
        out
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.script(&["down"], COMMAND_TIMEOUT);
        }
        // Whatever is still alive (a member started by a test, a failed `down`) is killed.
        if let Ok(pids) = self.pids() {
            for pid in pids.values() {
                if is_alive(*pid) {
                    let _ = signal(*pid, "-KILL");
                }
            }
        }
    }
}

/// `kill <signal> <pid>`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill {signal} {pid} failed");
    }
    Ok(())
}

/// Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, does not).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // The state follows the parenthesised command name: `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
    }
}
