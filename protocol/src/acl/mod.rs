//! Access control as RocketMQ's plain ACL defines it, with no I/O and no transport: the model
//! (accounts, permissions, whitelists), the two request signatures RocketMQ clients send, and
//! the decision whether a request may proceed. The remoting server (`raftmq-broker`'s
//! dispatcher) and the gRPC service call the same [`AclConfig::check`] ([`AclConfig::check_grpc`]
//! parses the gRPC `authorization` metadata first); only how they find the
//! resources a request touches differs ([`remoting::needs_of`] for remoting requests).
//!
//! Reading order: [`signature`] (how a request proves who sent it), [`model`] (who may do
//! what, and the decision), [`remoting`] (which topics and groups a remoting request touches).
//!
//! Compatibility notes, each as RocketMQ 4.x's `PlainPermissionManager` does it:
//! - a request from an address in the global whitelist passes without any credentials;
//! - a request naming an account, from an address in that account's whitelist, passes without
//!   a signature check or permission check (the account whitelist trusts the network);
//! - a group's permission is looked up by the group name (RocketMQ keys it by the group's
//!   retry topic `%RETRY%<group>`; a send to a retry topic needs SUB on its group);
//! - an admin account with no topic or group permission listed may use every topic and group;
//! - the `SecurityToken` field is signed with the rest but not checked against anything (it is
//!   RocketMQ's hook for temporary credentials, which RaftMQ does not issue).

pub mod model;
pub mod remoting;
pub mod signature;

pub use model::{
    Account, AccountView, AclChange, AclConfig, AclConfigError, AclView, AddressPattern, Denial,
    Granted, Need, Needs, Perm, Resource,
};
pub use signature::{
    ACCESS_KEY, GRPC_AUTHORIZATION_ALGORITHM, GRPC_DATE_TIME_HEADER, GrpcAuthorization, Proof,
    SECURITY_TOKEN, SIGNATURE, SessionCredentials, SignatureError, sign_remoting,
    sign_remoting_request,
};
