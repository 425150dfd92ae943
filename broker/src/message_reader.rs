//! The read side of the commit log: find a queue's messages through the state machine's index,
//! fetch their entries from the Raft log, and copy them out with their offsets filled in.
//!
//! Messages are stored in an entry's blob in RocketMQ's stored layout with the queue offset,
//! physical offset and store timestamp left zero (they are only known at apply time), so a read
//! patches those three fields while copying. Decoded entries are kept in a small cache: a
//! consumer reading a queue touches the same entry for many consecutive pulls.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};

use crate::command::{DecodedEntry, decode_entry, physical_offset, split_physical_offset};
use crate::filter::MessageFilter;
use crate::state_machine::{BrokerState, IndexRow};
use raftmq_protocol::message::{stored_properties, sys_flag};
use raftmq_protocol::names::tags_code;
use raftmq_raft::{EntryPayload, LogReader};

/// Decoded entries kept for reads.
pub const DECODED_ENTRY_CACHE_ENTRIES: usize = 1024;
/// Index rows looked at by one read (each row is one send request's run of messages).
pub const MAX_ROWS_PER_READ: usize = 512;

// Field positions in RocketMQ's stored-message layout.
const QUEUE_OFFSET_AT: usize = 20;
const PHYSICAL_OFFSET_AT: usize = 28;
const SYS_FLAG_AT: usize = 36;
const BORN_HOST_AT: usize = 48;
const HOST_V4_BYTES: usize = 8;
const HOST_V6_BYTES: usize = 20;

/// Why messages could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the log failed: {0}")]
    Log(String),
    #[error("log entry {0} that the index points at is missing")]
    MissingEntry(u64),
    #[error("log entry {index} is corrupt: {reason}")]
    Corrupt { index: u64, reason: String },
    #[error(transparent)]
    State(#[from] crate::state_machine::state::StateReadError),
}

/// Which messages a subscription wants, by tag hash (as RocketMQ's consume queue filters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    All,
    Tags(BTreeSet<i64>),
}

impl TagFilter {
    /// Parses a tag expression: `*` (or empty) for all, else `a || b || c`.
    pub fn parse(expression: &str) -> Self {
        let expression = expression.trim();
        if expression.is_empty() || expression == "*" {
            return TagFilter::All;
        }
        let codes = expression
            .split("||")
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(tags_code)
            .collect::<BTreeSet<_>>();
        if codes.is_empty() {
            TagFilter::All
        } else {
            TagFilter::Tags(codes)
        }
    }

    pub fn matches(&self, tags_code: i64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags(codes) => codes.contains(&tags_code),
        }
    }
}

/// What to read from one queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueReadRequest<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub offset: u64,
    pub max_messages: usize,
    /// About the most bytes to return (a single larger message is still returned whole).
    pub max_bytes: usize,
    pub filter: &'a MessageFilter,
}

/// Messages read from one queue.
#[derive(Debug, Default)]
pub struct QueueRead {
    /// Stored-layout messages with offsets and store time filled in.
    pub messages: Vec<Bytes>,
    /// Where the next read of this queue starts (past everything looked at, matched or not).
    pub next_offset: u64,
}

/// One message found by its physical offset.
#[derive(Debug)]
pub struct FoundMessage {
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub bytes: Bytes,
}

/// Reads messages out of the log.
pub struct MessageReader {
    log: LogReader,
    cache: Mutex<EntryCache>,
}

#[derive(Default)]
struct EntryCache {
    entries: HashMap<u64, Arc<DecodedEntry>>,
    order: VecDeque<u64>,
}

impl MessageReader {
    pub fn new(log: LogReader) -> Self {
        Self {
            log,
            cache: Mutex::new(EntryCache::default()),
        }
    }

