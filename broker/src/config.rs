//! Broker configuration: [`BrokerOptions`], one struct that is both the `mqbroker` flags (clap)
//! and the keys of its TOML file (serde), and the resolved, checked [`BrokerConfig`] the broker
//! runs with. Defaults are the constants below, applied in one place:
//! [`BrokerConfig::from_options`]. Precedence: a flag (or its environment variable) over the
//! file over the default ([`BrokerOptions::load`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::FromArgMatches;
use raftmq_protocol::acl::Account;
use raftmq_protocol::admin::AdminToken;
use raftmq_protocol::names::{BROKER_ADMIN_PORT, BROKER_PORT, BROKER_RAFT_PORT};
use serde::Deserialize;

use crate::schedule::{DEFAULT_MESSAGE_DELAY_LEVEL, DelayLevelError, DelayLevels};
use raftmq_raft::{NodeId, RaftTimers, RaftTls};
use raftmq_tls::{ClientAuth, TlsAcceptor, TlsConfig, TlsConnector, TlsMode};

/// RocketMQ's broker port, on every interface.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), BROKER_PORT);
/// Raft RPC: where RocketMQ's master/slave HA port is.
pub const DEFAULT_RAFT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), BROKER_RAFT_PORT);
/// Admin HTTP; bound to loopback by default because it can change membership.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), BROKER_ADMIN_PORT);
/// RocketMQ 5's gRPC port (the proxy's default), on every interface.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8081);
pub const DEFAULT_CLUSTER_NAME: &str = "DefaultCluster";
pub const DEFAULT_BROKER_NAME: &str = "broker-a";
/// Topics are created on their first send (RocketMQ's autoCreateTopicEnable).
pub const DEFAULT_AUTO_CREATE_TOPIC: bool = true;
/// How often every member registers with every NameServer (RocketMQ: 30 s).
pub const DEFAULT_REGISTER_INTERVAL: Duration = Duration::from_secs(30);
/// RocketMQ's cap on one message body (4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;
/// How long the broker remembers each message's `UNIQ_KEY` to store a retried send once (the
/// idempotent producer); 0 turns it off.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// The longest dedup window: each message looks through one key index bucket per minute of it.
pub const MAX_DEDUP_WINDOW: Duration = Duration::from_secs(3600);
/// A half message this old with no commit or rollback is checked with its producer
/// (RocketMQ's `transactionTimeOut`).
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(6);
/// How often the leader looks for transactions to check, and how long it waits between two
/// checks of one transaction (RocketMQ's `transactionCheckInterval`).
pub const DEFAULT_TRANSACTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Checks of one transaction before its half message is discarded (RocketMQ's
/// `transactionCheckMax`).
pub const DEFAULT_TRANSACTION_CHECK_MAX: u32 = 15;
/// The furthest ahead a timer message may be due (RocketMQ's `timerMaxDelaySec`: 3 days).
pub const DEFAULT_TIMER_MAX_DELAY: Duration = Duration::from_secs(3 * 24 * 3600);
/// The most members a group may list in `--peers`.
pub const MAX_PEERS: usize = 9;

/// `help` followed by the default, for `--help`.
fn with_default(help: &str, default: impl std::fmt::Display) -> String {
    format!("{help} [default: {default}]")
}

/// The options as given, every one optional so that a TOML file and flags can be layered. Each
/// field is a long flag (`--broker-name`) and the TOML key of the same name (`broker-name`).
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BrokerOptions {
    /// NameServer addresses, `host:port;host:port` (as RocketMQ's `-n` and `NAMESRV_ADDR`).
    #[arg(short = 'n', long, env = "NAMESRV_ADDR")]
    pub namesrv: Option<String>,
    #[arg(
        long,
        help = with_default(
            "The cluster this group belongs to (RocketMQ's brokerClusterName)",
            DEFAULT_CLUSTER_NAME
        )
    )]
    pub cluster_name: Option<String>,
    #[arg(
        long,
        help = with_default(
            "The broker group (RocketMQ's brokerName): one Raft group",
            DEFAULT_BROKER_NAME
        )
    )]
    pub broker_name: Option<String>,
    /// This member's Raft node id (1, 2, 3, ...).
    #[arg(long)]
    pub node_id: Option<NodeId>,
    /// The group's initial members: `1=host:raftport,2=host:raftport,...` [default: this
    /// member alone, on its --raft-listen].
    #[arg(long)]
    pub peers: Option<String>,
    #[arg(
        long,
        help = with_default(
            "Client (remoting) listen address",
            DEFAULT_LISTEN
        )
    )]
    pub listen: Option<String>,
    /// The address clients are told to use, if not the listen address (RocketMQ's brokerIP1)
    /// [default: the listen address, loopback if that is unspecified].
    #[arg(long)]
    pub advertise: Option<String>,
    #[arg(
        long,
        help = with_default(
            "Raft RPC listen address",
            DEFAULT_RAFT_LISTEN
        )
    )]
    pub raft_listen: Option<String>,
    #[arg(
        long,
        help = with_default(
            "Admin HTTP listen address",
            DEFAULT_ADMIN_LISTEN
        )
    )]
    pub admin_listen: Option<String>,
    #[arg(
        long,
        help = with_default(
            "RocketMQ 5 gRPC (MessagingService) listen address",
            DEFAULT_GRPC_LISTEN
        )
    )]
    pub grpc_listen: Option<String>,
    /// The gRPC address 5.x clients are told to use for this member [default: the gRPC listen
    /// address, loopback if that is unspecified].
    #[arg(long)]
    pub grpc_advertise: Option<String>,
    /// The gRPC addresses of the group's members, `1=host:port,2=host:port,...`: routes list
    /// them, and a follower forwards writes to its leader's [default: this member alone].
    #[arg(long)]
    pub grpc_peers: Option<String>,
    /// Where this member keeps its state and its Raft log.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(
        long,
        help = with_default(
            "Create topics on first send (RocketMQ's autoCreateTopicEnable)",
            DEFAULT_AUTO_CREATE_TOPIC
        )
    )]
    pub auto_create_topic: Option<bool>,
    #[arg(
        long,
        help = with_default(
            "How often to register with every NameServer, ms",
            DEFAULT_REGISTER_INTERVAL.as_millis()
        )
    )]
    pub register_interval_ms: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "The largest message body accepted, bytes",
            DEFAULT_MAX_MESSAGE_BYTES
        )
    )]
    pub max_message_bytes: Option<usize>,
    #[arg(
        long,
        help = with_default(
            "Raft heartbeat interval, ms",
            RaftTimers::default().heartbeat_interval_ms
        )
    )]
    pub raft_heartbeat_ms: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "Raft election timeout, lower bound, ms",
            RaftTimers::default().election_timeout_min_ms
        )
    )]
    pub raft_election_min_ms: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "Raft election timeout, upper bound, ms",
            RaftTimers::default().election_timeout_max_ms
        )
    )]
    pub raft_election_max_ms: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "Delay levels, RocketMQ's messageDelayLevel: level 1 first, units ms/s/m/h/d",
            format!("{DEFAULT_MESSAGE_DELAY_LEVEL:?}")
        )
    )]
    pub message_delay_level: Option<String>,
    #[arg(
        long,
        help = with_default(
            "Idempotent producer: how long each message's UNIQ_KEY is remembered so that a retried send is stored once, ms (0: off)",
            DEFAULT_DEDUP_WINDOW.as_millis()
        )
    )]
    pub dedup_window_ms: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "A half message older than this is checked with its producer (RocketMQ's transactionTimeOut), ms",
            DEFAULT_TRANSACTION_TIMEOUT.as_millis()
        )
    )]
    pub transaction_timeout_ms: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "Time between two checks of one transaction (RocketMQ's transactionCheckInterval), ms",
            DEFAULT_TRANSACTION_CHECK_INTERVAL.as_millis()
        )
    )]
    pub transaction_check_interval_ms: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "Checks of one transaction before it is discarded (RocketMQ's transactionCheckMax)",
            DEFAULT_TRANSACTION_CHECK_MAX
        )
    )]
    pub transaction_check_max: Option<u32>,
    #[arg(
        long,
        help = with_default(
            "The furthest ahead a timer message may be due (RocketMQ's timerMaxDelaySec), s",
            DEFAULT_TIMER_MAX_DELAY.as_secs()
        )
    )]
    pub timer_max_delay_sec: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "Size of a commit log segment file (RocketMQ's mapedFileSizeCommitLog): bytes, or with a unit such as 4MiB",
            "1GiB"
        )
    )]
    pub segment_size: Option<String>,
    #[arg(
        long,
        help = with_default(
            "How long messages are kept (RocketMQ's fileReservedTime): a plain number is hours, or a duration such as 30s, 10m, 3d",
            "72"
        )
    )]
    pub file_reserved_time: Option<String>,
    #[arg(
        long,
        help = with_default(
            "Delete the oldest segments while the data directory's disk is fuller than this, percent (RocketMQ's diskMaxUsedSpaceRatio)",
            DEFAULT_DISK_MAX_USED_SPACE_RATIO
        )
    )]
    pub disk_max_used_space_ratio: Option<u8>,
    /// How often retention is checked, ms (tests use less than the default).
    #[arg(long, hide = true)]
    pub retention_check_interval_ms: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "Snapshot the state machine after this many applied log entries",
            DEFAULT_SNAPSHOT_EVERY_ENTRIES
        )
    )]
    pub snapshot_every_entries: Option<u64>,
    #[arg(
        long,
        help = with_default(
            "Snapshot the state machine after this many bytes were written to the log (bytes, or with a unit)",
            "1GiB"
        )
    )]
    pub snapshot_every_bytes: Option<String>,
    #[arg(
        long,
        help = with_default(
            "How often every sealed commit log segment is read back and its CRCs checked (a pass also runs at start); a duration such as 12h, or off",
            "24h"
        )
    )]
    pub log_scrub_interval: Option<String>,
    /// Join an existing group later (as a learner) instead of forming one from --peers.
    // A flag without a value, as before; `None` when absent so that a file's `join = true`
    // stands.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub join: Option<bool>,
    /// Enforce ACL on this member whatever the group's replicated switch says (RocketMQ's
    /// aclEnable). Start every member of every group with it to turn ACL on cluster-wide.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub acl: Option<bool>,
    /// Access key of a member-local admin account that works before any ACL account exists
    /// (bootstrap: `mq acl` with these keys creates the others). Same keys on every member.
    #[arg(long, env = "RAFTMQ_ACL_ADMIN_ACCESS_KEY")]
    pub acl_admin_access_key: Option<String>,
    /// Secret key of that account (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "RAFTMQ_ACL_ADMIN_SECRET_KEY", hide_env_values = true)]
    pub acl_admin_secret_key: Option<String>,
    /// Bearer token that admin HTTP requires on every state-changing request and on /acl;
    /// required when --admin-listen is not loopback.
    #[arg(long, env = raftmq_protocol::admin::ADMIN_TOKEN_ENV, hide_env_values = true)]
    pub admin_token: Option<AdminToken>,
    /// TLS on this member's links: `disabled`, `permissive` (TLS and plaintext on the remoting
    /// port, told apart per connection) or `enforcing` (TLS only). Whenever it is not
    /// disabled, the Raft links are mutual TLS (peers need a certificate of --tls-ca) and the
    /// member registers with the NameServers over TLS.
    #[arg(long, env = "RAFTMQ_TLS_MODE")]
    pub tls_mode: Option<TlsMode>,
    /// This member's certificate chain (PEM), valid for the addresses peers and clients dial.
    #[arg(long, env = "RAFTMQ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RAFTMQ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate(s) (PEM): members' and NameServers' certificates chain to it.
    #[arg(long, env = "RAFTMQ_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Whether TLS clients of the remoting, gRPC and admin ports must present a certificate of
    /// --tls-ca: `none` (default), `optional` or `require`. With `enforcing`, `require` makes
    /// the certificate a credential: admin HTTP may then listen off loopback without a token.
    #[arg(long, env = "RAFTMQ_TLS_CLIENT_AUTH")]
    pub tls_client_auth: Option<ClientAuth>,
    /// TEST ONLY: acknowledge sends before they are committed (loses data; for jepsen-lite).
    #[arg(long, hide = true, num_args = 0, default_missing_value = "true")]
    pub unsafe_ack_before_commit: Option<bool>,
    /// TEST ONLY: the Raft log skips its fsyncs (a power loss loses acknowledged sends; for
    /// jepsen-lite).
    #[arg(long, hide = true, num_args = 0, default_missing_value = "true")]
    pub unsafe_skip_fsync: Option<bool>,
}

