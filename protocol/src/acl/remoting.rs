//! Which topics and groups a remoting request touches, and what it needs on each, as
//! RocketMQ's `PlainAccessResource.parse` maps request codes (sends need PUB on the topic, or
//! SUB on the group for a retry topic; pulls, offsets and heartbeats need SUB on the topic and
//! the group; topic and group administration needs an admin account). Codes not listed need
//! only a valid signature.

use crate::RemotingCommand;
use crate::body::{HeartbeatData, LockBatchRequestBody};
use crate::code::request;
use crate::names::RETRY_GROUP_TOPIC_PREFIX;

use super::model::{Denial, Need, Needs, Resource};
use super::signature::Proof;

/// Requests only an admin account may send (RocketMQ's `Permission.ADMIN_CODE`).
pub fn is_admin_request(code: i32) -> bool {
    matches!(
        code,
        request::UPDATE_AND_CREATE_TOPIC
            | request::UPDATE_AND_CREATE_TOPIC_LIST
            | request::UPDATE_BROKER_CONFIG
            | request::DELETE_TOPIC_IN_BROKER
            | request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP
            | request::DELETE_SUBSCRIPTIONGROUP
    )
}

/// The proof a remoting request carries: its ext fields and body.
pub fn proof_of(request: &RemotingCommand) -> Proof<'_> {
    Proof::Remoting {
        ext_fields: &request.ext_fields,
        body: &request.body,
    }
}

/// A topic as a resource: a retry topic stands for its group.
fn topic_resource(topic: &str) -> Resource {
    match topic.strip_prefix(RETRY_GROUP_TOPIC_PREFIX) {
        Some(group) => Resource::Group(group.to_string()),
        None => Resource::Topic(topic.to_string()),
    }
}

/// What a send to `topic` needs: PUB on a topic, SUB on the group of a retry topic (a
/// consumer sending a message back).
fn send_need(topic: &str) -> (Resource, Need) {
    match topic_resource(topic) {
        group @ Resource::Group(_) => (group, Need::Sub),
        topic @ Resource::Topic(_) => (topic, Need::Pub),
    }
}

fn field<'a>(
    request: &'a RemotingCommand,
    names: &[&str],
    what: &'static str,
) -> Result<&'a str, Denial> {
    names
        .iter()
        .find_map(|name| request.ext_fields.get(*name))
        .map(String::as_str)
        .filter(|value| !value.is_empty())
        .ok_or(Denial::Unresolvable(what))
}

