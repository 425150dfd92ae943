//! TLS on every link of a run ([`crate::cluster::ClusterSpec::tls`]): a throwaway CA made when
//! the cluster starts, a certificate for each process's own addresses issued whenever it
//! starts, and the connector every client of the harness dials with (remoting and admin HTTP),
//! trusting the CA. The processes run in enforcing mode, so a link left plaintext by mistake
//! fails the run instead of passing unnoticed; the Raft links are mutual TLS.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use raftmq_tls::test_certs::TestCa;
use raftmq_tls::{ClientTlsConfig, TlsConnector, TlsMode};

/// The run's CA and where its files go.
pub struct RunTls {
    ca: TestCa,
    dir: PathBuf,
    connector: TlsConnector,
}

impl std::fmt::Debug for RunTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunTls").field("dir", &self.dir).finish()
    }
}

impl RunTls {
    /// A fresh CA, its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> Result<RunTls, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let ca = TestCa::new("jepsen-lite");
        let connector = ClientTlsConfig {
            enabled: true,
            ca: Some(ca.write_ca(dir)),
            cert: None,
            key: None,
        }
        .connector()
        .map_err(|e| format!("the harness's TLS client: {e}"))?;
        Ok(RunTls {
            ca,
            dir: dir.to_path_buf(),
            connector,
        })
    }

    /// What the harness's clients connect with.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// The `--tls-*` flags of process `name`, reached at `ips`, with a certificate issued now.
    pub fn process_args(&self, name: &str, ips: &[IpAddr]) -> Vec<String> {
        let files = self.ca.issue_for_ips(&self.dir, name, ips);
        let ca = self.ca.write_ca(&self.dir);
        [
            "--tls-mode".to_owned(),
            TlsMode::Enforcing.to_string(),
            "--tls-cert".to_owned(),
            files.cert.display().to_string(),
            "--tls-key".to_owned(),
            files.key.display().to_string(),
            "--tls-ca".to_owned(),
            ca.display().to_string(),
        ]
        .to_vec()
    }
}