    /// Reads up to `max_messages` (and about `max_bytes`) messages of a queue from `offset`,
    /// skipping those the filter rejects. Only applied (committed) messages are visible: the
    /// index holds nothing else.
    pub async fn read_queue(
        &self,
        state: &BrokerState,
        wanted: &QueueReadRequest<'_>,
    ) -> Result<QueueRead, ReadError> {
        let QueueReadRequest {
            topic,
            queue_id,
            offset,
            max_messages,
            max_bytes,
            filter,
        } = *wanted;
        let rows = state.index_rows_from(topic, queue_id, offset, MAX_ROWS_PER_READ)?;
        let mut read = QueueRead {
            messages: Vec::new(),
            next_offset: offset,
        };
        let mut bytes = 0usize;
        'rows: for row in rows {
            let entry = self.entry(row.log_index).await?;
            let slots = slots_of(&entry, &row)?;
            let start = read.next_offset.max(row.first_offset) - row.first_offset;
            for index in start..u64::from(row.count) {
                if read.messages.len() >= max_messages
                    || (bytes >= max_bytes && !read.messages.is_empty())
                {
                    break 'rows;
                }
                let slot = &slots[index as usize];
                let queue_offset = row.first_offset + index;
                read.next_offset = queue_offset + 1;
                let stored = entry.message_bytes(slot);
                if !filter.matches(slot.tags_code, || stored_properties(&stored).ok()) {
                    continue;
                }
                let ordinal = row.first_ordinal + index as u32;
                let message = patched(
                    &stored,
                    queue_offset,
                    physical_offset(row.log_index, ordinal),
                    row.store_timestamp_ms,
                )
                .map_err(|reason| ReadError::Corrupt {
                    index: row.log_index,
                    reason,
                })?;
                bytes += message.len();
                read.messages.push(message);
            }
        }
        Ok(read)
    }

    /// The message at a physical offset (as carried in an offset message id), if the log holds
    /// it and it was stored (applied) in a queue.
    pub async fn read_physical(
        &self,
        state: &BrokerState,
        physical: u64,
    ) -> Result<Option<FoundMessage>, ReadError> {
        let (log_index, ordinal) = split_physical_offset(physical);
        if state
            .applied()
            .is_none_or(|applied| applied.index < log_index)
        {
            return Ok(None);
        }
        let Ok(entry) = self.entry(log_index).await else {
            return Ok(None);
        };
        let Some(batch) = entry.command.send_batch() else {
            return Ok(None);
        };
        let mut first_ordinal = 0u32;
        for unit in &batch.units {
            let count = unit.messages.len() as u32;
            if ordinal < first_ordinal + count {
                let index = ordinal - first_ordinal;
                // Which queue offset it got: find the index row holding it.
                let Some(row) = state.find_row(&unit.topic, unit.queue_id, log_index, ordinal)?
                else {
                    return Ok(None); // refused or a duplicate at apply: never stored
                };
                let queue_offset = row.first_offset + u64::from(ordinal - row.first_ordinal);
                let slot = &unit.messages[index as usize];
                let bytes = patched(
                    &entry.message_bytes(slot),
                    queue_offset,
                    physical,
                    row.store_timestamp_ms,
                )
                .map_err(|reason| ReadError::Corrupt {
                    index: log_index,
                    reason,
                })?;
                return Ok(Some(FoundMessage {
                    topic: unit.topic.clone(),
                    queue_id: unit.queue_id,
                    queue_offset,
                    bytes,
                }));
            }
            first_ordinal += count;
        }
        Ok(None)
    }

    async fn entry(&self, index: u64) -> Result<Arc<DecodedEntry>, ReadError> {
        if let Some(entry) = self.lock().entries.get(&index) {
            return Ok(entry.clone());
        }
        let entry = self
            .log
            .read_entry(index)
            .await
            .map_err(|err| ReadError::Log(err.to_string()))?
            .ok_or(ReadError::MissingEntry(index))?;
        let EntryPayload::Normal(request) = entry.payload else {
            return Err(ReadError::Corrupt {
                index,
                reason: "not an application entry".into(),
            });
        };
        let decoded = Arc::new(decode_entry(&request.0).map_err(|err| ReadError::Corrupt {
            index,
            reason: err.to_string(),
        })?);
        let mut cache = self.lock();
        if cache.entries.insert(index, decoded.clone()).is_none() {
            cache.order.push_back(index);
        }
        while cache.order.len() > DECODED_ENTRY_CACHE_ENTRIES {
            if let Some(oldest) = cache.order.pop_front() {
                cache.entries.remove(&oldest);
            }
        }
        Ok(decoded)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EntryCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The message slots an index row covers: a run of its unit's slots (all of them, unless some
/// were duplicates not stored again).
fn slots_of<'a>(
    entry: &'a DecodedEntry,
    row: &IndexRow,
) -> Result<&'a [crate::command::MessageSlot], ReadError> {
    let corrupt = |reason: &str| ReadError::Corrupt {
        index: row.log_index,
        reason: reason.to_string(),
    };
    let Some(batch) = entry.command.send_batch() else {
        return Err(corrupt(
            "the index points at an entry that stores no messages",
        ));
    };
    let unit_index = row.unit_index as usize;
    let unit = batch
        .units
        .get(unit_index)
        .ok_or_else(|| corrupt("unit index out of range"))?;
    let start = row
        .first_ordinal
        .checked_sub(batch.first_ordinal_of(unit_index))
        .ok_or_else(|| corrupt("index row starts before its unit"))? as usize;
    unit.messages
        .get(start..start + row.count as usize)
        .ok_or_else(|| corrupt("index row runs past its unit"))
}

