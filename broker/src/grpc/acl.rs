//! ACL on the gRPC MessagingService: the same replicated [`AclConfig`] decision the remoting
//! dispatcher makes, taken for every RPC from its `authorization` and `x-mq-date-time` metadata
//! ([`AclConfig::check_grpc`]) and from what the decoded request names.
//!
//! - What a call needs ([`needs_of`]) depends on its request: PUB on the topic of a send, a
//!   transaction end or a recall; SUB on the topic and the group of the POP and offset calls;
//!   no resource, but an authenticated caller, for route, assignment-free calls, heartbeats,
//!   telemetry and termination notices.
//! - The check runs on the member the client reached, before it forwards anything to the
//!   leader ([`super::forward`]). A forwarded call carries the client's `authorization` and
//!   `x-mq-date-time` (the signature covers only the date), so the leader checks it again; a
//!   client header claiming "forwarded" therefore skips nothing.
//! - A refusal is answered in RocketMQ's `Status`, as definition.proto says: UNAUTHORIZED when
//!   the caller is not authenticated (no or unknown access key, a bad signature or header),
//!   FORBIDDEN when it is but lacks a permission. It is counted in
//!   `raftmq_acl_denied_requests_total{protocol_type="grpc"}` and logged with the RPC, the peer,
//!   the access key and the reason, never the signature. Nothing runs and nothing changes.
//! - Address whitelists match the client's address: the one the checking member sees, or for
//!   a call forwarded by a member of the group, the one that member saw (`whitelist_ip`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use raftmq_protocol::acl::{
    AclConfig, Denial, GRPC_DATE_TIME_HEADER, GrpcAuthorization, Need, Needs, Resource,
};
use tonic::metadata::MetadataMap;

use super::pb::{self, Code};
use crate::context::BrokerContext;

/// The gRPC metadata holding the signature.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// What a call must be allowed to do, from its decoded request.
pub trait AclNeeds {
    fn needs(&self) -> Needs;
}

fn name(resource: Option<&pb::Resource>) -> String {
    resource.map_or_else(String::new, |resource| resource.name.clone())
}

fn topic_and_group(topic: Option<&pb::Resource>, group: Option<&pb::Resource>) -> Needs {
    let mut needs = Needs::default();
    needs.add(Resource::Topic(name(topic)), Need::Sub);
    needs.add(Resource::Group(name(group)), Need::Sub);
    needs
}

fn topic_only(topic: Option<&pb::Resource>, need: Need) -> Needs {
    let mut needs = Needs::default();
    needs.add(Resource::Topic(name(topic)), need);
    needs
}

/// Calls that need an authenticated caller and no permission on a resource.
macro_rules! authenticated_only {
    ($($request:ty),* $(,)?) => {
        $(impl AclNeeds for $request {
            fn needs(&self) -> Needs {
                Needs::default()
            }
        })*
    };
}

authenticated_only!(
    pb::QueryRouteRequest,
    pb::HeartbeatRequest,
    pb::NotifyClientTerminationRequest,
    pb::SyncLiteSubscriptionRequest,
);

impl AclNeeds for pb::SendMessageRequest {
    fn needs(&self) -> Needs {
        let mut needs = Needs::default();
        for message in &self.messages {
            needs.add(Resource::Topic(name(message.topic.as_ref())), Need::Pub);
        }
        needs
    }
}

impl AclNeeds for pb::EndTransactionRequest {
    fn needs(&self) -> Needs {
        topic_only(self.topic.as_ref(), Need::Pub)
    }
}

impl AclNeeds for pb::RecallMessageRequest {
    fn needs(&self) -> Needs {
        topic_only(self.topic.as_ref(), Need::Pub)
    }
}

impl AclNeeds for pb::QueryAssignmentRequest {
    fn needs(&self) -> Needs {
        topic_and_group(self.topic.as_ref(), self.group.as_ref())
    }
}

impl AclNeeds for pb::ReceiveMessageRequest {
    fn needs(&self) -> Needs {
        let topic = queue_topic(self.message_queue.as_ref());
        topic_and_group(topic, self.group.as_ref())
    }
}

impl AclNeeds for pb::AckMessageRequest {
    fn needs(&self) -> Needs {
        topic_and_group(self.topic.as_ref(), self.group.as_ref())
    }
}

impl AclNeeds for pb::ChangeInvisibleDurationRequest {
    fn needs(&self) -> Needs {
        topic_and_group(self.topic.as_ref(), self.group.as_ref())
    }
}

