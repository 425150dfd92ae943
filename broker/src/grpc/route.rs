//! QueryRoute and QueryAssignment: a topic's queues on this group, with the endpoints of the
//! member answering ([`group_endpoints`] says why not all members): it forwards writes to the
//! leader ([`super::forward`]), so a leader change is invisible to the client.

use super::pb::{self, AddressScheme, MessageQueue, MessageType, Permission};
use crate::context::BrokerContext;
use crate::error::RequestError;
use crate::topic::{AUTO_CREATE_QUEUE_NUMS, TopicConfig, validate_topic_name};

/// The endpoints of this group in a route: the address of the member answering, which serves
/// every RPC and forwards writes to whichever member leads, so a leader change needs no new
/// route.
///
/// Why not every live member: grpc-core clients (Python, C++, C#, PHP) open one channel for a
/// multi-address endpoints value and send the comma-joined address list as the HTTP/2
/// `:authority` (`a:8081,b:8081`), which the h2 server under tonic refuses as malformed
/// (RST_STREAM PROTOCOL_ERROR on every call). A client that must survive the loss of the member
/// it asked lists several access points itself.
pub fn group_endpoints(ctx: &BrokerContext) -> pb::Endpoints {
    let addr = ctx.config.grpc_advertise;
    let scheme = if addr.is_ipv4() {
        AddressScheme::IPv4
    } else {
        AddressScheme::IPv6
    };
    pb::Endpoints {
        scheme: scheme as i32,
        addresses: vec![pb::Address {
            host: addr.ip().to_string(),
            port: i32::from(addr.port()),
        }],
    }
}

/// The topic a route is asked for: an existing one, or (with auto-creation on) the queues its
/// first send will create.
pub fn route_topic(
    ctx: &BrokerContext,
    topic: Option<&pb::Resource>,
) -> Result<TopicConfig, RequestError> {
    let name = topic.map_or("", |resource| resource.name.as_str());
    if name.is_empty() {
        return Err(RequestError::InvalidParameter(
            "the topic is missing".into(),
        ));
    }
    validate_topic_name(name).map_err(|err| RequestError::InvalidParameter(err.to_string()))?;
    match ctx.state.topic(name) {
        Some(config) => Ok(config),
        None if ctx.config.auto_create_topic => Ok(TopicConfig::new(name, AUTO_CREATE_QUEUE_NUMS)),
        None => Err(RequestError::TopicNotExist(name.to_string())),
    }
}

/// Every queue of a topic on this group, with its permission.
pub fn message_queues(
    ctx: &BrokerContext,
    topic: &TopicConfig,
    resource: &pb::Resource,
) -> Vec<MessageQueue> {
    let broker = pb::Broker {
        name: ctx.config.broker_name.clone(),
        // The master slot: clients send only to queues of broker id 0.
        id: 0,
        endpoints: Some(group_endpoints(ctx)),
    };
    let queue_count = topic.read_queue_nums.max(topic.write_queue_nums);
    (0..queue_count)
        .map(|id| {
            let readable = topic.is_readable() && id < topic.read_queue_nums;
            let writable = topic.is_writable() && id < topic.write_queue_nums;
            let permission = match (readable, writable) {
                (true, true) => Permission::ReadWrite,
                (true, false) => Permission::Read,
                (false, true) => Permission::Write,
                (false, false) => Permission::None,
            };
            MessageQueue {
                topic: Some(resource.clone()),
                id: id as i32,
                permission: permission as i32,
                broker: Some(broker.clone()),
                accept_message_types: vec![
                    MessageType::Normal as i32,
                    MessageType::Fifo as i32,
                    MessageType::Delay as i32,
                    MessageType::Transaction as i32,
                ],
            }
        })
        .collect()
}

pub fn query_route(
    ctx: &BrokerContext,
    request: &pb::QueryRouteRequest,
) -> Result<Vec<MessageQueue>, RequestError> {
    let topic = route_topic(ctx, request.topic.as_ref())?;
    let resource = request.topic.clone().unwrap_or_default();
    Ok(message_queues(ctx, &topic, &resource))
}

/// A push consumer's assignment: as RocketMQ's proxy answers, one queue with id -1 on this
/// group ("pop from any queue") that is readable.
pub fn query_assignment(
    ctx: &BrokerContext,
    request: &pb::QueryAssignmentRequest,
) -> Result<Vec<pb::Assignment>, RequestError> {
    let group = request
        .group
        .as_ref()
        .map_or("", |group| group.name.as_str());
    if group.is_empty() {
        return Err(RequestError::InvalidParameter(
            "the consumer group is missing".into(),
        ));
    }
    let topic = route_topic(ctx, request.topic.as_ref())?;
    if !topic.is_readable() || topic.read_queue_nums == 0 {
        return Ok(Vec::new());
    }
    let resource = request.topic.clone().unwrap_or_default();
    let mut queue = message_queues(ctx, &topic, &resource)
        .into_iter()
        .next()
        .ok_or_else(|| RequestError::Internal("a readable topic has no queue".into()))?;
    queue.id = -1;
    queue.permission = Permission::ReadWrite as i32;
    Ok(vec![pb::Assignment {
        message_queue: Some(queue),
    }])
}
