//! The real RocketMQ client (`rocketmq-client-rust` 1.0.0) against a three-member RaftMQ
//! group, with its default JSON request headers. The scenarios are in `scenarios/`.

// The client's futures are deeply nested types; its own examples raise the limit too.
#![recursion_limit = "512"]

mod scenarios;

use raftmq_interop::runtime::HeaderEncoding;

#[test]
fn real_rocketmq_client_with_json_headers() -> anyhow::Result<()> {
    scenarios::run_all(HeaderEncoding::Json)
}
