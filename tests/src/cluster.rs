//! A local RaftMQ cluster of processes for tests: one NameServer and one broker group of N
//! members, each member on its own loopback address (127.a.b.<node id>) with RocketMQ's usual
//! ports, so that addresses are known before any process starts (`--peers` needs them) and two
//! clusters never collide.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
pub use raftmq_protocol::admin::RaftStatus;

use crate::{AdminHttp, Process, wait_until, workspace_binary};
use raftmq_tls::test_certs::TestCa;
use raftmq_tls::{ClientTlsConfig, TlsConnector, TlsMode};

/// Ports every member uses on its own address (RocketMQ's broker port and the next two).
pub const REMOTING_PORT: u16 = 10911;
pub const RAFT_PORT: u16 = 10912;
pub const ADMIN_PORT: u16 = 10913;
/// RocketMQ 5's gRPC port (the proxy's), for 5.x clients.
pub const GRPC_PORT: u16 = 8081;
/// Bound on starting a process or a group electing a leader.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one admin HTTP call.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// One member of the broker group.
pub struct Member {
    pub node_id: u64,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    pub process: Option<Process>,
}

impl Member {
    pub fn remoting(&self) -> SocketAddr {
        SocketAddr::from((self.ip, REMOTING_PORT))
    }

    pub fn raft(&self) -> SocketAddr {
        SocketAddr::from((self.ip, RAFT_PORT))
    }

    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from((self.ip, ADMIN_PORT))
    }

    pub fn grpc(&self) -> SocketAddr {
        SocketAddr::from((self.ip, GRPC_PORT))
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }
}

/// A NameServer and one broker group, as processes.
pub struct TestCluster {
    pub broker_name: String,
    pub namesrv: Process,
    pub namesrv_addr: SocketAddr,
    pub namesrv_admin: SocketAddr,
    pub members: Vec<Member>,
    pub extra_broker_args: Vec<String>,
    /// Admin HTTP calls ([`HTTP_TIMEOUT`] each).
    pub admin: AdminHttp,
    /// TLS on the remoting ports and Raft links, when started with [`TestCluster::start_tls`].
    pub tls: Option<ClusterTls>,
    _dir: tempfile::TempDir,
}

/// TLS on every remoting port and Raft link of a test cluster: a throwaway CA, and a
/// certificate for each process's own address, issued whenever it starts.
pub struct ClusterTls {
    pub mode: TlsMode,
    ca: TestCa,
    dir: PathBuf,
    /// The CA certificate, for clients.
    pub ca_file: PathBuf,
    /// What a client of this cluster connects with: TLS, trusting the CA and presenting a
    /// client certificate of it to servers that ask for one (`--tls-client-auth`).
    pub connector: TlsConnector,
    /// A client trusting the CA that presents no certificate.
    pub anonymous_connector: TlsConnector,
}

impl ClusterTls {
    fn new(mode: TlsMode, dir: PathBuf) -> anyhow::Result<ClusterTls> {
        std::fs::create_dir_all(&dir).context("creating the certificates' directory")?;
        let ca = TestCa::new("cluster");
        let ca_file = ca.write_ca(&dir);
        let connector = ca
            .client_config_with_certificate(&dir, "client")
            .connector()?;
        let anonymous_connector = ClientTlsConfig {
            enabled: true,
            ca: Some(ca_file.clone()),
            cert: None,
            key: None,
        }
        .connector()?;
        Ok(ClusterTls {
            mode,
            ca,
            dir,
            ca_file,
            connector,
            anonymous_connector,
        })
    }

    /// The `--tls-*` flags of a process named `name` serving on `ip`, with a fresh certificate.
    pub fn process_args(&self, name: &str, ip: IpAddr) -> Vec<String> {
        let files = self.ca.issue_for_ips(&self.dir, name, &[ip]);
        vec![
            "--tls-mode".into(),
            self.mode.to_string(),
            "--tls-cert".into(),
            files.cert.display().to_string(),
            "--tls-key".into(),
            files.key.display().to_string(),
            "--tls-ca".into(),
            self.ca_file.display().to_string(),
        ]
    }
}

/// A loopback network prefix `127.a.b` unlikely to be used by another cluster on this machine.
fn loopback_prefix() -> (u8, u8) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 104_729);
    let a = 100 + (seed % 150) as u8;
    let b = ((seed / 150) % 250) as u8 + 1;
    (a, b)
}

