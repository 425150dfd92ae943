//! Network namespaces joined by a bridge, with faults as nftables rules (root on Linux).
//!
//! Layout for a run with nodes `n1..nN` (names are the caller's):
//!
//! ```text
//!   root namespace: harness + clients          namespace <prefix>-br: bridge br0
//!     <if>h 10.77.X.1/24  ── veth ──  <if>hp ─┤
//!                                              ├─ <if>p0 ── veth ── eth0 10.77.X.2  in <prefix>-n1
//!                                              ├─ <if>p1 ── veth ── eth0 10.77.X.3  in <prefix>-n2
//!                                              └─ ...
//! ```
//!
//! `<prefix>` is `jl-<pid>-<k>` (k counts instances in this process), `<if>` a short form of it
//! (interface names have 15 characters at most). The harness runs in the root namespace and
//! reaches every node at its address; it is the node [`super::HOST`] in fault calls. Each node
//! namespace has one nftables table (`inet jepsen_lite`) with an input and an output chain;
//! every fault change re-renders the rules of the affected namespaces and loads them atomically
//! (`nft -f -`). Teardown deletes exactly the namespaces this instance created (which destroys
//! their veth ends, and with them the root-side veth) and checks that nothing with its prefix
//! remains. Kill the processes started inside the namespaces first.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::cmd::{available, run};
use super::{Faults, HOST, NetError, Network};

/// Namespaces and interfaces this crate creates start with this.
pub const NAME_PREFIX: &str = "jl";
/// Addresses are 10.77.X.0/24, X chosen free per instance.
pub const SUBNET_FIRST_OCTETS: [u8; 2] = [10, 77];
/// The nftables table (family inet) in every node namespace.
pub const NFT_TABLE: &str = "jepsen_lite";
/// Nodes per instance (bounded by the /24 and by interface-name length).
pub const MAX_NODES: usize = 16;
/// Longest node name accepted.
pub const MAX_NODE_NAME: usize = 24;
/// The bridge namespace's suffix; no node may use it as a name.
const BRIDGE_SUFFIX: &str = "br";

static INSTANCES: AtomicU32 = AtomicU32::new(0);
/// Serializes subnet choice with address assignment among instances of this process.
static SUBNET_CHOICE: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Clone, Debug)]
struct NodeNs {
    name: String,
    namespace: String,
    ip: Ipv4Addr,
}

#[derive(Debug, Default)]
struct State {
    faults: Faults,
    /// Rules last loaded per namespace, to skip unchanged ones.
    applied: HashMap<String, String>,
    /// Namespaces created, in order; teardown deletes them in reverse.
    created: Vec<String>,
    host_link: bool,
    torn_down: bool,
}

#[derive(Debug)]
struct Inner {
    prefix: String,
    bridge_ns: String,
    host_if: String,
    host_ip: Ipv4Addr,
    nodes: Vec<NodeNs>,
    state: Mutex<State>,
}

/// A set of node namespaces on a bridge. Cloneable; the last clone tears down on drop if
/// [`Netns::teardown`] was not called.
#[derive(Clone, Debug)]
pub struct Netns {
    inner: Arc<Inner>,
}

/// Whether namespaces can be made here: `ip` and `nft` exist and a probe namespace can be
/// created and deleted. `Err` says why not (the caller falls back to the proxy, or skips).
pub fn support() -> Result<(), NetError> {
    available("ip", "-V")?;
    available("nft", "--version")?;
    let probe = format!(
        "{NAME_PREFIX}-{}-probe{}",
        std::process::id(),
        INSTANCES.fetch_add(1, Ordering::Relaxed)
    );
    run("ip", &["netns", "add", &probe], None)?;
    let listed = run(
        "ip",
        &["netns", "exec", &probe, "nft", "list", "tables"],
        None,
    );
    run("ip", &["netns", "del", &probe], None)?;
    listed.map(|_| ())
}

