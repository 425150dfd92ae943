//! The cluster under test as processes: one `mqnamesrv` and one broker group of `mqbroker`
//! members, implementing the nemesis's [`Cluster`] trait.
//!
//! Two network layouts ([`NetChoice`]):
//! - namespaces (root, `ip` + `nft`): every process in its own network namespace on a bridge
//!   ([`Netns`]); each listens on its namespace address with RocketMQ's usual ports; the harness
//!   and its clients are the node [`HOST`]; faults are nftables rules.
//! - proxies (anywhere): every process on its own loopback address `127.a.b.N`, really
//!   listening on shifted ports, and reached through TCP proxies on the usual ports
//!   ([`ProxyNetwork`]): clients -> member, member -> NameServer (each member is given its
//!   own NameServer address), and member -> member for Raft (one proxy per member; the
//!   connecting member is found from the socket's owner, see [`crate::net::proxy::socket_owner`]).
//!   Admin HTTP is not proxied (it is the harness's control plane).
//!
//! Members are named `n1..nN` (node names in faults and the history). Each keeps its data
//! directory across kills and restarts. With [`ClusterSpec::lazy_fs`], each member's data lives
//! on a lazy filesystem of its own ([`crate::lazyfs`]): `data/<name>` mounted over the backing
//! directory `data/<name>.durable`, mounted by this (the harness's) process before any member
//! starts (outside every network namespace: a mount made inside `ip netns exec` would be
//! invisible outside it, while one made before is copied in), so that a power loss
//! ([`Cluster::power_loss`]) can drop what a member wrote but did not sync. The mounts are
//! unmounted at [`ProcessCluster::shutdown`] (or on drop), after the processes stopped. A membership change removes a member through the
//! leader's admin HTTP and stops it; adding it back starts a fresh `--join` member (new Raft
//! id `base + 10 * generation`, empty data directory, same name and addresses), adds it as a
//! learner, then makes it a voter. Both are `raftmq_client::admin_http::membership` (shared
//! with `mq`), given the leader a majority of the members agree on ([`FindLeader`]). Every
//! process started is tracked by its `Child` and stopped by pid at
//! [`ProcessCluster::shutdown`] (or killed on drop).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raftmq_client::AdminHttpClient;
use raftmq_tls::TlsConnector;

use crate::pki::RunTls;
use raftmq_client::admin_http::membership::{
    FindLeader, LeaderView, Membership, MembershipError, MembershipWaits, SETTLE_TIMEOUT,
};
use raftmq_protocol::admin::RaftStatus;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::lazyfs::{LazyFsOptions, MountedLazyFs};
use crate::nemesis::{
    BitFlipReport, Cluster, ClusterError, CorruptFile, ProcessSignal, send_signal,
};
use crate::net::netns::{self, Netns};
use crate::net::proxy::{ProxyNetwork, Resolver, socket_owner};
use crate::net::{HOST, NetError, Network};

/// The broker group's name (one Raft group).
pub const BROKER_NAME: &str = "broker-a";
/// The NameServer's node name in faults.
pub const NAMESRV_NODE: &str = "namesrv";
/// RocketMQ's ports (defined once in `raftmq_protocol::names`), used on every member's own
/// address.
pub use raftmq_protocol::names::{
    BROKER_ADMIN_PORT as ADMIN_PORT, BROKER_PORT as REMOTING_PORT, BROKER_RAFT_PORT as RAFT_PORT,
    NAMESRV_ADMIN_PORT, NAMESRV_PORT,
};
/// In the proxy layout, processes really listen this much above the usual ports.
pub const PROXY_PORT_SHIFT: u16 = 10_000;
/// In the proxy layout, member N reaches the NameServer on `NAMESRV_PORT + offset + N`.
pub const PROXY_NAMESRV_MEMBER_PORT_OFFSET: u16 = 4;
/// The last octet of the NameServer's loopback address in the proxy layout.
const PROXY_NAMESRV_OCTET: u8 = 100;
/// Largest group: Raft ids and addresses are laid out for this many.
pub const MAX_MEMBERS: usize = 9;
/// A member re-added after removal gets Raft id `base + stride * generation`.
pub const REJOIN_ID_STRIDE: u64 = 10;
/// How often members register with the NameServer (RocketMQ's 30 s is slow for fault runs).
pub const REGISTER_INTERVAL_MS: u64 = 5_000;
/// How long a process may take to print its "listening" line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// One admin HTTP call (status reads).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A membership change or add-learner call (the leader waits for a learner to catch up).
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Polling period of every wait in this module.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long membership operations wait for a leader to talk to.
pub const LEADER_WAIT: Duration = Duration::from_secs(20);
/// The bounds of a membership change (a change may take [`SETTLE_TIMEOUT`] to show).
pub const MEMBERSHIP_WAITS: MembershipWaits = MembershipWaits {
    leader: LEADER_WAIT,
    add_learner: MEMBERSHIP_TIMEOUT,
    change: MEMBERSHIP_TIMEOUT,
    settle: SETTLE_TIMEOUT,
    poll: POLL_INTERVAL,
};
/// With lazy filesystems: the backing directory of member `n1` is `data/n1` + this.
pub const LAZYFS_BACKING_SUFFIX: &str = ".durable";
/// With lazy filesystems: the broker's data directory inside its member's mount.
pub const LAZYFS_DATA_DIR: &str = "broker";
/// Bytes of a log quoted in errors.
const LOG_TAIL_BYTES: u64 = 3_000;

/// Which network layout to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum NetChoice {
    /// Namespaces when they can be made here, proxies otherwise.
    Auto,
    Netns,
    Proxy,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Members of the broker group (3 or 5 in the profiles).
    pub members: usize,
    /// Where `mqbroker` and `mqnamesrv` are.
    pub bin_dir: PathBuf,
    /// The scenario's directory: `data/` and `logs/` are made below it.
    pub dir: PathBuf,
    pub net: NetChoice,
    /// TEST ONLY: start brokers with `--unsafe-ack-before-commit`.
    pub unsafe_ack_before_commit: bool,
    /// TEST ONLY: start brokers with `--unsafe-skip-fsync`.
    pub unsafe_skip_fsync: bool,
    /// Extra flags for every broker: the scenario's (retention settings, short transaction
    /// timeouts).
    pub broker_args: Vec<String>,
    /// Each member's data directory on a lazy filesystem of its own (power losses possible).
    pub lazy_fs: bool,
    /// TLS on every link ([`crate::pki`]): remoting, gRPC and admin HTTP in enforcing mode,
    /// mutual TLS between members; the harness's clients connect over TLS.
    pub tls: bool,
}

