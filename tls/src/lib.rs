//! TLS for RaftMQ's links, with rustls (ring provider): the remoting, gRPC and admin HTTP
//! ports of brokers and NameServers, the Raft links between members (mutual TLS), and the
//! clients that dial them.
//!
//! Where to start reading: [`TlsConfig`] (the four settings a process is given: mode, cert,
//! key, CA), which builds a [`TlsAcceptor`] for a server port, a [`TlsAcceptor::mutual`] one
//! for the Raft port and a [`TlsConnector`] for outgoing connections. Either side yields a
//! [`MaybeTlsStream`]: plain TCP or TLS behind one `AsyncRead + AsyncWrite` type, so the
//! framing code above it exists once.
//!
//! - [`files`]: PEM files into rustls configurations, every error naming its file.
//! - [`incoming`]: an accept loop with each handshake on its own task, for servers that take
//!   ready connections (gRPC, admin HTTP).
//! - [`stream`]: the acceptor (RocketMQ's `tls.server.mode`: disabled, permissive with
//!   first-byte sniffing, enforcing), the connector and the stream type.
//! - `test_certs` (feature `test-certs`, tests only): a throwaway CA and certificates.

pub mod files;
pub mod incoming;
pub mod stream;
#[cfg(feature = "test-certs")]
pub mod test_certs;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// The rustls this crate builds on, for crates that hand its configurations to another
/// library (the admin HTTP client's reqwest).
pub use rustls;

pub use files::{ClientCertificates, Identity, TlsError, load_roots};
pub use stream::{AcceptError, HANDSHAKE_TIMEOUT, MaybeTlsStream, TlsAcceptor, TlsConnector};

/// The crypto provider every configuration is built with, named explicitly: when another
/// crate of the build turns on rustls' aws-lc-rs feature too, rustls could not choose one by
/// itself.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a server port accepts (RocketMQ's `tls.server.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plaintext only; no certificate needed.
    #[default]
    Disabled,
    /// TLS and plaintext on the same port, told apart by the connection's first byte (a TLS
    /// handshake record starts with 0x16): for moving a cluster to TLS one process at a time.
    Permissive,
    /// TLS only: a plaintext connection is closed before anything is read from it.
    Enforcing,
}

impl TlsMode {
    pub const NAMES: [&'static str; 3] = ["disabled", "permissive", "enforcing"];

    pub fn is_enabled(self) -> bool {
        self != TlsMode::Disabled
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Permissive => "permissive",
            TlsMode::Enforcing => "enforcing",
        })
    }
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "disabled" => Ok(TlsMode::Disabled),
            "permissive" => Ok(TlsMode::Permissive),
            "enforcing" => Ok(TlsMode::Enforcing),
            other => Err(format!(
                "unknown TLS mode {other:?} (one of: {})",
                TlsMode::NAMES.join(", ")
            )),
        }
    }
}

/// Whether a client-facing port (remoting, gRPC, admin HTTP) asks TLS clients for a
/// certificate (RocketMQ's `tls.server.need.client.auth`). The Raft port always requires one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// No certificate asked for.
    #[default]
    None,
    /// A client may present one; if it does, it must chain to the CA.
    Optional,
    /// Every TLS client must present a certificate that chains to the CA.
    Require,
}

impl ClientAuth {
    pub const NAMES: [&'static str; 3] = ["none", "optional", "require"];
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Require => "require",
        })
    }
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "optional" => Ok(ClientAuth::Optional),
            "require" => Ok(ClientAuth::Require),
            other => Err(format!(
                "unknown client authentication {other:?} (one of: {})",
                ClientAuth::NAMES.join(", ")
            )),
        }
    }
}

/// The TLS settings of one process, as given by flags or a config file: paths only, read by
/// the builders below (at start, so that a bad file stops the process with the file's name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// This process's certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// The private key of that certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The CA certificates (PEM) that peers' certificates must chain to: the servers this
    /// process dials and, on mutual-TLS links, the members that dial it.
    pub ca: Option<PathBuf>,
    /// Whether the client-facing ports ask clients for a certificate of the CA.
    pub client_auth: ClientAuth,
}

impl TlsConfig {
    /// Settings with TLS off.
    pub fn disabled() -> Self {
        TlsConfig::default()
    }

    /// Checks that the files a mode needs are named: any mode but disabled needs a certificate
    /// and its key.
    pub fn check(&self) -> Result<(), TlsError> {
        if !self.mode.is_enabled() {
            return Ok(());
        }
        if self.cert.is_none() {
            return Err(TlsError::Missing {
                what: "--tls-cert (this process's certificate)",
                mode: self.mode,
            });
        }
        if self.key.is_none() {
            return Err(TlsError::Missing {
                what: "--tls-key (the certificate's private key)",
                mode: self.mode,
            });
        }
        Ok(())
    }