impl BrokerOptions {
    /// Reads options from a TOML file. An unknown key or a value of the wrong type is an error
    /// naming the file, the key and its line.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::File(path.to_path_buf(), err.to_string()))?;
        toml::from_str(&text).map_err(|err| ConfigError::File(path.to_path_buf(), err.to_string()))
    }

    /// The options a member runs with: those of the TOML file `file` (if any), with every
    /// option given in `flags` (on the command line, or by its environment variable) over
    /// them. `flags` are matches of a command these options were added to (`#[command(flatten)]`).
    pub fn load(file: Option<&Path>, flags: &clap::ArgMatches) -> Result<Self, ConfigError> {
        let mut options = match file {
            Some(path) => Self::from_toml_file(path)?,
            None => Self::default(),
        };
        // clap assigns only the options present in the matches, so what the file set stays
        // unless a flag replaces it.
        options.update_from_arg_matches(flags)?;
        Ok(options)
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
    pub grpc_listen: SocketAddr,
    /// The gRPC address of this member that clients dial.
    pub grpc_advertise: SocketAddr,
    /// Every member's gRPC address by node id (this member's included).
    pub grpc_peers: BTreeMap<NodeId, SocketAddr>,
    pub data_dir: PathBuf,
    pub auto_create_topic: bool,
    pub register_interval: Duration,
    pub max_message_bytes: usize,
    pub raft_timers: RaftTimers,
    pub delay_levels: DelayLevels,
    pub dedup_window: Duration,
    pub transactions: TransactionConfig,
    pub timer_max_delay: Duration,
    /// The size at which a commit log segment file is sealed.
    pub segment_bytes: u64,
    /// How often the log scrub checks the sealed segments again (`None`: never, not even at
    /// start).
    pub log_scrub_interval: Option<Duration>,
    pub retention: RetentionConfig,
    pub join: bool,
    pub unsafe_ack_before_commit: bool,
    pub unsafe_skip_fsync: bool,
    /// Enforce ACL here whatever the replicated switch says.
    pub acl: bool,
    /// What admin HTTP requires on state-changing requests (`None`: loopback only, open).
    pub admin_token: Option<AdminToken>,
    /// The member-local bootstrap admin account (`--acl-admin-access-key` and secret).
    pub acl_bootstrap_admin: Option<Account>,
    /// TLS on the member's links, loaded from the files at configuration time.
    pub tls: BrokerTls,
}