impl AclNeeds for pb::ForwardMessageToDeadLetterQueueRequest {
    fn needs(&self) -> Needs {
        topic_and_group(self.topic.as_ref(), self.group.as_ref())
    }
}

impl AclNeeds for pb::PullMessageRequest {
    fn needs(&self) -> Needs {
        let topic = queue_topic(self.message_queue.as_ref());
        topic_and_group(topic, self.group.as_ref())
    }
}

impl AclNeeds for pb::UpdateOffsetRequest {
    fn needs(&self) -> Needs {
        let topic = queue_topic(self.message_queue.as_ref());
        topic_and_group(topic, self.group.as_ref())
    }
}

impl AclNeeds for pb::GetOffsetRequest {
    fn needs(&self) -> Needs {
        let topic = queue_topic(self.message_queue.as_ref());
        topic_and_group(topic, self.group.as_ref())
    }
}

impl AclNeeds for pb::QueryOffsetRequest {
    fn needs(&self) -> Needs {
        let topic = queue_topic(self.message_queue.as_ref());
        topic_only(topic, Need::Sub)
    }
}

/// The topic a request's message queue names, if it names one.
fn queue_topic(queue: Option<&pb::MessageQueue>) -> Option<&pb::Resource> {
    queue.and_then(|queue| queue.topic.as_ref())
}

/// The `Code` of a refusal: UNAUTHORIZED when the caller is not who it must be, FORBIDDEN when
/// it is but may not do this.
pub fn code_of(denial: &Denial) -> Code {
    match denial {
        Denial::NoAccessKey
        | Denial::UnknownAccount(_)
        | Denial::BadSignature { .. }
        | Denial::BadAuthorization(_) => Code::Unauthorized,
        Denial::NotAdmin(_) | Denial::NoPermission { .. } | Denial::Unresolvable(_) => {
            Code::Forbidden
        }
    }
}

fn header<'a>(metadata: &'a MetadataMap, key: &str) -> Option<&'a str> {
    metadata.get(key).and_then(|value| value.to_str().ok())
}

/// The address IP whitelists are matched against: the caller's; for a call forwarded by a
/// member of this group (the caller's address is one of `members`), the client's address
/// that member saw (`forwarded_for`), so that a client let in by a whitelist can write through
/// any member. From anyone else the header is ignored: a client cannot claim another address
/// with it (unless it runs on a member's host). An unknown peer matches no whitelist but `*`.
fn whitelist_ip(
    peer: Option<SocketAddr>,
    forwarded_for: Option<&str>,
    mut members: impl Iterator<Item = IpAddr>,
) -> IpAddr {
    let Some(peer) = peer else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    let client = forwarded_for.and_then(|value| value.trim().parse::<IpAddr>().ok());
    match client {
        Some(client) if members.any(|member| member == peer.ip()) => client,
        _ => peer.ip(),
    }
}

/// The decision for one call, with what it needs. `Err` holds the status to answer.
pub fn check(
    ctx: &BrokerContext,
    rpc: &'static str,
    metadata: &MetadataMap,
    peer: Option<SocketAddr>,
    needs: &Needs,
) -> Result<(), pb::Status> {
    let enforced = ctx.acl_enforced();
    if !enforced {
        return Ok(());
    }
    let members = ctx.config.grpc_peers.values().map(SocketAddr::ip);
    let forwarded_for = header(metadata, super::forward::FORWARDED_FOR_HEADER);
    let peer_ip = whitelist_ip(peer, forwarded_for, members);
    let authorization = header(metadata, AUTHORIZATION_HEADER);
    let date_time = header(metadata, GRPC_DATE_TIME_HEADER);
    let decision = ctx.state.with_acl(|acl: &AclConfig| {
        acl.check_grpc_with_bootstrap(
            enforced,
            peer_ip,
            authorization,
            date_time,
            needs,
            ctx.config.acl_bootstrap_admin.as_ref(),
        )
    });
    match decision {
        Ok(_) => Ok(()),
        Err(denial) => {
            ctx.metrics.observe_acl_denied("grpc", denial.kind());
            let access_key = authorization
                .and_then(|value| GrpcAuthorization::parse(value).ok())
                .map(|parsed| parsed.access_key)
                .unwrap_or_default();
            tracing::warn!(
                rpc,
                peer = %peer_ip,
                access_key,
                reason = %denial,
                "gRPC call refused by the ACL"
            );
            Err(pb::Status {
                code: code_of(&denial) as i32,
                message: denial.to_string(),
            })
        }
    }
}

