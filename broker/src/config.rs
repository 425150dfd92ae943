//! Broker configuration: the options (from flags or a TOML file with the same keys) and the
//! resolved, checked `BrokerConfig` the broker runs with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::schedule::{DelayLevelError, DelayLevels};
use raftmq_raft::{NodeId, RaftTimers};

/// RocketMQ's broker port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:10911";
/// Raft RPC: where RocketMQ's master/slave HA port is (10912).
pub const DEFAULT_RAFT_LISTEN: &str = "127.0.0.1:10912";
/// Admin HTTP; bound to loopback by default because it can change membership.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:10913";
pub const DEFAULT_CLUSTER_NAME: &str = "DefaultCluster";
pub const DEFAULT_BROKER_NAME: &str = "broker-a";
/// How often every member registers with every NameServer (RocketMQ: 30 s).
pub const DEFAULT_REGISTER_INTERVAL: Duration = Duration::from_secs(30);
/// RocketMQ's cap on one message body (4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;
/// The most members a group may list in `--peers`.
pub const MAX_PEERS: usize = 9;

/// Options as given: every field optional, so a TOML file and flags can be merged (flags win).
/// The TOML keys are the long flag names: `namesrv`, `broker-name`, `node-id`, ...
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BrokerOptions {
    /// NameServer addresses, `;`-separated (as RocketMQ's `-n` and `NAMESRV_ADDR`).
    pub namesrv: Option<String>,
    pub cluster_name: Option<String>,
    /// The broker group (RocketMQ's brokerName); one Raft group.
    pub broker_name: Option<String>,
    /// This member's Raft node id (1, 2, 3, ...).
    pub node_id: Option<NodeId>,
    /// The group's initial members: `1=host:raftport,2=host:raftport,...`.
    pub peers: Option<String>,
    /// Client (remoting) listen address.
    pub listen: Option<String>,
    /// The address clients are told to use, if not the listen address (RocketMQ's brokerIP1).
    pub advertise: Option<String>,
    pub raft_listen: Option<String>,
    pub admin_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Create topics on first send (RocketMQ's autoCreateTopicEnable, on by default).
    pub auto_create_topic: Option<bool>,
    pub register_interval_ms: Option<u64>,
    pub max_message_bytes: Option<usize>,
    /// Raft heartbeat and election timeouts, milliseconds.
    pub raft_heartbeat_ms: Option<u64>,
    pub raft_election_min_ms: Option<u64>,
    pub raft_election_max_ms: Option<u64>,
    /// RocketMQ's `messageDelayLevel`: the delay of each level, `"1s 5s 10s ..."`.
    pub message_delay_level: Option<String>,
    /// This member joins an existing group later (as a learner): it does not initialize one.
    pub join: Option<bool>,
    /// TEST ONLY: acknowledge sends before they are committed, to prove jepsen-lite can fail.
    pub unsafe_ack_before_commit: Option<bool>,
}

impl BrokerOptions {
    /// Reads options from a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::File(path.to_path_buf(), err.to_string()))?;
        toml::from_str(&text).map_err(|err| ConfigError::File(path.to_path_buf(), err.to_string()))
    }

    /// `self` with every field that `overrides` sets replaced.
    pub fn merged_with(self, overrides: BrokerOptions) -> Self {
        macro_rules! pick {
            ($($field:ident),* $(,)?) => {
                Self { $($field: overrides.$field.or(self.$field)),* }
            };
        }
        pick!(
            namesrv,
            cluster_name,
            broker_name,
            node_id,
            peers,
            listen,
            advertise,
            raft_listen,
            admin_listen,
            data_dir,
            auto_create_topic,
            register_interval_ms,
            max_message_bytes,
            raft_heartbeat_ms,
            raft_election_min_ms,
            raft_election_max_ms,
            message_delay_level,
            join,
            unsafe_ack_before_commit,
        )
    }
}

/// The configuration a broker runs with: complete and checked.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub namesrv: Vec<String>,
    pub cluster_name: String,
    pub broker_name: String,
    pub node_id: NodeId,
    pub peers: BTreeMap<NodeId, String>,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub raft_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub auto_create_topic: bool,
    pub register_interval: Duration,
    pub max_message_bytes: usize,
    pub raft_timers: RaftTimers,
    pub delay_levels: DelayLevels,
    pub join: bool,
    pub unsafe_ack_before_commit: bool,
}

