//! Broadcasting consumers keep their offsets themselves (RocketMQ's `LocalFileOffsetStore`):
//! every consumer of the group reads every message, so one offset per group on the broker would
//! be wrong. With a file, a restarted consumer resumes where it stopped; without one, offsets
//! last as long as the consumer.
//!
//! The file is JSON, `{"offsets": [{"topic", "broker_name", "queue_id", "offset"}]}`, written
//! whole to a temporary file and renamed over the old one, so a crash leaves the old or the
//! new offsets, never half of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::message::MessageQueue;

/// The largest offsets file read back.
pub const MAX_OFFSETS_FILE_BYTES: u64 = 16 << 20;

#[derive(Debug, Default, Serialize, Deserialize)]
struct OffsetsFile {
    offsets: Vec<QueueOffsetRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct QueueOffsetRecord {
    topic: String,
    broker_name: String,
    queue_id: i32,
    offset: i64,
}

/// One consumer's offsets, kept in memory and (with a path) in a file.
#[derive(Debug)]
pub struct LocalOffsets {
    path: Option<PathBuf>,
    offsets: Mutex<BTreeMap<MessageQueue, i64>>,
}

impl LocalOffsets {
    /// Reads `path` if it exists (a missing file is no offsets yet).
    pub fn open(path: Option<PathBuf>) -> Result<Self, ClientError> {
        let mut offsets = BTreeMap::new();
        if let Some(path) = &path
            && path.exists()
        {
            let bad = |reason: String| {
                ClientError::Config(format!("offsets file {}: {reason}", path.display()))
            };
            let size = std::fs::metadata(path)
                .map_err(|error| bad(error.to_string()))?
                .len();
            if size > MAX_OFFSETS_FILE_BYTES {
                return Err(bad(format!("larger than {MAX_OFFSETS_FILE_BYTES} bytes")));
            }
            let text = std::fs::read(path).map_err(|error| bad(error.to_string()))?;
            let file: OffsetsFile =
                serde_json::from_slice(&text).map_err(|error| bad(error.to_string()))?;
            for record in file.offsets {
                offsets.insert(
                    MessageQueue {
                        topic: record.topic,
                        broker_name: record.broker_name,
                        queue_id: record.queue_id,
                    },
                    record.offset,
                );
            }
        }
        Ok(Self {
            path,
            offsets: Mutex::new(offsets),
        })
    }

    pub fn get(&self, queue: &MessageQueue) -> Option<i64> {
        self.lock().get(queue).copied()
    }

    /// Records `queue`'s offset and writes the file; false when the file could not be written
    /// (the offset stays recorded, and the next commit writes it again).
    pub fn store(&self, queue: &MessageQueue, offset: i64) -> bool {
        let file = {
            let mut offsets = self.lock();
            offsets.insert(queue.clone(), offset);
            OffsetsFile {
                offsets: offsets
                    .iter()
                    .map(|(queue, offset)| QueueOffsetRecord {
                        topic: queue.topic.clone(),
                        broker_name: queue.broker_name.clone(),
                        queue_id: queue.queue_id,
                        offset: *offset,
                    })
                    .collect(),
            }
        };
        let Some(path) = &self.path else {
            return true;
        };
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let temporary = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
            std::fs::write(&temporary, bytes)?;
            std::fs::rename(&temporary, path)
        })();
        if let Err(error) = &result {
            tracing::warn!(path = %path.display(), %error, "could not write the offsets file");
        }
        result.is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<MessageQueue, i64>> {
        self.offsets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_a_restart_through_the_file() {
        let dir = tempfile_dir();
        let path = dir.join("g").join("offsets.json");
        let queue = |id| MessageQueue {
            topic: "T".into(),
            broker_name: "broker-a".into(),
            queue_id: id,
        };
        let store = LocalOffsets::open(Some(path.clone())).unwrap();
        assert_eq!(store.get(&queue(0)), None);
        assert!(store.store(&queue(0), 7));
        assert!(store.store(&queue(1), 3));
        assert!(store.store(&queue(0), 9));
        let reopened = LocalOffsets::open(Some(path.clone())).unwrap();
        assert_eq!(reopened.get(&queue(0)), Some(9));
        assert_eq!(reopened.get(&queue(1)), Some(3));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            LocalOffsets::open(Some(path)),
            Err(ClientError::Config(_))
        ));
        let memory_only = LocalOffsets::open(None).unwrap();
        assert!(memory_only.store(&queue(2), 1));
        assert_eq!(memory_only.get(&queue(2)), Some(1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A fresh directory under the system's temporary directory.
    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "raftmq-local-offsets-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
