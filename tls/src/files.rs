//! PEM files into rustls configurations. Every error names the file and what was wrong with
//! it, because the usual mistake is a swapped or mistyped path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::{TlsMode, crypto_provider};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS mode {mode} needs {what}")]
    Missing { what: &'static str, mode: TlsMode },

    #[error("cannot read {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} file {} is not valid PEM: {reason}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("{what} file {} holds no {expected}", path.display())]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },

    #[error("CA file {}: a certificate cannot be used as a trust anchor: {source}", path.display())]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },

    /// rustls refused the combination (for example a key that does not match the
    /// certificate).
    #[error("{what}: {source}")]
    Rustls {
        what: String,
        #[source]
        source: rustls::Error,
    },
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "CERTIFICATE block",
        });
    }
    Ok(chain)
}

impl Identity {
    /// Reads a certificate chain (leaf first) and its private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = certificates("certificate", cert)?;
        let key_pem = read("private key", key)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| match error {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
                what: "private key",
                path: key.to_path_buf(),
                expected: "PRIVATE KEY block (PKCS#8, RSA or EC)",
            },
            other => TlsError::Pem {
                what: "private key",
                path: key.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
        Ok(Identity {
            chain,
            key: private_key,
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
        })
    }

    fn describe(&self) -> String {
        format!(
            "certificate {} with key {}",
            self.cert_path.display(),
            self.key_path.display()
        )
    }
}

/// Reads the CA certificates that peers' certificates must chain to.
pub fn load_roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("CA", ca)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: ca.to_path_buf(),
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

/// What a server asks of its clients' certificates.
#[derive(Clone, Debug)]
pub enum ClientCertificates {
    NotAsked,
    /// A client may present one; one that does must chain to these roots.
    Optional(Arc<RootCertStore>),
    /// Every client presents one chaining to these roots (mutual TLS).
    Required(Arc<RootCertStore>),
}

/// A server configuration presenting `identity`, asking clients for certificates as `clients`
/// says. `alpn` lists the application protocols offered, most preferred first (`h2` for gRPC;
/// none for our own framing).
pub fn server_config(
    identity: &Identity,
    clients: ClientCertificates,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let rustls_error = |what: String| move |source| TlsError::Rustls { what, source };
    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error("TLS protocol versions".into()))?;
    let (roots, optional) = match clients {
        ClientCertificates::NotAsked => (None, false),
        ClientCertificates::Optional(roots) => (Some(roots), true),
        ClientCertificates::Required(roots) => (Some(roots), false),
    };
    let builder = match roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, crypto_provider());
            let verifier = if optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|error| TlsError::Rustls {
                what: "client certificate verifier".into(),
                source: rustls::Error::General(error.to_string()),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(rustls_error(identity.describe()))?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration trusting `roots`, presenting `identity` when a server asks.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "TLS protocol versions".into(),
            source,
        })?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|source| TlsError::Rustls {
                what: identity.describe(),
                source,
            })?,
    };
    Ok(Arc::new(config))
}

/// A client configuration that trusts no server: what an HTTP client that must never speak TLS
/// is given, so that it needs no default crypto provider and cannot reach an `https` address.
pub fn trusting_nothing() -> Result<Arc<ClientConfig>, TlsError> {
    client_config(Arc::new(RootCertStore::empty()), None)
}
