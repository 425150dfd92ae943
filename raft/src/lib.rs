//! openraft glue for RaftMQ: the type config, the redb log store, the state-machine adapter and
//! the TCP transport.
//!
//! Being built under issue "Foundation".