/// The namespaces whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>, NetError> {
    Ok(run("ip", &["netns", "list"], None)?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

/// Deletes namespaces left by runs of this crate whose process is gone (`jl-<pid>-...` with no
/// `/proc/<pid>`), first killing (SIGKILL, by pid) the processes such a run left running in
/// them (brokers of a harness that was itself killed). Returns what it deleted.
pub fn cleanup_stale() -> Result<Vec<String>, NetError> {
    let mut deleted = Vec::new();
    for name in namespaces_with_prefix(&format!("{NAME_PREFIX}-"))? {
        let Some(pid) = name
            .strip_prefix(&format!("{NAME_PREFIX}-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let left = run("ip", &["netns", "pids", &name], None).unwrap_or_default();
        for orphan in left
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if let Err(e) = crate::nemesis::send_signal(orphan, crate::nemesis::ProcessSignal::Kill)
            {
                tracing::warn!(namespace = %name, pid = orphan, error = %e, "cannot kill a leftover process");
            }
        }
        run("ip", &["netns", "del", &name], None)?;
        deleted.push(name);
    }
    Ok(deleted)
}

fn validate_names(nodes: &[&str]) -> Result<(), NetError> {
    if nodes.is_empty() || nodes.len() > MAX_NODES {
        return Err(NetError::Setup(format!(
            "need 1..={MAX_NODES} nodes, got {}",
            nodes.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for name in nodes {
        let ok_chars = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if name.is_empty()
            || name.len() > MAX_NODE_NAME
            || !ok_chars
            || *name == HOST
            || *name == BRIDGE_SUFFIX
            || !seen.insert(*name)
        {
            return Err(NetError::Setup(format!(
                "bad or repeated node name {name:?} (want [a-z0-9_], at most {MAX_NODE_NAME}, not \"{HOST}\" or \"{BRIDGE_SUFFIX}\")"
            )));
        }
    }
    Ok(())
}

/// Picks X so that no address of the root namespace is in 10.77.X.0/24.
fn free_subnet(start: u32) -> Result<u8, NetError> {
    let addrs = run("ip", &["-o", "-4", "addr", "show"], None)?;
    let [a, b] = SUBNET_FIRST_OCTETS;
    (0..254u32)
        .map(|i| ((start + i) % 254 + 1) as u8)
        .find(|x| !addrs.contains(&format!(" {a}.{b}.{x}.")))
        .ok_or(NetError::NoSubnet)
}

impl Netns {
    /// Creates one namespace per node plus the bridge, addresses them, loads empty rule sets.
    /// On any failure, removes whatever it had created and returns the error.
    pub fn create(nodes: &[&str]) -> Result<Netns, NetError> {
        validate_names(nodes)?;
        let pid = std::process::id();
        let k = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NAME_PREFIX}-{pid}-{k}");
        // 2 + 6 hex digits of pid + 'x' + 3 digits + "hp"/"v15": at most 15 characters.
        let ifbase = format!("{NAME_PREFIX}{pid:x}x{}", k % 1000);
        let _subnet_guard = lock(&SUBNET_CHOICE);
        let x = free_subnet(pid.wrapping_add(k))?;
        let [a, b] = SUBNET_FIRST_OCTETS;
        let node_list: Vec<NodeNs> = nodes
            .iter()
            .enumerate()
            .map(|(i, name)| NodeNs {
                name: name.to_string(),
                namespace: format!("{prefix}-{name}"),
                ip: Ipv4Addr::new(a, b, x, (i + 2) as u8),
            })
            .collect();
        let netns = Netns {
            inner: Arc::new(Inner {
                bridge_ns: format!("{prefix}-{BRIDGE_SUFFIX}"),
                host_if: format!("{ifbase}h"),
                host_ip: Ipv4Addr::new(a, b, x, 1),
                nodes: node_list,
                prefix,
                state: Mutex::new(State::default()),
            }),
        };
        match netns.build(&ifbase, x) {
            Ok(()) => Ok(netns),
            Err(e) => {
                if let Err(cleanup) = netns.teardown() {
                    tracing::warn!(error = %cleanup, "cleanup after a failed setup");
                }
                Err(e)
            }
        }
    }

    fn add_namespace(&self, name: &str) -> Result<(), NetError> {
        run("ip", &["netns", "add", name], None)?;
        lock(&self.inner.state).created.push(name.to_string());
        Ok(())
    }

    fn build(&self, ifbase: &str, x: u8) -> Result<(), NetError> {
        let inner = &self.inner;
        let br = inner.bridge_ns.as_str();
        let [a, b] = SUBNET_FIRST_OCTETS;
        self.add_namespace(br)?;
        run(
            "ip",
            &["-n", br, "link", "add", "br0", "type", "bridge"],
            None,
        )?;
        run("ip", &["-n", br, "link", "set", "br0", "up"], None)?;
        // The host's leg: a veth from the root namespace into the bridge.
        let host_peer = format!("{ifbase}hp");
        run(
            "ip",
            &[
                "link",
                "add",
                &inner.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &host_peer,
            ],
            None,
        )?;
        lock(&inner.state).host_link = true;
        run("ip", &["link", "set", &host_peer, "netns", br], None)?;
        run(
            "ip",
            &["-n", br, "link", "set", &host_peer, "master", "br0"],
            None,
        )?;
        run("ip", &["-n", br, "link", "set", &host_peer, "up"], None)?;
        let host_cidr = format!("{}/24", inner.host_ip);
        run(
            "ip",
            &["addr", "add", &host_cidr, "dev", &inner.host_if],
            None,
        )?;
        run("ip", &["link", "set", &inner.host_if, "up"], None)?;
        for (i, node) in inner.nodes.iter().enumerate() {
            let ns = node.namespace.as_str();
            self.add_namespace(ns)?;
            let inside = format!("{ifbase}v{i}");
            let outside = format!("{ifbase}p{i}");
            run(
                "ip",
                &[
                    "link", "add", &inside, "type", "veth", "peer", "name", &outside,
                ],
                None,
            )?;
            run("ip", &["link", "set", &inside, "netns", ns], None)?;
            run("ip", &["link", "set", &outside, "netns", br], None)?;
            run(
                "ip",
                &["-n", br, "link", "set", &outside, "master", "br0"],
                None,
            )?;
            run("ip", &["-n", br, "link", "set", &outside, "up"], None)?;
            run(
                "ip",
                &["-n", ns, "link", "set", &inside, "name", "eth0"],
                None,
            )?;
            let cidr = format!("{}/24", node.ip);
            run("ip", &["-n", ns, "addr", "add", &cidr, "dev", "eth0"], None)?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"], None)?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"], None)?;
        }
        tracing::debug!(prefix = %inner.prefix, subnet = %format!("{a}.{b}.{x}.0/24"), "namespaces up");
        self.sync_rules()
    }

    /// The run-specific prefix of every namespace this instance made (`jl-<pid>-<k>`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The root namespace's address on the bridge (where the harness's clients come from).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.inner.host_ip
    }

    /// The root namespace's veth into the bridge.
    pub fn host_interface(&self) -> &str {
        &self.inner.host_if
    }

    /// Node names in creation order.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn node(&self, name: &str) -> Result<&NodeNs, NetError> {
        self.inner
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| NetError::UnknownNode(name.into()))
    }

    /// A node's address ([`HOST`] is the root namespace's).
    pub fn ip(&self, name: &str) -> Result<Ipv4Addr, NetError> {
        if name == HOST {
            return Ok(self.inner.host_ip);
        }
        Ok(self.node(name)?.ip)
    }

    /// A node's namespace name.
    pub fn namespace(&self, name: &str) -> Result<String, NetError> {
        Ok(self.node(name)?.namespace.clone())
    }

    /// `ip netns exec <namespace> <program>`: add arguments and spawn. (`ip netns exec` execs
    /// the program, so the child's pid is the program's, ready for kill -9 and SIGSTOP.)
    pub fn command(
        &self,
        node: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, NetError> {
        let mut cmd = Command::new("ip");
        cmd.arg("netns")
            .arg("exec")
            .arg(self.namespace(node)?)
            .arg(program);
        Ok(cmd)
    }

    /// The faults in place.
    pub fn faults(&self) -> Faults {
        lock(&self.inner.state).faults.clone()
    }

    /// Changes the wanted faults and loads the rules of every namespace whose rules changed.
    /// Names must be nodes or [`HOST`]; on an unknown name nothing changes.
    pub fn apply(&self, change: impl FnOnce(&mut Faults)) -> Result<(), NetError> {
        {
            let mut state = lock(&self.inner.state);
            let mut next = state.faults.clone();
            change(&mut next);
            for name in next.nodes() {
                self.ip(name)?;
            }
            state.faults = next;
        }
        self.sync_rules()
    }

    /// The rule set of one node namespace for `faults`.
    fn render(&self, node: &NodeNs, faults: &Faults) -> Result<String, NetError> {
        let mut input = Vec::new();
        let mut output = Vec::new();
        for (src, dst) in &faults.drops {
            if *dst == node.name {
                input.push(format!("ip saddr {} drop", self.ip(src)?));
            }
            if *src == node.name {
                output.push(format!("ip daddr {} drop", self.ip(dst)?));
            }
        }
        for ((src, dst), percent) in &faults.loss {
            // numgen's `mod 100` yields 0..=99: `< 100` is rejected, so 100% is a plain drop.
            let rule = |addr_kind: &str, addr: Ipv4Addr| match percent {
                100.. => format!("ip {addr_kind} {addr} drop"),
                p => format!("ip {addr_kind} {addr} numgen random mod 100 < {p} drop"),
            };
            if *percent == 0 {
                continue;
            }
            // Applied once per direction: at the receiver when it is a node, else at the sender.
            if *dst == node.name {
                input.push(rule("saddr", self.ip(src)?));
            } else if *src == node.name && dst == HOST {
                output.push(rule("daddr", self.ip(dst)?));
            }
        }
        let chain = |name: &str, hook: &str, rules: &[String]| {
            let mut text = format!(
                "\tchain {name} {{\n\t\ttype filter hook {hook} priority 0; policy accept;\n"
            );
            for r in rules {
                text.push_str("\t\t");
                text.push_str(r);
                text.push('\n');
            }
            text.push_str("\t}\n");
            text
        };
        // Add-then-delete makes the load replace the table whether or not it existed, in one
        // atomic transaction.
        Ok(format!(
            "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n{}{}}}\n",
            chain("input", "input", &input),
            chain("output", "output", &output)
        ))
    }

    fn sync_rules(&self) -> Result<(), NetError> {
        let faults = self.faults();
        for node in &self.inner.nodes {
            let rules = self.render(node, &faults)?;
            if lock(&self.inner.state).applied.get(&node.namespace) == Some(&rules) {
                continue;
            }
            run(
                "ip",
                &["netns", "exec", &node.namespace, "nft", "-f", "-"],
                Some(&rules),
            )?;
            lock(&self.inner.state)
                .applied
                .insert(node.namespace.clone(), rules);
        }
        Ok(())
    }

    /// The rules currently loaded in a node's namespace, as `nft list table` prints them.
    pub fn list_rules(&self, node: &str) -> Result<String, NetError> {
        let ns = self.namespace(node)?;
        run(
            "ip",
            &[
                "netns", "exec", &ns, "nft", "list", "table", "inet", NFT_TABLE,
            ],
            None,
        )
    }

    /// Deletes everything this instance created, continuing past errors, then checks that no
    /// namespace with its prefix and no root-side veth remains. Idempotent.
    pub fn teardown(&self) -> Result<(), NetError> {
        let (created, host_link) = {
            let mut state = lock(&self.inner.state);
            if state.torn_down {
                return Ok(());
            }
            state.torn_down = true;
            (std::mem::take(&mut state.created), state.host_link)
        };
        let mut problems = Vec::new();
        for ns in created.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", ns], None) {
                problems.push(e.to_string());
            }
        }
        // Deleting the bridge namespace destroyed the host veth's peer, and so the veth itself;
        // delete it directly only if it is somehow still there.
        if host_link
            && run("ip", &["link", "show", &self.inner.host_if], None).is_ok()
            && let Err(e) = run("ip", &["link", "del", &self.inner.host_if], None)
        {
            problems.push(e.to_string());
        }
        if host_link && run("ip", &["link", "show", &self.inner.host_if], None).is_ok() {
            problems.push(format!("interface {} remains", self.inner.host_if));
        }
        match namespaces_with_prefix(&format!("{}-", self.inner.prefix)) {
            Ok(left) if !left.is_empty() => problems.push(format!("namespaces remain: {left:?}")),
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(NetError::Teardown(problems.join("; ")))
        }
    }

    /// Runs a blocking rules change on the blocking pool (`ip`/`nft` are child processes).
    async fn apply_async(
        &self,
        change: impl FnOnce(&mut Faults) + Send + 'static,
    ) -> Result<(), NetError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply(change))
            .await
            .map_err(|e| NetError::Task(e.to_string()))?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let torn_down = lock(&self.state).torn_down;
        if !torn_down {
            // Best effort (a drop cannot report): delete what we created; the bridge namespace
            // takes the root-side veth with it.
            let created = std::mem::take(&mut lock(&self.state).created);
            for ns in created.iter().rev() {
                if let Err(e) = run("ip", &["netns", "del", ns], None) {
                    tracing::warn!(error = %e, namespace = %ns, "teardown on drop");
                }
            }
        }
    }
}

