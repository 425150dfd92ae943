//! Who may do what: accounts with per-topic and per-group permissions, defaults, an admin flag
//! and address whitelists, and [`AclConfig::check`], the one decision every protocol calls.
//!
//! The configuration is replicated state (a broker group's Raft state machine holds it), so
//! changes are [`AclChange`]s applied deterministically, and every member decides alike.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::signature::{GrpcAuthorization, Proof, SignatureError};

/// Longest access key accepted.
pub const ACCESS_KEY_MAX_CHARS: usize = 128;
/// Shortest secret key accepted (RocketMQ's plain ACL requires 6 characters too).
pub const SECRET_KEY_MIN_CHARS: usize = 6;
/// Longest secret key accepted.
pub const SECRET_KEY_MAX_CHARS: usize = 256;
/// Most accounts one broker group holds.
pub const ACCOUNTS_MAX: usize = 10_000;
/// Most topic or group permissions one account lists, and most whitelist entries.
pub const ENTRIES_MAX: usize = 10_000;

/// What an account may do with one topic or group (RocketMQ's names: `DENY`, `PUB`, `SUB`,
/// `PUB|SUB`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Perm {
    #[default]
    #[serde(rename = "DENY")]
    Deny,
    #[serde(rename = "PUB")]
    Pub,
    #[serde(rename = "SUB")]
    Sub,
    #[serde(rename = "PUB|SUB", alias = "SUB|PUB")]
    PubSub,
}

impl Perm {
    pub fn allows(self, need: Need) -> bool {
        matches!(
            (self, need),
            (Perm::PubSub, _) | (Perm::Pub, Need::Pub) | (Perm::Sub, Need::Sub)
        )
    }
}

impl std::str::FromStr for Perm {
    type Err = AclConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text.trim().to_ascii_uppercase().as_str() {
            "DENY" => Perm::Deny,
            "PUB" => Perm::Pub,
            "SUB" => Perm::Sub,
            "PUB|SUB" | "SUB|PUB" => Perm::PubSub,
            _ => return Err(AclConfigError::BadPerm(text.to_string())),
        })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Perm::Deny => "DENY",
            Perm::Pub => "PUB",
            Perm::Sub => "SUB",
            Perm::PubSub => "PUB|SUB",
        })
    }
}

/// What a request needs on a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Pub,
    Sub,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Need::Pub => "PUB",
            Need::Sub => "SUB",
        })
    }
}

/// A topic or a consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Topic(String),
    Group(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(topic) => write!(f, "topic {topic}"),
            Resource::Group(group) => write!(f, "group {group}"),
        }
    }
}

/// Everything a request needs to be allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// An admin request (create or delete topics, groups, broker config).
    pub admin: bool,
    pub resources: Vec<(Resource, Need)>,
}

impl Needs {
    pub fn add(&mut self, resource: Resource, need: Need) {
        if !self.resources.contains(&(resource.clone(), need)) {
            self.resources.push((resource, need));
        }
    }
}

/// One address pattern of a whitelist: `*`, an exact address, a CIDR network
/// (`10.0.0.0/8`), or an IPv4 address whose parts may be `*` or ranges (`192.168.1.*`,
/// `192.168.1.10-20`), as RocketMQ's whitelists write them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AddressPattern {
    text: String,
    matcher: Matcher,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Matcher {
    Any,
    Exact(IpAddr),
    Net(ipnet::IpNet),
    V4Parts([(u8, u8); 4]),
}

impl AddressPattern {
    pub fn matches(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Exact(ip) => *ip == peer,
            Matcher::Net(net) => net.contains(&peer),
            Matcher::V4Parts(parts) => match peer {
                IpAddr::V4(v4) => v4
                    .octets()
                    .iter()
                    .zip(parts)
                    .all(|(octet, (low, high))| (low..=high).contains(&octet)),
                IpAddr::V6(_) => false,
            },
        }
    }
}