/// Errors of starting, controlling and stopping the cluster.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    AdminHttp(#[from] raftmq_client::AdminHttpError),
    #[error("{0}")]
    Process(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("bad settings: {0}")]
    Settings(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// The network of either layout.
#[derive(Clone, Debug)]
pub enum AnyNet {
    Netns(Netns),
    Proxy(ProxyNetwork),
}

impl AnyNet {
    /// `"netns"` or `"proxy"`.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyNet::Netns(_) => "netns",
            AnyNet::Proxy(_) => "proxy",
        }
    }
}

impl Network for AnyNet {
    async fn partition(&self, a: &[String], b: &[String]) -> Result<(), NetError> {
        match self {
            AnyNet::Netns(n) => n.partition(a, b).await,
            AnyNet::Proxy(p) => p.partition(a, b).await,
        }
    }
    async fn one_way(&self, from: &[String], to: &[String]) -> Result<(), NetError> {
        match self {
            AnyNet::Netns(n) => n.one_way(from, to).await,
            AnyNet::Proxy(p) => p.one_way(from, to).await,
        }
    }
    async fn lossy(&self, a: &[String], b: &[String], percent: u8) -> Result<(), NetError> {
        match self {
            AnyNet::Netns(n) => n.lossy(a, b, percent).await,
            AnyNet::Proxy(p) => p.lossy(a, b, percent).await,
        }
    }
    async fn heal(&self) -> Result<(), NetError> {
        match self {
            AnyNet::Netns(n) => n.heal().await,
            AnyNet::Proxy(p) => p.heal().await,
        }
    }
}

/// Where one member listens and is reached.
#[derive(Clone, Debug)]
struct MemberAddrs {
    /// What clients dial (and what the member advertises).
    remoting: SocketAddr,
    /// What the member binds for clients.
    listen: SocketAddr,
    /// The Raft address in the group's membership (what peers dial).
    raft_peer: SocketAddr,
    raft_listen: SocketAddr,
    admin: SocketAddr,
    /// The NameServer address this member is given.
    namesrv: SocketAddr,
}

struct MemberSlot {
    name: String,
    /// 1-based position: the base Raft id and the address octet.
    index: u64,
    raft_id: u64,
    generation: u64,
    addrs: MemberAddrs,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Started with `--join` (re-added after a removal).
    join: bool,
    /// Taken out of the group by a membership change and not added back yet.
    removed: bool,
}

struct State {
    namesrv: Option<Child>,
    members: Vec<MemberSlot>,
    /// Each member's lazy filesystem by name (empty without [`ClusterSpec::lazy_fs`]).
    mounts: BTreeMap<String, MountedLazyFs>,
}

/// The NameServer and the broker group, as processes. Shared (`Arc`) by the nemesis and the
/// workloads.
pub struct ProcessCluster {
    spec: ClusterSpec,
    net: Arc<AnyNet>,
    /// What clients (the harness) dial for the NameServer.
    namesrv_addr: SocketAddr,
    namesrv_admin: SocketAddr,
    namesrv_log: PathBuf,
    /// Admin HTTP calls to the members and the NameServer ([`ADMIN_TIMEOUT`] each), with the
    /// run's admin token.
    admin: AdminHttpClient,
    /// The admin token every process of the run is started with (their admin HTTP listens on
    /// namespace addresses, not loopback, so they refuse to start without one).
    admin_token: String,
    state: Mutex<State>,
    /// Running member pids by name, for the proxy layout's source resolution.
    pids: Arc<Mutex<Vec<(String, u32)>>>,
    /// TEST ONLY: members (re)started from now on get `--unsafe-skip-fsync` (starts as
    /// [`ClusterSpec::unsafe_skip_fsync`]).
    skip_fsync: AtomicBool,
    /// The run's CA and certificates, with [`ClusterSpec::tls`].
    tls: Option<RunTls>,
}

impl std::fmt::Debug for ProcessCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCluster")
            .field("net", &self.net.kind())
            .field("namesrv", &self.namesrv_addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A loopback prefix `127.a.b` unlikely to collide with another run on this machine (or with
/// the previous scenario of this one).
fn loopback_prefix() -> (u8, u8) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_729));
    (100 + (seed % 150) as u8, ((seed / 150) % 250) as u8 + 1)
}

/// The addresses' IPs, each once: what a process's certificate must name.
fn distinct_ips(addrs: &[SocketAddr]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    ips.sort();
    ips.dedup();
    ips
}

fn shifted(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + PROXY_PORT_SHIFT)
}

/// The member names of a group of `n`.
pub fn member_names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

fn binary(dir: &Path, name: &str) -> Result<PathBuf, HarnessError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Settings(format!(
            "{} does not exist; build it with `cargo build -p raftmq-server` or pass --bin-dir",
            path.display()
        )))
    }
}

/// A member's data directory: `data/<name>`, or `data/<name>.g<generation>` once re-added;
/// with lazy filesystems `data/<name>/broker` and `data/<name>/broker.g<generation>`, inside
/// its mount.
fn member_data_dir(data: &Path, name: &str, generation: u64, lazy_fs: bool) -> PathBuf {
    let suffix = if generation == 0 {
        String::new()
    } else {
        format!(".g{generation}")
    };
    if lazy_fs {
        data.join(name).join(format!("{LAZYFS_DATA_DIR}{suffix}"))
    } else {
        data.join(format!("{name}{suffix}"))
    }
}