impl Network for Netns {
    async fn partition(&self, a: &[String], b: &[String]) -> Result<(), NetError> {
        let (a, b) = (a.to_vec(), b.to_vec());
        self.apply_async(move |f| f.partition(&a, &b)).await
    }

    async fn one_way(&self, from: &[String], to: &[String]) -> Result<(), NetError> {
        let (from, to) = (from.to_vec(), to.to_vec());
        self.apply_async(move |f| f.one_way(&from, &to)).await
    }

    async fn lossy(&self, a: &[String], b: &[String], percent: u8) -> Result<(), NetError> {
        let (a, b) = (a.to_vec(), b.to_vec());
        self.apply_async(move |f| f.lossy(&a, &b, percent)).await
    }

    async fn heal(&self) -> Result<(), NetError> {
        self.apply_async(Faults::clear).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_checked_before_anything_is_created() {
        assert!(validate_names(&[]).is_err());
        assert!(validate_names(&["n1", "n1"]).is_err());
        assert!(validate_names(&["host"]).is_err());
        assert!(validate_names(&["br"]).is_err());
        assert!(validate_names(&["N1"]).is_err());
        assert!(validate_names(&["n1; rm"]).is_err());
        assert!(validate_names(&["n1", "n2", "namesrv"]).is_ok());
    }

    /// Rendering needs no root: build the struct by hand.
    fn fake(nodes: &[&str]) -> Netns {
        Netns {
            inner: Arc::new(Inner {
                prefix: "jl-1-0".into(),
                bridge_ns: "jl-1-0-br".into(),
                host_if: "jl1x0h".into(),
                host_ip: Ipv4Addr::new(10, 77, 5, 1),
                nodes: nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| NodeNs {
                        name: n.to_string(),
                        namespace: format!("jl-1-0-{n}"),
                        ip: Ipv4Addr::new(10, 77, 5, (i + 2) as u8),
                    })
                    .collect(),
                state: Mutex::new(State {
                    // Nothing was created: dropping the fake must not run `ip`.
                    torn_down: true,
                    ..State::default()
                }),
            }),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn rules_drop_at_both_ends_and_lose_once_per_direction() {
        let net = fake(&["n1", "n2", "n3"]);
        let mut f = Faults::default();
        f.one_way(&s(&["n1"]), &s(&["n2"]));
        f.lossy(&s(&["n3"]), &s(&["n1", HOST]), 30);
        f.lossy(&s(&["n2"]), &s(&["n3"]), 100);
        let n1 = net.render(&net.inner.nodes[0], &f).unwrap();
        let n2 = net.render(&net.inner.nodes[1], &f).unwrap();
        let n3 = net.render(&net.inner.nodes[2], &f).unwrap();
        assert!(n1.contains("ip daddr 10.77.5.3 drop"), "{n1}");
        assert!(!n1.contains("saddr 10.77.5.3"), "one way only: {n1}");
        assert!(n2.contains("ip saddr 10.77.5.2 drop"), "{n2}");
        // n3 <-> n1 loss: each receiver drops once.
        assert!(
            n1.contains("ip saddr 10.77.5.4 numgen random mod 100 < 30 drop"),
            "{n1}"
        );
        assert!(
            n3.contains("ip saddr 10.77.5.2 numgen random mod 100 < 30 drop"),
            "{n3}"
        );
        // n3 -> host: the host has no rules of ours, so n3 drops on output.
        assert!(
            n3.contains("ip daddr 10.77.5.1 numgen random mod 100 < 30 drop"),
            "{n3}"
        );
        assert!(n3.contains("ip saddr 10.77.5.1 numgen"), "{n3}");
        assert!(n1.starts_with("table inet jepsen_lite\ndelete table inet jepsen_lite\n"));
        // 100% has no numgen form (mod 100 < 100 is out of range): a plain drop.
        assert!(n2.contains("ip saddr 10.77.5.4 drop"), "{n2}");
        assert!(!n2.contains("< 100"), "{n2}");
    }

    #[test]
    fn unknown_nodes_are_rejected_without_changing_faults() {
        let net = fake(&["n1"]);
        let err = net
            .apply(|f| f.partition(&s(&["n1"]), &s(&["nx"])))
            .unwrap_err();
        assert!(matches!(err, NetError::UnknownNode(ref n) if n == "nx"));
        assert!(net.faults().is_empty());
    }
}
