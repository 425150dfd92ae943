//! How a write reaching a follower is served: the follower forwards the gRPC call, unchanged, to
//! its group's leader and answers with the leader's answer.
//!
//! Why proxy the call rather than forward a Raft command: every write the 5.x protocol makes
//! (sends, transaction ends, and the POP operations) already has a complete, versioned request
//! message, and the leader must run the same checks and reads before proposing (topic, queue,
//! dedup, half-message lookup) that it runs for its own clients; forwarding the request keeps a
//! single code path for each write, and needs no new RPC in the Raft transport.
//!
//! A leader change is hidden from the client: until the request's own deadline (its
//! `grpc-timeout`, [`DEFAULT_DEADLINE`] without one) the member waits for a leader, forwards,
//! and tries again when the answer says the target no longer leads or the target cannot be
//! reached. A retried send is stored once (its message id is its `UNIQ_KEY`, which the
//! replicated dedup window remembers); a retried transaction end is idempotent. A forwarded
//! call carries [`FORWARDED_HEADER`] and is never forwarded again, so calls cannot loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftmq_raft::MetricsReceiver as _;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::pb::messaging_service_client::MessagingServiceClient;
use super::pb::{self, Code};
use crate::context::BrokerContext;

/// Marks a call one member forwarded to another.
pub const FORWARDED_HEADER: &str = "x-raftmq-forwarded";

/// The address of the client whose call a member forwards: the leader matches IP whitelists
/// against it, believing it only from a member of its group (`acl::whitelist_ip`).
pub const FORWARDED_FOR_HEADER: &str = "x-raftmq-forwarded-for";
/// How long a write may wait for a leader when the client set no deadline (the clients' request
/// timeout is 3 s).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3);
/// The longest deadline honoured.
pub const MAX_DEADLINE: Duration = Duration::from_secs(30);
/// Connecting to a leader may take this long before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long to wait for news of the leadership before looking again.
pub const LEADER_POLL: Duration = Duration::from_millis(50);

/// gRPC channels to the other members, made once each (connected lazily, reconnected by tonic),
/// over TLS when the member has it.
#[derive(Default)]
pub struct Channels {
    channels: Mutex<BTreeMap<SocketAddr, Channel>>,
    tls: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Channels")
    }
}

impl Channels {
    /// Channels dialing with `tls` (the cluster CA, this member's certificate), or plaintext.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Channels {
            channels: Mutex::default(),
            tls,
        }
    }

    fn client(&self, addr: SocketAddr) -> Result<MessagingServiceClient<Channel>, tonic::Status> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(&addr) {
            return Ok(MessagingServiceClient::new(channel.clone()));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|err| tonic::Status::internal(format!("leader address {addr}: {err}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|err| {
                tonic::Status::internal(format!("TLS to the leader at {addr}: {err}"))
            })?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(addr, channel.clone());
        Ok(MessagingServiceClient::new(channel))
    }
}

/// Where a write is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This member takes writes (or the call was forwarded to it: it must not go further).
    Here,
    /// The leader, at its gRPC address.
    Leader(SocketAddr),
}

/// The deadline of a call: its `grpc-timeout`, capped.
pub fn deadline_of(metadata: &MetadataMap) -> Instant {
    let timeout = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(DEFAULT_DEADLINE)
        .min(MAX_DEADLINE);
    Instant::now() + timeout
}

/// gRPC's `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    // The unit is the last character; a multi-byte one is not a unit (and no split point).
    let (split, _) = text.char_indices().last()?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

pub fn is_forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(FORWARDED_HEADER)
}

/// Waits (until `deadline`) for a member that takes writes: this one, or a known leader with a
/// gRPC address.
async fn target(ctx: &BrokerContext, deadline: Instant) -> Option<Target> {
    let mut changes = ctx.leadership.subscribe();
    loop {
        if ctx.leadership.may_write() {
            return Some(Target::Here);
        }
        let view = ctx.leadership.view();
        if let Some(leader) = view.leader.filter(|leader| *leader != ctx.config.node_id)
            && let Some(addr) = ctx.config.grpc_peers.get(&leader)
        {
            return Some(Target::Leader(*addr));
        }
        if Instant::now() >= deadline {
            return None;
        }
        let wait = LEADER_POLL.min(deadline.saturating_duration_since(Instant::now()));
        let _ = tokio::time::timeout(wait, changes.changed()).await;
    }
}

/// Whether an answer says "try again elsewhere or later": the member no longer leads, or the
/// outcome is unknown (a retry is safe, see the module docs).
fn retryable(status: Option<&pb::Status>) -> bool {
    status.is_some_and(|status| {
        status.code == Code::HaNotAvailable as i32
            || status.code == Code::MasterPersistenceTimeout as i32
    })
}

/// Whether a failed call to the leader may be tried again: it was not reached, or it went away.
fn transport_retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
    )
}

