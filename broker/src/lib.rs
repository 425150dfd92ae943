//! The RaftMQ broker: one member of a broker group, which is a Raft group.
//!
//! Being built under issue "Broker data plane on Raft".