impl TryFrom<String> for AddressPattern {
    type Error = AclConfigError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let bad = || AclConfigError::BadAddress(text.clone());
        let trimmed = text.trim();
        let matcher = if trimmed == "*" || trimmed == "*.*.*.*" {
            Matcher::Any
        } else if trimmed.contains('/') {
            Matcher::Net(trimmed.parse().map_err(|_| bad())?)
        } else if let Ok(ip) = trimmed.parse::<IpAddr>() {
            Matcher::Exact(ip)
        } else {
            let parts: Vec<&str> = trimmed.split('.').collect();
            if parts.len() != 4 {
                return Err(bad());
            }
            let mut ranges = [(0u8, 255u8); 4];
            for (range, part) in ranges.iter_mut().zip(parts) {
                *range = match part {
                    "*" => (0, 255),
                    _ => match part.split_once('-') {
                        Some((low, high)) => {
                            let low: u8 = low.parse().map_err(|_| bad())?;
                            let high: u8 = high.parse().map_err(|_| bad())?;
                            if low > high {
                                return Err(bad());
                            }
                            (low, high)
                        }
                        None => {
                            let exact: u8 = part.parse().map_err(|_| bad())?;
                            (exact, exact)
                        }
                    },
                };
            }
            Matcher::V4Parts(ranges)
        };
        Ok(AddressPattern {
            text: trimmed.to_string(),
            matcher,
        })
    }
}

impl std::str::FromStr for AddressPattern {
    type Err = AclConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AddressPattern::try_from(text.to_string())
    }
}

impl From<AddressPattern> for String {
    fn from(pattern: AddressPattern) -> String {
        pattern.text
    }
}

impl fmt::Display for AddressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One account (RocketMQ's `PlainAccessConfig`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub access_key: String,
    pub secret_key: String,
    /// May send admin requests (create or delete topics and groups, broker config); with no
    /// topic or group listed, may also use every topic and group.
    #[serde(default)]
    pub admin: bool,
    /// For topics not listed in `topic_perms`.
    #[serde(default)]
    pub default_topic_perm: Perm,
    /// For groups not listed in `group_perms`.
    #[serde(default)]
    pub default_group_perm: Perm,
    #[serde(default)]
    pub topic_perms: BTreeMap<String, Perm>,
    #[serde(default)]
    pub group_perms: BTreeMap<String, Perm>,
    /// Requests naming this account from these addresses pass unsigned and unchecked.
    #[serde(default)]
    pub white_remote_addresses: Vec<AddressPattern>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("admin", &self.admin)
            .field("default_topic_perm", &self.default_topic_perm)
            .field("default_group_perm", &self.default_group_perm)
            .field("topic_perms", &self.topic_perms)
            .field("group_perms", &self.group_perms)
            .field("white_remote_addresses", &self.white_remote_addresses)
            .finish()
    }
}

impl Account {
    /// Checks what a change may not bring into the replicated state.
    pub fn validate(&self) -> Result<(), AclConfigError> {
        let key_ok = !self.access_key.is_empty()
            && self.access_key.chars().count() <= ACCESS_KEY_MAX_CHARS
            && self
                .access_key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !key_ok {
            return Err(AclConfigError::BadAccessKey(self.access_key.clone()));
        }
        let secret_chars = self.secret_key.chars().count();
        if !(SECRET_KEY_MIN_CHARS..=SECRET_KEY_MAX_CHARS).contains(&secret_chars) {
            return Err(AclConfigError::BadSecretKey);
        }
        if self.topic_perms.len() > ENTRIES_MAX
            || self.group_perms.len() > ENTRIES_MAX
            || self.white_remote_addresses.len() > ENTRIES_MAX
        {
            return Err(AclConfigError::TooMany("permissions or addresses"));
        }
        Ok(())
    }

    fn perm_for(&self, resource: &Resource) -> Perm {
        match resource {
            Resource::Topic(topic) => self
                .topic_perms
                .get(topic)
                .copied()
                .unwrap_or(self.default_topic_perm),
            Resource::Group(group) => self
                .group_perms
                .get(group)
                .copied()
                .unwrap_or(self.default_group_perm),
        }
    }
}

/// A change to the ACL configuration, replicated as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclChange {
    /// Turns enforcement on or off for the whole group.
    SetEnabled(bool),
    /// Creates an account or replaces it whole.
    UpsertAccount(Account),
    DeleteAccount(String),
    /// Replaces the global whitelist.
    SetGlobalWhitelist(Vec<AddressPattern>),
}