/// Mounts a lazy filesystem for every member (`data/<name>` over `data/<name>.durable`). On
/// failure the ones mounted already are unmounted (dropped).
async fn mount_lazy_filesystems(
    data: &Path,
    names: &[String],
) -> Result<BTreeMap<String, MountedLazyFs>, HarnessError> {
    let data = data.to_path_buf();
    let names = names.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut mounts = BTreeMap::new();
        for name in names {
            let backing = data.join(format!("{name}{LAZYFS_BACKING_SUFFIX}"));
            let mountpoint = data.join(&name);
            for dir in [&backing, &mountpoint] {
                std::fs::create_dir_all(dir)
                    .map_err(io_err(format!("creating {}", dir.display())))?;
            }
            let mounted = MountedLazyFs::mount(&backing, &mountpoint, &LazyFsOptions::default())
                .map_err(|e| HarnessError::Process(format!("lazy filesystem of {name}: {e}")))?;
            mounts.insert(name, mounted);
        }
        Ok(mounts)
    })
    .await
    .map_err(|e| HarnessError::Process(format!("mounting lazy filesystems: {e}")))?
}

/// Text of `path` from byte `from` on (at most the whole file).
fn read_from(path: &Path, from: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    if file.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    text
}

fn log_tail(path: &Path) -> String {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    read_from(path, len.saturating_sub(LOG_TAIL_BYTES))
}

/// Opens `path` for appending and writes a marker line; returns the file and the offset where
/// the new process's output starts.
fn open_log(path: &Path, marker: &str) -> Result<(File, u64), HarnessError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    writeln!(file, "=== jepsen-lite: {marker} ===")
        .map_err(io_err(format!("writing {}", path.display())))?;
    let offset = file
        .metadata()
        .map_err(io_err(format!("reading {}", path.display())))?
        .len();
    Ok((file, offset))
}

