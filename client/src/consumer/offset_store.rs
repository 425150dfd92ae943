//! The consumer's offsets: per assigned queue, the offset up to which messages are processed
//! (`consumed`: the next offset to process) and the last offset the broker took
//! (`committed`). [`commit_loop`] commits what changed every interval.
//!
//! Commits go through one async lock, and each commit sends the queue's offset as it is when
//! the lock is held, not as it was when the round began: so a periodic round running at the
//! same time as a rebalance's final commit of a dropped queue can never commit an older
//! offset after a newer one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::message::MessageQueue;

/// How often a consumer commits its offsets (RocketMQ's persistConsumerOffsetInterval).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// One queue's offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueOffset {
    /// The next offset to process: everything below it has been handled.
    pub consumed: i64,
    /// The last offset the broker accepted for this consumer group, if known.
    pub committed: Option<i64>,
}

impl QueueOffset {
    pub fn is_dirty(&self) -> bool {
        self.committed != Some(self.consumed)
    }
}

/// Offsets of the queues a consumer holds.
#[derive(Debug, Default)]
pub struct OffsetStore {
    entries: Mutex<BTreeMap<MessageQueue, QueueOffset>>,
    commit_lock: tokio::sync::Mutex<()>,
}

impl OffsetStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<MessageQueue, QueueOffset>> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Starts tracking `queue` at `consumed`; `committed` is what the broker holds (if any).
    pub fn insert(&self, queue: MessageQueue, consumed: i64, committed: Option<i64>) {
        self.lock().insert(
            queue,
            QueueOffset {
                consumed,
                committed,
            },
        );
    }

    /// Moves `queue`'s offset forward to `offset` (never back). Untracked queues are ignored.
    pub fn advance(&self, queue: &MessageQueue, offset: i64) {
        if let Some(entry) = self.lock().get_mut(queue)
            && offset > entry.consumed
        {
            entry.consumed = offset;
        }
    }

    /// Sets `queue`'s offset to `offset`, even backwards (the broker moved it).
    pub fn reset(&self, queue: &MessageQueue, offset: i64) {
        if let Some(entry) = self.lock().get_mut(queue) {
            entry.consumed = offset;
        }
    }

    pub fn get(&self, queue: &MessageQueue) -> Option<QueueOffset> {
        self.lock().get(queue).copied()
    }

    pub fn snapshot(&self) -> BTreeMap<MessageQueue, QueueOffset> {
        self.lock().clone()
    }

    /// Queues whose offset changed since it was last committed.
    pub fn dirty(&self) -> Vec<MessageQueue> {
        self.lock()
            .iter()
            .filter(|(_, offset)| offset.is_dirty())
            .map(|(queue, _)| queue.clone())
            .collect()
    }

    fn mark_committed(&self, queue: &MessageQueue, offset: i64) {
        if let Some(entry) = self.lock().get_mut(queue) {
            entry.committed = Some(offset);
        }
    }

    /// Commits every changed offset with `commit(queue, offset)` (true = taken). Returns how
    /// many commits were taken.
    pub async fn commit_dirty<F, Fut>(&self, mut commit: F) -> usize
    where
        F: FnMut(MessageQueue, i64) -> Fut,
        Fut: Future<Output = bool>,
    {
        let _serialised = self.commit_lock.lock().await;
        let mut taken = 0;
        for queue in self.dirty() {
            // Re-read under the lock: the queue may have been dropped or moved on.
            let Some(current) = self.get(&queue).filter(QueueOffset::is_dirty) else {
                continue;
            };
            if commit(queue.clone(), current.consumed).await {
                self.mark_committed(&queue, current.consumed);
                taken += 1;
            }
        }
        taken
    }

    /// Stops tracking `queue`, committing its offset first if it changed. Returns its last
    /// offsets and whether the final commit (if one was needed) was taken.
    pub async fn commit_and_remove<F, Fut>(
        &self,
        queue: &MessageQueue,
        commit: F,
    ) -> Option<(QueueOffset, bool)>
    where
        F: FnOnce(MessageQueue, i64) -> Fut,
        Fut: Future<Output = bool>,
    {
        let _serialised = self.commit_lock.lock().await;
        let current = self.get(queue)?;
        let taken = if current.is_dirty() {
            commit(queue.clone(), current.consumed).await
        } else {
            true
        };
        self.lock().remove(queue);
        Some((current, taken))
    }
}