/// [`check`] for a call whose needs come from its request.
pub fn check_request<T: AclNeeds>(
    ctx: &BrokerContext,
    rpc: &'static str,
    request: &tonic::Request<T>,
) -> Result<(), pb::Status> {
    check(
        ctx,
        rpc,
        request.metadata(),
        request.remote_addr(),
        &request.get_ref().needs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_protocol::acl::SignatureError;

    fn resource(name: &str) -> Option<pb::Resource> {
        Some(pb::Resource {
            name: name.into(),
            ..pb::Resource::default()
        })
    }

    #[test]
    fn whitelists_see_the_client_behind_a_forwarding_member_only() {
        let member: SocketAddr = "10.0.0.2:8081".parse().unwrap();
        let members = || {
            ["10.0.0.1", "10.0.0.2"]
                .map(|ip| ip.parse::<IpAddr>().unwrap())
                .into_iter()
        };
        let client: IpAddr = "192.168.7.7".parse().unwrap();
        // Forwarded by a member: the client's address.
        assert_eq!(
            whitelist_ip(Some(member), Some("192.168.7.7"), members()),
            client
        );
        // The same header from a client: its own address.
        let outsider: SocketAddr = "192.168.9.9:50000".parse().unwrap();
        assert_eq!(
            whitelist_ip(Some(outsider), Some("10.0.0.1"), members()),
            outsider.ip()
        );
        // A member's own call, and a header that is not an address.
        assert_eq!(whitelist_ip(Some(member), None, members()), member.ip());
        assert_eq!(
            whitelist_ip(Some(member), Some("nonsense"), members()),
            member.ip()
        );
        assert_eq!(
            whitelist_ip(None, Some("192.168.7.7"), members()),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn each_call_needs_what_its_request_names() {
        let send = pb::SendMessageRequest {
            messages: vec![
                pb::Message {
                    topic: resource("A"),
                    ..pb::Message::default()
                },
                pb::Message {
                    topic: resource("B"),
                    ..pb::Message::default()
                },
                pb::Message {
                    topic: resource("A"),
                    ..pb::Message::default()
                },
            ],
        };
        assert_eq!(
            send.needs().resources,
            vec![
                (Resource::Topic("A".into()), Need::Pub),
                (Resource::Topic("B".into()), Need::Pub)
            ]
        );
        let receive = pb::ReceiveMessageRequest {
            group: resource("G"),
            message_queue: Some(pb::MessageQueue {
                topic: resource("T"),
                ..pb::MessageQueue::default()
            }),
            ..pb::ReceiveMessageRequest::default()
        };
        assert_eq!(
            receive.needs().resources,
            vec![
                (Resource::Topic("T".into()), Need::Sub),
                (Resource::Group("G".into()), Need::Sub)
            ]
        );
        let end = pb::EndTransactionRequest {
            topic: resource("T"),
            ..pb::EndTransactionRequest::default()
        };
        assert_eq!(
            end.needs().resources,
            vec![(Resource::Topic("T".into()), Need::Pub)]
        );
        // A request naming nothing still needs its (empty) topic: no account holds that.
        let empty = pb::AckMessageRequest::default().needs();
        assert_eq!(empty.resources.len(), 2);
        assert!(!empty.admin);
        assert_eq!(pb::QueryRouteRequest::default().needs(), Needs::default());
        assert_eq!(pb::HeartbeatRequest::default().needs(), Needs::default());
    }

    #[test]
    fn unauthenticated_callers_and_missing_permissions_get_their_own_codes() {
        for denial in [
            Denial::NoAccessKey,
            Denial::UnknownAccount("x".into()),
            Denial::BadSignature {
                access_key: "x".into(),
                reason: SignatureError::Mismatch,
            },
            Denial::BadAuthorization(SignatureError::NotHex),
        ] {
            assert_eq!(code_of(&denial), Code::Unauthorized, "{denial}");
        }
        for denial in [
            Denial::NotAdmin("x".into()),
            Denial::NoPermission {
                access_key: "x".into(),
                resource: "topic T".into(),
                need: Need::Pub,
            },
        ] {
            assert_eq!(code_of(&denial), Code::Forbidden, "{denial}");
        }
    }
}