/// A configuration that cannot run, with what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: {1}")]
    File(PathBuf, String),
    #[error("--node-id is required (this member's Raft id, 1 or more)")]
    MissingNodeId,
    #[error("--node-id must be 1 or more (0 is the master slot in routes)")]
    ZeroNodeId,
    #[error("--data-dir is required")]
    MissingDataDir,
    #[error("{flag}: {value:?} is not a socket address (host:port): {reason}")]
    BadAddress {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--peers: {0}")]
    BadPeers(String),
    #[error("--broker-name: {0}")]
    BadBrokerName(String),
    #[error("raft timers: {0}")]
    BadTimers(String),
    #[error(transparent)]
    BadDelayLevels(#[from] DelayLevelError),
}

fn parse_addr(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let bad = |reason: String| ConfigError::BadAddress {
        flag,
        value: value.to_string(),
        reason,
    };
    value
        .to_socket_addrs()
        .map_err(|err| bad(err.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| ConfigError::BadPeers(format!("{item:?} is not id=host:port")))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| ConfigError::BadPeers(format!("{id:?} is not a node id")))?;
        if id == 0 {
            return Err(ConfigError::BadPeers("node ids start at 1".into()));
        }
        parse_addr("--peers", addr.trim())?;
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(ConfigError::BadPeers(format!("node {id} is listed twice")));
        }
    }
    if peers.len() > MAX_PEERS {
        return Err(ConfigError::BadPeers(format!(
            "at most {MAX_PEERS} members"
        )));
    }
    Ok(peers)
}

