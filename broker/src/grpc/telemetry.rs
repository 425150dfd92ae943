//! Telemetry: the bidirectional stream each 5.x client keeps with every endpoint. The client
//! writes its Settings first and the server answers at once with its own ([`super::settings`]),
//! keeping the stream open; later the server pushes commands on it, such as a transaction
//! check-back (RecoverOrphanedTransactionCommand) to a producer of the half message's topic.
//!
//! The streams are member-local, as client sessions are in RocketMQ: [`TelemetryClients`] keeps
//! each client's latest settings and the sender of its stream, keyed by its `x-mq-client-id`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tracing::{debug, warn};

use super::pb::{self, TelemetryCommand, settings::PubSub, telemetry_command::Command};
use super::settings;
use super::status;
use crate::context::BrokerContext;

/// Clients with an open Telemetry stream on one member, at most.
pub const MAX_TELEMETRY_CLIENTS: usize = 4096;
/// Commands queued for one client's stream before further ones are dropped.
pub const TELEMETRY_QUEUE: usize = 64;

/// One client's open stream.
struct TelemetryClient {
    /// Tells apart a client's successive streams (a reconnect replaces the old one).
    stream: u64,
    settings: pb::Settings,
    sender: mpsc::Sender<Result<TelemetryCommand, tonic::Status>>,
}

/// The Telemetry streams open on this member.
#[derive(Default)]
pub struct TelemetryClients {
    clients: Mutex<BTreeMap<String, TelemetryClient>>,
    next_stream: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TelemetryClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryClients")
            .field("clients", &self.lock().len())
            .finish()
    }
}

impl TelemetryClients {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TelemetryClient>> {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(
        &self,
        client_id: &str,
        stream: u64,
        settings: pb::Settings,
        sender: &mpsc::Sender<Result<TelemetryCommand, tonic::Status>>,
    ) -> bool {
        let mut clients = self.lock();
        if !clients.contains_key(client_id) && clients.len() >= MAX_TELEMETRY_CLIENTS {
            return false;
        }
        clients.insert(
            client_id.to_string(),
            TelemetryClient {
                stream,
                settings,
                sender: sender.clone(),
            },
        );
        true
    }

    /// Forgets a client's stream (if it is still the one given).
    fn forget_stream(&self, client_id: &str, stream: u64) {
        let mut clients = self.lock();
        if clients
            .get(client_id)
            .is_some_and(|client| client.stream == stream)
        {
            clients.remove(client_id);
        }
    }

    /// Forgets a client (NotifyClientTermination).
    pub fn forget(&self, client_id: &str) {
        self.lock().remove(client_id);
    }

    /// Whether the client's Settings here say its subscription of `group` is FIFO.
    pub fn fifo(&self, client_id: &str, group: &str) -> bool {
        self.lock().get(client_id).is_some_and(|client| {
            matches!(
                &client.settings.pub_sub,
                Some(PubSub::Subscription(subscription))
                    if subscription.fifo == Some(true)
                        && subscription.group.as_ref().is_some_and(|g| g.name == group)
            )
        })
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes a transaction check-back to one producer publishing `topic` (spread by `spread`);
    /// false when no producer of the topic has a stream here.
    pub fn recover_orphaned_transaction(
        &self,
        topic: &str,
        spread: u64,
        command: pb::RecoverOrphanedTransactionCommand,
    ) -> bool {
        let senders: Vec<_> = self
            .lock()
            .values()
            .filter(|client| publishes(&client.settings, topic))
            .map(|client| client.sender.clone())
            .collect();
        let Some(sender) = senders.get(spread as usize % senders.len().max(1)) else {
            return false;
        };
        let command = TelemetryCommand {
            status: Some(status::ok()),
            command: Some(Command::RecoverOrphanedTransactionCommand(command)),
        };
        sender.try_send(Ok(command)).is_ok()
    }
}

fn publishes(settings: &pb::Settings, topic: &str) -> bool {
    match &settings.pub_sub {
        Some(PubSub::Publishing(publishing)) => publishing
            .topics
            .iter()
            .any(|resource| resource.name == topic),
        _ => false,
    }
}

/// Serves one Telemetry stream: answers every Settings the client writes, remembers the
/// stream until it ends. Returns the stream of commands to the client at once (Java blocks
/// until it has the response headers).
pub fn open(
    ctx: Arc<BrokerContext>,
    client_id: String,
    mut inbound: tonic::Streaming<TelemetryCommand>,
) -> mpsc::Receiver<Result<TelemetryCommand, tonic::Status>> {
    let (sender, receiver) = mpsc::channel(TELEMETRY_QUEUE);
    let clients = ctx.telemetry.clone();
    let stream = clients
        .next_stream
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let shutdown = ctx.shutdown.clone();
    let tracker = ctx.tracker.clone();
    tracker.spawn(async move {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = inbound.next() => next,
            };
            let command = match next {
                Some(Ok(command)) => command,
                Some(Err(err)) => {
                    debug!(client_id, error = %err, "a telemetry stream failed");
                    break;
                }
                None => break,
            };
            let Some(Command::Settings(client_settings)) = command.command else {
                // Answers to thread-stack and verify requests: nothing to do with them.
                continue;
            };
            let answer = settings::answer(&client_settings, &ctx.config);
            if !clients.remember(&client_id, stream, client_settings, &sender) {
                warn!(client_id, "too many telemetry clients: refusing one");
                let _ = sender
                    .send(Ok(TelemetryCommand {
                        status: Some(status::status(
                            pb::Code::TooManyRequests,
                            format!("this member serves at most {MAX_TELEMETRY_CLIENTS} clients"),
                        )),
                        command: None,
                    }))
                    .await;
                break;
            }
            let reply = TelemetryCommand {
                status: Some(status::ok()),
                command: Some(Command::Settings(answer)),
            };
            if sender.send(Ok(reply)).await.is_err() {
                break;
            }
        }
        clients.forget_stream(&client_id, stream);
    });
    receiver
}
