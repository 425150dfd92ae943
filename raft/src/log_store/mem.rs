//! The in-memory tail of the log: every entry that is not yet durable, plus a bounded cache of
//! recent durable ones, so that `append()` makes entries readable at once and replication and the
//! broker's pulls rarely touch redb.
//!
//! Invariant: the live log is `[log_start, last_log_id]` without holes, with
//! `log_start > last_purged`; `entries[i]` holds log index `first_index + i` and the tail covers
//! `[first_index, last_log_id]`; every index in `[log_start, first_index)` is durable in redb.
//! Only durable entries are ever evicted, and only from the front.

use std::collections::VecDeque;

use openraft::LogIdOptionExt;

use crate::types::{Entry, EntryPayload, LogId, Vote};

/// A rough per-entry memory cost on top of its payload bytes (log id, enum tags, allocation),
/// used only to bound the cache.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// An entry held in memory and whether the flusher has committed it to redb yet.
#[derive(Debug)]
struct CachedEntry {
    entry: Entry,
    size_bytes: usize,
    durable: bool,
}

/// Why the in-memory log refused an operation: the caller broke a log invariant.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MemLogError {
    #[error("append at index {got} would leave a hole or overlap: the next index is {expected}")]
    NotConsecutive { expected: u64, got: u64 },
}

/// What a range read found in memory, and which part of the range must come from redb.
#[derive(Debug, Default)]
pub(crate) struct MemRead {
    /// `[start, end)` indexes to read from redb first (empty when `start >= end`).
    pub(crate) durable_range: std::ops::Range<u64>,
    /// The entries after `durable_range`, in order.
    pub(crate) cached: Vec<Entry>,
}

#[derive(Debug)]
pub(crate) struct MemLog {
    log_start: u64,
    first_index: u64,
    entries: VecDeque<CachedEntry>,
    cached_bytes: usize,
    cache_bytes_max: usize,
    last_log_id: Option<LogId>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

/// How much memory an entry is taken to use in the cache.
fn entry_size_bytes(entry: &Entry) -> usize {
    let payload = match &entry.payload {
        EntryPayload::Blank => 0,
        EntryPayload::Normal(request) => request.0.len(),
        EntryPayload::Membership(membership) => {
            ENTRY_OVERHEAD_BYTES * (1 + membership.nodes().count())
        }
    };
    ENTRY_OVERHEAD_BYTES + payload
}

impl MemLog {
    /// The state of a log freshly opened from disk: nothing cached, everything durable.
    /// `first_stored` is the lowest index stored on disk, if any.
    pub(crate) fn new(
        first_stored: Option<u64>,
        last_log_id: Option<LogId>,
        last_purged: Option<LogId>,
        vote: Option<Vote>,
        committed: Option<LogId>,
        cache_bytes_max: usize,
    ) -> Self {
        MemLog {
            log_start: first_stored.unwrap_or(last_log_id.next_index()),
            first_index: last_log_id.next_index(),
            entries: VecDeque::new(),
            cached_bytes: 0,
            cache_bytes_max,
            last_log_id,
            last_purged,
            vote,
            committed,
        }
    }

    pub(crate) fn last_log_id(&self) -> Option<LogId> {
        self.last_log_id
    }

    pub(crate) fn last_purged(&self) -> Option<LogId> {
        self.last_purged
    }

    /// The first index of the live log (what openraft may read).
    pub(crate) fn live_start(&self) -> u64 {
        self.log_start
    }

    pub(crate) fn vote(&self) -> Option<Vote> {
        self.vote
    }

    pub(crate) fn set_vote(&mut self, vote: Vote) {
        self.vote = Some(vote);
    }

    pub(crate) fn committed(&self) -> Option<LogId> {
        self.committed
    }

    pub(crate) fn set_committed(&mut self, committed: Option<LogId>) {
        self.committed = committed;
    }

    pub(crate) fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }

    pub(crate) fn cached_entries(&self) -> usize {
        self.entries.len()
    }

    /// Whether the live log holds no entry.
    fn is_empty(&self) -> bool {
        self.last_log_id.next_index() == self.log_start
    }