impl AclChange {
    /// Checks a change before it is proposed (apply trusts what was checked).
    pub fn validate(&self) -> Result<(), AclConfigError> {
        match self {
            AclChange::UpsertAccount(account) => account.validate(),
            AclChange::SetGlobalWhitelist(list) if list.len() > ENTRIES_MAX => {
                Err(AclConfigError::TooMany("whitelist addresses"))
            }
            _ => Ok(()),
        }
    }
}

/// Why an ACL change is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclConfigError {
    #[error(
        "access key {0:?} is not 1 to {ACCESS_KEY_MAX_CHARS} characters of letters, digits, '-', '_' or '.'"
    )]
    BadAccessKey(String),
    #[error("a secret key must be {SECRET_KEY_MIN_CHARS} to {SECRET_KEY_MAX_CHARS} characters")]
    BadSecretKey,
    #[error("{0:?} is not a permission (DENY, PUB, SUB or PUB|SUB)")]
    BadPerm(String),
    #[error(
        "{0:?} is not an address pattern (*, an address, a CIDR network, or IPv4 parts with * or ranges)"
    )]
    BadAddress(String),
    #[error("too many {0} (at most {ENTRIES_MAX})")]
    TooMany(&'static str),
    #[error("at most {ACCOUNTS_MAX} accounts")]
    TooManyAccounts,
    #[error("no account with access key {0}")]
    NoSuchAccount(String),
}

/// A broker group's ACL configuration (replicated).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclConfig {
    /// Enforced for the whole group (a member started with `--acl` enforces regardless).
    pub enabled: bool,
    /// Requests from these addresses pass without credentials.
    pub global_white_addresses: Vec<AddressPattern>,
    pub accounts: BTreeMap<String, Account>,
}

/// How a request was allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Granted {
    AclOff,
    GlobalWhitelist,
    AccountWhitelist { access_key: String },
    Signed { access_key: String },
}

/// Why a request was refused: the remark of the NO_PERMISSION answer. Never holds a secret or
/// a signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("ACL is on and the request carries no AccessKey: sign it with an account's keys")]
    NoAccessKey,
    #[error("no ACL account has access key {0}")]
    UnknownAccount(String),
    #[error("signature check failed for access key {access_key}: {reason}")]
    BadSignature {
        access_key: String,
        reason: SignatureError,
    },
    #[error("access key {0} is not an admin account and this request needs admin")]
    NotAdmin(String),
    #[error("access key {access_key} has no {need} permission on {resource}")]
    NoPermission {
        access_key: String,
        resource: String,
        need: Need,
    },
    #[error("the authorization is unusable: {0}")]
    BadAuthorization(SignatureError),
    #[error("the request does not say which {0} it uses")]
    Unresolvable(&'static str),
}

impl Denial {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Denial::NoAccessKey => "no_access_key",
            Denial::UnknownAccount(_) => "unknown_account",
            Denial::BadSignature { .. } => "bad_signature",
            Denial::NotAdmin(_) => "not_admin",
            Denial::NoPermission { .. } => "no_permission",
            Denial::BadAuthorization(_) => "bad_authorization",
            Denial::Unresolvable(_) => "unresolvable",
        }
    }
}

impl AclConfig {
    /// Applies a validated change. Deterministic; a delete of a missing account changes
    /// nothing and says so.
    pub fn apply(&mut self, change: AclChange) -> Result<(), AclConfigError> {
        match change {
            AclChange::SetEnabled(enabled) => self.enabled = enabled,
            AclChange::UpsertAccount(account) => {
                if !self.accounts.contains_key(&account.access_key)
                    && self.accounts.len() >= ACCOUNTS_MAX
                {
                    return Err(AclConfigError::TooManyAccounts);
                }
                self.accounts.insert(account.access_key.clone(), account);
            }
            AclChange::DeleteAccount(access_key) => {
                if self.accounts.remove(&access_key).is_none() {
                    return Err(AclConfigError::NoSuchAccount(access_key));
                }
            }
            AclChange::SetGlobalWhitelist(list) => self.global_white_addresses = list,
        }
        Ok(())
    }

    /// The decision, in RocketMQ's order: ACL off; global whitelist; an AccessKey naming a
    /// known account; that account's whitelist; the signature; admin; each resource.
    /// `enforced` is whether this member enforces (the replicated switch or its own flag).
    pub fn check(
        &self,
        enforced: bool,
        peer: IpAddr,
        proof: Option<Proof<'_>>,
        needs: &Needs,
    ) -> Result<Granted, Denial> {
        self.check_with_bootstrap(enforced, peer, proof, needs, None)
    }

