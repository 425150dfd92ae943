//! RocketMQ 5's gRPC MessagingService (apache/rocketmq-apis, `apache.rocketmq.v2`), served by
//! every member of a group for the official 5.x clients, beside the remoting protocol.
//!
//! ```text
//! tonic server (serve)  -> MessagingServer: one method per RPC, the work in a file per family
//!   route.rs       QueryRoute, QueryAssignment: the group's live members as its endpoints
//!   telemetry.rs   Telemetry: Settings both ways (settings.rs), transaction check-backs
//!   send.rs        SendMessage, EndTransaction: the remoting send path, via forward.rs
//!   offset.rs      GetOffset, QueryOffset, UpdateOffset
//!   pop.rs         ReceiveMessage, AckMessage, ChangeInvisibleDuration,
//!                  ForwardMessageToDeadLetterQueue: POP consumption (crate::pop), via forward.rs
//!   forward.rs     a write reaching a follower is forwarded to the leader, across leader changes
//!   status.rs      the one mapping from errors to definition.proto's Code
//!   acl.rs         the ACL check every RPC makes first, before anything is forwarded or runs
//! ```
//!
//! PullMessage is answered NOT_IMPLEMENTED (pull over remoting), RecallMessage and
//! SyncLiteSubscription UNSUPPORTED.

pub mod acl;
pub mod forward;
#[cfg(test)]
mod fuzz_grpc;
pub mod incoming;
pub mod offset;
pub mod pop;
pub mod route;
pub mod send;
pub mod settings;
pub mod status;
pub mod telemetry;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, TryStreamExt as _};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{instrument, warn};

use crate::context::BrokerContext;
use pb::Code;
use pb::messaging_service_server::{MessagingService, MessagingServiceServer};

/// The generated protocol types and the service's server and client.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("apache.rocketmq.v2");
    pub use messaging_service_client::MessagingServiceClient;
}

/// The largest gRPC message accepted: a send of one message at the body limit, with room for
/// its properties.
pub const MAX_DECODING_MESSAGE_BYTES: usize = 16 << 20;

/// The header every 5.x client sends with its client id.
pub const CLIENT_ID_HEADER: &str = "x-mq-client-id";

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// The MessagingService of one member.
pub struct MessagingServer {
    ctx: Arc<BrokerContext>,
}

/// Serves gRPC on `listener` until `shutdown`, each connection through `tls` (plaintext, TLS
/// or both, by the member's mode).
pub async fn serve(
    ctx: Arc<BrokerContext>,
    listener: TcpListener,
    tls: raftmq_tls::TlsAcceptor,
    shutdown: CancellationToken,
) {
    let service = MessagingServiceServer::new(MessagingServer { ctx })
        .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES);
    let accepting = tokio_util::task::TaskTracker::new();
    // A child: a failed server stops its own accepting, not the member.
    let stop_accepting = shutdown.child_token();
    let incoming = incoming::accept(listener, tls, stop_accepting.clone(), &accepting);
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
        .await;
    if let Err(err) = served {
        warn!(error = %err, "the gRPC server failed");
    }
    // The accept loop and the handshakes in hand end here.
    stop_accepting.cancel();
    accepting.close();
    accepting.wait().await;
}