/// Commits changed offsets every `interval` until `stop`, through `commit` (see
/// [`OffsetStore::commit_dirty`]). The final commit at shutdown is the caller's.
pub async fn commit_loop<F, Fut>(
    store: &OffsetStore,
    interval: Duration,
    stop: &CancellationToken,
    mut commit: F,
) where
    F: FnMut(MessageQueue, i64) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let taken = store.commit_dirty(&mut commit).await;
        if taken > 0 {
            tracing::trace!(taken, "committed consumer offsets");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn queue(id: i32) -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id: id,
        }
    }

    type Log = Arc<Mutex<Vec<(i32, i64, Instant)>>>;

    fn recorder(log: &Log) -> impl FnMut(MessageQueue, i64) -> std::future::Ready<bool> + use<> {
        let log = log.clone();
        move |queue, offset| {
            log.lock()
                .unwrap()
                .push((queue.queue_id, offset, Instant::now()));
            std::future::ready(true)
        }
    }

    #[test]
    fn offsets_only_advance_unless_reset() {
        let store = OffsetStore::default();
        store.insert(queue(0), 10, Some(10));
        assert!(store.dirty().is_empty());
        store.advance(&queue(0), 15);
        store.advance(&queue(0), 12);
        assert_eq!(store.get(&queue(0)).unwrap().consumed, 15);
        assert_eq!(store.dirty(), vec![queue(0)]);
        store.reset(&queue(0), 3);
        assert_eq!(store.get(&queue(0)).unwrap().consumed, 3);
        // Unknown queues are left alone.
        store.advance(&queue(9), 1);
        assert!(store.get(&queue(9)).is_none());
    }

    #[tokio::test]
    async fn only_changed_offsets_are_committed_and_failures_stay_dirty() {
        let store = OffsetStore::default();
        store.insert(queue(0), 0, None);
        store.insert(queue(1), 5, Some(5));
        store.insert(queue(2), 7, Some(3));
        let log: Log = Arc::default();
        assert_eq!(store.commit_dirty(recorder(&log)).await, 2);
        let committed: Vec<_> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(q, o, _)| (*q, *o))
            .collect();
        assert_eq!(committed, vec![(0, 0), (2, 7)]);
        assert!(store.dirty().is_empty());
        store.advance(&queue(1), 6);
        let refused = store.commit_dirty(|_, _| std::future::ready(false)).await;
        assert_eq!(refused, 0);
        assert_eq!(store.dirty(), vec![queue(1)]);
    }

    #[tokio::test]
    async fn a_dropped_queue_is_committed_once_and_never_again() {
        let store = OffsetStore::default();
        store.insert(queue(0), 4, Some(1));
        let log: Log = Arc::default();
        let (last, taken) = store
            .commit_and_remove(&queue(0), recorder(&log))
            .await
            .unwrap();
        assert!(taken);
        assert_eq!(last.consumed, 4);
        assert!(store.get(&queue(0)).is_none());
        // A periodic round that started earlier finds nothing left to commit.
        assert_eq!(store.commit_dirty(recorder(&log)).await, 0);
        assert_eq!(log.lock().unwrap().len(), 1);
        assert!(
            store
                .commit_and_remove(&queue(0), recorder(&log))
                .await
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_commits_on_the_interval_only_what_changed() {
        let store = Arc::new(OffsetStore::default());
        store.insert(queue(0), 0, Some(0));
        let stop = CancellationToken::new();
        let log: Log = Arc::default();
        let start = Instant::now();
        let task = {
            let store = store.clone();
            let stop = stop.clone();
            let commit = recorder(&log);
            tokio::spawn(async move {
                commit_loop(&store, DEFAULT_COMMIT_INTERVAL, &stop, commit).await;
            })
        };
        store.advance(&queue(0), 3);
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert!(
            log.lock().unwrap().is_empty(),
            "committed before the interval"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        {
            let log = log.lock().unwrap();
            assert_eq!(log.len(), 1);
            assert_eq!((log[0].0, log[0].1), (0, 3));
            assert_eq!(log[0].2 - start, DEFAULT_COMMIT_INTERVAL);
        }
        // Nothing changed: the next tick commits nothing.
        tokio::time::sleep(DEFAULT_COMMIT_INTERVAL).await;
        assert_eq!(log.lock().unwrap().len(), 1);
        store.advance(&queue(0), 9);
        tokio::time::sleep(DEFAULT_COMMIT_INTERVAL).await;
        {
            let log = log.lock().unwrap();
            assert_eq!(log.len(), 2);
            assert_eq!(
                (log[1].1, log[1].2 - start),
                (9, DEFAULT_COMMIT_INTERVAL * 3)
            );
        }
        stop.cancel();
        task.await.unwrap();
    }
}
