//! Cross-crate integration tests live under `tests/tests/` (one binary, `it`, with a module
//! per scenario); this library holds the shared harness for starting processes and waiting on
//! conditions.
//!
//! - [`workspace_binary`] finds a binary of another workspace package, building it first.
//!   `env!("CARGO_BIN_EXE_...")` only works for binaries of the test's own package, so the
//!   harness runs `cargo build --workspace --all-targets` (a no-op after `cargo test
//!   --workspace --all-targets`, whose feature set it matches) with the same profile and target
//!   directory as the running test, then returns `<target>/<profile>/<bin>`. Building a single
//!   package instead would unify features differently and rebuild shared dependencies.
//! - [`Process`] runs it with stdout piped (read line by line with
//!   [`Process::wait_for_stdout_line`]) and stderr in a log file whose tail failures quote;
//!   it is killed when dropped.
//! - [`wait_for_port`], [`wait_until`]: bounded polling instead of fixed sleeps.
//! - [`admin::AdminHttp`]: the admin HTTP client (`raftmq_client::AdminHttpClient`) for this
//!   synchronous code.
//! - [`cluster::TestCluster`]: a NameServer and a broker group of processes.
//! - [`script_cluster::ScriptCluster`]: a cluster started by `scripts/cluster.sh up` itself,
//!   driven with the built `mq` binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

pub mod admin;
pub mod cluster;
pub mod script_cluster;

pub use admin::AdminHttp;

/// Longest a `cargo build` of a test binary may take (a cold build on two busy cores).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Stdout lines buffered per process; later lines are dropped until some are read.
pub const MAX_BUFFERED_STDOUT_LINES: usize = 1024;

/// How often polling helpers retry.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long a process may take to exit after SIGTERM before it is killed.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of a process log quoted in error messages.
const LOG_TAIL_BYTES: usize = 4000;

fn built_binaries() -> &'static Mutex<BTreeMap<String, PathBuf>> {
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    BUILT.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// The workspace root (the parent of this package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `(target directory, profile directory name)` of the running test binary, which lives in
/// `<target>/<profile>/deps/`.
fn target_and_profile() -> anyhow::Result<(PathBuf, String)> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe.parent().and_then(Path::parent).ok_or_else(|| {
        anyhow!(
            "test binary {} is not in <target>/<profile>/deps",
            exe.display()
        )
    })?;
    let target = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("no target directory above {}", profile_dir.display()))?;
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| anyhow!("odd profile directory {}", profile_dir.display()))?;
    Ok((target.to_path_buf(), profile.to_owned()))
}

/// The path of binary `bin` of workspace package `package`, built for this test's profile.
/// The first call builds the workspace (once per test process); later calls only look.
pub fn workspace_binary(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let mut built = built_binaries()
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let (target, profile) = target_and_profile()?;
    if built.is_empty() {
        build_workspace(&target, &profile)?;
        built.insert("workspace".to_owned(), target.clone());
    }
    let path = target.join(&profile).join(bin);
    if !path.is_file() {
        bail!(
            "the workspace build has no binary {bin} (package {package}) at {}",
            path.display()
        );
    }
    Ok(path)
}

/// `cargo build --workspace --all-targets`: exactly the feature set `cargo test --workspace
/// --all-targets` (CI) builds with, so it reuses those artifacts instead of rebuilding shared
/// dependencies with other features (and CI then rebuilding them back).
fn build_workspace(target: &Path, profile: &str) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "--workspace",
            "--all-targets",
            "--target-dir",
        ])
        .arg(target)
        .stdin(Stdio::null());
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let mut child = command.spawn().context("running cargo build")?;
    let status = wait_with_timeout(&mut child, BUILD_TIMEOUT)?
        .ok_or_else(|| anyhow!("cargo build --workspace took longer than {BUILD_TIMEOUT:?}"))?;
    if !status.success() {
        bail!("cargo build --workspace --all-targets failed: {status}");
    }
    Ok(())
}

pub(crate) fn wait_with_timeout(
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A child process that is killed when dropped.
pub struct Process {
    name: String,
    child: Child,
    stdout: Receiver<String>,
    log_path: PathBuf,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("log", &self.log_path)
            .finish()
    }
}

impl Process {
    /// Starts `binary` with `args`; stdout is piped, stderr goes to a log file in the temp dir.
    pub fn spawn(binary: &Path, args: &[&str]) -> anyhow::Result<Process> {
        let name = binary
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("process")
            .to_owned();
        let log_dir = std::env::temp_dir().join("raftmq-tests");
        std::fs::create_dir_all(&log_dir).context("creating the log directory")?;
        let log_path = log_dir.join(format!(
            "{name}-{}-{}.log",
            std::process::id(),
            unique_suffix()
        ));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(MAX_BUFFERED_STDOUT_LINES);
        std::thread::spawn(move || forward_lines(stdout, tx));
        Ok(Process {
            name,
            child,
            stdout: rx,
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last few KiB of the process's stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let start = text.len().saturating_sub(LOG_TAIL_BYTES);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Waits for the first stdout line that `matches` accepts.
    pub fn wait_for_stdout_line(
        &mut self,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if matches(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "{} printed no matching line within {timeout:?}; log tail:\n{}",
                        self.name,
                        self.log_tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(
                        "{} closed stdout (exited?); log tail:\n{}",
                        self.name,
                        self.log_tail()
                    )
                }
            }
        }
    }

    /// Whether the process has exited, and how.
    pub fn try_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Sends SIGTERM and waits for the exit; kills it after [`TERMINATE_TIMEOUT`].
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        wait_with_timeout(&mut self.child, TERMINATE_TIMEOUT)?.ok_or_else(|| {
            anyhow!(
                "{} did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM; log tail:\n{}",
                self.name,
                self.log_tail()
            )
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward_lines(stdout: impl Read, tx: SyncSender<String>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        match tx.try_send(line) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    wait_until(timeout, || {
        Ok(TcpStream::connect_timeout(&addr, POLL_INTERVAL).is_ok())
    })
    .with_context(|| format!("nothing listens on {addr}"))
}

/// Polls `condition` until it holds, failing after `timeout`.
pub fn wait_until(
    timeout: Duration,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
