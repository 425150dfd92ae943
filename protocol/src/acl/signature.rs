//! The two signatures RocketMQ clients put on requests, computed (for our client) and verified
//! (for the servers).
//!
//! Remoting (`AclClientRPCHook`): the client adds `AccessKey` (and `SecurityToken`, if any) to
//! the request's ext fields, concatenates the values of every ext field except `Signature` in
//! the order of their keys (Java's `TreeMap`), appends the body, and puts
//! `Base64(HMAC-SHA1(secret key, that content))` in the `Signature` field. Every header field
//! and the body are covered, so a replay with an altered body or header fails.
//!
//! gRPC (RocketMQ 5 clients): the `authorization` metadata is
//! `MQv2-HMAC-SHA1 Credential=<access key>[/...], SignedHeaders=x-mq-date-time,
//! Signature=<hex(HMAC-SHA1(secret key, value of x-mq-date-time))>`.
//!
//! Verification recomputes the MAC and compares it in constant time (`hmac`'s `verify_slice`).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};

/// The ext field naming the account (RocketMQ's `SessionCredentials.ACCESS_KEY`).
pub const ACCESS_KEY: &str = "AccessKey";
/// The ext field holding the signature.
pub const SIGNATURE: &str = "Signature";
/// The ext field holding a temporary credential's token (signed, not checked).
pub const SECURITY_TOKEN: &str = "SecurityToken";
/// The scheme of a gRPC `authorization` value.
pub const GRPC_AUTHORIZATION_ALGORITHM: &str = "MQv2-HMAC-SHA1";
/// The one header a gRPC signature covers.
pub const GRPC_DATE_TIME_HEADER: &str = "x-mq-date-time";

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Why a signature or an `authorization` value is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature is not valid base64")]
    NotBase64,
    #[error("the signature is not valid hex")]
    NotHex,
    #[error("the signature does not match the request")]
    Mismatch,
    #[error("the authorization header is malformed: {0}")]
    MalformedAuthorization(&'static str),
    /// `Credential=` with nothing after it: what the official 5.x clients send when they were
    /// given no credentials (they always send the header).
    #[error("the authorization names no access key")]
    NoAccessKey,
}

fn mac_of(secret_key: &str) -> HmacSha1 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    <HmacSha1 as KeyInit>::new_from_slice(secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// Feeds the remoting content (every ext field value but the signature's, in key order, then
/// the body) into `mac`.
fn feed_remoting(mac: &mut HmacSha1, ext_fields: &BTreeMap<String, String>, body: &[u8]) {
    for (key, value) in ext_fields {
        if key != SIGNATURE {
            mac.update(value.as_bytes());
        }
    }
    mac.update(body);
}

/// The remoting signature of `ext_fields` and `body` under `secret_key` (Base64).
pub fn sign_remoting(
    secret_key: &str,
    ext_fields: &BTreeMap<String, String>,
    body: &[u8],
) -> String {
    let mut mac = mac_of(secret_key);
    feed_remoting(&mut mac, ext_fields, body);
    BASE64.encode(mac.finalize().into_bytes())
}

/// Signs a request as `AclClientRPCHook` does: adds `AccessKey` (and `SecurityToken`), then
/// `Signature` over everything else. Call it last, once the header and body are final.
pub fn sign_remoting_request(
    ext_fields: &mut BTreeMap<String, String>,
    body: &[u8],
    access_key: &str,
    secret_key: &str,
    security_token: Option<&str>,
) {
    ext_fields.insert(ACCESS_KEY.to_string(), access_key.to_string());
    if let Some(token) = security_token {
        ext_fields.insert(SECURITY_TOKEN.to_string(), token.to_string());
    }
    let signature = sign_remoting(secret_key, ext_fields, body);
    ext_fields.insert(SIGNATURE.to_string(), signature);
}

/// An account's keys on the client side (RocketMQ's `SessionCredentials`): signs every request
/// as `AclClientRPCHook` does. `Debug` never shows the secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCredentials {
    pub access_key: String,
    pub secret_key: String,
    pub security_token: Option<String>,
}

impl SessionCredentials {
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        SessionCredentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            security_token: None,
        }
    }

    /// Signs `request` (its ext fields and body as they are now).
    pub fn sign(&self, request: &mut crate::RemotingCommand) {
        sign_remoting_request(
            &mut request.ext_fields,
            &request.body,
            &self.access_key,
            &self.secret_key,
            self.security_token.as_deref(),
        );
    }
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// What a request presents to prove it was sent by the holder of an account's secret key.
#[derive(Clone, Copy, Debug)]
pub enum Proof<'a> {
    /// A remoting request's ext fields (with `Signature` among them) and body.
    Remoting {
        ext_fields: &'a BTreeMap<String, String>,
        body: &'a [u8],
    },
    /// A gRPC call's parsed `authorization` and its `x-mq-date-time` value.
    Grpc {
        authorization: &'a GrpcAuthorization,
        date_time: &'a str,
    },
}

