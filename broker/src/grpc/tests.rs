//! The MessagingService on a real 3-member group in one process: routes, settings, sends
//! through a follower across a leader change, transactions with a check-back, and bad input.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::pb::{self, Code, MessageType, MessagingServiceClient, telemetry_command::Command};
use crate::testing::{TestGroup, wait_until};

mod acl;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

async fn client(addr: std::net::SocketAddr) -> Result<MessagingServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(MessagingServiceClient::new(channel))
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CLIENT_TIMEOUT);
    request
        .metadata_mut()
        .insert("x-mq-client-id", "test-client@1".parse().unwrap());
    request
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

fn message(topic: &str, id: &str, body: &[u8], message_type: MessageType) -> pb::Message {
    pb::Message {
        topic: resource(topic),
        user_properties: [("k".to_string(), "v".to_string())].into(),
        system_properties: Some(pb::SystemProperties {
            tag: Some("TagA".into()),
            keys: vec!["key1".into()],
            message_id: id.into(),
            message_type: message_type as i32,
            ..pb::SystemProperties::default()
        }),
        body: body.to_vec(),
    }
}

async fn send(
    client: &mut MessagingServiceClient<Channel>,
    message: pb::Message,
) -> Result<pb::SendResultEntry> {
    let answer = client
        .send_message(request(pb::SendMessageRequest {
            messages: vec![message],
        }))
        .await?
        .into_inner();
    answer
        .entries
        .into_iter()
        .next()
        .context("a send answered no entry")
}

fn code_of(status: &Option<pb::Status>) -> i32 {
    status.as_ref().map_or(0, |status| status.code)
}

