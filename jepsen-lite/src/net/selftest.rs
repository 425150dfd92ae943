//! `jepsen-lite netns-selftest`: prove the namespace layer on this machine. Three node
//! namespaces; an echo server in n1; probes from n2, n3 and the host; a cut, a one-way cut and
//! a 100% lossy link each stop n2's probes and leave the others alone; heal restores them;
//! teardown leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::netns::{self, Netns};
use super::probe::{self, READY_LINE};
use super::{HOST, NetError};

/// The echo server's port inside n1.
pub const ECHO_PORT: u16 = 7000;
/// One probe's whole budget (connect + round trip); a cut link makes the probe use all of it.
pub const PROBE_TIMEOUT_MS: u64 = 1_000;
/// Probes that should succeed are tried this many times (a fresh link may need a moment).
pub const PROBE_ATTEMPTS: usize = 5;
/// How long the echo server may take to report that it listens.
pub const READY_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("step `{step}`: {detail}")]
    Step { step: String, detail: String },
}

fn step_err(step: &str, detail: impl Into<String>) -> SelftestError {
    SelftestError::Step {
        step: step.into(),
        detail: detail.into(),
    }
}

/// Kills and reaps the echo server however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the self-test. `helper` is a `jepsen-lite` binary (for `net-echo`/`net-probe` inside
/// namespaces); `say` receives one line per step. Returns the prefix the run used.
pub fn run(helper: &Path, say: &mut dyn FnMut(&str)) -> Result<String, SelftestError> {
    netns::support()?;
    say("ip and nft present; namespaces can be created");
    let net = Netns::create(&["n1", "n2", "n3"])?;
    let prefix = net.prefix().to_string();
    say(&format!(
        "created namespaces {prefix}-n1..n3 on bridge {prefix}-br, host at {}",
        net.host_ip()
    ));
    let result = exercise(&net, helper, say);
    let teardown = net.teardown();
    result?;
    teardown?;
    let left = netns::namespaces_with_prefix(&format!("{prefix}-"))?;
    if !left.is_empty() {
        return Err(step_err("teardown", format!("namespaces remain: {left:?}")));
    }
    say(&format!("torn down: no namespace named {prefix}-* remains"));
    Ok(prefix)
}

fn exercise(net: &Netns, helper: &Path, say: &mut dyn FnMut(&str)) -> Result<(), SelftestError> {
    let echo_addr = SocketAddr::new(net.ip("n1")?.into(), ECHO_PORT);
    let mut child = net
        .command("n1", helper)?
        .args(["net-echo", "--listen", &echo_addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| step_err("start echo server in n1", e.to_string()))?;
    let stdout = child.stdout.take();
    let echo = Reaped(child);
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let Some(out) = stdout else { return };
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_millis(READY_TIMEOUT_MS))
        .map_err(|_| step_err("start echo server in n1", "it never said it was listening"))?;
    if !line.starts_with(READY_LINE) {
        return Err(step_err(
            "start echo server in n1",
            format!("said {line:?}"),
        ));
    }
    say(&format!(
        "echo server listening in n1 at {echo_addr} (pid {})",
        echo.0.id()
    ));

    let reach = |from: &str| -> Result<bool, SelftestError> {
        if from == HOST {
            return Ok(probe::probe(echo_addr, Duration::from_millis(PROBE_TIMEOUT_MS)).is_ok());
        }
        let status = net
            .command(from, helper)?
            .args([
                "net-probe",
                "--addr",
                &echo_addr.to_string(),
                "--timeout-ms",
                &PROBE_TIMEOUT_MS.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| step_err("probe", e.to_string()))?;
        Ok(status.success())
    };
    let expect = |from: &str, want: bool, step: &str| -> Result<(), SelftestError> {
        let attempts = if want { PROBE_ATTEMPTS } else { 1 };
        for _ in 0..attempts {
            if reach(from)? == want {
                return Ok(());
            }
        }
        Err(step_err(
            step,
            format!(
                "n1 {} from {from}",
                if want {
                    "unreachable"
                } else {
                    "still reachable"
                }
            ),
        ))
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    for from in ["n2", "n3", HOST] {
        expect(from, true, "initial reachability")?;
    }
    say("n1 reachable from n2, n3 and the host");

    net.apply(|f| f.partition(&s(&["n1"]), &s(&["n2"])))?;
    expect("n2", false, "partition n1|n2")?;
    expect("n3", true, "partition n1|n2")?;
    expect(HOST, true, "partition n1|n2")?;
    say("partition n1|n2 (nftables drop both ways): n2 cut off, n3 and host still reach n1");
    net.apply(super::Faults::clear)?;
    expect("n2", true, "heal")?;
    say("healed: n2 reaches n1 again");

    net.apply(|f| f.one_way(&s(&["n2"]), &s(&["n1"])))?;
    expect("n2", false, "one-way n2->n1")?;
    expect("n3", true, "one-way n2->n1")?;
    net.apply(super::Faults::clear)?;
    expect("n2", true, "heal")?;
    say("one-way drop n2->n1: n2's connects fail; healed");

    // A partial loss rate is a numgen rule; prove it loads (its effect is random by design).
    net.apply(|f| f.lossy(&s(&["n1"]), &s(&["n2"]), 30))?;
    let rules = net.list_rules("n1")?;
    if !rules.contains("numgen random mod 100 < 30") {
        return Err(step_err("lossy 30%", format!("rule not loaded: {rules}")));
    }
    expect("n3", true, "lossy 30% n1<->n2")?;
    net.apply(super::Faults::clear)?;
    // Total loss is deterministic: n2 is cut off.
    net.apply(|f| f.lossy(&s(&["n1"]), &s(&["n2"]), 100))?;
    expect("n2", false, "lossy 100% n1<->n2")?;
    expect("n3", true, "lossy 100% n1<->n2")?;
    net.apply(super::Faults::clear)?;
    expect("n2", true, "heal")?;
    say("lossy links: 30% loads `numgen random mod 100 < 30 drop`; 100% cuts n2 off; healed");
    drop(echo);
    say("echo server stopped");
    Ok(())
}