/// A member's TLS, every file read and checked: the remoting port's acceptor, the Raft links
/// (mutual TLS), the connector of its own remoting clients (NameServer registration), the gRPC
/// port's acceptor (offering `h2`) and the gRPC client's settings (forwarding to the leader).
#[derive(Clone, Debug, Default)]
pub struct BrokerTls {
    pub settings: TlsConfig,
    pub remoting: TlsAcceptor,
    pub raft: RaftTls,
    pub connector: TlsConnector,
    pub grpc: TlsAcceptor,
    pub grpc_client: Option<tonic::transport::ClientTlsConfig>,
}

impl BrokerTls {
    /// Loads `settings`; a member with TLS needs the CA too (its Raft links are mutual).
    pub fn load(settings: TlsConfig) -> Result<BrokerTls, ConfigError> {
        if settings.mode.is_enabled() && settings.ca.is_none() {
            return Err(ConfigError::Tls(raftmq_tls::TlsError::Missing {
                what: "--tls-ca (the CA of the members' certificates: Raft links are mutual TLS)",
                mode: settings.mode,
            }));
        }
        Ok(BrokerTls {
            remoting: settings.acceptor()?,
            raft: RaftTls::from_config(&settings)?,
            connector: settings.connector()?,
            grpc: settings.acceptor_with_alpn(&[b"h2"])?,
            grpc_client: grpc_client_tls(&settings)?,
            settings,
        })
    }
}

