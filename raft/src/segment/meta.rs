//! A small file replaced atomically and durably: the log's metadata (vote, committed and purged
//! log ids) beside the segments.
//!
//! ```text
//! +--------+------------+-------------+------------------+
//! | "RMQM" | len u32le  | crc32c u32le| value (len bytes) |
//! +--------+------------+-------------+------------------+
//! ```
//!
//! Written as a temporary file, fsynced, renamed over the old one, then the directory fsynced:
//! after a crash the file holds either the old or the new value, whole.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::error::SegmentError;
use super::file::write_file_durably;

const MAGIC: &[u8; 4] = b"RMQM";
const HEADER_BYTES: usize = 12;
/// The largest value the file may hold; metadata is tiny, so anything bigger is corruption.
pub const MAX_META_BYTES: usize = 1024 * 1024;

/// The metadata file at a fixed path.
#[derive(Debug)]
pub struct MetaFile {
    path: PathBuf,
    dir: PathBuf,
}

impl MetaFile {
    pub fn new(dir: &Path, name: &str) -> Self {
        MetaFile {
            path: dir.join(name),
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored value; `None` if the file does not exist yet.
    pub fn load(&self) -> Result<Option<Vec<u8>>, SegmentError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SegmentError::io("reading", &self.path, e)),
        };
        let corrupt = |reason: String| SegmentError::CorruptMeta {
            path: self.path.clone(),
            reason,
        };
        let Some((header, value)) = bytes.split_at_checked(HEADER_BYTES) else {
            return Err(corrupt(format!("{} bytes is too short", bytes.len())));
        };
        if &header[0..4] != MAGIC {
            return Err(corrupt("bad magic".into()));
        }
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if len != value.len() || len > MAX_META_BYTES {
            return Err(corrupt(format!(
                "length {len} does not match the {} bytes stored",
                value.len()
            )));
        }
        let computed = crc32c::crc32c(value);
        if computed != crc {
            return Err(corrupt(format!(
                "CRC32C mismatch: stored {crc:#010x}, computed {computed:#010x}"
            )));
        }
        Ok(Some(value.to_vec()))
    }

    /// Replaces the value durably.
    pub fn store(&self, value: &[u8]) -> Result<(), SegmentError> {
        if value.len() > MAX_META_BYTES {
            return Err(SegmentError::CorruptMeta {
                path: self.path.clone(),
                reason: format!("a value of {} bytes is too large to store", value.len()),
            });
        }
        let mut bytes = Vec::with_capacity(HEADER_BYTES + value.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(value).to_le_bytes());
        bytes.extend_from_slice(value);
        write_file_durably(&self.path, &bytes)?;
        sync_dir(&self.dir)
    }
}

/// Creates `dir` and whatever parents it lacks, durably: each directory created is fsynced
/// into its parent (a new directory's entry is durable only once its parent is synced), so a
/// power loss cannot take away a directory, and the durable files inside it, that `create_dir_all`
/// alone would have made.
pub fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// fsyncs a directory, making creations, renames and deletions in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SegmentError::io("syncing the directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_loads_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaFile::new(dir.path(), "meta");
        assert_eq!(meta.load().unwrap(), None);
        meta.store(b"first").unwrap();
        assert_eq!(meta.load().unwrap().as_deref(), Some(&b"first"[..]));
        meta.store(b"second value").unwrap();
        assert_eq!(meta.load().unwrap().as_deref(), Some(&b"second value"[..]));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("meta")]);
    }

    #[test]
    fn corruption_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaFile::new(dir.path(), "meta");
        meta.store(b"value").unwrap();
        let mut bytes = std::fs::read(meta.path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(meta.path(), &bytes).unwrap();
        let error = meta.load().unwrap_err();
        assert!(error.is_corruption());
        assert!(error.to_string().contains("meta"), "{error}");
        std::fs::write(meta.path(), b"RMQ").unwrap();
        assert!(meta.load().unwrap_err().is_corruption());
    }

    #[test]
    fn creates_missing_directories_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b").join("c");
        create_dir_all_durably(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_all_durably(&nested).unwrap();
        let file = dir.path().join("a").join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(create_dir_all_durably(&file.join("below")).is_err());
    }
}