impl Proof<'_> {
    /// The account the request names, if it names one.
    pub fn access_key(&self) -> Option<&str> {
        match self {
            Proof::Remoting { ext_fields, .. } => ext_fields.get(ACCESS_KEY).map(String::as_str),
            Proof::Grpc { authorization, .. } => Some(authorization.access_key.as_str()),
        }
    }

    /// Checks the signature against `secret_key`, in constant time.
    pub fn verify(&self, secret_key: &str) -> Result<(), SignatureError> {
        let mut mac = mac_of(secret_key);
        match self {
            Proof::Remoting { ext_fields, body } => {
                let presented = ext_fields.get(SIGNATURE).ok_or(SignatureError::Mismatch)?;
                let presented = BASE64
                    .decode(presented.as_bytes())
                    .map_err(|_| SignatureError::NotBase64)?;
                feed_remoting(&mut mac, ext_fields, body);
                mac.verify_slice(&presented)
                    .map_err(|_| SignatureError::Mismatch)
            }
            Proof::Grpc {
                authorization,
                date_time,
            } => {
                let presented =
                    hex::decode(&authorization.signature).map_err(|_| SignatureError::NotHex)?;
                mac.update(date_time.as_bytes());
                mac.verify_slice(&presented)
                    .map_err(|_| SignatureError::Mismatch)
            }
        }
    }
}

/// A parsed gRPC `authorization` value.
#[derive(Clone, PartialEq, Eq)]
pub struct GrpcAuthorization {
    pub access_key: String,
    /// Hex, as sent (either case).
    pub signature: String,
}