/// A copy of a stored message with its queue offset, physical offset and store time filled in.
pub fn patched(
    stored: &[u8],
    queue_offset: u64,
    physical: u64,
    store_timestamp_ms: i64,
) -> Result<Bytes, String> {
    let flag_bytes = stored
        .get(SYS_FLAG_AT..SYS_FLAG_AT + 4)
        .ok_or_else(|| format!("stored message of {} bytes is too short", stored.len()))?;
    let flags = i32::from_be_bytes([flag_bytes[0], flag_bytes[1], flag_bytes[2], flag_bytes[3]]);
    let born_host_bytes = if flags & sys_flag::BORNHOST_V6 != 0 {
        HOST_V6_BYTES
    } else {
        HOST_V4_BYTES
    };
    let store_timestamp_at = BORN_HOST_AT + born_host_bytes;
    if stored.len() < store_timestamp_at + 8 {
        return Err(format!(
            "stored message of {} bytes is too short",
            stored.len()
        ));
    }
    let mut out = BytesMut::with_capacity(stored.len());
    out.put_slice(stored);
    out[QUEUE_OFFSET_AT..QUEUE_OFFSET_AT + 8].copy_from_slice(&queue_offset.to_be_bytes());
    out[PHYSICAL_OFFSET_AT..PHYSICAL_OFFSET_AT + 8].copy_from_slice(&physical.to_be_bytes());
    out[store_timestamp_at..store_timestamp_at + 8]
        .copy_from_slice(&store_timestamp_ms.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use super::*;
    use raftmq_protocol::message::StoredMessage;

    fn stored(born_host: &str) -> StoredMessage {
        StoredMessage {
            queue_id: 3,
            flag: 0,
            queue_offset: 0,
            physical_offset: 0,
            sys_flag: 0,
            born_timestamp: 111,
            born_host: born_host.parse::<SocketAddr>().unwrap(),
            store_timestamp: 0,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"hello"),
            topic: "T".into(),
            properties: BTreeMap::from([("TAGS".to_string(), "a".to_string())]),
        }
    }

    #[test]
    fn patching_fills_offsets_and_store_time_for_both_host_families() {
        for born_host in ["10.1.2.3:4000", "[::1]:4000"] {
            let message = stored(born_host);
            let mut encoded = BytesMut::new();
            message.encode(&mut encoded).unwrap();
            let out = patched(&encoded, 42, 9_000_000, 1_700_000_000_123).unwrap();
            let (decoded, used) = StoredMessage::decode(&out).unwrap();
            assert_eq!(used, out.len());
            assert_eq!(decoded.queue_offset, 42);
            assert_eq!(decoded.physical_offset, 9_000_000);
            assert_eq!(decoded.store_timestamp, 1_700_000_000_123);
            assert_eq!(decoded.born_timestamp, 111);
            assert_eq!(decoded.body, message.body);
            assert_eq!(decoded.born_host, message.born_host);
        }
    }

    #[test]
    fn a_short_message_is_an_error() {
        assert!(patched(&[0u8; 30], 1, 1, 1).is_err());
        assert!(patched(&[0u8; 60], 1, 1, 1).is_err());
    }

    #[test]
    fn tag_expressions_filter_by_hash() {
        assert_eq!(TagFilter::parse("*"), TagFilter::All);
        assert_eq!(TagFilter::parse(""), TagFilter::All);
        let filter = TagFilter::parse("a || b");
        assert!(filter.matches(tags_code("a")));
        assert!(filter.matches(tags_code("b")));
        assert!(!filter.matches(tags_code("c")));
    }
}
