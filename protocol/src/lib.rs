//! The RocketMQ remoting protocol, as bytes and types, with no I/O and no tokio.
//!
//! Being built under issue "RocketMQ remoting protocol and the NameServer".