    fn identity(&self) -> Result<Identity, TlsError> {
        self.check()?;
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Identity::from_pem_files(cert, key),
            _ => Err(TlsError::Missing {
                what: "--tls-cert and --tls-key",
                mode: self.mode,
            }),
        }
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        match &self.ca {
            Some(ca) => load_roots(ca),
            None => Err(TlsError::Missing {
                what: "--tls-ca (the CA that peers' certificates chain to)",
                mode: self.mode,
            }),
        }
    }

    /// The acceptor of a client-facing port (remoting, admin HTTP): the mode as set, a client
    /// certificate asked for as [`TlsConfig::client_auth`] says.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        self.acceptor_with_alpn(&[])
    }

    /// [`acceptor`](Self::acceptor) offering the application protocols `alpn` in the
    /// handshake (gRPC clients insist on `h2`).
    pub fn acceptor_with_alpn(&self, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
        if !self.mode.is_enabled() {
            return Ok(TlsAcceptor::plaintext());
        }
        let clients = match self.client_auth {
            ClientAuth::None => ClientCertificates::NotAsked,
            ClientAuth::Optional => ClientCertificates::Optional(self.roots()?),
            ClientAuth::Require => ClientCertificates::Required(self.roots()?),
        };
        let config = files::server_config(&self.identity()?, clients, alpn)?;
        Ok(TlsAcceptor::new(self.mode, config))
    }

    /// Whether every connection to the client-facing ports carries a certificate of the CA:
    /// TLS only (`enforcing`) and certificates required. That makes a client certificate a
    /// credential, for admin HTTP as much as a token is.
    pub fn clients_need_certificates(&self) -> bool {
        self.mode == TlsMode::Enforcing && self.client_auth == ClientAuth::Require
    }

    /// The acceptor of a members-only port (Raft): when TLS is on, TLS only and the peer must
    /// present a certificate that chains to the CA (mutual TLS), whatever the mode.
    pub fn mutual_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        if !self.mode.is_enabled() {
            return Ok(TlsAcceptor::plaintext());
        }
        let clients = ClientCertificates::Required(self.roots()?);
        let config = files::server_config(&self.identity()?, clients, &[])?;
        Ok(TlsAcceptor::new(TlsMode::Enforcing, config))
    }

    /// The connector for connections this process opens to its own cluster (NameServer
    /// registration, Raft peers): TLS when the mode is not disabled, trusting the CA and
    /// presenting this process's certificate (the Raft peers ask for it).
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        if !self.mode.is_enabled() {
            return Ok(TlsConnector::plaintext());
        }
        let config = files::client_config(self.roots()?, Some(&self.identity()?))?;
        Ok(TlsConnector::new(config))
    }
}

/// Client-side settings (`mq`, the Rust client): TLS on when a CA is given or `enabled` is set;
/// with no CA a client cannot verify the server and refuses to start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsConfig {
    pub enabled: bool,
    pub ca: Option<PathBuf>,
    /// A client certificate and key, for servers that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTlsConfig {
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        if !self.enabled && self.ca.is_none() {
            return Ok(TlsConnector::plaintext());
        }
        let ca = self.ca.as_ref().ok_or(TlsError::Missing {
            what: "--tls-ca (the CA that the servers' certificates chain to)",
            mode: TlsMode::Enforcing,
        })?;
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(Identity::from_pem_files(cert, key)?),
            (None, None) => None,
            _ => {
                return Err(TlsError::Missing {
                    what: "both --tls-cert and --tls-key (a client certificate needs its key)",
                    mode: TlsMode::Enforcing,
                });
            }
        };
        let config = files::client_config(load_roots(ca)?, identity.as_ref())?;
        Ok(TlsConnector::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_parses_and_prints() {
        for name in ClientAuth::NAMES {
            assert_eq!(name.parse::<ClientAuth>().unwrap().to_string(), name);
        }
        let error = "always".parse::<ClientAuth>().unwrap_err();
        assert!(
            error.contains("always") && error.contains("require"),
            "{error}"
        );
    }

    #[test]
    fn modes_parse_and_print() {
        for name in TlsMode::NAMES {
            assert_eq!(name.parse::<TlsMode>().unwrap().to_string(), name);
        }
        assert_eq!(" Enforcing ".parse::<TlsMode>(), Ok(TlsMode::Enforcing));
        let error = "strict".parse::<TlsMode>().unwrap_err();
        assert!(
            error.contains("strict") && error.contains("permissive"),
            "{error}"
        );
    }

    #[test]
    fn an_enabled_mode_needs_a_certificate_and_key() {
        let config = TlsConfig {
            mode: TlsMode::Permissive,
            ..TlsConfig::default()
        };
        let error = config.acceptor().unwrap_err().to_string();
        assert!(error.contains("--tls-cert"), "{error}");
        assert!(TlsConfig::disabled().acceptor().is_ok());
        assert!(!TlsConfig::disabled().connector().unwrap().is_tls());
    }
}

#[cfg(test)]
mod link_tests;
