//! `mq`: one command line for produce, consume, admin and bench. Not built yet (issue
//! "Operator surface").

fn main() -> anyhow::Result<()> {
    anyhow::bail!("mq is not built yet: see the open issue \"Operator surface\"")
}
