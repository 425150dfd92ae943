//! `mqbroker`: not built yet (issue "Broker data plane on Raft").

fn main() -> anyhow::Result<()> {
    anyhow::bail!("mqbroker is not built yet: see the open issue \"Broker data plane on Raft\"")
}
