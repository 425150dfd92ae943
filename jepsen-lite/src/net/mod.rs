//! The network-fault layer: cut, one-way-drop and degrade links between named nodes.
//!
//! Two implementations of one [`Network`] trait:
//! - [`netns::Netns`]: every node in its own Linux network namespace, joined by veth pairs to a
//!   bridge; faults are nftables rules inside the node namespaces. Needs root, `ip` (iproute2)
//!   and `nft` (nftables); `scripts/install-net-tools.sh` installs them on Debian.
//! - [`proxy::ProxyNetwork`]: the fallback where namespaces cannot be made: one TCP proxy per
//!   directed link on 127.0.0.1, which forwards, stalls (holds bytes, as a dropped link would),
//!   delays (lossy) or severs connections.
//!
//! Both keep the wanted faults in a [`Faults`] value and make the world match it, so faults add
//! up (a partition plus a lossy link) and [`Network::heal`] removes them all.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

pub mod cmd;
pub mod netns;
pub mod probe;
pub mod proxy;
pub mod selftest;

/// The node name for the machine's own network stack (the harness and its clients) in the
/// namespace layout, and a conventional name for clients in the proxy layout.
pub const HOST: &str = "host";

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{program}` is not installed (Debian: apt-get install {package}); {hint}")]
    ToolMissing {
        program: String,
        package: &'static str,
        hint: &'static str,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("unknown node {0}")]
    UnknownNode(String),
    #[error("invalid network setup: {0}")]
    Setup(String),
    #[error("no free 10.77.X.0/24 subnet on this machine")]
    NoSubnet,
    #[error("proxy: {context}: {source}")]
    Proxy {
        context: String,
        source: std::io::Error,
    },
    #[error("the network task was lost: {0}")]
    Task(String),
    #[error("teardown left things behind: {0}")]
    Teardown(String),
}

/// The network faults a nemesis can inject. Every call adds to the faults in place;
/// [`Network::heal`] removes all of them.
pub trait Network: Send + Sync {
    /// Drops all traffic between every node of `a` and every node of `b`, both ways.
    fn partition(
        &self,
        a: &[String],
        b: &[String],
    ) -> impl Future<Output = Result<(), NetError>> + Send;
    /// Drops traffic from each node of `from` to each node of `to`; the other way still flows.
    fn one_way(
        &self,
        from: &[String],
        to: &[String],
    ) -> impl Future<Output = Result<(), NetError>> + Send;
    /// Drops `percent`% of packets between every node of `a` and every node of `b`, both ways
    /// (the proxy delays a chunk instead: it cannot lose bytes inside a TCP stream).
    fn lossy(
        &self,
        a: &[String],
        b: &[String],
        percent: u8,
    ) -> impl Future<Output = Result<(), NetError>> + Send;
    /// Removes every fault.
    fn heal(&self) -> impl Future<Output = Result<(), NetError>> + Send;
}

/// The wanted state of the network: directed drops and directed loss rates between node names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// (source, destination): every packet from source to destination is dropped.
    pub drops: BTreeSet<(String, String)>,
    /// (source, destination) -> percent of packets dropped.
    pub loss: BTreeMap<(String, String), u8>,
}

impl Faults {
    pub fn partition(&mut self, a: &[String], b: &[String]) {
        self.one_way(a, b);
        self.one_way(b, a);
    }

    pub fn one_way(&mut self, from: &[String], to: &[String]) {
        for f in from {
            for t in to.iter().filter(|t| *t != f) {
                self.drops.insert((f.clone(), t.clone()));
            }
        }
    }

    pub fn lossy(&mut self, a: &[String], b: &[String], percent: u8) {
        let percent = percent.min(100);
        for x in a {
            for y in b.iter().filter(|y| *y != x) {
                self.loss.insert((x.clone(), y.clone()), percent);
                self.loss.insert((y.clone(), x.clone()), percent);
            }
        }
    }

    pub fn clear(&mut self) {
        self.drops.clear();
        self.loss.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.drops.is_empty() && self.loss.is_empty()
    }

    /// Whether packets from `from` to `to` are all dropped.
    pub fn dropped(&self, from: &str, to: &str) -> bool {
        self.drops.contains(&(from.to_string(), to.to_string()))
    }

    /// The loss rate from `from` to `to` (0 when none).
    pub fn loss_percent(&self, from: &str, to: &str) -> u8 {
        self.loss
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every node name mentioned.
    pub fn nodes(&self) -> BTreeSet<&str> {
        self.drops
            .iter()
            .chain(self.loss.keys())
            .flat_map(|(a, b)| [a.as_str(), b.as_str()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn faults_add_up_and_heal_clears() {
        let mut f = Faults::default();
        f.partition(&s(&["n1"]), &s(&["n2", "n3"]));
        assert!(f.dropped("n1", "n2") && f.dropped("n2", "n1"));
        assert!(f.dropped("n3", "n1"));
        assert!(!f.dropped("n2", "n3"));
        f.one_way(&s(&["n2"]), &s(&["n3", "n2"]));
        assert!(f.dropped("n2", "n3") && !f.dropped("n3", "n2"));
        assert!(!f.dropped("n2", "n2"), "a node is never cut from itself");
        f.lossy(&s(&["n1"]), &s(&["n3"]), 150);
        assert_eq!(f.loss_percent("n3", "n1"), 100);
        assert_eq!(f.loss_percent("n1", "n2"), 0);
        assert_eq!(f.nodes().len(), 3);
        f.clear();
        assert!(f.is_empty());
    }
}