/// Copies what the leader needs of the client's call: the client's `x-mq-*` headers, its
/// credentials and its address (`client`, for IP whitelists).
fn forwarded_request<Req>(
    metadata: &MetadataMap,
    client: Option<SocketAddr>,
    message: Req,
    remaining: Duration,
) -> tonic::Request<Req> {
    let mut request = tonic::Request::new(message);
    for entry in metadata.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry
            && (key.as_str().starts_with("x-mq-") || key.as_str() == "authorization")
        {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
    }
    request.metadata_mut().insert(
        FORWARDED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    if let Some(client) = client
        && let Ok(value) = client.ip().to_string().parse()
    {
        request.metadata_mut().insert(FORWARDED_FOR_HEADER, value);
    }
    request.set_timeout(remaining);
    request
}

/// Serves a write where it must be served: here through `local` when this member leads (or the
/// call was forwarded to it), otherwise at the leader through `remote`, retrying across leader
/// changes until the call's deadline. `status_of` reads the answer's status.
pub async fn write<Req, Resp, L, LF, R, RF>(
    ctx: &Arc<BrokerContext>,
    request: tonic::Request<Req>,
    status_of: fn(&Resp) -> Option<&pb::Status>,
    local: L,
    remote: R,
) -> Result<tonic::Response<Resp>, tonic::Status>
where
    Req: Clone,
    L: Fn(Arc<BrokerContext>, Req) -> LF,
    LF: Future<Output = Resp>,
    R: Fn(MessagingServiceClient<Channel>, tonic::Request<Req>) -> RF,
    RF: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let deadline = deadline_of(request.metadata());
    let forwarded = is_forwarded(request.metadata());
    let caller = request.remote_addr();
    let metadata = request.metadata().clone();
    let message = request.into_inner();
    loop {
        let target = if forwarded {
            Target::Here
        } else {
            match target(ctx, deadline).await {
                Some(target) => target,
                // No leader within the deadline: this member answers, and its answer says so.
                None => Target::Here,
            }
        };
        let answer = match target {
            Target::Here => Ok(local(ctx.clone(), message.clone()).await),
            Target::Leader(addr) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let client = ctx.grpc_channels.client(addr)?;
                remote(
                    client,
                    forwarded_request(&metadata, caller, message.clone(), remaining),
                )
                .await
                .map(tonic::Response::into_inner)
            }
        };
        let out_of_time = Instant::now() >= deadline;
        match answer {
            Ok(answer) if forwarded || out_of_time || !retryable(status_of(&answer)) => {
                return Ok(tonic::Response::new(answer));
            }
            Err(status) if forwarded || out_of_time || !transport_retryable(&status) => {
                return Err(status);
            }
            // The leader changed under the call: look for the new one.
            _ => {
                let wait = LEADER_POLL.min(deadline.saturating_duration_since(Instant::now()));
                let mut changes = ctx.leadership.subscribe();
                let _ = tokio::time::timeout(wait, changes.changed()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_nonsense_does_not() {
        assert_eq!(
            parse_grpc_timeout("2999m"),
            Some(Duration::from_millis(2999))
        );
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "12", "12x", "-1S", "123456789S", "ß"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_forwarded_call_carries_the_clients_credentials_and_address_but_nothing_else() {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", "MQv2-HMAC-SHA1 x".parse().unwrap());
        metadata.insert("x-mq-date-time", "20261206T010000Z".parse().unwrap());
        metadata.insert("user-agent", "grpc-python".parse().unwrap());
        // A client's own claim of an address is not passed on.
        metadata.insert(FORWARDED_FOR_HEADER, "10.9.9.9".parse().unwrap());
        let client: SocketAddr = "192.168.7.7:50123".parse().unwrap();
        let forwarded = forwarded_request(&metadata, Some(client), (), Duration::from_secs(1));
        let sent = forwarded.metadata();
        assert_eq!(sent.get("authorization").unwrap(), "MQv2-HMAC-SHA1 x");
        assert_eq!(sent.get("x-mq-date-time").unwrap(), "20261206T010000Z");
        assert!(sent.get("user-agent").is_none());
        assert_eq!(sent.get(FORWARDED_FOR_HEADER).unwrap(), "192.168.7.7");
        assert!(is_forwarded(sent));
    }

    #[test]
    fn only_not_leader_and_unknown_outcomes_are_retried() {
        let code = |code: Code| {
            Some(pb::Status {
                code: code as i32,
                message: String::new(),
            })
        };
        assert!(retryable(code(Code::HaNotAvailable).as_ref()));
        assert!(retryable(code(Code::MasterPersistenceTimeout).as_ref()));
        assert!(!retryable(code(Code::Ok).as_ref()));
        assert!(!retryable(code(Code::BadRequest).as_ref()));
        assert!(!retryable(None));
    }
}
