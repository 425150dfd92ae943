//! Fuzzing the gRPC side: bytes off the wire decoded as each MessagingService request (prost
//! must not panic), and every decoded or deliberately odd request (missing topic or group,
//! garbage receipt handles, huge and negative durations and timestamps, empty or reserved
//! property keys, bad message and transaction ids) run through the same handler the service
//! calls, on a real one-member group: the answer always carries a status, a request that
//! names no topic or group is never OK, and nothing panics.
//!
//! The case count is small in `cargo test`; `scripts/fuzz.sh` runs these (filter `fuzz_grpc`)
//! with `PROPTEST_CASES` in the hundred thousands. A failing case is saved under
//! `proptest-regressions/` beside this file; committed, it is replayed by every `cargo test`.

use std::collections::HashMap;

use anyhow::Result;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use prost::Message as _;

use super::acl::AclNeeds;
use super::pb::{self, Code};
use super::{forward, offset, pop, route, send, settings};
use crate::pop::ReceiptHandle;
use crate::testing::TestGroup;

/// The one topic and group that exist (others are made up, or invalid).
const TOPIC: &str = "FuzzTopic";
const GROUP: &str = "FuzzGroup";

/// The case count: `PROPTEST_CASES` if set (fuzzing runs), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default_cases: u32) -> Config {
    Config {
        cases: cases(default_cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..Config::default()
    }
}

/// Names: the real ones, empty, made up, invalid, and too long.
fn name(real: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(real.to_string()),
        Just(String::new()),
        Just("%DLQ%FuzzGroup".to_string()),
        Just("bad name!".to_string()),
        Just("x".repeat(300)),
        "[a-zA-Z0-9_%|-]{0,12}",
    ]
}

fn resource(real: &'static str) -> impl Strategy<Value = Option<pb::Resource>> {
    proptest::option::of(name(real).prop_map(|name| pb::Resource {
        resource_namespace: String::new(),
        name,
    }))
}