/// tonic's client settings from the same files (already checked by the loaders above): the
/// CA to trust and this member's certificate.
fn grpc_client_tls(
    settings: &TlsConfig,
) -> Result<Option<tonic::transport::ClientTlsConfig>, ConfigError> {
    let (Some(cert), Some(key), Some(ca)) = (&settings.cert, &settings.key, &settings.ca) else {
        return Ok(None);
    };
    if !settings.mode.is_enabled() {
        return Ok(None);
    }
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| {
            ConfigError::Tls(raftmq_tls::TlsError::Read {
                what,
                path: path.clone(),
                source,
            })
        })
    };
    Ok(Some(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read("CA", ca)?))
            .identity(tonic::transport::Identity::from_pem(
                read("certificate", cert)?,
                read("private key", key)?,
            )),
    ))
}

/// How pending transactions are checked with their producers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionConfig {
    pub timeout: Duration,
    pub check_interval: Duration,
    pub check_max: u32,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TRANSACTION_TIMEOUT,
            check_interval: DEFAULT_TRANSACTION_CHECK_INTERVAL,
            check_max: DEFAULT_TRANSACTION_CHECK_MAX,
        }
    }
}

/// A configuration that cannot run, with what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: {1}")]
    File(PathBuf, String),
    #[error("flags: {0}")]
    Flags(#[from] clap::Error),
    #[error("TLS: {0}")]
    Tls(#[from] raftmq_tls::TlsError),
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
    #[error("{flag}: {reason}")]
    OutOfRange { flag: &'static str, reason: String },
    #[error("{flag}: {value:?} is not a size (bytes, or e.g. 64MiB, 1GiB): {reason}")]
    BadSize {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "--file-reserved-time: {value:?} is not hours or a duration (e.g. 72, 30s, 3d): {reason}"
    )]
    BadReservedTime { value: String, reason: String },
    #[error("--disk-max-used-space-ratio: {0} is not a percentage from 10 to 95")]
    BadDiskRatio(u8),
    #[error("{flag}: {value:?} is not a duration (e.g. 30s, 12h) or off: {reason}")]
    BadDuration {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    AdminExposed(String),
    #[error("ACL bootstrap admin: {0}")]
    BadAclAdmin(String),
}

/// RocketMQ's `fileReservedTime`: 72 hours.
pub const DEFAULT_FILE_RESERVED_TIME: Duration = Duration::from_secs(72 * 3600);
/// RocketMQ's `diskMaxUsedSpaceRatio`: 75 %.
pub const DEFAULT_DISK_MAX_USED_SPACE_RATIO: u8 = 75;
/// How often the leader looks for expired segments (RocketMQ checks every 10 s).
pub const DEFAULT_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Applied entries between two periodic snapshots.
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 100_000;
/// Log bytes written between two periodic snapshots.
pub const DEFAULT_SNAPSHOT_EVERY_BYTES: u64 = 1 << 30;

/// When messages go: by age and by how full the disk is.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    pub file_reserved_time: Duration,
    /// Percent of the data directory's disk above which the oldest segments go.
    pub disk_max_used_space_ratio: u8,
    pub check_interval: Duration,
    /// A periodic snapshot after this many applied entries...
    pub snapshot_every_entries: u64,
    /// ...or this many log bytes written, whichever comes first.
    pub snapshot_every_bytes: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            file_reserved_time: DEFAULT_FILE_RESERVED_TIME,
            disk_max_used_space_ratio: DEFAULT_DISK_MAX_USED_SPACE_RATIO,
            check_interval: DEFAULT_RETENTION_CHECK_INTERVAL,
            snapshot_every_entries: DEFAULT_SNAPSHOT_EVERY_ENTRIES,
            snapshot_every_bytes: DEFAULT_SNAPSHOT_EVERY_BYTES,
        }
    }
}

/// Parses RocketMQ's `fileReservedTime`: a plain number is hours; otherwise a duration with a
/// unit (`30s`, `10m`, `3d`).
pub fn parse_reserved_time(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if let Ok(hours) = value.parse::<u64>() {
        return hours
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(|| "too long".to_string());
    }
    humantime::parse_duration(value).map_err(|e| e.to_string())
}