/// What `request` needs. A request that should name a topic or group and does not is denied
/// (the processor would refuse it anyway, and the decision cannot be made without it).
pub fn needs_of(request: &RemotingCommand) -> Result<Needs, Denial> {
    use request::*;
    let mut needs = Needs {
        admin: is_admin_request(request.code),
        resources: Vec::new(),
    };
    match request.code {
        SEND_MESSAGE
        | SEND_MESSAGE_V2
        | SEND_BATCH_MESSAGE
        | SEND_REPLY_MESSAGE
        | SEND_REPLY_MESSAGE_V2 => {
            // The V2 header renames `topic` to `b`.
            let topic = field(request, &["topic", "b"], "topic")?;
            let (resource, need) = send_need(topic);
            needs.add(resource, need);
        }
        CONSUMER_SEND_MSG_BACK => {
            let group = field(request, &["group"], "group")?;
            needs.add(Resource::Group(group.to_string()), Need::Sub);
        }
        PULL_MESSAGE
        | LITE_PULL_MESSAGE
        | UPDATE_CONSUMER_OFFSET
        | QUERY_CONSUMER_OFFSET
        | POP_MESSAGE
        | ACK_MESSAGE
        | CHANGE_MESSAGE_INVISIBLETIME
        | NOTIFICATION => {
            let topic = field(request, &["topic"], "topic")?;
            let group = field(request, &["consumerGroup"], "group")?;
            needs.add(topic_resource(topic), Need::Sub);
            needs.add(Resource::Group(group.to_string()), Need::Sub);
        }
        QUERY_MESSAGE => {
            let topic = field(request, &["topic"], "topic")?;
            needs.add(topic_resource(topic), Need::Sub);
        }
        HEART_BEAT => {
            let heartbeat = HeartbeatData::decode(&request.body)
                .map_err(|_| Denial::Unresolvable("heartbeat body"))?;
            for consumer in &heartbeat.consumer_data_set {
                needs.add(Resource::Group(consumer.group_name.clone()), Need::Sub);
                for subscription in &consumer.subscription_data_set {
                    needs.add(topic_resource(&subscription.topic), Need::Sub);
                }
            }
        }
        UNREGISTER_CLIENT => {
            if let Ok(group) = field(request, &["consumerGroup"], "group") {
                needs.add(Resource::Group(group.to_string()), Need::Sub);
            }
        }
        GET_CONSUMER_LIST_BY_GROUP => {
            let group = field(request, &["consumerGroup"], "group")?;
            needs.add(Resource::Group(group.to_string()), Need::Sub);
        }
        BATCH_ACK_MESSAGE => {
            let body: crate::body::BatchAckMessageRequestBody =
                serde_json::from_slice(&request.body)
                    .map_err(|_| Denial::Unresolvable("batch ack body"))?;
            for ack in body.acks {
                needs.add(topic_resource(&ack.topic), Need::Sub);
                needs.add(Resource::Group(ack.consumer_group), Need::Sub);
            }
        }
        LOCK_BATCH_MQ | UNLOCK_BATCH_MQ => {
            let body = LockBatchRequestBody::decode(&request.body)
                .map_err(|_| Denial::Unresolvable("lock request body"))?;
            needs.add(Resource::Group(body.consumer_group), Need::Sub);
        }
        _ => {}
    }
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::body::{ConsumerData, SubscriptionData};

    fn request(code: i32, fields: &[(&str, &str)], body: Vec<u8>) -> RemotingCommand {
        let mut command = RemotingCommand::new_request(code);
        command.ext_fields = fields
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect::<BTreeMap<_, _>>();
        command.body = Bytes::from(body);
        command
    }

    #[test]
    fn pop_requests_need_sub_on_their_topic_and_group() {
        for code in [
            request::POP_MESSAGE,
            request::ACK_MESSAGE,
            request::CHANGE_MESSAGE_INVISIBLETIME,
            request::NOTIFICATION,
        ] {
            let pop = request(code, &[("topic", "Orders"), ("consumerGroup", "g")], vec![]);
            let needs = needs_of(&pop).unwrap();
            assert!(!needs.admin);
            assert!(
                needs.resources.contains(&(topic("Orders"), Need::Sub)),
                "{code}"
            );
            assert!(needs.resources.contains(&(group("g"), Need::Sub)), "{code}");
        }
        let body = br#"{"brokerName":"b","acks":[{"consumerGroup":"g2","topic":"T2","retry":"0","startOffset":1,"queueId":0,"reviveQueueId":0,"popTime":1,"invisibleTime":1000,"bitSet":"AQ=="}]}"#;
        let batch = request(request::BATCH_ACK_MESSAGE, &[], body.to_vec());
        let needs = needs_of(&batch).unwrap();
        assert!(needs.resources.contains(&(topic("T2"), Need::Sub)));
        assert!(needs.resources.contains(&(group("g2"), Need::Sub)));
        let garbage = request(request::BATCH_ACK_MESSAGE, &[], b"not json".to_vec());
        assert!(needs_of(&garbage).is_err());
    }

    fn topic(name: &str) -> Resource {
        Resource::Topic(name.into())
    }
    fn group(name: &str) -> Resource {
        Resource::Group(name.into())
    }

    #[test]
    fn sends_need_pub_on_the_topic_or_sub_on_a_retry_topics_group() {
        let v1 = needs_of(&request(
            request::SEND_MESSAGE,
            &[("topic", "orders")],
            vec![],
        ))
        .unwrap();
        assert_eq!(v1.resources, vec![(topic("orders"), Need::Pub)]);
        let v2 = needs_of(&request(
            request::SEND_MESSAGE_V2,
            &[("b", "orders")],
            vec![],
        ))
        .unwrap();
        assert_eq!(v2.resources, vec![(topic("orders"), Need::Pub)]);
        let retry = needs_of(&request(
            request::SEND_MESSAGE_V2,
            &[("b", "%RETRY%billing")],
            vec![],
        ))
        .unwrap();
        assert_eq!(retry.resources, vec![(group("billing"), Need::Sub)]);
        assert_eq!(
            needs_of(&request(request::SEND_MESSAGE, &[], vec![])),
            Err(Denial::Unresolvable("topic"))
        );
    }

    #[test]
    fn pulls_offsets_and_heartbeats_need_sub_on_topic_and_group() {
        let pull = needs_of(&request(
            request::PULL_MESSAGE,
            &[("topic", "orders"), ("consumerGroup", "billing")],
            vec![],
        ))
        .unwrap();
        assert_eq!(
            pull.resources,
            vec![(topic("orders"), Need::Sub), (group("billing"), Need::Sub)]
        );
        assert!(!pull.admin);
        let heartbeat = HeartbeatData {
            client_id: "c".into(),
            producer_data_set: vec![],
            consumer_data_set: vec![ConsumerData {
                group_name: "billing".into(),
                subscription_data_set: vec![
                    SubscriptionData {
                        topic: "orders".into(),
                        ..SubscriptionData::default()
                    },
                    SubscriptionData {
                        topic: "%RETRY%billing".into(),
                        ..SubscriptionData::default()
                    },
                ],
                ..ConsumerData::default()
            }],
        };
        let needs = needs_of(&request(
            request::HEART_BEAT,
            &[],
            heartbeat.encode().unwrap(),
        ))
        .unwrap();
        assert_eq!(
            needs.resources,
            vec![(group("billing"), Need::Sub), (topic("orders"), Need::Sub)]
        );
        assert_eq!(
            needs_of(&request(request::HEART_BEAT, &[], b"not json".to_vec())),
            Err(Denial::Unresolvable("heartbeat body"))
        );
    }

    #[test]
    fn topic_administration_needs_admin() {
        for code in [
            request::UPDATE_AND_CREATE_TOPIC,
            request::DELETE_TOPIC_IN_BROKER,
        ] {
            assert!(
                needs_of(&request(code, &[("topic", "t")], vec![]))
                    .unwrap()
                    .admin
            );
        }
        assert!(
            !needs_of(&request(request::GET_MAX_OFFSET, &[("topic", "t")], vec![]))
                .unwrap()
                .admin
        );
    }
}