impl ProcessCluster {
    /// Sets up the network, starts the NameServer and every member, and waits until the group
    /// has a leader that the NameServer lists. On failure everything started is stopped.
    pub async fn start(spec: ClusterSpec) -> Result<Arc<ProcessCluster>, HarnessError> {
        if !(1..=MAX_MEMBERS).contains(&spec.members) {
            return Err(HarnessError::Settings(format!(
                "{} members; 1..={MAX_MEMBERS} supported",
                spec.members
            )));
        }
        let names = member_names(spec.members);
        let data = spec.dir.join("data");
        let logs = spec.dir.join("logs");
        for dir in [&data, &logs] {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let use_netns = match spec.net {
            NetChoice::Proxy => false,
            NetChoice::Netns => {
                netns::support()?;
                true
            }
            NetChoice::Auto => match netns::support() {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(reason = %e, "network namespaces unavailable; using TCP proxies");
                    false
                }
            },
        };
        let pids: Arc<Mutex<Vec<(String, u32)>>> = Arc::new(Mutex::new(Vec::new()));
        let (net, namesrv_addr, namesrv_admin, member_addrs) = if use_netns {
            let mut nodes: Vec<String> = vec![NAMESRV_NODE.to_string()];
            nodes.extend(names.iter().cloned());
            let ns = tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
                Netns::create(&refs)
            })
            .await
            .map_err(|e| HarnessError::Process(format!("namespace setup task: {e}")))??;
            let ns_ip = ns.ip(NAMESRV_NODE)?;
            let namesrv = SocketAddr::from((ns_ip, NAMESRV_PORT));
            let mut addrs = Vec::new();
            for name in &names {
                let ip = ns.ip(name)?;
                addrs.push(MemberAddrs {
                    remoting: SocketAddr::from((ip, REMOTING_PORT)),
                    listen: SocketAddr::from((ip, REMOTING_PORT)),
                    raft_peer: SocketAddr::from((ip, RAFT_PORT)),
                    raft_listen: SocketAddr::from((ip, RAFT_PORT)),
                    admin: SocketAddr::from((ip, ADMIN_PORT)),
                    namesrv,
                });
            }
            (
                AnyNet::Netns(ns),
                namesrv,
                SocketAddr::from((ns_ip, NAMESRV_ADMIN_PORT)),
                addrs,
            )
        } else {
            let (a, b) = loopback_prefix();
            let ns_ip = Ipv4Addr::new(127, a, b, PROXY_NAMESRV_OCTET);
            let namesrv = SocketAddr::from((ns_ip, NAMESRV_PORT));
            let proxy = ProxyNetwork::new();
            proxy
                .add_link_at(namesrv, HOST, NAMESRV_NODE, shifted(namesrv))
                .await?;
            let mut addrs = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let index = i as u16 + 1;
                let ip = Ipv4Addr::new(127, a, b, index as u8);
                let remoting = SocketAddr::from((ip, REMOTING_PORT));
                let raft_peer = SocketAddr::from((ip, RAFT_PORT));
                let member_namesrv = SocketAddr::from((
                    ns_ip,
                    NAMESRV_PORT + PROXY_NAMESRV_MEMBER_PORT_OFFSET + index,
                ));
                proxy
                    .add_link_at(remoting, HOST, name, shifted(remoting))
                    .await?;
                proxy
                    .add_link_at(member_namesrv, name, NAMESRV_NODE, shifted(namesrv))
                    .await?;
                let table = pids.clone();
                let resolve: Resolver = Arc::new(move |peer| {
                    let processes = lock(&table).clone();
                    socket_owner(peer, &processes)
                });
                proxy
                    .add_inbound_at(raft_peer, name, shifted(raft_peer), resolve)
                    .await?;
                addrs.push(MemberAddrs {
                    remoting,
                    listen: shifted(remoting),
                    raft_peer,
                    raft_listen: shifted(raft_peer),
                    admin: SocketAddr::from((ip, ADMIN_PORT)),
                    namesrv: member_namesrv,
                });
            }
            (
                AnyNet::Proxy(proxy),
                namesrv,
                SocketAddr::from((ns_ip, NAMESRV_ADMIN_PORT)),
                addrs,
            )
        };
        // Before any member starts, from this process (outside every namespace).
        let mounts = if spec.lazy_fs {
            match mount_lazy_filesystems(&data, &names).await {
                Ok(mounts) => mounts,
                Err(e) => {
                    stop_network(&net).await;
                    return Err(e);
                }
            }
        } else {
            BTreeMap::new()
        };
        let members = names
            .iter()
            .zip(member_addrs)
            .enumerate()
            .map(|(i, (name, addrs))| MemberSlot {
                name: name.clone(),
                index: i as u64 + 1,
                raft_id: i as u64 + 1,
                generation: 0,
                addrs,
                data_dir: member_data_dir(&data, name, 0, spec.lazy_fs),
                log_path: logs.join(format!("{name}.log")),
                child: None,
                join: false,
                removed: false,
            })
            .collect();
        let admin_token: String = (0..32)
            .map(|_| char::from_digit(u32::from(rand::random::<u8>() % 16), 16).unwrap_or('0'))
            .collect();
        let tls = if spec.tls {
            Some(RunTls::new(&spec.dir.join("tls")).map_err(HarnessError::Settings)?)
        } else {
            None
        };
        let mut admin = AdminHttpClient::new()?
            .with_timeout(ADMIN_TIMEOUT)
            .with_token(admin_token.parse().ok());
        if let Some(tls) = &tls {
            admin = admin.with_tls(tls.connector())?;
        }
        let cluster = Arc::new(ProcessCluster {
            tls,
            admin_token,
            namesrv_log: logs.join("namesrv.log"),
            admin,
            skip_fsync: AtomicBool::new(spec.unsafe_skip_fsync),
            spec,
            net: Arc::new(net),
            namesrv_addr,
            namesrv_admin,
            state: Mutex::new(State {
                namesrv: None,
                members,
                mounts,
            }),
            pids,
        });
        match cluster.start_all().await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                let _ = cluster.shutdown().await;
                Err(e)
            }
        }
    }

    async fn start_all(&self) -> Result<(), HarnessError> {
        self.start_namesrv().await?;
        for name in self.members() {
            self.spawn_member(&name).await?;
        }
        self.wait_for_registered_leader(START_TIMEOUT).await?;
        Ok(())
    }

    /// TEST ONLY: whether members started from now on get `--unsafe-skip-fsync` (those running
    /// keep what they were started with).
    pub fn set_unsafe_skip_fsync(&self, on: bool) {
        self.skip_fsync.store(on, Ordering::Relaxed);
    }

    /// The network faults are injected through.
    pub fn net(&self) -> Arc<AnyNet> {
        self.net.clone()
    }

    /// What the harness's clients connect with: TLS trusting the run's CA with
    /// [`ClusterSpec::tls`], plaintext otherwise.
    pub fn client_tls(&self) -> TlsConnector {
        self.tls
            .as_ref()
            .map(|tls| tls.connector().clone())
            .unwrap_or_default()
    }

    /// The NameServer address clients use.
    pub fn namesrv_addr(&self) -> SocketAddr {
        self.namesrv_addr
    }

    /// The directory of member logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.spec.dir.join("logs")
    }

    /// Member names by the remoting address clients see (for the history's `node`).
    pub fn names_by_addr(&self) -> BTreeMap<String, String> {
        lock(&self.state)
            .members
            .iter()
            .map(|m| (m.addrs.remoting.to_string(), m.name.clone()))
            .collect()
    }

    /// Every member slot's name and remoting address, removed ones included (a drain reads
    /// every member that runs).
    pub fn remoting_addrs(&self) -> Vec<(String, SocketAddr)> {
        lock(&self.state)
            .members
            .iter()
            .map(|m| (m.name.clone(), m.addrs.remoting))
            .collect()
    }

    /// A member's Raft id now (it changes when the member is re-added).
    pub fn raft_id(&self, member: &str) -> Option<u64> {
        lock(&self.state)
            .members
            .iter()
            .find(|m| m.name == member)
            .map(|m| m.raft_id)
    }

    fn name_of_id(&self, id: u64) -> Option<String> {
        lock(&self.state)
            .members
            .iter()
            .find(|m| m.raft_id == id)
            .map(|m| m.name.clone())
    }

    fn admin_of(&self, member: &str) -> Option<SocketAddr> {
        lock(&self.state)
            .members
            .iter()
            .find(|m| m.name == member)
            .map(|m| m.addrs.admin)
    }

    fn update_pids(&self, state: &State) {
        let table: Vec<(String, u32)> = state
            .members
            .iter()
            .filter_map(|m| m.child.as_ref().map(|c| (m.name.clone(), c.id())))
            .collect();
        *lock(&self.pids) = table;
    }

    fn command(&self, node: &str, program: &Path) -> Result<Command, HarnessError> {
        let mut command = match self.net.as_ref() {
            AnyNet::Netns(ns) => ns.command(node, program)?,
            AnyNet::Proxy(_) => Command::new(program),
        };
        command.env(raftmq_protocol::admin::ADMIN_TOKEN_ENV, &self.admin_token);
        Ok(command)
    }

    async fn start_namesrv(&self) -> Result<(), HarnessError> {
        let bin = binary(&self.spec.bin_dir, "mqnamesrv")?;
        let listen = match self.net.as_ref() {
            AnyNet::Netns(_) => self.namesrv_addr,
            AnyNet::Proxy(_) => shifted(self.namesrv_addr),
        };
        let (log, offset) = open_log(&self.namesrv_log, "starting namesrv")?;
        let mut cmd = self.command(NAMESRV_NODE, &bin)?;
        cmd.args(["--listen", &listen.to_string()])
            .args(["--admin-listen", &self.namesrv_admin.to_string()])
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1");
        if let Some(tls) = &self.tls {
            let ips = distinct_ips(&[listen, self.namesrv_addr, self.namesrv_admin]);
            cmd.args(tls.process_args(NAMESRV_NODE, &ips));
        }
        let child = spawn_logged(cmd, log, &self.namesrv_log)?;
        lock(&self.state).namesrv = Some(child);
        self.wait_for_line(None, &self.namesrv_log, offset, "mqnamesrv listening")
            .await
    }

    /// Starts a member's process (its slot must have none running) and waits for its
    /// "listening" line.
    async fn spawn_member(&self, member: &str) -> Result<(), HarnessError> {
        let bin = binary(&self.spec.bin_dir, "mqbroker")?;
        let (cmd, log_path, offset) = {
            let mut state = lock(&self.state);
            let peers: String = state
                .members
                .iter()
                .map(|m| format!("{}={}", m.index, m.addrs.raft_peer))
                .collect::<Vec<_>>()
                .join(",");
            let slot = state
                .members
                .iter_mut()
                .find(|m| m.name == member)
                .ok_or_else(|| HarnessError::Process(format!("unknown member {member}")))?;
            if let Some(child) = slot.child.as_mut()
                && matches!(child.try_wait(), Ok(None))
            {
                return Err(HarnessError::Process(format!(
                    "{member} is already running"
                )));
            }
            let (log, offset) = open_log(
                &slot.log_path,
                &format!(
                    "starting {member} (raft id {}, generation {}{})",
                    slot.raft_id,
                    slot.generation,
                    if slot.join { ", --join" } else { "" }
                ),
            )?;
            let mut cmd = self.command(member, &bin)?;
            cmd.args(["-n", &slot.addrs.namesrv.to_string()])
                .args(["--broker-name", BROKER_NAME])
                .args(["--node-id", &slot.raft_id.to_string()])
                .args(["--listen", &slot.addrs.listen.to_string()])
                .args(["--raft-listen", &slot.addrs.raft_listen.to_string()])
                .args(["--admin-listen", &slot.addrs.admin.to_string()])
                // No 5.x client in these scenarios: any free port on the member's address.
                .args(["--grpc-listen", &format!("{}:0", slot.addrs.listen.ip())])
                .args(["--register-interval-ms", &REGISTER_INTERVAL_MS.to_string()])
                .arg("--data-dir")
                .arg(&slot.data_dir)
                .env("NO_COLOR", "1")
                .env("RUST_BACKTRACE", "1");
            if slot.addrs.listen != slot.addrs.remoting {
                cmd.args(["--advertise", &slot.addrs.remoting.to_string()]);
            }
            if let Some(tls) = &self.tls {
                let a = &slot.addrs;
                let ips =
                    distinct_ips(&[a.remoting, a.listen, a.raft_peer, a.raft_listen, a.admin]);
                cmd.args(tls.process_args(member, &ips));
            }
            if slot.join {
                cmd.arg("--join");
            } else {
                cmd.args(["--peers", &peers]);
            }
            if self.spec.unsafe_ack_before_commit {
                cmd.arg("--unsafe-ack-before-commit");
            }
            if self.skip_fsync.load(Ordering::Relaxed) {
                cmd.arg("--unsafe-skip-fsync");
            }
            // The clock-skew fault writes the offset there; no file is no offset.
            cmd.arg("--unsafe-clock-offset-file")
                .arg(clock_offset_file(&slot.log_path));
            cmd.args(&self.spec.broker_args);
            // Reap a previous (killed) process before replacing it.
            if let Some(mut old) = slot.child.take() {
                let _ = old.kill();
                let _ = old.wait();
            }
            let child = spawn_logged(cmd, log, &slot.log_path)?;
            tracing::info!(
                member,
                pid = child.id(),
                raft_id = slot.raft_id,
                "member started"
            );
            slot.child = Some(child);
            let log_path = slot.log_path.clone();
            self.update_pids(&state);
            (member.to_string(), log_path, offset)
        };
        self.wait_for_line(Some(&cmd), &log_path, offset, "mqbroker listening")
            .await
    }

    /// Waits until the process's log (from `offset`) has a line starting with `prefix`;
    /// fails early if the process exits.
    async fn wait_for_line(
        &self,
        member: Option<&str>,
        log: &Path,
        offset: u64,
        prefix: &str,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if read_from(log, offset)
                .lines()
                .any(|line| line.starts_with(prefix))
            {
                return Ok(());
            }
            let exited = {
                let mut state = lock(&self.state);
                let child = match member {
                    Some(name) => state
                        .members
                        .iter_mut()
                        .find(|m| m.name == name)
                        .and_then(|m| m.child.as_mut()),
                    None => state.namesrv.as_mut(),
                };
                match child {
                    Some(c) => c.try_wait().ok().flatten().map(|s| s.to_string()),
                    None => Some("no process".into()),
                }
            };
            if let Some(status) = exited {
                return Err(HarnessError::Process(format!(
                    "{} exited ({status}) before listening; log tail:\n{}",
                    member.unwrap_or(NAMESRV_NODE),
                    log_tail(log)
                )));
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "{} did not print {prefix:?} within {START_TIMEOUT:?}; log tail:\n{}",
                    member.unwrap_or(NAMESRV_NODE),
                    log_tail(log)
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `GET /raft` of one member.
    pub async fn raft_status(&self, member: &str) -> Result<RaftStatus, String> {
        let addr = self
            .admin_of(member)
            .ok_or_else(|| format!("unknown member {member}"))?;
        self.admin
            .raft_status(&addr.to_string())
            .await
            .map_err(|e| e.to_string())
    }

    /// The status of every member that runs and answers, by name.
    pub async fn statuses(&self) -> BTreeMap<String, RaftStatus> {
        let running: Vec<String> = self
            .all_names()
            .into_iter()
            .filter(|m| self.pid(m).is_some())
            .collect();
        let asks = running.iter().map(|m| self.raft_status(m));
        let answers = futures::future::join_all(asks).await;
        running
            .into_iter()
            .zip(answers)
            .filter_map(|(m, a)| a.ok().map(|s| (m, s)))
            .collect()
    }

    fn all_names(&self) -> Vec<String> {
        lock(&self.state)
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    /// The leader a majority of the voters it names agree on, from what the members say.
    pub async fn current_leader(&self) -> Option<(String, RaftStatus)> {
        let statuses = self.statuses().await;
        let claim = statuses
            .iter()
            .filter(|(_, s)| s.state == "Leader" && s.leader == Some(s.node_id))
            .max_by_key(|(_, s)| s.term)?;
        let (name, status) = claim;
        let agreeing = statuses
            .values()
            .filter(|s| s.leader == Some(status.node_id) && s.term == status.term)
            .count();
        let voters = status.voters.len().max(1);
        (agreeing * 2 > voters).then(|| (name.clone(), status.clone()))
    }

    /// How many messages `topic` holds on `member` (the sum of its queues' end offsets, from
    /// `GET /topics`; `Some(0)` when the member does not know the topic).
    pub async fn stored_messages(&self, member: &str, topic: &str) -> Option<u64> {
        let addr = self.admin_of(member)?;
        let topics = self.admin.topics(&addr.to_string()).await.ok()?;
        let Some(found) = topics.iter().find(|t| t.name == topic) else {
            return Some(0);
        };
        Some(
            found
                .queues
                .values()
                .map(|(_, max_offset)| max_offset)
                .sum(),
        )
    }

    /// The address the NameServer lists in the group's master slot.
    pub async fn namesrv_leader_addr(&self) -> Option<String> {
        let groups = self
            .admin
            .brokers(&self.namesrv_admin.to_string())
            .await
            .ok()?;
        groups
            .into_iter()
            .find(|g| g.broker_name == BROKER_NAME)
            .and_then(|g| g.leader)
    }

    /// Waits until the group has a leader and the NameServer lists it as master.
    pub async fn wait_for_registered_leader(
        &self,
        timeout: Duration,
    ) -> Result<String, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((name, _)) = self.current_leader().await {
                let want = lock(&self.state)
                    .members
                    .iter()
                    .find(|m| m.name == name)
                    .map(|m| m.addrs.remoting.to_string());
                if want.is_some() && self.namesrv_leader_addr().await == want {
                    return Ok(name);
                }
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = lock(&self.state)
                    .members
                    .iter()
                    .map(|m| format!("{}:\n{}", m.name, log_tail(&m.log_path)))
                    .collect();
                return Err(HarnessError::Timeout(format!(
                    "no leader registered with the NameServer within {timeout:?}; logs:\n{}",
                    tails.join("\n")
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every member of the group runs, agrees on one leader and term, and has
    /// applied everything the leader has in its log. Returns how long that took.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<Duration, HarnessError> {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            let members = self.members();
            let statuses = self.statuses().await;
            let leader = statuses
                .values()
                .find(|s| s.state == "Leader" && s.leader == Some(s.node_id));
            let last = match leader {
                Some(l) => {
                    let top = l.last_log_index.unwrap_or(0);
                    let lagging: Vec<String> = members
                        .iter()
                        .filter(|m| {
                            statuses.get(*m).is_none_or(|s| {
                                s.leader != Some(l.node_id)
                                    || s.term != l.term
                                    || s.applied_index.unwrap_or(0) < top
                            })
                        })
                        .cloned()
                        .collect();
                    if lagging.is_empty() {
                        return Ok(start.elapsed());
                    }
                    format!("leader {} at {top}; not there yet: {lagging:?}", l.node_id)
                }
                None => "no leader".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "the group did not converge within {timeout:?}: {last}"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Membership changes of the group, through the agreed leader.
    fn membership(&self) -> Membership<'_, Self> {
        Membership {
            group: BROKER_NAME,
            leaders: self,
            admin: &self.admin,
            waits: MEMBERSHIP_WAITS,
        }
    }

    /// Sends SIGKILL to a member's process (if any) and reaps it.
    fn kill_and_reap(&self, member: &str) {
        let mut state = lock(&self.state);
        if let Some(slot) = state.members.iter_mut().find(|m| m.name == member)
            && let Some(mut child) = slot.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.update_pids(&state);
    }

    /// Stops every process (SIGCONT, SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]) and tears
    /// the network down. Safe to call more than once. Returns what went wrong, if anything.
    pub async fn shutdown(&self) -> Result<(), HarnessError> {
        let children: Vec<(String, Child)> = {
            let mut state = lock(&self.state);
            let mut all: Vec<(String, Child)> = state
                .members
                .iter_mut()
                .filter_map(|m| m.child.take().map(|c| (m.name.clone(), c)))
                .collect();
            if let Some(ns) = state.namesrv.take() {
                all.push((NAMESRV_NODE.into(), ns));
            }
            self.update_pids(&state);
            all
        };
        let mut problems = Vec::new();
        let stopped = tokio::task::spawn_blocking(move || {
            let mut problems = Vec::new();
            for (name, mut child) in children {
                if let Err(e) = stop_child(&mut child) {
                    problems.push(format!("{name}: {e}"));
                }
            }
            problems
        })
        .await;
        match stopped {
            Ok(p) => problems.extend(p),
            Err(e) => problems.push(format!("stopping processes: {e}")),
        }
        // The processes are gone: nothing holds files open in the mounts any more.
        let mounts = std::mem::take(&mut lock(&self.state).mounts);
        if !mounts.is_empty() {
            let unmounted = tokio::task::spawn_blocking(move || {
                mounts
                    .into_iter()
                    .filter_map(|(name, mount)| {
                        mount
                            .unmount()
                            .err()
                            .map(|e| format!("lazy filesystem of {name}: {e}"))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            match unmounted {
                Ok(p) => problems.extend(p),
                Err(e) => problems.push(format!("unmounting lazy filesystems: {e}")),
            }
        }
        if let Some(e) = teardown_network(&self.net).await {
            problems.push(e);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(HarnessError::Process(problems.join("; ")))
        }
    }
}

/// Tears the network down; what went wrong, if anything.
async fn teardown_network(net: &AnyNet) -> Option<String> {
    match net {
        AnyNet::Netns(ns) => {
            let ns = ns.clone();
            match tokio::task::spawn_blocking(move || ns.teardown()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("namespace teardown: {e}")),
            }
        }
        AnyNet::Proxy(p) => {
            p.shutdown().await;
            None
        }
    }
}

/// [`teardown_network`] for a start that failed before the cluster existed (logged).
async fn stop_network(net: &AnyNet) {
    if let Some(e) = teardown_network(net).await {
        tracing::warn!(error = %e, "network teardown after a failed start");
    }
}

fn spawn_logged(mut cmd: Command, log: File, path: &Path) -> Result<Child, HarnessError> {
    let err_log = log
        .try_clone()
        .map_err(io_err(format!("opening {}", path.display())))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log))
        .spawn()
        .map_err(io_err(format!("starting {cmd:?}")))
}

/// SIGCONT (a paused process cannot handle SIGTERM), SIGTERM, wait, then SIGKILL.
fn stop_child(child: &mut Child) -> Result<(), String> {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return Ok(());
    }
    let pid = child.id();
    let _ = send_signal(pid, ProcessSignal::Cont);
    let _ = send_signal(pid, ProcessSignal::Term);
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child
        .wait()
        .map(|_| ())
        .map_err(|e| format!("pid {pid} did not exit: {e}"))?;
    Err(format!(
        "pid {pid} ignored SIGTERM for {STOP_TIMEOUT:?} and was killed"
    ))
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        // The last resort when shutdown() was not reached (an error or a panic): kill by pid.
        let mut state = lock(&self.state);
        let namesrv = state.namesrv.take();
        for mut child in state
            .members
            .iter_mut()
            .filter_map(|m| m.child.take())
            .chain(namesrv)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A member's data directory layout, as the broker writes it (the harness drives the broker
/// binaries and does not link them): `broker::STATE_FILE`, and the segment files of
/// `raftmq_raft::segment` (`<base>.log`, finalized ones with a `<base>.idx` beside them) in
/// `raft/` + `log_store::LOG_DIR_NAME`.
const STATE_MACHINE_FILE: &str = "broker-state.redb";
const SEGMENT_DIR: &str = "raft/log";

/// The member's file a bit flip hits, picked with `choice`, relative to its data directory:
/// one of the finalized segments (those with a sidecar index), or the state machine's file.
fn corruptible_file(
    data_dir: &Path,
    file: CorruptFile,
    choice: u64,
) -> Result<Option<PathBuf>, std::io::Error> {
    match file {
        CorruptFile::StateMachine => {
            let path = PathBuf::from(STATE_MACHINE_FILE);
            Ok(data_dir.join(&path).exists().then_some(path))
        }
        CorruptFile::Segment => {
            let log_dir = PathBuf::from(SEGMENT_DIR);
            let mut sealed: Vec<PathBuf> = Vec::new();
            for entry in std::fs::read_dir(data_dir.join(&log_dir))? {
                let path = entry?.path();
                let finalized = path.extension().is_some_and(|e| e == "log")
                    && path.with_extension("idx").exists();
                if finalized && let Some(name) = path.file_name() {
                    sealed.push(log_dir.join(name));
                }
            }
            sealed.sort();
            if sealed.is_empty() {
                return Ok(None);
            }
            let pick = usize::try_from(choice % sealed.len() as u64).unwrap_or(0);
            Ok(Some(sealed.swap_remove(pick)))
        }
    }
}

/// Flips bit `bit` of the byte at `position` of `path` and syncs the file (through a lazy
/// filesystem too, so that the damage is durable).
fn flip_bit_in(path: &Path, position: u64, bit: u8) -> Result<(), std::io::Error> {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, position)?;
    byte[0] ^= 1 << (bit % 8);
    file.write_all_at(&byte, position)?;
    file.sync_all()
}

/// Where a member reads its clock offset from (beside its log, off its data filesystem so that a
/// power loss does not drop it).
fn clock_offset_file(log_path: &Path) -> PathBuf {
    log_path.with_extension("clock-offset-ms")
}

impl Cluster for ProcessCluster {
    fn members(&self) -> Vec<String> {
        lock(&self.state)
            .members
            .iter()
            .filter(|m| !m.removed)
            .map(|m| m.name.clone())
            .collect()
    }

    fn others(&self) -> Vec<String> {
        vec![NAMESRV_NODE.into(), HOST.into()]
    }

    fn pid(&self, member: &str) -> Option<u32> {
        let mut state = lock(&self.state);
        let slot = state.members.iter_mut().find(|m| m.name == member)?;
        let child = slot.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    async fn leader(&self) -> Option<String> {
        self.current_leader().await.map(|(name, _)| name)
    }

    async fn power_loss(&self, members: &[String]) -> Result<Vec<String>, ClusterError> {
        let mut state = lock(&self.state);
        if state.mounts.is_empty() {
            return Err(ClusterError::NoLazyFs);
        }
        if let Some(unknown) = members.iter().find(|m| !state.mounts.contains_key(*m)) {
            return Err(ClusterError::UnknownMember(unknown.clone()));
        }
        // SIGKILL every target first, so that they all go down at the same moment; then reap
        // them: a lazy filesystem may drop its unsynced data only once nobody has it open.
        let mut killed: Vec<Child> = state
            .members
            .iter_mut()
            .filter(|m| members.contains(&m.name))
            .filter_map(|m| m.child.take())
            .collect();
        for child in &mut killed {
            let _ = child.kill();
        }
        for child in &mut killed {
            let _ = child.wait();
        }
        self.update_pids(&state);
        for member in members {
            let Some(mount) = state.mounts.get(member) else {
                continue;
            };
            let dropped = mount.power_loss().map_err(|e| ClusterError::Control {
                member: member.clone(),
                message: format!("power loss: {e}"),
            })?;
            tracing::info!(
                member,
                dropped_bytes = dropped.dropped_bytes,
                dropped_files = dropped.dropped_files,
                dropped_entries = dropped.dropped_entries,
                "power loss"
            );
        }
        Ok(members.to_vec())
    }

    async fn restart(&self, member: &str) -> Result<(), ClusterError> {
        let removed = lock(&self.state)
            .members
            .iter()
            .find(|m| m.name == member)
            .map(|m| m.removed)
            .ok_or_else(|| ClusterError::UnknownMember(member.into()))?;
        if removed {
            // Not in the group: it comes back through add_member.
            return Ok(());
        }
        if self.pid(member).is_some() {
            return Ok(());
        }
        self.spawn_member(member)
            .await
            .map_err(|e| ClusterError::Control {
                member: member.into(),
                message: e.to_string(),
            })
    }

    fn set_clock_offset(&self, member: &str, offset_ms: i64) -> Result<(), ClusterError> {
        let log_path = lock(&self.state)
            .members
            .iter()
            .find(|m| m.name == member)
            .map(|m| m.log_path.clone())
            .ok_or_else(|| ClusterError::UnknownMember(member.into()))?;
        let path = clock_offset_file(&log_path);
        // Written whole, then renamed: the member never reads half a number.
        let temp = path.with_extension("clock-offset-ms.tmp");
        std::fs::write(&temp, offset_ms.to_string())
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| ClusterError::Control {
                member: member.into(),
                message: format!("setting the clock offset in {}: {e}", path.display()),
            })?;
        tracing::info!(member, offset_ms, "clock offset set");
        Ok(())
    }

    async fn flip_bit(
        &self,
        member: &str,
        file: CorruptFile,
        choice: u64,
    ) -> Result<BitFlipReport, ClusterError> {
        let control = |message: String| ClusterError::Control {
            member: member.into(),
            message,
        };
        let data_dir = lock(&self.state)
            .members
            .iter()
            .find(|m| m.name == member)
            .map(|m| m.data_dir.clone())
            .ok_or_else(|| ClusterError::UnknownMember(member.into()))?;
        self.kill_and_reap(member);
        let picked = corruptible_file(&data_dir, file, choice)
            .map_err(|e| control(format!("listing {}: {e}", data_dir.display())))?;
        let Some(relative) = picked else {
            self.restart(member).await?;
            return Err(ClusterError::NothingToCorrupt {
                member: member.into(),
                what: match file {
                    CorruptFile::Segment => "sealed segment",
                    CorruptFile::StateMachine => "state machine file",
                },
            });
        };
        let path = data_dir.join(&relative);
        let len = std::fs::metadata(&path)
            .map_err(|e| control(format!("{}: {e}", path.display())))?
            .len();
        if len == 0 {
            self.restart(member).await?;
            return Err(ClusterError::NothingToCorrupt {
                member: member.into(),
                what: "non-empty file",
            });
        }
        // Other bits of the same draw than the file's pick.
        let position = (choice >> 16) % len;
        let bit = ((choice >> 8) % 8) as u8;
        flip_bit_in(&path, position, bit)
            .map_err(|e| control(format!("flipping a bit of {}: {e}", path.display())))?;
        tracing::info!(member, file = %relative.display(), position, bit, "bit flipped");
        let refused = match self.spawn_member(member).await {
            Ok(()) => None,
            // It exited before it listened: it would not start with the damaged file.
            Err(HarnessError::Process(message)) => Some(message),
            Err(e) => return Err(control(e.to_string())),
        };
        Ok(BitFlipReport {
            file: relative.display().to_string(),
            position,
            bit,
            refused,
        })
    }

    fn set_space_left(&self, member: &str, left: Option<u64>) -> Result<(), ClusterError> {
        let state = lock(&self.state);
        if state.mounts.is_empty() {
            return Err(ClusterError::NoLazyFs);
        }
        let mount = state
            .mounts
            .get(member)
            .ok_or_else(|| ClusterError::UnknownMember(member.into()))?;
        mount.set_space_left(left);
        Ok(())
    }

    fn log_tail(&self, member: &str) -> String {
        let path = lock(&self.state)
            .members
            .iter()
            .find(|m| m.name == member)
            .map(|m| m.log_path.clone());
        path.map(|p| log_tail(&p)).unwrap_or_default()
    }

    async fn remove_member(&self, member: &str) -> Result<(), ClusterError> {
        let id = self
            .raft_id(member)
            .ok_or_else(|| ClusterError::UnknownMember(member.into()))?;
        let removed = self.membership().remove_member(id).await;
        if let Err(err) = &removed
            && !err.change_accepted()
        {
            return Err(membership_failed(err));
        }
        // Out of the group (or the leader accepted that it be; only the wait for it to show
        // ran out): stop it (a removed member left running would campaign).
        self.kill_and_reap(member);
        if let Some(slot) = lock(&self.state)
            .members
            .iter_mut()
            .find(|m| m.name == member)
        {
            slot.removed = true;
        }
        removed.map(|_| ()).map_err(|err| membership_failed(&err))
    }

    async fn add_member(&self, member: &str) -> Result<(), ClusterError> {
        let current = self
            .raft_id(member)
            .ok_or_else(|| ClusterError::UnknownMember(member.into()))?;
        let membership = self.membership();
        let leader = membership
            .leader()
            .await
            .map_err(|err| membership_failed(&err))?;
        if leader.voters.contains(&current) {
            // The removal never took effect: just make sure it runs.
            if let Some(slot) = lock(&self.state)
                .members
                .iter_mut()
                .find(|m| m.name == member)
            {
                slot.removed = false;
            }
            return self.restart(member).await;
        }
        // A fresh member: new Raft id, empty data directory, --join.
        self.kill_and_reap(member);
        let (new_id, raft_peer) = {
            let mut state = lock(&self.state);
            let data_root = self.spec.dir.join("data");
            let slot = state
                .members
                .iter_mut()
                .find(|m| m.name == member)
                .ok_or_else(|| ClusterError::UnknownMember(member.into()))?;
            slot.generation += 1;
            slot.raft_id = slot.index + REJOIN_ID_STRIDE * slot.generation;
            slot.data_dir = member_data_dir(&data_root, member, slot.generation, self.spec.lazy_fs);
            slot.join = true;
            slot.removed = false;
            (slot.raft_id, slot.addrs.raft_peer)
        };
        self.spawn_member(member)
            .await
            .map_err(|e| ClusterError::Control {
                member: member.into(),
                message: e.to_string(),
            })?;
        membership
            .add_member(new_id, &raft_peer.to_string(), false)
            .await
            .map(|_| ())
            .map_err(|err| membership_failed(&err))
    }
}

/// The leader is the one a majority of the members agree on
/// ([`ProcessCluster::current_leader`]).
impl FindLeader for ProcessCluster {
    async fn find_leader(&self) -> Result<LeaderView, String> {
        let (name, status) = self
            .current_leader()
            .await
            .ok_or_else(|| "no agreed leader".to_string())?;
        let admin = self
            .admin_of(&name)
            .ok_or_else(|| format!("unknown member {name}"))?;
        Ok(LeaderView::from_status(&status, admin.to_string()))
    }
}

fn membership_failed(err: &MembershipError) -> ClusterError {
    ClusterError::Membership(err.to_string())
}

/// The name of a member by Raft id (for reports).
impl ProcessCluster {
    pub fn member_of_raft_id(&self, id: u64) -> Option<String> {
        self.name_of_id(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_directories_stay_inside_the_member_mount_with_lazy_filesystems() {
        let data = Path::new("/run/x/data");
        assert_eq!(
            member_data_dir(data, "n2", 0, false),
            data.join("n2"),
            "default layout unchanged"
        );
        assert_eq!(member_data_dir(data, "n2", 3, false), data.join("n2.g3"));
        let mount = data.join("n2");
        for generation in [0, 1, 7] {
            let dir = member_data_dir(data, "n2", generation, true);
            assert!(dir.starts_with(&mount), "{}", dir.display());
            assert_ne!(
                dir, mount,
                "the mount root holds the control file, not the data"
            );
        }
        assert_ne!(
            member_data_dir(data, "n2", 0, true),
            member_data_dir(data, "n2", 1, true),
            "a re-added member starts from an empty directory"
        );
        // The backing directory is beside the mount, never inside it.
        let backing = data.join(format!("n2{LAZYFS_BACKING_SUFFIX}"));
        assert!(!backing.starts_with(&mount) && !mount.starts_with(&backing));
    }
}
