//! The loop every leader-only background task runs (delay levels, timers, transaction checks):
//! wake every interval (at once after a round that left work behind), do a round only while
//! this member may write, log when it starts and stops leading, and end at shutdown.
//!
//! What a round does, and how it backs off after a failure, stays with the task
//! ([`LeaderTask::round`]); the loop only decides when a round runs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::context::BrokerContext;

/// What a round left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// Nothing more is due now: wait an interval.
    Done,
    /// A full round: more may be due already, so the next one runs at once.
    Backlog,
}

/// Work that only the leader does, a round at a time.
pub trait LeaderTask: Send {
    /// Names the work in the log ("timer delivery started").
    const NAME: &'static str;
    /// The wait after a round that left nothing behind.
    const INTERVAL: Duration;

    /// One round, run while this member may write.
    fn round(&mut self, ctx: &BrokerContext) -> impl Future<Output = Round> + Send;
}

/// Runs `task` round after round while this member leads, until `shutdown`.
pub async fn run_while_leading(
    ctx: Arc<BrokerContext>,
    shutdown: CancellationToken,
    mut task: impl LeaderTask,
) {
    let mut was_leader = false;
    let mut last = Round::Done;
    loop {
        let pause = match last {
            Round::Backlog => Duration::ZERO,
            Round::Done => task_interval(&task),
        };
        last = Round::Done;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let leading = ctx.leadership.may_write();
        if leading != was_leader {
            info!(
                leading,
                "{} {}",
                task_name(&task),
                if leading { "started" } else { "stopped" }
            );
            was_leader = leading;
        }
        if leading {
            last = task.round(&ctx).await;
        }
    }
}

fn task_name<T: LeaderTask>(_: &T) -> &'static str {
    T::NAME
}

fn task_interval<T: LeaderTask>(_: &T) -> Duration {
    T::INTERVAL
}