fn client_id<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .metadata()
        .get(CLIENT_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

#[tonic::async_trait]
impl MessagingService for MessagingServer {
    #[instrument(skip_all)]
    async fn query_route(
        &self,
        request: tonic::Request<pb::QueryRouteRequest>,
    ) -> Result<tonic::Response<pb::QueryRouteResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "QueryRoute", &request) {
            return Ok(tonic::Response::new(pb::QueryRouteResponse {
                status: Some(status),
                ..Default::default()
            }));
        }
        let answer = match route::query_route(&self.ctx, request.get_ref()) {
            Ok(message_queues) => pb::QueryRouteResponse {
                status: Some(status::ok()),
                message_queues,
            },
            Err(err) => pb::QueryRouteResponse {
                status: Some(status::of_error(&err)),
                message_queues: Vec::new(),
            },
        };
        Ok(tonic::Response::new(answer))
    }

    async fn heartbeat(
        &self,
        request: tonic::Request<pb::HeartbeatRequest>,
    ) -> Result<tonic::Response<pb::HeartbeatResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "Heartbeat", &request) {
            return Ok(tonic::Response::new(pb::HeartbeatResponse {
                status: Some(status),
            }));
        }
        let status = match client_id(&request) {
            Some(_) => status::ok(),
            None => status::status(
                Code::ClientIdRequired,
                "the x-mq-client-id header is missing",
            ),
        };
        Ok(tonic::Response::new(pb::HeartbeatResponse {
            status: Some(status),
        }))
    }

    #[instrument(skip_all)]
    async fn send_message(
        &self,
        request: tonic::Request<pb::SendMessageRequest>,
    ) -> Result<tonic::Response<pb::SendMessageResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "SendMessage", &request) {
            return Ok(tonic::Response::new(pb::SendMessageResponse {
                status: Some(status),
                ..Default::default()
            }));
        }
        let peer = request.remote_addr();
        forward::write(
            &self.ctx,
            request,
            |answer: &pb::SendMessageResponse| answer.status.as_ref(),
            move |ctx, message| async move { send::send_message(&ctx, message, peer).await },
            |mut client, request| async move { client.send_message(request).await },
        )
        .await
    }

    async fn query_assignment(
        &self,
        request: tonic::Request<pb::QueryAssignmentRequest>,
    ) -> Result<tonic::Response<pb::QueryAssignmentResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "QueryAssignment", &request) {
            return Ok(tonic::Response::new(pb::QueryAssignmentResponse {
                status: Some(status),
                ..Default::default()
            }));
        }
        let answer = match route::query_assignment(&self.ctx, request.get_ref()) {
            Ok(assignments) if assignments.is_empty() => pb::QueryAssignmentResponse {
                status: Some(status::status(
                    Code::Forbidden,
                    "the topic has no readable queue",
                )),
                assignments,
            },
            Ok(assignments) => pb::QueryAssignmentResponse {
                status: Some(status::ok()),
                assignments,
            },
            Err(err) => pb::QueryAssignmentResponse {
                status: Some(status::of_error(&err)),
                assignments: Vec::new(),
            },
        };
        Ok(tonic::Response::new(answer))
    }

    type ReceiveMessageStream = ResponseStream<pb::ReceiveMessageResponse>;

    #[instrument(skip_all)]
    async fn receive_message(
        &self,
        request: tonic::Request<pb::ReceiveMessageRequest>,
    ) -> Result<tonic::Response<Self::ReceiveMessageStream>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "ReceiveMessage", &request) {
            let refused = pb::ReceiveMessageResponse {
                content: Some(pb::receive_message_response::Content::Status(status)),
            };
            return Ok(tonic::Response::new(Box::pin(futures::stream::iter([Ok(
                refused,
            )]))));
        }
        let deadline = forward::deadline_of(request.metadata());
        let group = request
            .get_ref()
            .group
            .as_ref()
            .map(|group| group.name.clone())
            .unwrap_or_default();
        let fifo = pop::fifo_of(&self.ctx, request.metadata(), &group);
        let answer = forward::write(
            &self.ctx,
            request,
            pop::receive_status,
            move |ctx, message| async move { pop::receive(&ctx, message, fifo, deadline).await },
            move |mut client, mut request| async move {
                if fifo {
                    request.metadata_mut().insert(
                        pop::FIFO_HEADER,
                        tonic::metadata::MetadataValue::from_static("1"),
                    );
                }
                // The leader's answer is bounded (one pop): collect it, then replay it.
                let stream = client.receive_message(request).await?.into_inner();
                let answer: Vec<pb::ReceiveMessageResponse> = stream.try_collect().await?;
                Ok(tonic::Response::new(answer))
            },
        )
        .await?
        .into_inner();
        Ok(tonic::Response::new(Box::pin(futures::stream::iter(
            answer.into_iter().map(Ok),
        ))))
    }

    #[instrument(skip_all)]
    async fn ack_message(
        &self,
        request: tonic::Request<pb::AckMessageRequest>,
    ) -> Result<tonic::Response<pb::AckMessageResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "AckMessage", &request) {
            return Ok(tonic::Response::new(pb::AckMessageResponse {
                status: Some(status),
                ..Default::default()
            }));
        }
        forward::write(
            &self.ctx,
            request,
            |answer: &pb::AckMessageResponse| answer.status.as_ref(),
            |ctx, message| async move { pop::ack(&ctx, message).await },
            |mut client, request| async move { client.ack_message(request).await },
        )
        .await
    }

    #[instrument(skip_all)]
    async fn forward_message_to_dead_letter_queue(
        &self,
        request: tonic::Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<tonic::Response<pb::ForwardMessageToDeadLetterQueueResponse>, tonic::Status> {
        if let Err(status) =
            acl::check_request(&self.ctx, "ForwardMessageToDeadLetterQueue", &request)
        {
            return Ok(tonic::Response::new(
                pb::ForwardMessageToDeadLetterQueueResponse {
                    status: Some(status),
                },
            ));
        }
        forward::write(
            &self.ctx,
            request,
            |answer: &pb::ForwardMessageToDeadLetterQueueResponse| answer.status.as_ref(),
            |ctx, message| async move { pop::forward_to_dlq(&ctx, message).await },
            |mut client, request| async move {
                client.forward_message_to_dead_letter_queue(request).await
            },
        )
        .await
    }

    type PullMessageStream = ResponseStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        request: tonic::Request<pb::PullMessageRequest>,
    ) -> Result<tonic::Response<Self::PullMessageStream>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "PullMessage", &request) {
            let refused = pb::PullMessageResponse {
                content: Some(pb::pull_message_response::Content::Status(status)),
            };
            return Ok(tonic::Response::new(Box::pin(futures::stream::iter([Ok(
                refused,
            )]))));
        }
        let answer = pb::PullMessageResponse {
            content: Some(pb::pull_message_response::Content::Status(status::status(
                Code::NotImplemented,
                "PullMessage is not served; use the remoting protocol to pull",
            ))),
        };
        Ok(tonic::Response::new(Box::pin(futures::stream::iter([Ok(
            answer,
        )]))))
    }

    async fn update_offset(
        &self,
        request: tonic::Request<pb::UpdateOffsetRequest>,
    ) -> Result<tonic::Response<pb::UpdateOffsetResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "UpdateOffset", &request) {
            return Ok(tonic::Response::new(pb::UpdateOffsetResponse {
                status: Some(status),
            }));
        }
        forward::write(
            &self.ctx,
            request,
            |answer: &pb::UpdateOffsetResponse| answer.status.as_ref(),
            |ctx, message| async move { offset::update_offset(&ctx, message).await },
            |mut client, request| async move { client.update_offset(request).await },
        )
        .await
    }

    async fn get_offset(
        &self,
        request: tonic::Request<pb::GetOffsetRequest>,
    ) -> Result<tonic::Response<pb::GetOffsetResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "GetOffset", &request) {
            return Ok(tonic::Response::new(pb::GetOffsetResponse {
                status: Some(status),
                ..Default::default()
            }));
        }
        // A committed offset must never be read going back: the leader answers.
        forward::write(
            &self.ctx,
            request,
            |answer: &pb::GetOffsetResponse| answer.status.as_ref(),
            |ctx, message| async move { offset::get_offset(&ctx, &message) },
            |mut client, request| async move { client.get_offset(request).await },
        )
        .await
    }

    async fn query_offset(
        &self,
        request: tonic::Request<pb::QueryOffsetRequest>,
    ) -> Result<tonic::Response<pb::QueryOffsetResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "QueryOffset", &request) {
            return Ok(tonic::Response::new(pb::QueryOffsetResponse {
                status: Some(status),
                ..Default::default()
            }));
        }
        Ok(tonic::Response::new(offset::query_offset(
            &self.ctx,
            request.get_ref(),
        )))
    }

    #[instrument(skip_all)]
    async fn end_transaction(
        &self,
        request: tonic::Request<pb::EndTransactionRequest>,
    ) -> Result<tonic::Response<pb::EndTransactionResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "EndTransaction", &request) {
            return Ok(tonic::Response::new(pb::EndTransactionResponse {
                status: Some(status),
            }));
        }
        forward::write(
            &self.ctx,
            request,
            |answer: &pb::EndTransactionResponse| answer.status.as_ref(),
            |ctx, message| async move { send::end_transaction(&ctx, message).await },
            |mut client, request| async move { client.end_transaction(request).await },
        )
        .await
    }

    type TelemetryStream = ResponseStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        request: tonic::Request<tonic::Streaming<pb::TelemetryCommand>>,
    ) -> Result<tonic::Response<Self::TelemetryStream>, tonic::Status> {
        if let Err(status) = acl::check(
            &self.ctx,
            "Telemetry",
            request.metadata(),
            request.remote_addr(),
            &raftmq_protocol::acl::Needs::default(),
        ) {
            // The stream's one answer says why; no settings are taken from a refused client.
            let refused = pb::TelemetryCommand {
                status: Some(status),
                command: None,
            };
            return Ok(tonic::Response::new(Box::pin(futures::stream::iter([Ok(
                refused,
            )]))));
        }
        let Some(client_id) = client_id(&request) else {
            return Err(tonic::Status::invalid_argument(
                "the x-mq-client-id header is missing",
            ));
        };
        let receiver = telemetry::open(self.ctx.clone(), client_id, request.into_inner());
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(
            receiver,
        ))))
    }

    async fn notify_client_termination(
        &self,
        request: tonic::Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<tonic::Response<pb::NotifyClientTerminationResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "NotifyClientTermination", &request) {
            return Ok(tonic::Response::new(pb::NotifyClientTerminationResponse {
                status: Some(status),
            }));
        }
        if let Some(client_id) = client_id(&request) {
            self.ctx.telemetry.forget(&client_id);
        }
        Ok(tonic::Response::new(pb::NotifyClientTerminationResponse {
            status: Some(status::ok()),
        }))
    }

    #[instrument(skip_all)]
    async fn change_invisible_duration(
        &self,
        request: tonic::Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<tonic::Response<pb::ChangeInvisibleDurationResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "ChangeInvisibleDuration", &request) {
            return Ok(tonic::Response::new(pb::ChangeInvisibleDurationResponse {
                status: Some(status),
                ..Default::default()
            }));
        }
        forward::write(
            &self.ctx,
            request,
            |answer: &pb::ChangeInvisibleDurationResponse| answer.status.as_ref(),
            |ctx, message| async move { pop::change_invisible(&ctx, message).await },
            |mut client, request| async move { client.change_invisible_duration(request).await },
        )
        .await
    }

    async fn recall_message(
        &self,
        request: tonic::Request<pb::RecallMessageRequest>,
    ) -> Result<tonic::Response<pb::RecallMessageResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "RecallMessage", &request) {
            return Ok(tonic::Response::new(pb::RecallMessageResponse {
                status: Some(status),
                ..Default::default()
            }));
        }
        Ok(tonic::Response::new(pb::RecallMessageResponse {
            status: Some(status::status(
                Code::Unsupported,
                "recalling messages is not supported",
            )),
            message_id: String::new(),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        request: tonic::Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<tonic::Response<pb::SyncLiteSubscriptionResponse>, tonic::Status> {
        if let Err(status) = acl::check_request(&self.ctx, "SyncLiteSubscription", &request) {
            return Ok(tonic::Response::new(pb::SyncLiteSubscriptionResponse {
                status: Some(status),
            }));
        }
        Ok(tonic::Response::new(pb::SyncLiteSubscriptionResponse {
            status: Some(status::status(
                Code::Unsupported,
                "lite topics are not supported",
            )),
        }))
    }
}
