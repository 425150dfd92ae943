//! Offset commits: each queue's processed offset goes to its group's leader
//! (UPDATE_CONSUMER_OFFSET) every `commit_interval` (5 s), when a rebalance drops the queue,
//! and at shutdown. What changed and the order of commits are the [`OffsetStore`]'s
//! (`offset_store.rs`); this is where they go.
//!
//! [`OffsetStore`]: super::OffsetStore

use std::sync::Arc;

use super::handle::ConsumerInner;
use super::offset_store::commit_loop;
use crate::message::MessageQueue;

impl ConsumerInner {
    /// Commits one queue's offset to its group's leader; true when taken. A commit that
    /// failed because the route is wrong refreshes it; the offset stays changed for the next
    /// round.
    pub(super) async fn commit(&self, queue: &MessageQueue, offset: i64) -> bool {
        // A broadcasting consumer keeps its own offsets.
        if let Some(local) = &self.local_offsets {
            return local.store(queue, offset);
        }
        let result = async {
            let addr = self.leader_addr(queue).await?;
            self.instance
                .broker()
                .update_consumer_offset(&addr, &self.config.group, queue, offset)
                .await
        }
        .await;
        match result {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(?queue, offset, %error, "offset commit failed");
                self.instance.refresh_on_error(&queue.topic, &error).await;
                false
            }
        }
    }

    /// Commits every offset that changed since its last commit; returns how many were taken.
    pub(super) async fn commit_changed(&self) -> usize {
        self.offsets
            .commit_dirty(|queue, offset| async move { self.commit(&queue, offset).await })
            .await
    }

    /// The periodic commit task, until the consumer stops its background work.
    pub(super) async fn periodic_commits(self: Arc<Self>) {
        let inner = &*self;
        commit_loop(
            &inner.offsets,
            inner.config.commit_interval,
            &inner.stop_background,
            |queue, offset| async move { inner.commit(&queue, offset).await },
        )
        .await;
    }
}