impl TestCluster {
    /// Starts a NameServer and a group of `members` brokers, and waits until the group has a
    /// leader registered in the NameServer's master slot.
    pub fn start(members: u64, extra_broker_args: &[&str]) -> anyhow::Result<TestCluster> {
        Self::start_with(members, extra_broker_args, None)
    }

    /// [`start`](Self::start) with TLS in `mode` on the NameServer's and the members'
    /// remoting ports and mutual TLS on the Raft links; clients use [`TestCluster::tls`].
    pub fn start_tls(
        members: u64,
        extra_broker_args: &[&str],
        mode: TlsMode,
    ) -> anyhow::Result<TestCluster> {
        Self::start_with(members, extra_broker_args, Some(mode))
    }

    fn start_with(
        members: u64,
        extra_broker_args: &[&str],
        tls_mode: Option<TlsMode>,
    ) -> anyhow::Result<TestCluster> {
        let dir = tempfile::tempdir().context("creating the cluster's directory")?;
        let tls = tls_mode
            .map(|mode| ClusterTls::new(mode, dir.path().join("pki")))
            .transpose()?;
        let namesrv_binary = workspace_binary("raftmq-server", "mqnamesrv")?;
        let mut namesrv_args: Vec<String> =
            ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
                .map(String::from)
                .to_vec();
        if let Some(tls) = &tls {
            namesrv_args.extend(tls.process_args("namesrv", IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        let namesrv_arg_refs: Vec<&str> = namesrv_args.iter().map(String::as_str).collect();
        let mut namesrv = Process::spawn(&namesrv_binary, &namesrv_arg_refs)?;
        let line = namesrv
            .wait_for_stdout_line(|l| l.starts_with("mqnamesrv listening"), START_TIMEOUT)?;
        let namesrv_addr = field(&line, "remoting=")?;
        let namesrv_admin = field(&line, "admin=")?;
        let (a, b) = loopback_prefix();
        let members = (1..=members)
            .map(|node_id| Member {
                node_id,
                ip: Ipv4Addr::new(127, a, b, node_id as u8),
                data_dir: dir.path().join(format!("broker-{node_id}")),
                process: None,
            })
            .collect();
        // With TLS on, the admin ports serve TLS too (enforcing: TLS only).
        let admin = match &tls {
            Some(tls) => AdminHttp::new(HTTP_TIMEOUT)?.with_tls(&tls.connector)?,
            None => AdminHttp::new(HTTP_TIMEOUT)?,
        };
        let mut cluster = TestCluster {
            broker_name: "broker-a".into(),
            namesrv,
            namesrv_addr,
            namesrv_admin,
            members,
            extra_broker_args: extra_broker_args.iter().map(|s| s.to_string()).collect(),
            admin,
            tls,
            _dir: dir,
        };
        let ids: Vec<u64> = cluster.members.iter().map(|m| m.node_id).collect();
        for id in ids {
            cluster.start_member(id)?;
        }
        cluster.wait_for_registered_leader(START_TIMEOUT)?;
        Ok(cluster)
    }

    pub fn member(&self, node_id: u64) -> anyhow::Result<&Member> {
        self.members
            .iter()
            .find(|m| m.node_id == node_id)
            .ok_or_else(|| anyhow!("no member {node_id}"))
    }

    fn member_mut(&mut self, node_id: u64) -> anyhow::Result<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.node_id == node_id)
            .ok_or_else(|| anyhow!("no member {node_id}"))
    }

    /// `1=ip:raft,2=ip:raft,...` for every member.
    pub fn peers(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.node_id, m.raft()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `1=ip:grpc,2=ip:grpc,...` for every member.
    pub fn grpc_peers(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.node_id, m.grpc()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `mqbroker` arguments of a member.
    pub fn member_args(&self, node_id: u64) -> anyhow::Result<Vec<String>> {
        let member = self.member(node_id)?;
        let mut args: Vec<String> = vec![
            "-n".into(),
            self.namesrv_addr.to_string(),
            "--broker-name".into(),
            self.broker_name.clone(),
            "--node-id".into(),
            node_id.to_string(),
            "--peers".into(),
            self.peers(),
            "--listen".into(),
            member.remoting().to_string(),
            "--raft-listen".into(),
            member.raft().to_string(),
            "--admin-listen".into(),
            member.admin().to_string(),
            "--grpc-listen".into(),
            member.grpc().to_string(),
            "--grpc-peers".into(),
            self.grpc_peers(),
            "--data-dir".into(),
            member.data_dir.display().to_string(),
        ];
        if let Some(tls) = &self.tls {
            args.extend(tls.process_args(&format!("member-{node_id}"), IpAddr::V4(member.ip)));
        }
        args.extend(self.extra_broker_args.iter().cloned());
        Ok(args)
    }

    /// Starts (or restarts) a member from its data directory.
    pub fn start_member(&mut self, node_id: u64) -> anyhow::Result<()> {
        let binary = workspace_binary("raftmq-server", "mqbroker")?;
        let args = self.member_args(node_id)?;
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::spawn(&binary, &arg_refs)?;
        process.wait_for_stdout_line(|l| l.starts_with("mqbroker listening"), START_TIMEOUT)?;
        self.member_mut(node_id)?.process = Some(process);
        Ok(())
    }

    /// Starts a new member `node_id` with `--join` (it waits to be added, e.g. with
    /// [`AdminHttp::add_learner`] on the leader) on its own loopback address.
    pub fn add_joining_member(&mut self, node_id: u64) -> anyhow::Result<()> {
        anyhow::ensure!(self.member(node_id).is_err(), "member {node_id} exists");
        let first = self.members.first().ok_or_else(|| anyhow!("no members"))?;
        let [_, a, b, _] = first.ip.octets();
        let data_dir = first
            .data_dir
            .parent()
            .ok_or_else(|| anyhow!("no cluster directory"))?
            .join(format!("broker-{node_id}"));
        self.members.push(Member {
            node_id,
            ip: Ipv4Addr::new(127, a, b, node_id as u8),
            data_dir,
            process: None,
        });
        self.extra_broker_args.push("--join".into());
        let started = self.start_member(node_id);
        self.extra_broker_args.pop();
        started
    }

    /// Moves a member's data directory (when it is stopped), e.g. onto a small filesystem.
    pub fn set_data_dir(&mut self, node_id: u64, data_dir: PathBuf) -> anyhow::Result<()> {
        let member = self.member_mut(node_id)?;
        anyhow::ensure!(member.process.is_none(), "member {node_id} is running");
        member.data_dir = data_dir;
        Ok(())
    }

    /// Takes a member's process out of the cluster's hands (to watch it exit on its own).
    pub fn take_process(&mut self, node_id: u64) -> anyhow::Result<Option<Process>> {
        Ok(self.member_mut(node_id)?.process.take())
    }

    /// The end of a running member's log.
    pub fn log_tail(&mut self, node_id: u64) -> anyhow::Result<String> {
        let member = self.member_mut(node_id)?;
        let process = member
            .process
            .as_ref()
            .ok_or_else(|| anyhow!("member {node_id} is not running"))?;
        Ok(process.log_tail())
    }

    /// Whether a started member's process still runs.
    pub fn is_running(&mut self, node_id: u64) -> anyhow::Result<bool> {
        let member = self.member_mut(node_id)?;
        match member.process.as_mut() {
            Some(process) => Ok(process.try_status()?.is_none()),
            None => Ok(false),
        }
    }

    /// `kill -9` a member: no flush, no goodbye.
    pub fn kill_member(&mut self, node_id: u64) -> anyhow::Result<()> {
        let member = self.member_mut(node_id)?;
        let process = member
            .process
            .take()
            .ok_or_else(|| anyhow!("member {node_id} is not running"))?;
        let status = std::process::Command::new("kill")
            .args(["-KILL", &process.pid().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -KILL {} failed", process.pid());
        }
        drop(process); // reaps it
        Ok(())
    }

    /// Stops a member cleanly (SIGTERM).
    pub fn stop_member(&mut self, node_id: u64) -> anyhow::Result<()> {
        let member = self.member_mut(node_id)?;
        let mut process = member
            .process
            .take()
            .ok_or_else(|| anyhow!("member {node_id} is not running"))?;
        let status = process.terminate()?;
        if !status.success() {
            bail!(
                "member {node_id} exited with {status}; log tail:\n{}",
                process.log_tail()
            );
        }
        Ok(())
    }

    /// `GET /raft` of a running member.
    pub fn raft_status(&self, node_id: u64) -> anyhow::Result<RaftStatus> {
        let member = self.member(node_id)?;
        self.admin.raft_status(member.admin())
    }

    /// The member that says it leads, agreed by every running member that knows a leader.
    pub fn leader(&self) -> Option<u64> {
        let statuses: Vec<RaftStatus> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .filter_map(|m| self.raft_status(m.node_id).ok())
            .collect();
        let leader = statuses.iter().find(|s| s.is_leader())?;
        let term = leader.term;
        let agreed = statuses
            .iter()
            .filter(|s| s.leader == Some(leader.node_id) && s.term == term)
            .count();
        (agreed * 2 > self.members.len()).then_some(leader.node_id)
    }

    /// Waits for a leader that the NameServer also lists in the master slot (brokerId 0).
    pub fn wait_for_registered_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let mut found = None;
        wait_until(timeout, || {
            let Some(leader) = self.leader() else {
                return Ok(false);
            };
            let registered = self.namesrv_master_addr()?;
            let expected = self.member(leader)?.remoting().to_string();
            if registered.as_deref() == Some(expected.as_str()) {
                found = Some(leader);
                return Ok(true);
            }
            Ok(false)
        })
        .with_context(|| {
            let logs: Vec<String> = self
                .members
                .iter()
                .filter_map(|m| {
                    m.process
                        .as_ref()
                        .map(|p| format!("member {}:\n{}", m.node_id, p.log_tail()))
                })
                .collect();
            format!("no registered leader; logs:\n{}", logs.join("\n"))
        })?;
        found.ok_or_else(|| anyhow!("no leader"))
    }

    /// The address the NameServer lists in this group's master slot.
    pub fn namesrv_master_addr(&self) -> anyhow::Result<Option<String>> {
        let groups = self.admin.brokers(self.namesrv_admin)?;
        Ok(groups
            .into_iter()
            .find(|g| g.broker_name == self.broker_name)
            .and_then(|g| g.leader))
    }

    /// What a client of this cluster connects with: TLS trusting its CA, or plaintext.
    pub fn client_tls(&self) -> TlsConnector {
        self.tls
            .as_ref()
            .map(|tls| tls.connector.clone())
            .unwrap_or_default()
    }

    /// A remoting admin client of this cluster (over TLS when the cluster has it).
    pub fn remoting_admin(&self) -> anyhow::Result<raftmq_client::Admin> {
        Ok(raftmq_client::Admin::with_rpc_config(
            Some(&self.namesrv_addr.to_string()),
            raftmq_client::broker_client::DEFAULT_RPC_TIMEOUT,
            raftmq_remoting::RpcClientConfig {
                tls: self.client_tls(),
                ..Default::default()
            },
        )?)
    }

    /// Creates `topic` with `queues` queues on the group's leader and waits (up to
    /// [`START_TIMEOUT`]) until the NameServer routes it; returns the admin client it used.
    pub async fn create_routed_topic(
        &self,
        topic: &str,
        queues: u32,
    ) -> anyhow::Result<raftmq_client::Admin> {
        let admin = self.remoting_admin()?;
        let config = raftmq_client::admin::TopicConfig {
            topic_name: topic.into(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            ..Default::default()
        };
        admin.create_topic(&config, None).await?;
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while admin.route(topic).await.ok().flatten().is_none() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "topic {topic} never got a route"
            );
            tokio::time::sleep(crate::POLL_INTERVAL).await;
        }
        Ok(admin)
    }

    /// Waits until every running member has applied at least `index`.
    pub fn wait_for_applied(&self, index: u64, timeout: Duration) -> anyhow::Result<()> {
        wait_until(timeout, || {
            for member in self.members.iter().filter(|m| m.is_running()) {
                let applied = self
                    .raft_status(member.node_id)
                    .ok()
                    .and_then(|s| s.applied_index)
                    .unwrap_or(0);
                if applied < index {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }
}

fn field(line: &str, name: &str) -> anyhow::Result<SocketAddr> {
    let value = line
        .split_whitespace()
        .find_map(|part| part.strip_prefix(name))
        .ok_or_else(|| anyhow!("no {name} in {line:?}"))?;
    Ok(value.parse()?)
}