fn duration() -> impl Strategy<Value = Option<prost_types::Duration>> {
    proptest::option::of(
        (
            prop_oneof![any::<i64>(), -5i64..100_000, Just(i64::MAX), Just(i64::MIN)],
            prop_oneof![any::<i32>(), 0i32..1_000_000_000],
        )
            .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
    )
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    proptest::option::of(
        (
            prop_oneof![
                any::<i64>(),
                Just(i64::MAX),
                Just(i64::MIN),
                0i64..4_000_000_000
            ],
            any::<i32>(),
        )
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

/// Receipt handles: garbage, and real-looking ones with odd fields.
fn receipt_handle() -> impl Strategy<Value = String> {
    let made = (
        name(TOPIC),
        any::<u32>(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(
            |(topic, queue_id, offset, pop_ms, invisible_ms, attempt, orderly)| {
                ReceiptHandle {
                    broker_name: "broker-a".into(),
                    topic,
                    queue_id,
                    offset,
                    pop_ms,
                    invisible_ms,
                    attempt,
                    orderly,
                }
                .encode()
            },
        );
    prop_oneof![made, ".{0,64}", Just(String::new())]
}

fn message_queue() -> impl Strategy<Value = Option<pb::MessageQueue>> {
    proptest::option::of(
        (resource(TOPIC), prop_oneof![any::<i32>(), -1i32..9]).prop_map(|(topic, id)| {
            pb::MessageQueue {
                topic,
                id,
                ..pb::MessageQueue::default()
            }
        }),
    )
}

fn properties() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map(
        prop_oneof![
            Just(String::new()),
            Just("UNIQ_KEY".to_string()),
            Just("TAGS".to_string()),
            Just("__STARTDELIVERTIME".to_string()),
            ".{0,8}",
        ],
        ".{0,16}",
        0..4,
    )
}

fn message() -> impl Strategy<Value = pb::Message> {
    let system = (
        proptest::option::of(".{0,8}"),
        proptest::collection::vec(".{0,8}", 0..3),
        prop_oneof![Just(String::new()), ".{1,40}"],
        any::<i32>(),
        proptest::option::of(".{0,8}"),
        timestamp(),
        timestamp(),
    )
        .prop_map(
            |(tag, keys, message_id, message_type, message_group, born, due)| {
                pb::SystemProperties {
                    tag,
                    keys,
                    message_id,
                    message_type,
                    message_group,
                    born_timestamp: born,
                    delivery_timestamp: due,
                    ..pb::SystemProperties::default()
                }
            },
        );
    (
        resource(TOPIC),
        properties(),
        proptest::option::of(system),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(topic, user_properties, system_properties, body)| pb::Message {
                topic,
                user_properties,
                system_properties,
                body,
            },
        )
}

/// One request of any kind, with odd fields (sizes differ; a test input, never stored).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
enum Call {
    Send(pb::SendMessageRequest),
    Receive(pb::ReceiveMessageRequest),
    Ack(pb::AckMessageRequest),
    ChangeInvisible(pb::ChangeInvisibleDurationRequest),
    DeadLetter(pb::ForwardMessageToDeadLetterQueueRequest),
    EndTransaction(pb::EndTransactionRequest),
    GetOffset(pb::GetOffsetRequest),
    QueryOffset(pb::QueryOffsetRequest),
    UpdateOffset(pb::UpdateOffsetRequest),
    Route(pb::QueryRouteRequest),
    Assignment(pb::QueryAssignmentRequest),
    Telemetry(pb::TelemetryCommand),
}

fn structured_call() -> impl Strategy<Value = Call> {
    prop_oneof![
        proptest::collection::vec(message(), 0..3)
            .prop_map(|messages| Call::Send(pb::SendMessageRequest { messages })),
        (
            resource(GROUP),
            message_queue(),
            any::<i32>(),
            duration(),
            any::<bool>(),
            duration(),
        )
            .prop_map(
                |(group, message_queue, batch_size, invisible, auto_renew, long_polling)| {
                    Call::Receive(pb::ReceiveMessageRequest {
                        group,
                        message_queue,
                        batch_size,
                        invisible_duration: invisible,
                        auto_renew,
                        long_polling_timeout: long_polling,
                        ..pb::ReceiveMessageRequest::default()
                    })
                }
            ),
        (
            resource(GROUP),
            resource(TOPIC),
            proptest::collection::vec(receipt_handle(), 0..4),
        )
            .prop_map(|(group, topic, handles)| Call::Ack(pb::AckMessageRequest {
                group,
                topic,
                entries: handles
                    .into_iter()
                    .map(|receipt_handle| pb::AckMessageEntry {
                        message_id: String::new(),
                        receipt_handle,
                        lite_topic: None,
                    })
                    .collect(),
            })),
        (
            resource(GROUP),
            resource(TOPIC),
            receipt_handle(),
            duration()
        )
            .prop_map(|(group, topic, receipt_handle, invisible)| {
                Call::ChangeInvisible(pb::ChangeInvisibleDurationRequest {
                    group,
                    topic,
                    receipt_handle,
                    invisible_duration: invisible,
                    ..pb::ChangeInvisibleDurationRequest::default()
                })
            }),
        (
            resource(GROUP),
            resource(TOPIC),
            receipt_handle(),
            any::<i32>()
        )
            .prop_map(|(group, topic, receipt_handle, attempt)| {
                Call::DeadLetter(pb::ForwardMessageToDeadLetterQueueRequest {
                    group,
                    topic,
                    receipt_handle,
                    delivery_attempt: attempt,
                    ..pb::ForwardMessageToDeadLetterQueueRequest::default()
                })
            }),
        (
            resource(TOPIC),
            ".{0,40}",
            ".{0,40}",
            any::<i32>(),
            any::<i32>()
        )
            .prop_map(|(topic, message_id, transaction_id, resolution, source)| {
                Call::EndTransaction(pb::EndTransactionRequest {
                    topic,
                    message_id,
                    transaction_id,
                    resolution,
                    source,
                    trace_context: String::new(),
                })
            }),
        (resource(GROUP), message_queue()).prop_map(|(group, message_queue)| {
            Call::GetOffset(pb::GetOffsetRequest {
                group,
                message_queue,
            })
        }),
        (message_queue(), any::<i32>(), timestamp()).prop_map(
            |(message_queue, policy, timestamp)| {
                Call::QueryOffset(pb::QueryOffsetRequest {
                    message_queue,
                    query_offset_policy: policy,
                    timestamp,
                })
            }
        ),
        (resource(GROUP), message_queue(), any::<i64>()).prop_map(
            |(group, message_queue, offset)| {
                Call::UpdateOffset(pb::UpdateOffsetRequest {
                    group,
                    message_queue,
                    offset,
                })
            }
        ),
        resource(TOPIC).prop_map(|topic| Call::Route(pb::QueryRouteRequest {
            topic,
            endpoints: None,
        })),
        (resource(TOPIC), resource(GROUP)).prop_map(|(topic, group)| {
            Call::Assignment(pb::QueryAssignmentRequest {
                topic,
                group,
                endpoints: None,
            })
        }),
    ]
}

/// Bytes decoded as each request type (whatever decodes is served).
fn decoded_calls(bytes: &[u8]) -> Vec<Call> {
    let mut calls = Vec::new();
    macro_rules! decode {
        ($($variant:ident($request:ty)),* $(,)?) => {
            $(if let Ok(request) = <$request>::decode(bytes) {
                calls.push(Call::$variant(request));
            })*
        };
    }
    decode!(
        Send(pb::SendMessageRequest),
        Receive(pb::ReceiveMessageRequest),
        Ack(pb::AckMessageRequest),
        ChangeInvisible(pb::ChangeInvisibleDurationRequest),
        DeadLetter(pb::ForwardMessageToDeadLetterQueueRequest),
        EndTransaction(pb::EndTransactionRequest),
        GetOffset(pb::GetOffsetRequest),
        QueryOffset(pb::QueryOffsetRequest),
        UpdateOffset(pb::UpdateOffsetRequest),
        Route(pb::QueryRouteRequest),
        Assignment(pb::QueryAssignmentRequest),
        Telemetry(pb::TelemetryCommand),
    );
    // The rest of the service's requests: decoding alone must not panic.
    let _ = pb::HeartbeatRequest::decode(bytes);
    let _ = pb::NotifyClientTerminationRequest::decode(bytes);
    let _ = pb::PullMessageRequest::decode(bytes);
    let _ = pb::RecallMessageRequest::decode(bytes);
    let _ = pb::SyncLiteSubscriptionRequest::decode(bytes);
    calls
}

fn named(resource: Option<&pb::Resource>) -> bool {
    resource.is_some_and(|resource| !resource.name.is_empty())
}

fn queue_topic(queue: Option<&pb::MessageQueue>) -> Option<&pb::Resource> {
    queue.and_then(|queue| queue.topic.as_ref())
}

/// Serves `call` as the service would on the leader and checks the answer.
async fn serve(ctx: &crate::context::BrokerContext, call: Call) -> Result<(), TestCaseError> {
    fn code(status: Option<&pb::Status>) -> Result<i32, TestCaseError> {
        status
            .map(|status| status.code)
            .ok_or_else(|| TestCaseError::fail("an answer without a status"))
    }
    let ok = Code::Ok as i32;
    match call {
        Call::Send(request) => {
            let _ = request.needs();
            let count = request.messages.len();
            let unnamed: Vec<bool> = request
                .messages
                .iter()
                .map(|message| !named(message.topic.as_ref()))
                .collect();
            let answer = send::send_message(ctx, request, None).await;
            let status = code(answer.status.as_ref())?;
            if status == ok {
                prop_assert_eq!(answer.entries.len(), count);
                for (entry, unnamed) in answer.entries.iter().zip(unnamed) {
                    let entry_code = code(entry.status.as_ref())?;
                    prop_assert!(!(unnamed && entry_code == ok), "a send without a topic");
                }
            }
        }
        Call::Receive(request) => {
            let _ = request.needs();
            let unnamed = !named(request.group.as_ref())
                || !named(queue_topic(request.message_queue.as_ref()));
            // A deadline now: no long poll, whatever the request asks.
            let answer = pop::receive(ctx, request, false, tokio::time::Instant::now()).await;
            let status = code(pop::receive_status(&answer))?;
            prop_assert!(
                !(unnamed && status == ok),
                "a receive without topic or group"
            );
        }
        Call::Ack(request) => {
            let _ = request.needs();
            let unnamed = !named(request.group.as_ref());
            let entries = request.entries.len();
            let answer = pop::ack(ctx, request).await;
            let status = code(answer.status.as_ref())?;
            prop_assert!(!(unnamed && status == ok && entries > 0));
            for entry in &answer.entries {
                code(entry.status.as_ref())?;
            }
        }
        Call::ChangeInvisible(request) => {
            let _ = request.needs();
            let answer = pop::change_invisible(ctx, request).await;
            let status = code(answer.status.as_ref())?;
            prop_assert!(status == ok || answer.receipt_handle.is_empty());
        }
        Call::DeadLetter(request) => {
            let _ = request.needs();
            let unnamed = !named(request.group.as_ref());
            let answer = pop::forward_to_dlq(ctx, request).await;
            let status = code(answer.status.as_ref())?;
            prop_assert!(!(unnamed && status == ok));
        }
        Call::EndTransaction(request) => {
            let _ = request.needs();
            let answer = send::end_transaction(ctx, request).await;
            code(answer.status.as_ref())?;
        }
        Call::GetOffset(request) => {
            let _ = request.needs();
            let answer = offset::get_offset(ctx, &request);
            let status = code(answer.status.as_ref())?;
            prop_assert!(named(request.group.as_ref()) || status != ok);
        }
        Call::QueryOffset(request) => {
            let _ = request.needs();
            let answer = offset::query_offset(ctx, &request);
            let status = code(answer.status.as_ref())?;
            prop_assert!(named(queue_topic(request.message_queue.as_ref())) || status != ok);
        }
        Call::UpdateOffset(request) => {
            let _ = request.needs();
            let unnamed = !named(request.group.as_ref());
            let answer = offset::update_offset(ctx, request).await;
            let status = code(answer.status.as_ref())?;
            prop_assert!(!(unnamed && status == ok));
        }
        Call::Route(request) => {
            let _ = request.needs();
            let answer = route::query_route(ctx, &request);
            prop_assert!(named(request.topic.as_ref()) || answer.is_err());
        }
        Call::Assignment(request) => {
            let _ = request.needs();
            let answer = route::query_assignment(ctx, &request);
            prop_assert!(named(request.group.as_ref()) || answer.is_err());
        }
        Call::Telemetry(command) => {
            if let Some(pb::telemetry_command::Command::Settings(client)) = &command.command {
                let answer = settings::answer(client, &ctx.config);
                prop_assert_eq!(answer.client_type, client.client_type);
            }
        }
    }
    Ok(())
}

/// A one-member group with the topic and group the cases use, a runtime to drive it, and
/// `check` run on every case of `strategy`.
fn run_on_a_group<S: Strategy>(
    default_cases: u32,
    strategy: S,
    check: impl Fn(
        &tokio::runtime::Runtime,
        &crate::context::BrokerContext,
        S::Value,
    ) -> Result<(), TestCaseError>,
) -> Result<()>
where
    S::Value: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let group = runtime.block_on(async {
        let group = TestGroup::start(1).await?;
        let leader = group.wait_for_leader().await?;
        let ctx = group.member(leader).ctx.clone();
        let _ = send::send_message(
            &ctx,
            pb::SendMessageRequest {
                messages: vec![pb::Message {
                    topic: Some(pb::Resource {
                        resource_namespace: String::new(),
                        name: TOPIC.into(),
                    }),
                    system_properties: Some(pb::SystemProperties {
                        message_id: "FUZZ-SEED".into(),
                        ..pb::SystemProperties::default()
                    }),
                    body: b"seed".to_vec(),
                    ..pb::Message::default()
                }],
            },
            None,
        )
        .await;
        anyhow::Ok((group, ctx))
    })?;
    let (group, ctx) = group;
    let mut runner = TestRunner::new(config(default_cases));
    let outcome = runner.run(&strategy, |value| check(&runtime, &ctx, value));
    runtime.block_on(group.shutdown())?;
    outcome.map_err(|failure| anyhow::anyhow!("{failure}"))
}

#[test]
fn fuzz_grpc_arbitrary_bytes_decode_and_serve_without_panics() -> Result<()> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..256);
    run_on_a_group(256, bytes, |runtime, ctx, bytes| {
        for call in decoded_calls(&bytes) {
            runtime.block_on(serve(ctx, call))?;
        }
        Ok(())
    })
}

#[test]
fn fuzz_grpc_odd_requests_get_a_status_never_a_panic() -> Result<()> {
    run_on_a_group(256, structured_call(), |runtime, ctx, call| {
        runtime.block_on(serve(ctx, call))
    })
}

proptest! {
    #![proptest_config(config(1024))]

    /// `grpc-timeout` values: any text parses to a duration or to nothing.
    #[test]
    fn fuzz_grpc_timeouts_parse_or_not(text in ".{0,12}") {
        let _ = forward::parse_grpc_timeout(&text);
    }

    /// Receipt handles: any text parses or is refused.
    #[test]
    fn fuzz_grpc_receipt_handles_parse_or_not(text in prop_oneof![".{0,80}", receipt_handle()]) {
        let _ = ReceiptHandle::parse(&text);
    }

    /// Transaction ids: any text names a half message of this broker or nothing.
    #[test]
    fn fuzz_grpc_transaction_ids_parse_or_not(text in ".{0,40}") {
        let _ = send::parse_transaction_id("broker-a", &text);
    }
}
