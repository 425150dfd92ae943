//! The RaftMQ NameServer: who serves which topic, and who leads each broker group.
//!
//! Being built under issue "RocketMQ remoting protocol and the NameServer".
