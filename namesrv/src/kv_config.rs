//! The NameServer's KV config (PUT/GET/DELETE_KV_CONFIG, GET_KVLIST_BY_NAMESPACE), as
//! RocketMQ's: namespaced string pairs, used mostly for `ORDER_TOPIC_CONFIG` (a topic's
//! ordered-queue layout, returned as `orderTopicConf` in its route). Held in memory only:
//! unlike Java's `kvConfig.json` it does not survive a restart.

use std::collections::BTreeMap;

/// The namespace whose entries become a route's `orderTopicConf`.
pub const ORDER_TOPIC_CONFIG_NAMESPACE: &str = "ORDER_TOPIC_CONFIG";

/// Entries held at most, over all namespaces.
pub const MAX_KV_ENTRIES: usize = 100_000;

/// Longest namespace, key or value.
pub const MAX_KV_BYTES: usize = 64 * 1024;

/// Why a put was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("the KV config holds {MAX_KV_ENTRIES} entries already")]
    Full,
    #[error("namespace, key and value must be at most {MAX_KV_BYTES} bytes")]
    TooLong,
}

#[derive(Debug, Default)]
pub struct KvConfig {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    entries: usize,
}

impl KvConfig {
    pub fn put(&mut self, namespace: &str, key: &str, value: &str) -> Result<(), KvError> {
        if [namespace, key, value]
            .iter()
            .any(|text| text.len() > MAX_KV_BYTES)
        {
            return Err(KvError::TooLong);
        }
        let exists = self.get(namespace, key).is_some();
        if !exists && self.entries >= MAX_KV_ENTRIES {
            return Err(KvError::Full);
        }
        self.namespaces
            .entry(namespace.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
        if !exists {
            self.entries += 1;
        }
        Ok(())
    }

    pub fn get(&self, namespace: &str, key: &str) -> Option<&str> {
        self.namespaces.get(namespace)?.get(key).map(String::as_str)
    }

    pub fn delete(&mut self, namespace: &str, key: &str) -> bool {
        let Some(entries) = self.namespaces.get_mut(namespace) else {
            return false;
        };
        let removed = entries.remove(key).is_some();
        if entries.is_empty() {
            self.namespaces.remove(namespace);
        }
        if removed {
            self.entries -= 1;
        }
        removed
    }

    pub fn namespace(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete() {
        let mut kv = KvConfig::default();
        assert_eq!(kv.get("n", "k"), None);
        kv.put("n", "k", "v1").unwrap();
        kv.put("n", "k", "v2").unwrap();
        assert_eq!(kv.get("n", "k"), Some("v2"));
        assert_eq!(kv.namespace("n").map(BTreeMap::len), Some(1));
        assert!(kv.delete("n", "k"));
        assert!(!kv.delete("n", "k"));
        assert!(kv.namespace("n").is_none());
        assert_eq!(
            kv.put("n", "k", &"x".repeat(MAX_KV_BYTES + 1)),
            Err(KvError::TooLong)
        );
    }

    #[test]
    fn entries_are_bounded() {
        let mut kv = KvConfig::default();
        for i in 0..MAX_KV_ENTRIES {
            kv.put("n", &i.to_string(), "v").unwrap();
        }
        assert_eq!(kv.put("n", "one more", "v"), Err(KvError::Full));
        // Overwriting an existing key is still allowed.
        kv.put("n", "0", "w").unwrap();
    }
}
