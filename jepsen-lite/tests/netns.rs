//! The namespace layer on a real kernel: runs as root where `ip netns` and `nft` work (CI is
//! root), otherwise prints why it is skipped and passes. Set JEPSEN_LITE_REQUIRE_NETNS=1 to make
//! a missing capability a failure instead of a skip.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use jepsen_lite::net::netns::{self, Netns};
use jepsen_lite::net::probe::READY_LINE;
use jepsen_lite::net::{HOST, Network};

const BIN: &str = env!("CARGO_BIN_EXE_jepsen-lite");
/// One probe's budget; a cut link uses all of it.
const PROBE_TIMEOUT_MS: u64 = 1_000;
/// Attempts for a probe that must succeed.
const PROBE_ATTEMPTS: usize = 5;

/// `Some(reason)` when this machine cannot run namespace tests.
fn skip_reason() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        });
    let reason = if uid.as_deref() != Some("0") {
        Some(format!("not root (effective uid {uid:?})"))
    } else {
        netns::support().err().map(|e| e.to_string())
    };
    if let Some(reason) = &reason {
        assert!(
            std::env::var_os("JEPSEN_LITE_REQUIRE_NETNS").is_none(),
            "namespace tests required but impossible here: {reason}"
        );
        println!("SKIPPED: network namespace test: {reason}");
    }
    reason
}

fn probe_from(net: &Netns, node: &str, addr: SocketAddr) -> bool {
    net.command(node, BIN)
        .unwrap()
        .args([
            "net-probe",
            "--addr",
            &addr.to_string(),
            "--timeout-ms",
            &PROBE_TIMEOUT_MS.to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn reachable(net: &Netns, node: &str, addr: SocketAddr) -> bool {
    (0..PROBE_ATTEMPTS).any(|_| probe_from(net, node, addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_and_heal_between_namespaces_then_nothing_remains() {
    if skip_reason().is_some() {
        return;
    }
    let net = tokio::task::spawn_blocking(|| Netns::create(&["n1", "n2"]))
        .await
        .unwrap()
        .unwrap();
    let prefix = net.prefix().to_string();
    let host_if = net.host_interface().to_string();
    assert_eq!(
        netns::namespaces_with_prefix(&format!("{prefix}-"))
            .unwrap()
            .len(),
        3,
        "n1, n2 and the bridge"
    );

    // A listener inside n1, reached from n2 (another namespace).
    let addr = SocketAddr::new(net.ip("n1").unwrap().into(), 7001);
    let mut echo = net
        .command("n1", BIN)
        .unwrap()
        .args(["net-echo", "--listen", &addr.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    // The child prints the line once it listens (or exits, closing stdout: then the assert fails).
    BufReader::new(echo.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with(READY_LINE), "{line:?}");

    let n = |v: &str| vec![v.to_string()];
    let (net2, addr2) = (net.clone(), addr);
    let check = move |node: &'static str, want: bool| {
        let net = net2.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                if want {
                    reachable(&net, node, addr2)
                } else {
                    !probe_from(&net, node, addr2)
                }
            })
            .await
            .unwrap()
        }
    };
    assert!(
        check("n2", true).await,
        "n1 unreachable from n2 before any fault"
    );

    net.partition(&n("n1"), &n("n2")).await.unwrap();
    let rules = net.list_rules("n2").unwrap();
    assert!(
        rules.contains(&format!("ip saddr {} drop", addr.ip())),
        "{rules}"
    );
    assert!(
        check("n2", false).await,
        "n1 still reachable from n2 while cut"
    );
    // The host (root namespace) is not part of the cut.
    assert!(jepsen_lite::net::probe::probe(addr, Duration::from_millis(PROBE_TIMEOUT_MS)).is_ok());

    net.heal().await.unwrap();
    assert!(check("n2", true).await, "n1 unreachable from n2 after heal");

    // Cutting the host off works too (rules live only in node namespaces).
    net.partition(&n("n1"), &n(HOST)).await.unwrap();
    assert!(jepsen_lite::net::probe::probe(addr, Duration::from_millis(PROBE_TIMEOUT_MS)).is_err());
    net.heal().await.unwrap();

    echo.kill().unwrap();
    echo.wait().unwrap();
    tokio::task::spawn_blocking({
        let net = net.clone();
        move || net.teardown()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        netns::namespaces_with_prefix(&format!("{prefix}-"))
            .unwrap()
            .is_empty(),
        "namespaces remain"
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&host_if),
        "host veth remains"
    );
}

#[test]
fn selftest_command_passes_and_cleans_up() {
    if skip_reason().is_some() {
        return;
    }
    let child = Command::new(BIN)
        .arg("netns-selftest")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("netns-selftest: PASS"), "{stdout}");
    assert!(stdout.contains("partition n1|n2"), "{stdout}");
    assert!(
        netns::namespaces_with_prefix(&format!("jl-{pid}-"))
            .unwrap()
            .is_empty()
    );
}