/// Parses a size: plain bytes or a number with a unit (`4MiB`, `1GiB`, `512KB`).
pub fn parse_size(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
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

/// The bootstrap admin account from its two keys: both or neither.
fn bootstrap_admin(
    access_key: Option<String>,
    secret_key: Option<String>,
) -> Result<Option<Account>, ConfigError> {
    let (access_key, secret_key) = match (access_key, secret_key) {
        (None, None) => return Ok(None),
        (Some(access_key), Some(secret_key)) => (access_key, secret_key),
        _ => {
            return Err(ConfigError::BadAclAdmin(
                "give both --acl-admin-access-key and --acl-admin-secret-key, or neither".into(),
            ));
        }
    };
    let account = Account {
        access_key,
        secret_key,
        admin: true,
        ..Account::default()
    };
    account
        .validate()
        .map_err(|err| ConfigError::BadAclAdmin(err.to_string()))?;
    Ok(Some(account))
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
        let listen = match options.listen.as_deref() {
            Some(addr) => parse_addr("--listen", addr)?,
            None => DEFAULT_LISTEN,
        };
        let advertise = match options.advertise.as_deref() {
            Some(addr) => parse_addr("--advertise", addr)?,
            // An unspecified listen address cannot be dialled: advertise loopback instead.
            None if listen.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], listen.port()))
            }
            None => listen,
        };
        let raft_listen = match options.raft_listen.as_deref() {
            Some(addr) => parse_addr("--raft-listen", addr)?,
            None => DEFAULT_RAFT_LISTEN,
        };
        let admin_listen = match options.admin_listen.as_deref() {
            Some(addr) => parse_addr("--admin-listen", addr)?,
            None => DEFAULT_ADMIN_LISTEN,
        };
        let grpc_listen = match options.grpc_listen.as_deref() {
            Some(addr) => parse_addr("--grpc-listen", addr)?,
            None => DEFAULT_GRPC_LISTEN,
        };
        let grpc_advertise = match options.grpc_advertise.as_deref() {
            Some(addr) => parse_addr("--grpc-advertise", addr)?,
            None if grpc_listen.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], grpc_listen.port()))
            }
            None => grpc_listen,
        };
        let mut grpc_peers = BTreeMap::new();
        for (id, addr) in parse_peers(options.grpc_peers.as_deref().unwrap_or(""))
            .map_err(|err| ConfigError::BadPeers(format!("--grpc-peers: {err}")))?
        {
            grpc_peers.insert(id, parse_addr("--grpc-peers", &addr)?);
        }
        match grpc_peers.get(&node_id) {
            Some(own) if *own != grpc_advertise => {
                return Err(ConfigError::BadPeers(format!(
                    "--grpc-peers lists node {node_id} at {own}, but its gRPC address is {grpc_advertise}"
                )));
            }
            Some(_) => {}
            None => {
                grpc_peers.insert(node_id, grpc_advertise);
            }
        }
        let tls = TlsConfig {
            mode: options.tls_mode.unwrap_or_default(),
            cert: options.tls_cert.clone(),
            key: options.tls_key.clone(),
            ca: options.tls_ca.clone(),
            client_auth: options.tls_client_auth.unwrap_or_default(),
        };
        raftmq_protocol::admin::check_admin_exposure(
            admin_listen,
            options.admin_token.as_ref(),
            tls.clients_need_certificates(),
        )
        .map_err(ConfigError::AdminExposed)?;
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
        let dedup_window = options
            .dedup_window_ms
            .map_or(DEFAULT_DEDUP_WINDOW, Duration::from_millis);
        if dedup_window > MAX_DEDUP_WINDOW {
            return Err(ConfigError::OutOfRange {
                flag: "--dedup-window-ms",
                reason: format!("at most {} ms", MAX_DEDUP_WINDOW.as_millis()),
            });
        }
        let transactions = TransactionConfig {
            timeout: options
                .transaction_timeout_ms
                .map_or(DEFAULT_TRANSACTION_TIMEOUT, Duration::from_millis),
            check_interval: options
                .transaction_check_interval_ms
                .map_or(DEFAULT_TRANSACTION_CHECK_INTERVAL, Duration::from_millis),
            check_max: options
                .transaction_check_max
                .unwrap_or(DEFAULT_TRANSACTION_CHECK_MAX),
        };
        if transactions.timeout.is_zero() || transactions.check_interval.is_zero() {
            return Err(ConfigError::OutOfRange {
                flag: "--transaction-timeout-ms / --transaction-check-interval-ms",
                reason: "must be positive".into(),
            });
        }
        let timer_max_delay = options
            .timer_max_delay_sec
            .map_or(DEFAULT_TIMER_MAX_DELAY, Duration::from_secs);
        Ok(Self {
            dedup_window,
            transactions,
            timer_max_delay,
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
            grpc_listen,
            grpc_advertise,
            grpc_peers,
            data_dir,
            auto_create_topic: options
                .auto_create_topic
                .unwrap_or(DEFAULT_AUTO_CREATE_TOPIC),
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
            segment_bytes: match options.segment_size.as_deref() {
                None => raftmq_raft::segment::DEFAULT_SEGMENT_BYTES,
                Some(text) => {
                    let bad = |reason: String| ConfigError::BadSize {
                        flag: "--segment-size",
                        value: text.to_owned(),
                        reason,
                    };
                    let bytes = parse_size(text).map_err(bad)?;
                    if bytes < raftmq_raft::segment::MIN_SEGMENT_BYTES {
                        return Err(bad(format!(
                            "at least {} bytes",
                            raftmq_raft::segment::MIN_SEGMENT_BYTES
                        )));
                    }
                    bytes
                }
            },
            log_scrub_interval: match options.log_scrub_interval.as_deref().map(str::trim) {
                None => Some(raftmq_raft::node::DEFAULT_LOG_SCRUB_INTERVAL),
                Some("off") => None,
                Some(text) => {
                    let interval =
                        humantime::parse_duration(text).map_err(|e| ConfigError::BadDuration {
                            flag: "--log-scrub-interval",
                            value: text.to_owned(),
                            reason: e.to_string(),
                        })?;
                    if interval.is_zero() {
                        return Err(ConfigError::BadDuration {
                            flag: "--log-scrub-interval",
                            value: text.to_owned(),
                            reason: "zero would scrub without pause; say off to turn it off".into(),
                        });
                    }
                    Some(interval)
                }
            },
            retention: RetentionConfig {
                file_reserved_time: match options.file_reserved_time.as_deref() {
                    None => DEFAULT_FILE_RESERVED_TIME,
                    Some(text) => parse_reserved_time(text).map_err(|reason| {
                        ConfigError::BadReservedTime {
                            value: text.to_owned(),
                            reason,
                        }
                    })?,
                },
                disk_max_used_space_ratio: match options.disk_max_used_space_ratio {
                    None => DEFAULT_DISK_MAX_USED_SPACE_RATIO,
                    Some(ratio) if (10..=95).contains(&ratio) => ratio,
                    Some(ratio) => return Err(ConfigError::BadDiskRatio(ratio)),
                },
                check_interval: options
                    .retention_check_interval_ms
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_RETENTION_CHECK_INTERVAL)
                    .max(Duration::from_millis(100)),
                snapshot_every_entries: options
                    .snapshot_every_entries
                    .unwrap_or(DEFAULT_SNAPSHOT_EVERY_ENTRIES)
                    .max(1),
                snapshot_every_bytes: match options.snapshot_every_bytes.as_deref() {
                    None => DEFAULT_SNAPSHOT_EVERY_BYTES,
                    Some(text) => parse_size(text).map_err(|reason| ConfigError::BadSize {
                        flag: "--snapshot-every-bytes",
                        value: text.to_owned(),
                        reason,
                    })?,
                },
            },
            join,
            unsafe_ack_before_commit: options.unsafe_ack_before_commit.unwrap_or(false),
            unsafe_skip_fsync: options.unsafe_skip_fsync.unwrap_or(false),
            acl: options.acl.unwrap_or(false),
            admin_token: options.admin_token,
            acl_bootstrap_admin: bootstrap_admin(
                options.acl_admin_access_key,
                options.acl_admin_secret_key,
            )?,
            tls: BrokerTls::load(tls)?,
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
    fn a_member_refuses_admin_off_loopback_without_a_token() {
        let exposed = BrokerOptions {
            admin_listen: Some("0.0.0.0:10913".into()),
            ..minimal()
        };
        let refused = BrokerConfig::from_options(exposed.clone()).unwrap_err();
        assert!(matches!(refused, ConfigError::AdminExposed(_)));
        assert!(refused.to_string().contains("--admin-token"), "{refused}");
        let guarded = BrokerOptions {
            admin_token: Some("0123456789abcdef-token".parse().unwrap()),
            acl: Some(true),
            ..exposed
        };
        let half = BrokerOptions {
            acl_admin_access_key: Some("root".into()),
            ..guarded.clone()
        };
        assert!(matches!(
            BrokerConfig::from_options(half),
            Err(ConfigError::BadAclAdmin(_))
        ));
        let bootstrap = BrokerOptions {
            acl_admin_access_key: Some("root".into()),
            acl_admin_secret_key: Some("root-secret".into()),
            ..guarded.clone()
        };
        let root = BrokerConfig::from_options(bootstrap)
            .unwrap()
            .acl_bootstrap_admin
            .unwrap();
        assert!(root.admin);
        let config = BrokerConfig::from_options(guarded).unwrap();
        assert!(config.acl);
        assert!(config.admin_token.is_some());
        assert!(!format!("{config:?}").contains("abcdef"));
        let given = flags(&[
            "--node-id",
            "1",
            "--data-dir",
            "/tmp/d",
            "--acl",
            "--admin-token",
            "0123456789abcdef-token",
        ])
        .unwrap();
        let options = BrokerOptions::load(None, &given).unwrap();
        assert_eq!(options.acl, Some(true));
        assert!(options.admin_token.is_some());
    }

    #[test]
    fn reserved_time_is_hours_or_a_duration() {
        assert_eq!(
            parse_reserved_time("72"),
            Ok(Duration::from_secs(72 * 3600))
        );
        assert_eq!(parse_reserved_time("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_reserved_time("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_reserved_time("soon").is_err());
        let options = BrokerOptions {
            node_id: Some(1),
            data_dir: Some("/tmp/x".into()),
            file_reserved_time: Some("45s".into()),
            disk_max_used_space_ratio: Some(80),
            ..BrokerOptions::default()
        };
        let retention = BrokerConfig::from_options(options.clone())
            .unwrap()
            .retention;
        assert_eq!(retention.file_reserved_time, Duration::from_secs(45));
        assert_eq!(retention.disk_max_used_space_ratio, 80);
        let bad = BrokerOptions {
            disk_max_used_space_ratio: Some(100),
            ..options
        };
        assert!(matches!(
            BrokerConfig::from_options(bad),
            Err(ConfigError::BadDiskRatio(100))
        ));
    }

    #[test]
    fn the_log_scrub_interval_takes_a_duration_or_off() {
        let mut options = BrokerOptions {
            node_id: Some(1),
            data_dir: Some("/tmp/x".into()),
            ..BrokerOptions::default()
        };
        let scrub = |options: &BrokerOptions| {
            BrokerConfig::from_options(options.clone()).map(|c| c.log_scrub_interval)
        };
        assert_eq!(
            scrub(&options).unwrap(),
            Some(raftmq_raft::node::DEFAULT_LOG_SCRUB_INTERVAL)
        );
        options.log_scrub_interval = Some("90s".into());
        assert_eq!(scrub(&options).unwrap(), Some(Duration::from_secs(90)));
        options.log_scrub_interval = Some("off".into());
        assert_eq!(scrub(&options).unwrap(), None);
        for bad in ["0s", "soon", "-5m"] {
            options.log_scrub_interval = Some(bad.into());
            let error = scrub(&options).unwrap_err();
            assert!(
                error.to_string().starts_with("--log-scrub-interval: "),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn segment_sizes_take_units_and_refuse_nonsense() {
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("four").is_err());
        let mut options = BrokerOptions {
            node_id: Some(1),
            data_dir: Some("/tmp/x".into()),
            ..BrokerOptions::default()
        };
        let config = BrokerConfig::from_options(options.clone()).unwrap();
        assert_eq!(
            config.segment_bytes,
            raftmq_raft::segment::DEFAULT_SEGMENT_BYTES
        );
        options.segment_size = Some("4MiB".into());
        assert_eq!(
            BrokerConfig::from_options(options.clone())
                .unwrap()
                .segment_bytes,
            4 << 20
        );
        for bad in ["12", "lots", "-1MiB"] {
            options.segment_size = Some(bad.into());
            let error = BrokerConfig::from_options(options.clone()).unwrap_err();
            assert!(
                matches!(
                    error,
                    ConfigError::BadSize {
                        flag: "--segment-size",
                        ..
                    }
                ),
                "{bad}: {error}"
            );
            assert!(error.to_string().starts_with("--segment-size: "), "{error}");
        }
        options.segment_size = None;
        options.snapshot_every_bytes = Some("lots".into());
        let error = BrokerConfig::from_options(options.clone()).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::BadSize {
                    flag: "--snapshot-every-bytes",
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("--snapshot-every-bytes: "),
            "{error}"
        );
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

    /// The flags of `mqbroker` (without `-c`), parsed from `args`.
    fn flags(args: &[&str]) -> Result<clap::ArgMatches, clap::Error> {
        use clap::Args;
        BrokerOptions::augment_args(clap::Command::new("mqbroker"))
            .try_get_matches_from(std::iter::once("mqbroker").chain(args.iter().copied()))
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    const FILE: &str = r#"
namesrv = "127.0.0.1:9876;127.0.0.1:9877"
broker-name = "b"
node-id = 1
data-dir = "/tmp/from-file"
peers = "1=127.0.0.1:20001,2=127.0.0.1:20002,3=127.0.0.1:20003"
register-interval-ms = 5000
join = true
"#;

    #[test]
    fn toml_and_flags_share_keys_and_flags_win() {
        let file = toml_file(FILE);
        let given = flags(&["--node-id", "2", "--broker-name", "from-flag"]).unwrap();
        let options = BrokerOptions::load(Some(file.path()), &given).unwrap();
        let config = BrokerConfig::from_options(options).unwrap();
        // Flags over the file.
        assert_eq!(config.node_id, 2);
        assert_eq!(config.broker_name, "from-flag");
        // The file over the defaults.
        // (NAMESRV_ADDR, where the tests run with it, counts as a flag.)
        match std::env::var("NAMESRV_ADDR") {
            Ok(env) => assert_eq!(config.namesrv, parse_namesrv_list(&env)),
            Err(_) => assert_eq!(config.namesrv, vec!["127.0.0.1:9876", "127.0.0.1:9877"]),
        }
        assert_eq!(config.data_dir, PathBuf::from("/tmp/from-file"));
        assert_eq!(config.register_interval, Duration::from_millis(5000));
        assert!(config.join, "a file's join = true stands without --join");
        // The defaults under both.
        assert_eq!(config.cluster_name, DEFAULT_CLUSTER_NAME);
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(config.raft_listen, DEFAULT_RAFT_LISTEN);
        assert_eq!(config.admin_listen, DEFAULT_ADMIN_LISTEN);
        assert_eq!(config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
    }

    #[test]
    fn tls_settings_come_from_toml_or_flags_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = raftmq_tls::test_certs::TestCa::new("cluster");
        let member = ca.issue(dir.path(), "member");
        let ca_file = ca.write_ca(dir.path());
        let file = toml_file(&format!(
            "{FILE}tls-mode = \"permissive\"\ntls-cert = {:?}\ntls-key = {:?}\ntls-ca = {:?}\n",
            member.cert, member.key, ca_file
        ));
        let load = |args: &[&str]| {
            BrokerOptions::load(Some(file.path()), &flags(args).unwrap())
                .and_then(BrokerConfig::from_options)
        };
        let config = load(&[]).unwrap();
        assert_eq!(config.tls.settings.mode, TlsMode::Permissive);
        assert_eq!(config.tls.remoting.mode(), TlsMode::Permissive);
        assert!(config.tls.connector.is_tls());
        let config = load(&["--tls-mode", "enforcing"]).unwrap();
        assert_eq!(config.tls.remoting.mode(), TlsMode::Enforcing);
        assert!(flags(&["--tls-mode", "strict"]).is_err());
        // Admin HTTP off loopback needs a token, or client certificates on every connection.
        let exposed = ["--admin-listen", "0.0.0.0:10913", "--tls-mode", "enforcing"];
        let error = load(&exposed).unwrap_err().to_string();
        assert!(error.contains("--tls-client-auth require"), "{error}");
        let config = load(&[&exposed[..], &["--tls-client-auth", "require"]].concat()).unwrap();
        assert_eq!(config.tls.settings.client_auth, ClientAuth::Require);
        let permissive = [
            "--admin-listen",
            "0.0.0.0:10913",
            "--tls-client-auth",
            "require",
        ];
        assert!(
            load(&permissive).is_err(),
            "plaintext would bypass the certificates"
        );
        assert!(flags(&["--tls-client-auth", "always"]).is_err());
        // TLS off by default, and then no file is needed.
        let plain = BrokerConfig::from_options(minimal()).unwrap();
        assert_eq!(plain.tls.settings.mode, TlsMode::Disabled);
        assert!(!plain.tls.connector.is_tls());

        let mut options = minimal();
        options.tls_mode = Some(TlsMode::Enforcing);
        options.tls_cert = Some(member.cert.clone());
        options.tls_key = Some(member.key.clone());
        let error = BrokerConfig::from_options(options.clone()).unwrap_err();
        assert!(error.to_string().contains("--tls-ca"), "{error}");
        options.tls_ca = Some(ca_file);
        options.tls_key = Some(dir.path().join("missing.key"));
        let error = BrokerConfig::from_options(options).unwrap_err();
        assert!(error.to_string().contains("missing.key"), "{error}");
    }

    #[test]
    fn flags_alone_and_value_less_switches() {
        let given = flags(&[
            "-n",
            "10.0.0.1:9876",
            "--node-id",
            "1",
            "--data-dir",
            "/tmp/d",
            "--listen",
            "127.0.0.1:0",
            "--auto-create-topic",
            "false",
            "--join",
        ])
        .unwrap();
        let options = BrokerOptions::load(None, &given).unwrap();
        assert_eq!(options.join, Some(true));
        assert_eq!(options.unsafe_ack_before_commit, None);
        let config = BrokerConfig::from_options(options).unwrap();
        assert_eq!(config.namesrv, vec!["10.0.0.1:9876"]);
        assert!(!config.auto_create_topic);
        assert!(config.join);
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        // `--join` and the hidden `--unsafe-ack-before-commit` take no value, as before.
        assert!(flags_err(&["--join", "false"]).contains("unexpected argument"));
        let unsafe_ack = flags(&["--unsafe-ack-before-commit"]).unwrap();
        let options = BrokerOptions::load(None, &unsafe_ack).unwrap();
        assert_eq!(options.unsafe_ack_before_commit, Some(true));
        assert_eq!(options.join, None);
        let skip_fsync = flags(&["--unsafe-skip-fsync"]).unwrap();
        let options = BrokerOptions::load(None, &skip_fsync).unwrap();
        assert_eq!(options.unsafe_skip_fsync, Some(true));
        let config = BrokerConfig::from_options(BrokerOptions {
            unsafe_skip_fsync: options.unsafe_skip_fsync,
            ..minimal()
        })
        .unwrap();
        assert!(config.unsafe_skip_fsync);
        assert!(
            !BrokerConfig::from_options(minimal())
                .unwrap()
                .unsafe_skip_fsync
        );
    }

    fn flags_err(args: &[&str]) -> String {
        flags(args).unwrap_err().to_string()
    }

    #[test]
    fn bad_values_and_unknown_keys_get_a_clear_error() {
        // In the file: the error names the file, the key and the problem.
        let file = toml_file("node-id = \"one\"\n");
        let err = BrokerOptions::load(Some(file.path()), &flags(&[]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path_of(&file))
                && err.contains("node-id")
                && err.contains("invalid type"),
            "{err}"
        );
        let file = toml_file("brokr-name = \"typo\"\n");
        let err = BrokerOptions::load(Some(file.path()), &flags(&[]).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path_of(&file)) && err.contains("unknown field `brokr-name`"),
            "{err}"
        );
        let err = BrokerOptions::load(
            Some(Path::new("/nonexistent/broker.toml")),
            &flags(&[]).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/broker.toml"), "{err}");
        // On the command line: clap names the flag and the value.
        let err = flags_err(&["--node-id", "x"]);
        assert!(err.contains("--node-id") && err.contains("'x'"), "{err}");
        let err = flags_err(&["--brokr-name", "typo"]);
        assert!(err.contains("unexpected argument '--brokr-name'"), "{err}");
    }

    fn path_of(file: &tempfile::NamedTempFile) -> String {
        file.path().display().to_string()
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