    /// Adds not-yet-durable entries at the end of the log; they must continue it exactly. An
    /// empty log may start at any index (openraft's storage Suite does so; openraft itself always
    /// continues from the purge point).
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<(), MemLogError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut expected = self.last_log_id.next_index();
        if self.is_empty() {
            expected = first.log_id.index;
        }
        for entry in entries {
            if entry.log_id.index != expected {
                return Err(MemLogError::NotConsecutive {
                    expected,
                    got: entry.log_id.index,
                });
            }
            expected += 1;
        }
        if self.is_empty() {
            self.log_start = first.log_id.index;
            self.first_index = first.log_id.index;
        }
        debug_assert_eq!(
            self.first_index + self.entries.len() as u64,
            first.log_id.index
        );
        for entry in entries {
            let size_bytes = entry_size_bytes(entry);
            self.cached_bytes += size_bytes;
            self.entries.push_back(CachedEntry {
                entry: entry.clone(),
                size_bytes,
                durable: false,
            });
            self.last_log_id = Some(entry.log_id);
        }
        Ok(())
    }

    /// Removes every entry at or after `since`. Returns the index whose log id becomes the new
    /// last log id when it is not held in memory (the caller looks it up in redb), or `None`
    /// when the new last log id is already known.
    pub(crate) fn truncate(&mut self, since: u64) -> Option<u64> {
        if since >= self.last_log_id.next_index() {
            return None;
        }
        if since <= self.log_start {
            // The whole live log goes.
            for removed in self.entries.drain(..) {
                self.cached_bytes -= removed.size_bytes;
            }
            self.last_log_id = self.last_purged;
            self.log_start = self.last_purged.next_index();
            self.first_index = self.log_start;
            return None;
        }
        if since > self.first_index {
            let keep = (since - self.first_index) as usize;
            for removed in self.entries.drain(keep..) {
                self.cached_bytes -= removed.size_bytes;
            }
            self.last_log_id = self.entries.back().map(|last| last.entry.log_id);
            return None;
        }
        // Nothing cached below `since`, and `since - 1` is a live durable entry.
        for removed in self.entries.drain(..) {
            self.cached_bytes -= removed.size_bytes;
        }
        self.first_index = since;
        Some(since - 1)
    }

    /// Records the log id found in redb for the index `truncate` asked about.
    pub(crate) fn set_last_after_truncate(&mut self, last: LogId) {
        debug_assert!(self.entries.is_empty());
        self.last_log_id = Some(last);
        self.first_index = last.index + 1;
    }

    /// Forgets every entry up to and including `upto`. Returns the purge point now in force
    /// (purging below an earlier purge point keeps the earlier one).
    pub(crate) fn purge(&mut self, upto: LogId) -> LogId {
        while let Some(front) = self.entries.front() {
            if front.entry.log_id.index > upto.index {
                break;
            }
            self.cached_bytes -= front.size_bytes;
            self.entries.pop_front();
            self.first_index += 1;
        }
        self.first_index = self.first_index.max(upto.index + 1);
        self.log_start = self.log_start.max(upto.index + 1);
        let purged = self.last_purged.map_or(upto, |earlier| earlier.max(upto));
        self.last_purged = Some(purged);
        if self.last_log_id.index() < Some(upto.index) {
            self.last_log_id = Some(upto);
        }
        purged
    }

    /// Marks entries durable once the flusher committed them, if they are still the same entries
    /// (a later truncate may have replaced them), then evicts the oldest durable entries while the
    /// cache is over its byte cap.
    pub(crate) fn mark_durable(&mut self, written: impl IntoIterator<Item = LogId>) {
        for log_id in written {
            let Some(offset) = log_id.index.checked_sub(self.first_index) else {
                continue;
            };
            if let Some(cached) = self.entries.get_mut(offset as usize)
                && cached.entry.log_id == log_id
            {
                cached.durable = true;
            }
        }
        while self.cached_bytes > self.cache_bytes_max {
            match self.entries.front() {
                Some(front) if front.durable => {
                    self.cached_bytes -= front.size_bytes;
                    self.entries.pop_front();
                    self.first_index += 1;
                }
                _ => break,
            }
        }
    }

    /// Splits a read of `[start, end)` into what must come from redb and what memory holds.
    /// The range is first clipped to the live log `(last_purged, last_log_id]`.
    pub(crate) fn read(&self, start: u64, end: u64) -> MemRead {
        let start = start.max(self.log_start);
        let end = end.min(self.last_log_id.next_index());
        if start >= end {
            return MemRead::default();
        }
        let durable_end = end.min(self.first_index).max(start);
        let cached_start = start.max(self.first_index);
        let cached = if cached_start < end {
            let from = (cached_start - self.first_index) as usize;
            let to = (end - self.first_index) as usize;
            self.entries
                .range(from..to)
                .map(|cached| cached.entry.clone())
                .collect()
        } else {
            Vec::new()
        };
        MemRead {
            durable_range: start..durable_end,
            cached,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::types::AppRequest;

    fn log_id(term: u64, index: u64) -> LogId {
        crate::types::log_id(term, 1, index)
    }

    fn entry(term: u64, index: u64, payload_bytes: usize) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(AppRequest(Bytes::from(vec![7u8; payload_bytes]))),
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn append_must_continue_the_log() {
        let mut mem = MemLog::new(None, None, None, None, None, 1 << 20);
        mem.append(&[entry(1, 0, 1), entry(1, 1, 1)]).unwrap();
        assert!(mem.append(&[entry(1, 2, 1), entry(1, 4, 1)]).is_err());
        assert!(matches!(
            mem.append(&[entry(1, 3, 1)]),
            Err(MemLogError::NotConsecutive {
                expected: 2,
                got: 3
            })
        ));
        assert!(mem.append(&[entry(1, 1, 1)]).is_err());
        assert_eq!(mem.last_log_id(), Some(log_id(1, 1)));
    }

    #[test]
    fn only_durable_entries_are_evicted_and_reads_split_at_the_cache() {
        let cap = 3 * (ENTRY_OVERHEAD_BYTES + 100);
        let mut mem = MemLog::new(Some(0), Some(log_id(1, 9)), None, None, None, cap);
        let batch: Vec<Entry> = (10..20).map(|i| entry(1, i, 100)).collect();
        mem.append(&batch).unwrap();
        // Nothing is durable yet: over the cap, but nothing may go.
        mem.mark_durable([]);
        assert_eq!(mem.cached_entries(), 10);

        mem.mark_durable((10..15).map(|i| log_id(1, i)));
        // 10..15 durable: evicted down to the cap, which still holds 15..20 (not durable).
        assert_eq!(mem.cached_entries(), 5);
        let read = mem.read(5, 100);
        assert_eq!(read.durable_range, 5..15);
        assert_eq!(indexes(&read.cached), (15..20).collect::<Vec<_>>());

        mem.mark_durable((15..20).map(|i| log_id(1, i)));
        assert_eq!(mem.cached_entries(), 3);
        assert!(mem.cached_bytes() <= cap);
        let read = mem.read(18, 25);
        assert_eq!(read.durable_range, 18..18);
        assert_eq!(indexes(&read.cached), vec![18, 19]);
    }

    #[test]
    fn truncate_and_replace_keep_the_new_entries_not_durable() {
        let mut mem = MemLog::new(None, None, None, None, None, 0);
        mem.append(&(0..5).map(|i| entry(1, i, 10)).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(mem.truncate(3), None);
        assert_eq!(mem.last_log_id(), Some(log_id(1, 2)));
        mem.append(&[entry(2, 3, 10), entry(2, 4, 10)]).unwrap();
        // The flusher reports the old (term 1) entries 3 and 4 durable: they are not the cached
        // ones any more, so nothing of index >= 3 may be evicted.
        mem.mark_durable((0..5).map(|i| log_id(1, i)));
        let read = mem.read(0, 10);
        assert_eq!(read.durable_range, 0..3);
        assert_eq!(
            read.cached.iter().map(|e| e.log_id).collect::<Vec<_>>(),
            vec![log_id(2, 3), log_id(2, 4)]
        );
    }

    #[test]
    fn truncate_below_the_cache_asks_for_the_durable_log_id() {
        let mut mem = MemLog::new(Some(0), Some(log_id(1, 9)), None, None, None, 1 << 20);
        mem.append(&[entry(1, 10, 1)]).unwrap();
        assert_eq!(mem.truncate(5), Some(4));
        mem.set_last_after_truncate(log_id(1, 4));
        assert_eq!(mem.last_log_id(), Some(log_id(1, 4)));
        assert_eq!(mem.read(0, 100).durable_range, 0..5);
        mem.append(&[entry(3, 5, 1)]).unwrap();
        assert_eq!(mem.truncate(0), None);
        assert_eq!(mem.last_log_id(), None);
    }

    #[test]
    fn an_empty_log_may_start_anywhere_above_the_purge_point() {
        let mut mem = MemLog::new(None, None, None, None, None, 1 << 20);
        mem.append(&[entry(1, 5, 1), entry(1, 6, 1)]).unwrap();
        let read = mem.read(0, 100);
        assert_eq!(read.durable_range, 5..5);
        assert_eq!(indexes(&read.cached), vec![5, 6]);
        assert_eq!(mem.truncate(5), None);
        assert_eq!(mem.last_log_id(), None);
        mem.purge(log_id(1, 9));
        mem.append(&[entry(1, 10, 1)]).unwrap();
        assert_eq!(indexes(&mem.read(0, 100).cached), vec![10]);
        assert!(mem.append(&[entry(1, 12, 1)]).is_err());
    }

    #[test]
    fn purge_beyond_the_last_entry_moves_the_last_log_id() {
        let mut mem = MemLog::new(None, None, None, None, None, 1 << 20);
        mem.append(&(0..5).map(|i| entry(1, i, 1)).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(mem.purge(log_id(1, 2)), log_id(1, 2));
        assert_eq!(indexes(&mem.read(0, 10).cached), vec![3, 4]);
        // An older purge point does not move the purge point back.
        assert_eq!(mem.purge(log_id(1, 1)), log_id(1, 2));
        mem.purge(log_id(1, 20));
        assert_eq!(mem.last_log_id(), Some(log_id(1, 20)));
        assert_eq!(mem.last_purged(), Some(log_id(1, 20)));
        assert!(mem.read(0, 100).cached.is_empty());
        mem.append(&[entry(1, 21, 1)]).unwrap();
        assert_eq!(indexes(&mem.read(0, 100).cached), vec![21]);
    }
}