/// Messages stored in a topic's queues, as the member's applied state counts them.
fn stored_count(member: &crate::testing::TestMember, topic: &str) -> u64 {
    let Some(config) = member.ctx.state.topic(topic) else {
        return 0;
    };
    (0..config.queue_nums())
        .map(|queue| member.ctx.state.queue(topic, queue).next_offset)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_through_a_follower_survive_a_leader_change_and_are_stored_once() -> Result<()> {
    let mut group = TestGroup::start(3).await?;
    let leader = group.wait_for_leader().await?;
    let (follower, _) = group.others(leader).next().context("no follower")?;
    let mut to_follower = client(group.member(follower).grpc).await?;

    // The route names the member asked, and writable queues of broker id 0.
    let route = to_follower
        .query_route(request(pb::QueryRouteRequest {
            topic: resource("GrpcTopic"),
            endpoints: None,
        }))
        .await?
        .into_inner();
    assert_eq!(code_of(&route.status), Code::Ok as i32);
    assert_eq!(route.message_queues.len(), 8);
    let queue = &route.message_queues[0];
    assert_eq!(queue.permission, pb::Permission::ReadWrite as i32);
    let broker = queue.broker.as_ref().context("no broker")?;
    assert_eq!(broker.id, 0);
    let addresses = &broker.endpoints.as_ref().context("no endpoints")?.addresses;
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert_eq!(
        addresses[0].port,
        i32::from(group.member(follower).grpc.port())
    );

    const BEFORE: usize = 40;
    const AFTER: usize = 40;
    for i in 0..BEFORE {
        let entry = send(
            &mut to_follower,
            message("GrpcTopic", &format!("ID-{i}"), b"x", MessageType::Normal),
        )
        .await?;
        assert_eq!(code_of(&entry.status), Code::Ok as i32, "{entry:?}");
        assert_eq!(entry.message_id, format!("ID-{i}"));
    }
    // A retried send (same message id) is stored once.
    let again = send(
        &mut to_follower,
        message("GrpcTopic", "ID-0", b"x", MessageType::Normal),
    )
    .await?;
    assert_eq!(code_of(&again.status), Code::Ok as i32);

    // The leader goes; the follower's clients keep sending, and the follower finds the new one.
    group.stop_member(leader).await?;
    let started = std::time::Instant::now();
    for i in BEFORE..BEFORE + AFTER {
        let entry = send(
            &mut to_follower,
            message("GrpcTopic", &format!("ID-{i}"), b"x", MessageType::Normal),
        )
        .await?;
        assert_eq!(code_of(&entry.status), Code::Ok as i32, "{entry:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let new_leader = group.wait_for_leader().await?;
    let total = (BEFORE + AFTER) as u64;
    wait_until("every send stored once on the new leader", || {
        (stored_count(group.member(new_leader), "GrpcTopic") == total).then_some(())
    })
    .await?;
    group.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_code_never_a_panic() -> Result<()> {
    let group = TestGroup::start_with(1, |options| options.max_message_bytes = Some(1024)).await?;
    let leader = group.wait_for_leader().await?;
    let mut to_leader = client(group.member(leader).grpc).await?;

    let no_topic = send(&mut to_leader, message("", "A", b"x", MessageType::Normal)).await?;
    assert_eq!(code_of(&no_topic.status), Code::IllegalTopic as i32);
    let too_big = send(
        &mut to_leader,
        message("T", "B", &[0; 2048], MessageType::Normal),
    )
    .await?;
    assert_eq!(code_of(&too_big.status), Code::MessageBodyTooLarge as i32);
    let mut reserved = message("T", "C", b"x", MessageType::Normal);
    reserved
        .user_properties
        .insert("UNIQ_KEY".into(), "mine".into());
    let reserved = send(&mut to_leader, reserved).await?;
    assert_eq!(
        code_of(&reserved.status),
        Code::IllegalMessagePropertyKey as i32
    );
    let mut no_id = message("T", "", b"x", MessageType::Normal);
    no_id.system_properties.as_mut().unwrap().message_id.clear();
    assert_eq!(
        code_of(&send(&mut to_leader, no_id).await?.status),
        Code::IllegalMessageId as i32
    );
    let mut bad_name = message("T", "D", b"x", MessageType::Normal);
    bad_name.topic = resource("no spaces allowed");
    assert_ne!(
        code_of(&send(&mut to_leader, bad_name).await?.status),
        Code::Ok as i32
    );
    let empty = to_leader
        .send_message(request(pb::SendMessageRequest { messages: vec![] }))
        .await?
        .into_inner();
    assert_eq!(code_of(&empty.status), Code::BadRequest as i32);

    let route = to_leader
        .query_route(request(pb::QueryRouteRequest::default()))
        .await?
        .into_inner();
    assert_eq!(code_of(&route.status), Code::BadRequest as i32);
    let end = to_leader
        .end_transaction(request(pb::EndTransactionRequest {
            topic: resource("T"),
            transaction_id: "not-an-id".into(),
            resolution: pb::TransactionResolution::Commit as i32,
            ..pb::EndTransactionRequest::default()
        }))
        .await?
        .into_inner();
    assert_eq!(code_of(&end.status), Code::InvalidTransactionId as i32);
    let offset = to_leader
        .get_offset(request(pb::GetOffsetRequest::default()))
        .await?
        .into_inner();
    assert_eq!(code_of(&offset.status), Code::BadRequest as i32);
    // Nothing was stored by any of it.
    assert_eq!(stored_count(group.member(leader), "T"), 0);
    group.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_commit_and_an_orphan_is_checked_back_on_the_telemetry_stream() -> Result<()> {
    let group = TestGroup::start_with(1, |options| {
        options.transaction_timeout_ms = Some(300);
        options.transaction_check_interval_ms = Some(300);
    })
    .await?;
    let leader = group.wait_for_leader().await?;
    let mut to_leader = client(group.member(leader).grpc).await?;

    // Telemetry: the server answers the producer's settings at once.
    let (settings_sender, mut telemetry, first) =
        producer_telemetry(&mut to_leader, "TxTopic").await?;
    assert_eq!(code_of(&first.status), Code::Ok as i32);
    let Some(Command::Settings(settings)) = first.command else {
        bail!("the first answer is not settings: {first:?}");
    };
    let Some(pb::settings::PubSub::Publishing(publishing)) = settings.pub_sub else {
        bail!("no publishing settings");
    };
    assert_eq!(publishing.max_body_size, 4 << 20);

    // Committed at once: the message reaches its topic.
    let half = send(
        &mut to_leader,
        message("TxTopic", "TX-1", b"a", MessageType::Transaction),
    )
    .await?;
    assert_eq!(code_of(&half.status), Code::Ok as i32, "{half:?}");
    assert_eq!(
        stored_count(group.member(leader), "TxTopic"),
        0,
        "a half message is not visible"
    );
    let end = to_leader
        .end_transaction(request(pb::EndTransactionRequest {
            topic: resource("TxTopic"),
            message_id: "TX-1".into(),
            transaction_id: half.transaction_id.clone(),
            resolution: pb::TransactionResolution::Commit as i32,
            source: pb::TransactionSource::SourceClient as i32,
            trace_context: String::new(),
        }))
        .await?
        .into_inner();
    assert_eq!(code_of(&end.status), Code::Ok as i32, "{end:?}");
    assert_eq!(stored_count(group.member(leader), "TxTopic"), 1);

    // Left pending: the broker asks the producer on its Telemetry stream, which commits.
    let orphan = send(
        &mut to_leader,
        message("TxTopic", "TX-2", b"b", MessageType::Transaction),
    )
    .await?;
    let check = loop {
        let command = tokio::time::timeout(CLIENT_TIMEOUT, telemetry.next())
            .await?
            .context("the telemetry stream ended")??;
        if let Some(Command::RecoverOrphanedTransactionCommand(check)) = command.command {
            break check;
        }
    };
    assert_eq!(check.transaction_id, orphan.transaction_id);
    let checked = check.message.context("no message in the check")?;
    assert_eq!(checked.system_properties.unwrap().message_id, "TX-2");
    assert_eq!(checked.body, b"b");
    let end = to_leader
        .end_transaction(request(pb::EndTransactionRequest {
            topic: resource("TxTopic"),
            message_id: "TX-2".into(),
            transaction_id: check.transaction_id,
            resolution: pb::TransactionResolution::Commit as i32,
            source: pb::TransactionSource::SourceServerCheck as i32,
            trace_context: String::new(),
        }))
        .await?
        .into_inner();
    assert_eq!(code_of(&end.status), Code::Ok as i32);
    assert_eq!(stored_count(group.member(leader), "TxTopic"), 2);
    drop(settings_sender);
    group.shutdown().await
}

/// Opens a producer's Telemetry stream publishing `topic` and returns it with the server's
/// first answer, its settings (and the sender, which keeps the stream open while it lives).
async fn producer_telemetry(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
) -> Result<(
    tokio::sync::mpsc::Sender<pb::TelemetryCommand>,
    tonic::Streaming<pb::TelemetryCommand>,
    pb::TelemetryCommand,
)> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender
        .send(pb::TelemetryCommand {
            status: None,
            command: Some(Command::Settings(pb::Settings {
                client_type: Some(pb::ClientType::Producer as i32),
                pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                    topics: vec![resource(topic).unwrap()],
                    max_body_size: 0,
                    validate_message_type: false,
                })),
                ..pb::Settings::default()
            })),
        })
        .await?;
    let mut stream = client
        .telemetry(request(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
        .await?
        .into_inner();
    let first = tokio::time::timeout(CLIENT_TIMEOUT, stream.next())
        .await?
        .context("the telemetry stream ended")??;
    assert!(
        matches!(first.command, Some(Command::Settings(_))),
        "{first:?}"
    );
    Ok((sender, stream, first))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_on_a_follower_is_checked_back_and_its_answer_reaches_the_leader() -> Result<()>
{
    let group = TestGroup::start_with(3, |options| {
        options.transaction_timeout_ms = Some(300);
        options.transaction_check_interval_ms = Some(300);
    })
    .await?;
    let leader = group.wait_for_leader().await?;
    let (follower, _) = group.others(leader).next().context("no follower")?;
    let mut to_follower = client(group.member(follower).grpc).await?;
    let (_keep_open, mut telemetry, _settings) =
        producer_telemetry(&mut to_follower, "TxFollower").await?;

    let orphan = send(
        &mut to_follower,
        message("TxFollower", "TX-F", b"f", MessageType::Transaction),
    )
    .await?;
    assert_eq!(code_of(&orphan.status), Code::Ok as i32, "{orphan:?}");
    let check = loop {
        let command = tokio::time::timeout(CLIENT_TIMEOUT, telemetry.next())
            .await?
            .context("the telemetry stream ended")??;
        if let Some(Command::RecoverOrphanedTransactionCommand(check)) = command.command {
            break check;
        }
    };
    assert_eq!(check.transaction_id, orphan.transaction_id);
    let end = to_follower
        .end_transaction(request(pb::EndTransactionRequest {
            topic: resource("TxFollower"),
            message_id: "TX-F".into(),
            transaction_id: check.transaction_id,
            resolution: pb::TransactionResolution::Commit as i32,
            source: pb::TransactionSource::SourceServerCheck as i32,
            trace_context: String::new(),
        }))
        .await?
        .into_inner();
    assert_eq!(code_of(&end.status), Code::Ok as i32, "{end:?}");
    wait_until("the committed message on the leader", || {
        (stored_count(group.member(leader), "TxFollower") == 1).then_some(())
    })
    .await?;
    group.shutdown().await
}

fn duration_ms(ms: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// What one ReceiveMessage answered: its status, its messages, whether it ended with a
/// delivery timestamp.
struct Received {
    status: i32,
    messages: Vec<pb::Message>,
    delivery_timestamp: bool,
}

async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    invisible_ms: u64,
    timeout: Duration,
) -> Result<Received> {
    let mut call = request(pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            id: -1,
            ..pb::MessageQueue::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 32,
        invisible_duration: duration_ms(invisible_ms),
        auto_renew: false,
        long_polling_timeout: duration_ms(20_000),
        attempt_id: None,
    });
    call.set_timeout(timeout);
    let mut stream = client.receive_message(call).await?.into_inner();
    let mut received = Received {
        status: 0,
        messages: Vec::new(),
        delivery_timestamp: false,
    };
    while let Some(item) = stream.next().await {
        match item?.content.context("an empty receive item")? {
            pb::receive_message_response::Content::Status(status) => received.status = status.code,
            pb::receive_message_response::Content::Message(message) => {
                received.messages.push(message)
            }
            pb::receive_message_response::Content::DeliveryTimestamp(_) => {
                received.delivery_timestamp = true
            }
        }
    }
    Ok(received)
}

fn system(message: &pb::Message) -> &pb::SystemProperties {
    message
        .system_properties
        .as_ref()
        .expect("system properties")
}

async fn ack(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    handles: &[String],
) -> Result<pb::AckMessageResponse> {
    Ok(client
        .ack_message(request(pb::AckMessageRequest {
            group: resource(group),
            topic: resource(topic),
            entries: handles
                .iter()
                .map(|handle| pb::AckMessageEntry {
                    message_id: String::new(),
                    receipt_handle: handle.clone(),
                    lite_topic: None,
                })
                .collect(),
        }))
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pop_over_grpc_through_a_follower_survives_a_leader_change() -> Result<()> {
    const TOPIC: &str = "GrpcPopTopic";
    const GROUP: &str = "GrpcPopGroup";
    const SENT: usize = 12;
    const INVISIBLE_MS: u64 = 3_000;
    let mut group = TestGroup::start(3).await?;
    let leader = group.wait_for_leader().await?;
    let (follower, _) = group.others(leader).next().context("no follower")?;
    let mut to_follower = client(group.member(follower).grpc).await?;
    for i in 0..SENT {
        let entry = send(
            &mut to_follower,
            message(
                TOPIC,
                &format!("POP-{i}"),
                format!("body-{i}").as_bytes(),
                MessageType::Normal,
            ),
        )
        .await?;
        assert_eq!(code_of(&entry.status), Code::Ok as i32, "{entry:?}");
    }

    // Everything is handed out once, with the fields the clients read.
    let mut first: Vec<pb::Message> = Vec::new();
    for _ in 0..SENT {
        if first.len() == SENT {
            break;
        }
        let got = receive(&mut to_follower, GROUP, TOPIC, INVISIBLE_MS, CLIENT_TIMEOUT).await?;
        assert_eq!(got.status, Code::Ok as i32);
        assert!(got.delivery_timestamp);
        first.extend(got.messages);
    }
    assert_eq!(first.len(), SENT);
    let mut ids: Vec<String> = first.iter().map(|m| system(m).message_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), SENT, "{ids:?}");
    for message in &first {
        let system = system(message);
        assert!(system.message_id.starts_with("POP-"));
        assert_eq!(system.delivery_attempt, Some(1));
        assert_eq!(
            message.body,
            format!("body-{}", &system.message_id[4..]).into_bytes()
        );
        assert_eq!(
            system.body_digest.as_ref().map(|d| d.checksum.clone()),
            Some(super::send::md5_hex(&message.body))
        );
        assert_eq!(system.body_encoding, pb::Encoding::Identity as i32);
        assert_eq!(system.tag.as_deref(), Some("TagA"));
        assert_eq!(system.keys, vec!["key1".to_string()]);
        assert!(
            system
                .receipt_handle
                .as_deref()
                .is_some_and(|h| !h.is_empty())
        );
        assert!(system.store_timestamp.is_some() && system.queue_offset.is_some());
    }
    let handle = |i: usize| system(&first[i]).receipt_handle.clone().unwrap();
    let id = |i: usize| system(&first[i]).message_id.clone();

    // Acks: 0..4 acked; a garbage handle is INVALID_RECEIPT_HANDLE for its entry only.
    let mut handles: Vec<String> = (0..4).map(handle).collect();
    handles.push("not a handle".into());
    let acked = ack(&mut to_follower, GROUP, TOPIC, &handles).await?;
    assert_eq!(code_of(&acked.status), Code::MultipleResults as i32);
    for entry in &acked.entries[..4] {
        assert_eq!(code_of(&entry.status), Code::Ok as i32, "{entry:?}");
    }
    assert_eq!(
        code_of(&acked.entries[4].status),
        Code::InvalidReceiptHandle as i32
    );
    // 4 is kept invisible for a minute; its old handle is stale from then on.
    let changed = to_follower
        .change_invisible_duration(request(pb::ChangeInvisibleDurationRequest {
            group: resource(GROUP),
            topic: resource(TOPIC),
            receipt_handle: handle(4),
            invisible_duration: duration_ms(60_000),
            message_id: id(4),
            ..pb::ChangeInvisibleDurationRequest::default()
        }))
        .await?
        .into_inner();
    assert_eq!(code_of(&changed.status), Code::Ok as i32, "{changed:?}");
    assert_ne!(changed.receipt_handle, handle(4));
    let stale = ack(&mut to_follower, GROUP, TOPIC, &[handle(4)]).await?;
    assert_eq!(code_of(&stale.status), Code::InvalidReceiptHandle as i32);

    // The leader goes while 4..12 are in flight.
    group.stop_member(leader).await?;
    // The old leader's handles work on the new one: 4 is acked, 5 dead-lettered.
    let acked = ack(
        &mut to_follower,
        GROUP,
        TOPIC,
        std::slice::from_ref(&changed.receipt_handle),
    )
    .await?;
    assert_eq!(code_of(&acked.status), Code::Ok as i32, "{acked:?}");
    let dead = to_follower
        .forward_message_to_dead_letter_queue(request(pb::ForwardMessageToDeadLetterQueueRequest {
            group: resource(GROUP),
            topic: resource(TOPIC),
            receipt_handle: handle(5),
            message_id: id(5),
            delivery_attempt: 1,
            max_delivery_attempts: 17,
            lite_topic: None,
        }))
        .await?
        .into_inner();
    assert_eq!(code_of(&dead.status), Code::Ok as i32, "{dead:?}");

    // 6..12 were never acked: they come back, attempt 2, and nothing acked does.
    let expected: std::collections::BTreeSet<String> = (6..SENT).map(id).collect();
    let mut again: std::collections::BTreeMap<String, String> = Default::default();
    let started = std::time::Instant::now();
    while again.len() < expected.len() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("only {again:?} came back");
        }
        let got = receive(&mut to_follower, GROUP, TOPIC, INVISIBLE_MS, CLIENT_TIMEOUT).await?;
        for message in got.messages {
            let system = system(&message);
            assert!(
                expected.contains(&system.message_id),
                "{} came back after an ack or dead-lettering",
                system.message_id
            );
            assert_eq!(system.delivery_attempt, Some(2), "{}", system.message_id);
            again.insert(
                system.message_id.clone(),
                system.receipt_handle.clone().unwrap(),
            );
        }
    }
    let handles: Vec<String> = again.values().cloned().collect();
    let acked = ack(&mut to_follower, GROUP, TOPIC, &handles).await?;
    assert_eq!(code_of(&acked.status), Code::Ok as i32, "{acked:?}");

    // Nothing is left: an empty poll is MESSAGE_NOT_FOUND, answered before the call's deadline.
    let polled = std::time::Instant::now();
    let empty = receive(
        &mut to_follower,
        GROUP,
        TOPIC,
        INVISIBLE_MS,
        Duration::from_secs(2),
    )
    .await?;
    assert_eq!(empty.status, Code::MessageNotFound as i32);
    assert!(empty.messages.is_empty());
    assert!(
        polled.elapsed() < Duration::from_secs(2),
        "{:?}",
        polled.elapsed()
    );

    let new_leader = group.wait_for_leader().await?;
    wait_until("the dead-lettered message stored in the DLQ", || {
        (stored_count(group.member(new_leader), &format!("%DLQ%{GROUP}")) == 1).then_some(())
    })
    .await?;
    group.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receiving_per_queue_through_a_follower_misses_nothing_across_a_leader_change() -> Result<()>
{
    const TOPIC: &str = "GrpcPopQueues";
    const GROUP: &str = "GrpcPopQueuesGroup";
    const SENT: usize = 400;
    let mut group = TestGroup::start(3).await?;
    let leader = group.wait_for_leader().await?;
    let (follower, _) = group.others(leader).next().context("no follower")?;
    let mut to_follower = client(group.member(follower).grpc).await?;
    for i in 0..SENT {
        let entry = send(
            &mut to_follower,
            message(TOPIC, &format!("Q-{i}"), b"x", MessageType::Normal),
        )
        .await?;
        assert_eq!(code_of(&entry.status), Code::Ok as i32, "{entry:?}");
    }
    let mut consumed = std::collections::BTreeSet::new();
    let mut stopped = false;
    let started = std::time::Instant::now();
    let mut round = 0i32;
    while consumed.len() < SENT {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("only {} consumed", consumed.len());
        }
        if !stopped && consumed.len() >= SENT / 3 {
            group.stop_member(leader).await?;
            stopped = true;
        }
        let mut call = request(pb::ReceiveMessageRequest {
            group: resource(GROUP),
            message_queue: Some(pb::MessageQueue {
                topic: resource(TOPIC),
                id: round % 8,
                ..pb::MessageQueue::default()
            }),
            batch_size: 8,
            invisible_duration: duration_ms(5_000),
            long_polling_timeout: duration_ms(5_000),
            ..pb::ReceiveMessageRequest::default()
        });
        round += 1;
        call.set_timeout(Duration::from_secs(3));
        let Ok(answer) = to_follower.receive_message(call).await else {
            continue;
        };
        let mut stream = answer.into_inner();
        let mut handles = Vec::new();
        let mut ids = Vec::new();
        while let Some(Ok(item)) = stream.next().await {
            if let Some(pb::receive_message_response::Content::Message(message)) = item.content {
                ids.push(system(&message).message_id.clone());
                handles.push(system(&message).receipt_handle.clone().unwrap());
            }
        }
        if handles.is_empty() {
            continue;
        }
        let acked = ack(&mut to_follower, GROUP, TOPIC, &handles).await?;
        if code_of(&acked.status) == Code::Ok as i32 {
            consumed.extend(ids);
        }
    }
    group.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tls_a_follower_forwards_sends_to_the_leader_and_plaintext_is_refused() -> Result<()> {
    use raftmq_tls::TlsMode;
    use raftmq_tls::test_certs::TestCa;

    let certs = tempfile::tempdir()?;
    let ca = TestCa::new("cluster");
    let member = ca.issue(certs.path(), "member");
    let ca_file = ca.write_ca(certs.path());
    let group = TestGroup::start_with(3, |options| {
        options.tls_mode = Some(TlsMode::Enforcing);
        options.tls_cert = Some(member.cert.clone());
        options.tls_key = Some(member.key.clone());
        options.tls_ca = Some(ca_file.clone());
    })
    .await?;
    let leader = group.wait_for_leader().await?;
    let (follower, _) = group.others(leader).next().context("no follower")?;
    let addr = group.member(follower).grpc;

    // A 5.x client trusting the cluster's CA (no client certificate: clients need none).
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(&ca_file)?),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr} over TLS"))?;
    let mut to_follower = MessagingServiceClient::new(channel);
    for i in 0..10 {
        let entry = send(
            &mut to_follower,
            message("TlsTopic", &format!("TLS-{i}"), b"x", MessageType::Normal),
        )
        .await?;
        assert_eq!(code_of(&entry.status), Code::Ok as i32, "{entry:?}");
    }
    wait_until("the sends stored on the leader", || {
        (stored_count(group.member(leader), "TlsTopic") == 10).then_some(())
    })
    .await?;

    // Plaintext HTTP/2 to the same port gets nowhere.
    let plaintext = async {
        let mut client = client(addr).await?;
        send(
            &mut client,
            message("TlsTopic", "PLAIN", b"x", MessageType::Normal),
        )
        .await
    };
    assert!(
        tokio::time::timeout(CLIENT_TIMEOUT, plaintext)
            .await
            .map_or(true, |sent| sent.is_err()),
        "a plaintext gRPC client was served"
    );
    group.shutdown().await
}

/// Issue 15: a SimpleConsumer names a queue in each receive (the Python client a random one).
/// A receive naming an empty queue must hand out what another queue holds, at once, not wait
/// out its long poll with MESSAGE_NOT_FOUND while the queue holding messages waits to be
/// named; also on the new leader after the old one stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receive_naming_an_empty_queue_gets_the_messages_of_another() -> Result<()> {
    const TOPIC: &str = "GrpcPopOneQueue";
    const GROUP: &str = "GrpcPopOneQueueGroup";
    const SENT: usize = 40;
    const LONG_POLL_MS: u64 = 4_000;
    let mut group = TestGroup::start(3).await?;
    let leader = group.wait_for_leader().await?;
    let (follower, _) = group.others(leader).next().context("no follower")?;
    let mut to_follower = client(group.member(follower).grpc).await?;
    // One message group: every message lands in one queue.
    for i in 0..SENT {
        let mut one = message(TOPIC, &format!("ONE-{i}"), b"x", MessageType::Fifo);
        if let Some(system) = one.system_properties.as_mut() {
            system.message_group = Some("the-only-group".into());
        }
        let entry = send(&mut to_follower, one).await?;
        assert_eq!(code_of(&entry.status), Code::Ok as i32, "{entry:?}");
    }
    let full = (0..8u32)
        .find(|queue| {
            group
                .member(leader)
                .ctx
                .state
                .queue(TOPIC, *queue)
                .next_offset
                > 0
        })
        .context("no queue holds the messages")?;
    let empty = ((full + 1) % 8) as i32;
    let mut consumed = std::collections::BTreeSet::new();
    let mut stopped = false;
    for _ in 0..2 * SENT {
        if consumed.len() >= SENT {
            break;
        }
        if !stopped && consumed.len() >= SENT / 2 {
            group.stop_member(leader).await?;
            stopped = true;
        }
        let mut call = request(pb::ReceiveMessageRequest {
            group: resource(GROUP),
            message_queue: Some(pb::MessageQueue {
                topic: resource(TOPIC),
                id: empty,
                ..pb::MessageQueue::default()
            }),
            batch_size: 8,
            invisible_duration: duration_ms(30_000),
            long_polling_timeout: duration_ms(LONG_POLL_MS),
            ..pb::ReceiveMessageRequest::default()
        });
        call.set_timeout(Duration::from_millis(LONG_POLL_MS + 3_000));
        let asked = std::time::Instant::now();
        let mut stream = to_follower.receive_message(call).await?.into_inner();
        let mut handles = Vec::new();
        let mut ids = Vec::new();
        let mut status = 0;
        while let Some(item) = stream.next().await {
            match item?.content {
                Some(pb::receive_message_response::Content::Message(message)) => {
                    assert_eq!(system(&message).queue_id, full as i32);
                    ids.push(system(&message).message_id.clone());
                    handles.push(system(&message).receipt_handle.clone().unwrap());
                }
                Some(pb::receive_message_response::Content::Status(answer)) => status = answer.code,
                _ => {}
            }
        }
        assert_eq!(
            status,
            Code::Ok as i32,
            "a receive naming empty queue {empty} while queue {full} holds {} messages",
            SENT - consumed.len()
        );
        assert!(
            asked.elapsed() < Duration::from_millis(LONG_POLL_MS),
            "the receive waited out its long poll: {:?}",
            asked.elapsed()
        );
        let acked = ack(&mut to_follower, GROUP, TOPIC, &handles).await?;
        assert_eq!(code_of(&acked.status), Code::Ok as i32, "{acked:?}");
        consumed.extend(ids);
    }
    assert_eq!(consumed.len(), SENT, "{consumed:?}");
    assert!(stopped, "the leader was never stopped");
    group.shutdown().await
}
