//! The RocketMQ remoting protocol as bytes and types, with no I/O and no tokio.
//!
//! Existing RocketMQ clients talk to RaftMQ unchanged, so this crate speaks their wire format:
//!
//! - [`frame`]: one command on a connection (`[i32 total length][i32 serialize type << 24 |
//!   header length][header][body]`), with both header encodings (JSON and binary ROCKETMQ).
//!   Start here: [`frame::decode`] / [`frame::decode_from`] / [`frame::encode`] and
//!   [`RemotingCommand`].
//! - [`code`]: request and response codes as named constants.
//! - [`header`]: typed headers carried in a command's `extFields` (send, pull, offsets,
//!   registration, ...), each with `from_ext_fields` / `to_ext_fields`.
//! - [`message`]: messages as stored and returned by pulls, the batch-send body, properties,
//!   and the offset message id.
//! - [`names`]: RocketMQ's shared names and defaults (retry and DLQ topics, `String.hashCode`,
//!   the "outcome unknown" remark, default ports).
//! - [`route`] and [`body`]: the JSON bodies (topic routes, cluster info, registration,
//!   heartbeat, ...), tolerant of Java fastjson's unquoted numeric keys.
//! - [`admin`]: the admin HTTP API's JSON bodies (broker `/raft`, `/topics`, membership
//!   changes, offset reset; NameServer `/routes`, `/brokers`), shared by servers and clients.
//! - [`acl`]: access control as RocketMQ's plain ACL: accounts and permissions, the remoting
//!   and gRPC request signatures, and the one decision every protocol calls.
//! - [`backoff`]: the one retry backoff policy (doubling, capped, jittered) that the client and
//!   the Raft transport share; here because every crate can depend on this one.
//!
//! Decoders never panic on any input, never allocate from a length they have not checked
//! against [`frame::MAX_FRAME_BYTES`], and return `Ok(None)` when a frame is incomplete.
//! All errors are [`WireError`].

/// Implements `decode`/`encode` for JSON body types.
macro_rules! json_body {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl $ty {
            /// Decodes the body (standard JSON or Java fastjson's form).
            pub fn decode(bytes: &[u8]) -> Result<Self, $crate::error::WireError> {
                $crate::route::decode_json($what, bytes)
            }

            /// Encodes the body as standard JSON.
            pub fn encode(&self) -> Result<Vec<u8>, $crate::error::WireError> {
                $crate::route::encode_json($what, self)
            }
        }
    )*};
}

pub mod acl;
pub mod admin;
pub mod backoff;
pub mod body;
pub mod code;
pub mod error;
pub mod frame;
pub mod header;
pub mod message;
pub mod names;
mod reader;
pub mod route;

pub use error::WireError;
pub use frame::{LanguageCode, RemotingCommand, SerializeType};
pub use header::ExtHeader;