impl std::fmt::Debug for GrpcAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcAuthorization")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl GrpcAuthorization {
    /// Parses `MQv2-HMAC-SHA1 Credential=<ak>[/...], SignedHeaders=x-mq-date-time,
    /// Signature=<hex>`. The credential's scope after the first `/` (region, service) is
    /// ignored, as RocketMQ's proxy does.
    pub fn parse(value: &str) -> Result<Self, SignatureError> {
        let malformed = SignatureError::MalformedAuthorization;
        let rest = value
            .trim()
            .strip_prefix(GRPC_AUTHORIZATION_ALGORITHM)
            .ok_or(malformed("not the MQv2-HMAC-SHA1 scheme"))?;
        if !rest.starts_with(' ') {
            return Err(malformed("not the MQv2-HMAC-SHA1 scheme"));
        }
        let (mut access_key, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (key, val) = part
                .trim()
                .split_once('=')
                .ok_or(malformed("a part is not key=value"))?;
            match key.trim() {
                "Credential" => access_key = val.trim().split('/').next().map(str::to_string),
                "SignedHeaders" => signed_headers = Some(val.trim().to_ascii_lowercase()),
                "Signature" => signature = Some(val.trim().to_string()),
                _ => return Err(malformed("an unknown part")),
            }
        }
        let access_key = access_key.ok_or(malformed("no Credential"))?;
        if access_key.is_empty() {
            return Err(SignatureError::NoAccessKey);
        }
        if signed_headers.as_deref() != Some(GRPC_DATE_TIME_HEADER) {
            return Err(malformed("SignedHeaders must be x-mq-date-time"));
        }
        let signature = signature
            .filter(|signature| !signature.is_empty())
            .ok_or(malformed("no Signature"))?;
        Ok(GrpcAuthorization {
            access_key,
            signature,
        })
    }

    /// The value a client sends (upper-case hex, as RocketMQ's Java client does).
    pub fn sign(access_key: &str, secret_key: &str, date_time: &str) -> String {
        let mut mac = mac_of(secret_key);
        mac.update(date_time.as_bytes());
        let signature = hex::encode_upper(mac.finalize().into_bytes());
        format!(
            "{GRPC_AUTHORIZATION_ALGORITHM} Credential={access_key}, SignedHeaders={GRPC_DATE_TIME_HEADER}, Signature={signature}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Test data computed independently:
    /// `printf 'aktokenfirstlastbody' | openssl dgst -sha1 -hmac secret -binary | base64`
    /// gives `wuJkFDNRMKY6aFXTDwT/vg0UC8M=` (also the vector of rocketmq-client-rust 1.0.0's
    /// `AclClientRPCHook` test: fields a=first, z=last, AccessKey=ak, SecurityToken=token).
    #[test]
    fn remoting_signature_matches_an_independent_vector() {
        let mut ext = fields(&[("z", "last"), ("a", "first")]);
        sign_remoting_request(&mut ext, b"body", "ak", "secret", Some("token"));
        assert_eq!(ext[SIGNATURE], "wuJkFDNRMKY6aFXTDwT/vg0UC8M=");
        assert_eq!(ext[ACCESS_KEY], "ak");
        let proof = Proof::Remoting {
            ext_fields: &ext,
            body: b"body",
        };
        assert_eq!(proof.access_key(), Some("ak"));
        proof.verify("secret").unwrap();
    }

    #[test]
    fn resigning_ignores_a_stale_signature() {
        let mut ext = fields(&[("z", "last"), ("a", "first"), (SIGNATURE, "stale")]);
        sign_remoting_request(&mut ext, b"body", "ak", "secret", Some("token"));
        assert_eq!(ext[SIGNATURE], "wuJkFDNRMKY6aFXTDwT/vg0UC8M=");
    }

    #[test]
    fn altered_body_header_or_wrong_secret_fail_verification() {
        let mut ext = fields(&[("topic", "orders"), ("queueId", "1")]);
        sign_remoting_request(&mut ext, b"hello", "ak", "secret1", None);
        let ok = Proof::Remoting {
            ext_fields: &ext,
            body: b"hello",
        };
        ok.verify("secret1").unwrap();
        assert_eq!(ok.verify("secret2"), Err(SignatureError::Mismatch));
        let altered_body = Proof::Remoting {
            ext_fields: &ext,
            body: b"hellO",
        };
        assert_eq!(
            altered_body.verify("secret1"),
            Err(SignatureError::Mismatch)
        );
        let mut altered_header = ext.clone();
        altered_header.insert("queueId".into(), "2".into());
        let altered = Proof::Remoting {
            ext_fields: &altered_header,
            body: b"hello",
        };
        assert_eq!(altered.verify("secret1"), Err(SignatureError::Mismatch));
        let mut garbage = ext.clone();
        garbage.insert(SIGNATURE.into(), "%%%".into());
        let garbage = Proof::Remoting {
            ext_fields: &garbage,
            body: b"hello",
        };
        assert_eq!(garbage.verify("secret1"), Err(SignatureError::NotBase64));
        let mut unsigned = ext.clone();
        unsigned.remove(SIGNATURE);
        let unsigned = Proof::Remoting {
            ext_fields: &unsigned,
            body: b"hello",
        };
        assert_eq!(unsigned.verify("secret1"), Err(SignatureError::Mismatch));
    }

    /// Test data: `printf '20240101T000000Z' | openssl dgst -sha1 -hmac secret` gives
    /// `2e5621239cbfdccc449dbd2e028cf60e7c6a592d`.
    #[test]
    fn grpc_signature_matches_an_independent_vector_in_either_case() {
        let value = GrpcAuthorization::sign("ak", "secret", "20240101T000000Z");
        assert_eq!(
            value,
            "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, Signature=2E5621239CBFDCCC449DBD2E028CF60E7C6A592D"
        );
        for header in [
            value.clone(),
            "MQv2-HMAC-SHA1 Credential=ak/cn-hangzhou/RocketMQ, SignedHeaders=x-mq-date-time, Signature=2e5621239cbfdccc449dbd2e028cf60e7c6a592d".to_string(),
        ] {
            let parsed = GrpcAuthorization::parse(&header).unwrap();
            assert_eq!(parsed.access_key, "ak");
            let proof = Proof::Grpc {
                authorization: &parsed,
                date_time: "20240101T000000Z",
            };
            proof.verify("secret").unwrap();
            assert_eq!(proof.verify("other"), Err(SignatureError::Mismatch));
            let replayed_later = Proof::Grpc {
                authorization: &parsed,
                date_time: "20240101T000001Z",
            };
            assert_eq!(replayed_later.verify("secret"), Err(SignatureError::Mismatch));
        }
    }

    #[test]
    fn an_empty_credential_names_no_access_key() {
        // As the Python client sends it when given `Credentials()`.
        let sent = "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=4f2a";
        assert!(matches!(
            GrpcAuthorization::parse(sent),
            Err(SignatureError::NoAccessKey)
        ));
    }

    #[test]
    fn malformed_grpc_authorization_is_an_error_not_a_panic() {
        for bad in [
            "",
            "Bearer x",
            "MQv2-HMAC-SHA1",
            "MQv2-HMAC-SHA1Credential=ak, SignedHeaders=x-mq-date-time, Signature=00",
            "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=host, Signature=00",
            "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time",
            "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, Signature=00, Extra=1",
            "MQv2-HMAC-SHA1 Credential=ak SignedHeaders",
        ] {
            assert!(
                matches!(
                    GrpcAuthorization::parse(bad),
                    Err(SignatureError::MalformedAuthorization(_))
                ),
                "{bad:?} parsed"
            );
        }
        let parsed = GrpcAuthorization::parse(
            "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, Signature=zz",
        )
        .unwrap();
        let proof = Proof::Grpc {
            authorization: &parsed,
            date_time: "x",
        };
        assert_eq!(proof.verify("secret"), Err(SignatureError::NotHex));
    }

    #[test]
    fn debug_output_never_shows_the_signature() {
        let parsed =
            GrpcAuthorization::parse(&GrpcAuthorization::sign("ak", "s3cr3t", "d")).unwrap();
        let shown = format!("{parsed:?}");
        assert!(!shown.contains(&parsed.signature), "{shown}");
    }
}
