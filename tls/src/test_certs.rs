//! Test certificates (feature `test-certs`; tests only): a throwaway CA and certificates it
//! signs for 127.0.0.1, ::1 and localhost, good for both ends of a link, written as PEM files
//! so that tests go through the same file loading as a real process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::{ClientAuth, ClientTlsConfig, TlsConfig, TlsMode};

/// A certificate authority that exists for one test.
pub struct TestCa {
    name: String,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("name", &self.name).finish()
    }
}

/// The PEM files of one certificate and its key.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA with its own key; certificates of two `TestCa`s never verify against each
    /// other.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key generation");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir/<ca name>.ca.pem`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.ca.pem", self.name));
        std::fs::write(&path, &self.cert_pem).expect("write the CA certificate");
        path
    }

    /// Issues a certificate named `name` for 127.0.0.1, ::1 and localhost, usable as server
    /// and as client, and writes it and its key to `dir/<name>.pem` and `dir/<name>.key`.
    pub fn issue(&self, dir: &Path, name: &str) -> CertFiles {
        self.issue_for_ips(dir, name, &[])
    }

    /// [`issue`](Self::issue), valid for the addresses `ips` too (a process on another
    /// loopback address).
    pub fn issue_for_ips(&self, dir: &Path, name: &str, ips: &[IpAddr]) -> CertFiles {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("DNS name");
        params.subject_alt_names.extend([
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]);
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key generation");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        let files = CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }

    /// A process's settings: `mode`, a fresh certificate named `name` and this CA.
    pub fn process_config(&self, dir: &Path, name: &str, mode: TlsMode) -> TlsConfig {
        let files = self.issue(dir, name);
        TlsConfig {
            mode,
            cert: Some(files.cert),
            key: Some(files.key),
            ca: Some(self.write_ca(dir)),
            client_auth: ClientAuth::None,
        }
    }

    /// A client's settings that trust this CA and present a fresh certificate named `name`
    /// (for ports that ask clients for one).
    pub fn client_config_with_certificate(&self, dir: &Path, name: &str) -> ClientTlsConfig {
        let files = self.issue(dir, name);
        ClientTlsConfig {
            cert: Some(files.cert),
            key: Some(files.key),
            ..self.client_config(dir)
        }
    }

    /// A client's settings that trust this CA and present no certificate.
    pub fn client_config(&self, dir: &Path) -> ClientTlsConfig {
        ClientTlsConfig {
            enabled: true,
            ca: Some(self.write_ca(dir)),
            cert: None,
            key: None,
        }
    }
}