    /// [`AclConfig::check`] that also knows `bootstrap`, a member-local account (from the
    /// member's own configuration, not replicated) used when no replicated account has its
    /// access key: how the first admin reaches a cluster whose ACL holds no account yet.
    pub fn check_with_bootstrap(
        &self,
        enforced: bool,
        peer: IpAddr,
        proof: Option<Proof<'_>>,
        needs: &Needs,
        bootstrap: Option<&Account>,
    ) -> Result<Granted, Denial> {
        if !enforced {
            return Ok(Granted::AclOff);
        }
        if self.global_white_addresses.iter().any(|p| p.matches(peer)) {
            return Ok(Granted::GlobalWhitelist);
        }
        let Some(proof) = proof else {
            return Err(Denial::NoAccessKey);
        };
        let Some(access_key) = proof.access_key().filter(|key| !key.is_empty()) else {
            return Err(Denial::NoAccessKey);
        };
        let account = self
            .accounts
            .get(access_key)
            .or_else(|| bootstrap.filter(|bootstrap| bootstrap.access_key == access_key));
        let Some(account) = account else {
            return Err(Denial::UnknownAccount(access_key.to_string()));
        };
        let access_key = account.access_key.clone();
        if account
            .white_remote_addresses
            .iter()
            .any(|p| p.matches(peer))
        {
            return Ok(Granted::AccountWhitelist { access_key });
        }
        if let Err(reason) = proof.verify(&account.secret_key) {
            return Err(Denial::BadSignature { access_key, reason });
        }
        if needs.admin && !account.admin {
            return Err(Denial::NotAdmin(access_key));
        }
        let admin_of_everything =
            account.admin && account.topic_perms.is_empty() && account.group_perms.is_empty();
        if !admin_of_everything {
            for (resource, need) in &needs.resources {
                if !account.perm_for(resource).allows(*need) {
                    return Err(Denial::NoPermission {
                        access_key,
                        resource: resource.to_string(),
                        need: *need,
                    });
                }
            }
        }
        Ok(Granted::Signed { access_key })
    }

    /// [`AclConfig::check`] for a gRPC call: `authorization` and `date_time` are the values of
    /// its `authorization` and `x-mq-date-time` metadata, if present.
    pub fn check_grpc(
        &self,
        enforced: bool,
        peer: IpAddr,
        authorization: Option<&str>,
        date_time: Option<&str>,
        needs: &Needs,
    ) -> Result<Granted, Denial> {
        self.check_grpc_with_bootstrap(enforced, peer, authorization, date_time, needs, None)
    }

    /// [`AclConfig::check_grpc`] that also knows the member-local `bootstrap` account (see
    /// [`AclConfig::check_with_bootstrap`]).
    pub fn check_grpc_with_bootstrap(
        &self,
        enforced: bool,
        peer: IpAddr,
        authorization: Option<&str>,
        date_time: Option<&str>,
        needs: &Needs,
        bootstrap: Option<&Account>,
    ) -> Result<Granted, Denial> {
        let Some(authorization) = authorization else {
            return self.check_with_bootstrap(enforced, peer, None, needs, bootstrap);
        };
        if !enforced || self.global_white_addresses.iter().any(|p| p.matches(peer)) {
            return self.check_with_bootstrap(enforced, peer, None, needs, bootstrap);
        }
        let parsed = match GrpcAuthorization::parse(authorization) {
            Ok(parsed) => parsed,
            // A client given no credentials: judged as a call without the header.
            Err(SignatureError::NoAccessKey) => {
                return self.check_with_bootstrap(enforced, peer, None, needs, bootstrap);
            }
            Err(error) => return Err(Denial::BadAuthorization(error)),
        };
        let date_time = date_time.ok_or(Denial::BadAuthorization(
            SignatureError::MalformedAuthorization("no x-mq-date-time header"),
        ))?;
        let proof = Proof::Grpc {
            authorization: &parsed,
            date_time,
        };
        self.check_with_bootstrap(enforced, peer, Some(proof), needs, bootstrap)
    }

