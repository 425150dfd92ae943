//! The real RocketMQ client against a three-member RaftMQ group with binary ROCKETMQ request
//! headers (what `rocketmq.serialize.type=ROCKETMQ` selects). The client fixes its encoding
//! once per process, hence a test binary of its own. The scenarios are in `scenarios/`.

// The client's futures are deeply nested types; its own examples raise the limit too.
#![recursion_limit = "512"]

mod scenarios;

use raftmq_interop::runtime::HeaderEncoding;

#[test]
fn real_rocketmq_client_with_rocketmq_headers() -> anyhow::Result<()> {
    scenarios::run_all(HeaderEncoding::RocketMq)
}