/// Splits RocketMQ's `host:port;host:port` NameServer list.
pub fn parse_namesrv_list(text: &str) -> Vec<String> {
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl BrokerConfig {
    /// Resolves options into a configuration, with RocketMQ's defaults for what is unset.
    pub fn from_options(options: BrokerOptions) -> Result<Self, ConfigError> {
        let node_id = options.node_id.ok_or(ConfigError::MissingNodeId)?;
        if node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        let data_dir = options.data_dir.ok_or(ConfigError::MissingDataDir)?;
        let broker_name = options
            .broker_name
            .unwrap_or_else(|| DEFAULT_BROKER_NAME.into());
        if broker_name.is_empty() || broker_name.contains(['\n', '\r', ';', ',']) {
            return Err(ConfigError::BadBrokerName(format!(
                "{broker_name:?} is not a valid name"
            )));
        }
        let listen = parse_addr(
            "--listen",
            options.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        )?;
        let advertise = match options.advertise.as_deref() {
            Some(addr) => parse_addr("--advertise", addr)?,
            // An unspecified listen address cannot be dialled: advertise loopback instead.
            None if listen.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], listen.port()))
            }
            None => listen,
        };
        let raft_listen = parse_addr(
            "--raft-listen",
            options
                .raft_listen
                .as_deref()
                .unwrap_or(DEFAULT_RAFT_LISTEN),
        )?;
        let admin_listen = parse_addr(
            "--admin-listen",
            options
                .admin_listen
                .as_deref()
                .unwrap_or(DEFAULT_ADMIN_LISTEN),
        )?;
        let join = options.join.unwrap_or(false);
        let mut peers = parse_peers(options.peers.as_deref().unwrap_or(""))?;
        if peers.is_empty() {
            // A group of one: this member alone.
            peers.insert(node_id, raft_listen.to_string());
        }
        if !join && !peers.contains_key(&node_id) {
            return Err(ConfigError::BadPeers(format!(
                "this member (node {node_id}) is not among the peers; pass --join to add it later"
            )));
        }
        // Generous defaults (the raft crate's): three members may share two cores.
        let defaults = RaftTimers::default();
        let timers = RaftTimers {
            heartbeat_interval_ms: options
                .raft_heartbeat_ms
                .unwrap_or(defaults.heartbeat_interval_ms),
            election_timeout_min_ms: options
                .raft_election_min_ms
                .unwrap_or(defaults.election_timeout_min_ms),
            election_timeout_max_ms: options
                .raft_election_max_ms
                .unwrap_or(defaults.election_timeout_max_ms),
        };
        if timers.heartbeat_interval_ms == 0
            || timers.election_timeout_min_ms <= timers.heartbeat_interval_ms
            || timers.election_timeout_max_ms <= timers.election_timeout_min_ms
        {
            return Err(ConfigError::BadTimers(format!(
                "need 0 < heartbeat < election min < election max, got {timers:?}"
            )));
        }
        Ok(Self {
            namesrv: parse_namesrv_list(options.namesrv.as_deref().unwrap_or("")),
            cluster_name: options
                .cluster_name
                .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.into()),
            broker_name,
            node_id,
            peers,
            listen,
            advertise,
            raft_listen,
            admin_listen,
            data_dir,
            auto_create_topic: options.auto_create_topic.unwrap_or(true),
            register_interval: options
                .register_interval_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_REGISTER_INTERVAL),
            max_message_bytes: options
                .max_message_bytes
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
            raft_timers: timers,
            delay_levels: match options.message_delay_level.as_deref() {
                Some(text) => DelayLevels::parse(text)?,
                None => DelayLevels::default(),
            },
            join,
            unsafe_ack_before_commit: options.unsafe_ack_before_commit.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> BrokerOptions {
        BrokerOptions {
            node_id: Some(2),
            data_dir: Some("/tmp/x".into()),
            peers: Some("1=127.0.0.1:20001, 2=127.0.0.1:20002,3=127.0.0.1:20003".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_mirror_rocketmq() {
        let config = BrokerConfig::from_options(minimal()).unwrap();
        assert_eq!(config.listen.port(), 10911);
        assert_eq!(config.advertise.to_string(), "127.0.0.1:10911");
        assert_eq!(config.cluster_name, "DefaultCluster");
        assert_eq!(config.register_interval, Duration::from_secs(30));
        assert_eq!(config.max_message_bytes, 4 << 20);
        assert_eq!(config.peers.len(), 3);
        assert!(config.auto_create_topic);
        assert!(!config.unsafe_ack_before_commit);
        assert_eq!(config.delay_levels.count(), 18);
    }

    #[test]
    fn toml_and_flags_share_keys_and_flags_win() {
        let file: BrokerOptions = toml::from_str(
            "namesrv = \"127.0.0.1:9876;127.0.0.1:9877\"\nbroker-name = \"b\"\nnode-id = 1\n",
        )
        .unwrap();
        let merged = file.merged_with(minimal());
        let config = BrokerConfig::from_options(merged).unwrap();
        assert_eq!(config.namesrv, vec!["127.0.0.1:9876", "127.0.0.1:9877"]);
        assert_eq!(config.broker_name, "b");
        assert_eq!(config.node_id, 2);
    }

    #[test]
    fn unknown_toml_keys_are_an_error() {
        assert!(toml::from_str::<BrokerOptions>("brokr-name = \"typo\"").is_err());
    }

    #[test]
    fn bad_input_gets_a_clear_error() {
        let cases: Vec<(BrokerOptions, &str)> = vec![
            (
                BrokerOptions {
                    node_id: None,
                    ..minimal()
                },
                "--node-id is required",
            ),
            (
                BrokerOptions {
                    node_id: Some(0),
                    ..minimal()
                },
                "1 or more",
            ),
            (
                BrokerOptions {
                    data_dir: None,
                    ..minimal()
                },
                "--data-dir",
            ),
            (
                BrokerOptions {
                    listen: Some("nonsense".into()),
                    ..minimal()
                },
                "--listen",
            ),
            (
                BrokerOptions {
                    peers: Some("1=127.0.0.1:1,1=127.0.0.1:2".into()),
                    ..minimal()
                },
                "twice",
            ),
            (
                BrokerOptions {
                    peers: Some("x=127.0.0.1:1".into()),
                    ..minimal()
                },
                "not a node id",
            ),
            (
                BrokerOptions {
                    peers: Some("1=127.0.0.1:1".into()),
                    ..minimal()
                },
                "not among the peers",
            ),
            (
                BrokerOptions {
                    raft_heartbeat_ms: Some(5000),
                    ..minimal()
                },
                "heartbeat",
            ),
            (
                BrokerOptions {
                    message_delay_level: Some("1s 2fortnights".into()),
                    ..minimal()
                },
                "--message-delay-level",
            ),
        ];
        for (options, expected) in cases {
            let err = BrokerConfig::from_options(options).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