    /// The configuration without secret keys, for listing.
    pub fn view(&self, enforced_here: bool) -> AclView {
        AclView {
            enabled: self.enabled,
            enforced_here,
            global_white_addresses: self
                .global_white_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            accounts: self
                .accounts
                .values()
                .map(|account| AccountView {
                    access_key: account.access_key.clone(),
                    admin: account.admin,
                    default_topic_perm: account.default_topic_perm,
                    default_group_perm: account.default_group_perm,
                    topic_perms: account.topic_perms.clone(),
                    group_perms: account.group_perms.clone(),
                    white_remote_addresses: account
                        .white_remote_addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The ACL configuration as listed (`GET /acl`, `mq acl list`): no secret keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclView {
    /// The replicated switch.
    pub enabled: bool,
    /// Whether the member that answered enforces (the switch, or its `--acl` flag).
    pub enforced_here: bool,
    pub global_white_addresses: Vec<String>,
    pub accounts: Vec<AccountView>,
}

/// An account as listed: everything but the secret key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub access_key: String,
    pub admin: bool,
    pub default_topic_perm: Perm,
    pub default_group_perm: Perm,
    pub topic_perms: BTreeMap<String, Perm>,
    pub group_perms: BTreeMap<String, Perm>,
    pub white_remote_addresses: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::acl::signature::sign_remoting_request;

    fn account(access_key: &str) -> Account {
        Account {
            access_key: access_key.into(),
            secret_key: format!("{access_key}-secret"),
            admin: false,
            default_topic_perm: Perm::Deny,
            default_group_perm: Perm::Sub,
            topic_perms: BTreeMap::from([
                ("orders".into(), Perm::Pub),
                ("audit".into(), Perm::PubSub),
                ("blocked".into(), Perm::Deny),
            ]),
            group_perms: BTreeMap::from([("billing".into(), Perm::Deny)]),
            white_remote_addresses: Vec::new(),
        }
    }

    fn config() -> AclConfig {
        let mut acl = AclConfig::default();
        acl.apply(AclChange::SetEnabled(true)).unwrap();
        acl.apply(AclChange::UpsertAccount(account("producer1")))
            .unwrap();
        let mut admin = account("admin1");
        admin.admin = true;
        admin.topic_perms.clear();
        admin.group_perms.clear();
        acl.apply(AclChange::UpsertAccount(admin)).unwrap();
        acl
    }

    fn signed(access_key: &str, secret: &str) -> BTreeMap<String, String> {
        let mut ext = BTreeMap::from([("topic".to_string(), "orders".to_string())]);
        sign_remoting_request(&mut ext, b"m", access_key, secret, None);
        ext
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    fn check(
        acl: &AclConfig,
        ext: &BTreeMap<String, String>,
        needs: &Needs,
    ) -> Result<Granted, Denial> {
        let proof = Proof::Remoting {
            ext_fields: ext,
            body: b"m",
        };
        acl.check(true, PEER, Some(proof), needs)
    }

    fn needs(resources: &[(Resource, Need)]) -> Needs {
        Needs {
            admin: false,
            resources: resources.to_vec(),
        }
    }

    #[test]
    fn permissions_follow_the_listed_perm_then_the_default() {
        let acl = config();
        let ext = signed("producer1", "producer1-secret");
        let topic = |t: &str| Resource::Topic(t.into());
        let group = |g: &str| Resource::Group(g.into());
        assert!(check(&acl, &ext, &needs(&[(topic("orders"), Need::Pub)])).is_ok());
        assert!(check(&acl, &ext, &needs(&[(topic("audit"), Need::Sub)])).is_ok());
        for (resource, need) in [
            (topic("orders"), Need::Sub),
            (topic("blocked"), Need::Pub),
            (topic("unlisted"), Need::Pub),
            (group("billing"), Need::Sub),
        ] {
            let denial = check(&acl, &ext, &needs(&[(resource.clone(), need)])).unwrap_err();
            assert_eq!(
                denial,
                Denial::NoPermission {
                    access_key: "producer1".into(),
                    resource: resource.to_string(),
                    need,
                },
            );
        }
        // The default group perm is SUB.
        assert!(check(&acl, &ext, &needs(&[(group("other"), Need::Sub)])).is_ok());
        // Every resource must be allowed, not just one.
        assert!(
            check(
                &acl,
                &ext,
                &needs(&[(topic("orders"), Need::Pub), (topic("unlisted"), Need::Pub)])
            )
            .is_err()
        );
    }

    #[test]
    fn admin_requests_need_an_admin_account_which_may_use_everything() {
        let acl = config();
        let admin_needs = Needs {
            admin: true,
            resources: vec![(Resource::Topic("anything".into()), Need::Pub)],
        };
        let producer = signed("producer1", "producer1-secret");
        assert_eq!(
            check(&acl, &producer, &admin_needs),
            Err(Denial::NotAdmin("producer1".into()))
        );
        let admin = signed("admin1", "admin1-secret");
        assert_eq!(
            check(&acl, &admin, &admin_needs),
            Ok(Granted::Signed {
                access_key: "admin1".into()
            })
        );
    }

    #[test]
    fn unsigned_unknown_and_wrongly_signed_requests_are_denied() {
        let acl = config();
        let none = needs(&[]);
        assert_eq!(acl.check(true, PEER, None, &none), Err(Denial::NoAccessKey));
        let no_key = BTreeMap::from([("topic".to_string(), "orders".to_string())]);
        assert_eq!(check(&acl, &no_key, &none), Err(Denial::NoAccessKey));
        let unknown = signed("nobody", "nobody-secret");
        assert_eq!(
            check(&acl, &unknown, &none),
            Err(Denial::UnknownAccount("nobody".into()))
        );
        let wrong = signed("producer1", "not-the-secret");
        assert!(matches!(
            check(&acl, &wrong, &none),
            Err(Denial::BadSignature { .. })
        ));
        // Off: everything passes, signed or not.
        assert_eq!(acl.check(false, PEER, None, &none), Ok(Granted::AclOff));
    }

    #[test]
    fn grpc_calls_are_checked_by_the_same_decision() {
        let acl = config();
        let orders = needs(&[(Resource::Topic("orders".into()), Need::Pub)]);
        let date = "20240101T000000Z";
        let good = GrpcAuthorization::sign("producer1", "producer1-secret", date);
        assert_eq!(
            acl.check_grpc(true, PEER, Some(&good), Some(date), &orders),
            Ok(Granted::Signed {
                access_key: "producer1".into()
            })
        );
        let wrong = GrpcAuthorization::sign("producer1", "guessed-secret", date);
        assert!(matches!(
            acl.check_grpc(true, PEER, Some(&wrong), Some(date), &orders),
            Err(Denial::BadSignature { .. })
        ));
        assert!(matches!(
            acl.check_grpc(true, PEER, Some(&good), Some("20240101T000001Z"), &orders),
            Err(Denial::BadSignature { .. })
        ));
        assert!(matches!(
            acl.check_grpc(true, PEER, Some(&good), None, &orders),
            Err(Denial::BadAuthorization(_))
        ));
        assert!(matches!(
            acl.check_grpc(true, PEER, Some("Basic abc"), Some(date), &orders),
            Err(Denial::BadAuthorization(_))
        ));
        assert_eq!(
            acl.check_grpc(true, PEER, None, None, &orders),
            Err(Denial::NoAccessKey)
        );
        // What the official 5.x clients send without credentials: the same refusal.
        let anonymous = "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=4f2a";
        assert_eq!(
            acl.check_grpc(true, PEER, Some(anonymous), Some(date), &orders),
            Err(Denial::NoAccessKey)
        );
        let subscribe = needs(&[(Resource::Topic("orders".into()), Need::Sub)]);
        assert!(matches!(
            acl.check_grpc(true, PEER, Some(&good), Some(date), &subscribe),
            Err(Denial::NoPermission { .. })
        ));
    }

    #[test]
    fn a_bootstrap_account_is_known_until_a_replicated_one_takes_its_key() {
        let acl = config();
        let mut root = account("root");
        root.admin = true;
        root.topic_perms.clear();
        root.group_perms.clear();
        let admin_needs = Needs {
            admin: true,
            resources: vec![],
        };
        let signed_root = signed("root", "root-secret");
        assert_eq!(
            check(&acl, &signed_root, &admin_needs),
            Err(Denial::UnknownAccount("root".into()))
        );
        let proof = Proof::Remoting {
            ext_fields: &signed_root,
            body: b"m",
        };
        assert!(
            acl.check_with_bootstrap(true, PEER, Some(proof), &admin_needs, Some(&root))
                .is_ok()
        );
        let wrong = signed("root", "guessed-secret");
        let proof = Proof::Remoting {
            ext_fields: &wrong,
            body: b"m",
        };
        assert!(matches!(
            acl.check_with_bootstrap(true, PEER, Some(proof), &admin_needs, Some(&root)),
            Err(Denial::BadSignature { .. })
        ));
    }

    #[test]
    fn whitelists_let_requests_through_as_rocketmq_does() {
        let mut acl = config();
        let mut trusted = account("trusted");
        trusted.white_remote_addresses = vec!["10.1.2.*".parse().unwrap()];
        acl.apply(AclChange::UpsertAccount(trusted)).unwrap();
        // Named account from its whitelist: no signature needed.
        let named = BTreeMap::from([("AccessKey".to_string(), "trusted".to_string())]);
        assert_eq!(
            check(&acl, &named, &needs(&[])),
            Ok(Granted::AccountWhitelist {
                access_key: "trusted".into()
            })
        );
        acl.apply(AclChange::SetGlobalWhitelist(vec![
            "10.0.0.0/8".parse().unwrap(),
        ]))
        .unwrap();
        assert_eq!(
            acl.check(true, PEER, None, &needs(&[])),
            Ok(Granted::GlobalWhitelist)
        );
        let outside: IpAddr = "192.168.0.1".parse().unwrap();
        assert_eq!(
            acl.check(true, outside, None, &needs(&[])),
            Err(Denial::NoAccessKey)
        );
    }

    #[test]
    fn address_patterns_parse_and_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "1.2.3.4", true),
            ("*", "::1", true),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("192.168.1.*", "192.168.1.77", true),
            ("192.168.1.*", "192.168.2.77", false),
            ("192.168.1.10-20", "192.168.1.15", true),
            ("192.168.1.10-20", "192.168.1.21", false),
            ("10.0.0.0/8", "10.200.0.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("fd00::/8", "fd12::1", true),
        ];
        for (pattern, peer, expected) in cases {
            let parsed: AddressPattern = pattern.parse().unwrap();
            assert_eq!(
                parsed.matches(peer.parse().unwrap()),
                *expected,
                "{pattern} vs {peer}"
            );
            assert_eq!(parsed.to_string(), *pattern);
        }
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.300",
            "1.2.3.20-10",
            "10.0.0.0/40",
            "a.b.c.d",
        ] {
            assert!(bad.parse::<AddressPattern>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn accounts_are_validated_and_never_debug_print_secrets() {
        let mut bad = account("ok");
        bad.secret_key = "short".into();
        assert_eq!(bad.validate(), Err(AclConfigError::BadSecretKey));
        bad.secret_key = "long-enough".into();
        bad.access_key = "has space".into();
        assert!(matches!(
            bad.validate(),
            Err(AclConfigError::BadAccessKey(_))
        ));
        let good = account("producer1");
        good.validate().unwrap();
        let shown = format!("{good:?}");
        assert!(!shown.contains("producer1-secret"), "{shown}");
        let listed = serde_json::to_string(&config().view(true)).unwrap();
        assert!(!listed.contains("-secret"), "{listed}");
    }

    #[test]
    fn perms_and_changes_round_trip_as_json() {
        for (text, perm) in [
            ("DENY", Perm::Deny),
            ("PUB", Perm::Pub),
            ("SUB", Perm::Sub),
            ("PUB|SUB", Perm::PubSub),
            ("sub|pub", Perm::PubSub),
        ] {
            assert_eq!(text.parse::<Perm>().unwrap(), perm);
        }
        assert!("WRITE".parse::<Perm>().is_err());
        let change = AclChange::UpsertAccount(account("producer1"));
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<AclChange>(&json).unwrap(), change);
        let bad_address = r#"{"set_global_whitelist":["1.2.3"]}"#;
        assert!(serde_json::from_str::<AclChange>(bad_address).is_err());
        assert_eq!(
            config().apply(AclChange::DeleteAccount("nobody".into())),
            Err(AclConfigError::NoSuchAccount("nobody".into()))
        );
    }
}
