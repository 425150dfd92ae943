//! `mqnamesrv`: not built yet (issue "RocketMQ remoting protocol and the NameServer").

fn main() -> anyhow::Result<()> {
    anyhow::bail!("mqnamesrv is not built yet: see the open issue about the NameServer")
}
