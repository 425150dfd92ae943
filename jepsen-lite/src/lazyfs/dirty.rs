//! The unsynced data of one file: the writes and size changes made since its last
//! `fsync`/`fdatasync`, held in memory on top of the backing file, which holds exactly the data
//! synced so far. Pure logic over a [`BackingFile`], so the tests run on a `Vec<u8>`.
//!
//! ```text
//! offset 0                backing_visible        synced_len              len
//!   |  backing file bytes        |  zeros (truncated away) |  zeros (grown)  |
//!        [extent]        [extent]                  [extent]      [extent]     <- win over both
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// What the dirty data needs from the file holding the synced data.
pub trait BackingFile {
    /// Reads at `offset`; returns how many bytes were read (0 at the end of the file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl BackingFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// A file's data since its last sync (see the module docs for the picture).
#[derive(Debug, Default)]
pub struct DirtyData {
    /// Bytes written since the last sync, by offset. Extents never overlap or touch (a write
    /// next to an extent extends it), so sequential appends grow one buffer.
    extents: BTreeMap<u64, Vec<u8>>,
    /// Sum of the extents' lengths: what this file holds in memory.
    dirty_bytes: u64,
    /// The file's size as readers see it now.
    len: u64,
    /// The backing file's size: the size at the last sync.
    synced_len: u64,
    /// How much of the backing file still belongs to the file: a truncation below
    /// `synced_len` hides the rest, which reads as zeros if the file grows again.
    /// Always `<= synced_len`.
    backing_visible: u64,
}

impl DirtyData {
    /// A file whose backing file holds `synced_len` bytes and nothing unsynced.
    pub fn new(synced_len: u64) -> Self {
        Self {
            len: synced_len,
            synced_len,
            backing_visible: synced_len,
            ..Self::default()
        }
    }

    /// The file's size as readers see it.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Bytes held in memory, unsynced.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes
    }

    /// True when the backing file holds exactly what readers see.
    pub fn is_clean(&self) -> bool {
        self.extents.is_empty() && self.len == self.synced_len && self.backing_visible == self.len
    }

    /// Records a write; returns how many bytes it added to [`Self::dirty_bytes`].
    /// `offset + data.len()` must not overflow (the caller checks it against its size limit).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
        if data.is_empty() {
            return 0;
        }
        let end = offset + data.len() as u64;
        // The extent this write lands in or touches from the left becomes the buffer that
        // absorbs the write and every later extent it reaches.
        let base_start = match self.extents.range(..=offset).next_back() {
            Some((&start, bytes)) if start + bytes.len() as u64 >= offset => start,
            _ => offset,
        };
        let mut base = self.extents.remove(&base_start).unwrap_or_default();
        let mut removed = base.len() as u64;
        let at = (offset - base_start) as usize;
        if at == base.len() {
            // The common case: an append to the extent.
            base.extend_from_slice(data);
        } else {
            if base.len() < at + data.len() {
                base.resize(at + data.len(), 0);
            }
            base[at..at + data.len()].copy_from_slice(data);
        }
        let reached: Vec<u64> = self
            .extents
            .range(base_start + 1..=end)
            .map(|(&start, _)| start)
            .collect();
        for start in reached {
            let Some(bytes) = self.extents.remove(&start) else {
                continue;
            };
            removed += bytes.len() as u64;
            let bytes_end = start + bytes.len() as u64;
            if bytes_end > end {
                base.extend_from_slice(&bytes[(end - start) as usize..]);
            }
        }
        let added = base.len() as u64 - removed;
        self.extents.insert(base_start, base);
        self.dirty_bytes += added;
        self.len = self.len.max(end);
        added
    }

    /// Truncates or extends (with zeros); returns how many bytes left [`Self::dirty_bytes`].
    pub fn set_len(&mut self, len: u64) -> u64 {
        let mut freed = 0;
        if len < self.len {
            let cut: Vec<u64> = self.extents.range(len..).map(|(&start, _)| start).collect();
            for start in cut {
                if let Some(bytes) = self.extents.remove(&start) {
                    freed += bytes.len() as u64;
                }
            }
            if let Some((&start, bytes)) = self.extents.range_mut(..len).next_back() {
                let keep = len - start;
                if (bytes.len() as u64) > keep {
                    freed += bytes.len() as u64 - keep;
                    bytes.truncate(keep as usize);
                }
            }
            self.backing_visible = self.backing_visible.min(len);
        }
        self.len = len;
        self.dirty_bytes -= freed;
        freed
    }

    /// Reads up to `size` bytes at `offset` as a reader sees them now.
    pub fn read(&self, offset: u64, size: u32, backing: &impl BackingFile) -> io::Result<Vec<u8>> {
        let end = self.len.min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let from_backing = end.min(self.backing_visible);
        if offset < from_backing {
            let wanted = (from_backing - offset) as usize;
            let mut filled = 0;
            // A short read means the backing file ended early; the rest stays zero.
            while filled < wanted {
                let read = backing.read_at(&mut buf[filled..wanted], offset + filled as u64)?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
        }
        let first = self
            .extents
            .range(..=offset)
            .next_back()
            .map(|(&start, _)| start)
            .unwrap_or(offset);
        for (&start, bytes) in self.extents.range(first..end) {
            let bytes_end = start + bytes.len() as u64;
            let from = start.max(offset);
            let to = bytes_end.min(end);
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
            }
        }
        Ok(buf)
    }

    /// Writes everything unsynced into the backing file (the caller then fsyncs it); returns
    /// how many bytes left [`Self::dirty_bytes`]. On an error nothing is marked synced, so a
    /// later sync writes it all again.
    pub fn write_back(&mut self, backing: &impl BackingFile) -> io::Result<u64> {
        let mut backing_len = self.synced_len;
        if self.backing_visible < self.synced_len {
            backing.set_len(self.backing_visible)?;
            backing_len = self.backing_visible;
        }
        for (&start, bytes) in &self.extents {
            backing.write_all_at(bytes, start)?;
            backing_len = backing_len.max(start + bytes.len() as u64);
        }
        // Extents never reach past `len`; what is left is growing the file with zeros.
        if backing_len != self.len {
            backing.set_len(self.len)?;
        }
        let freed = self.dirty_bytes;
        self.extents.clear();
        self.dirty_bytes = 0;
        self.synced_len = self.len;
        self.backing_visible = self.len;
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// An in-memory backing file.
    #[derive(Default)]
    struct Mem(RefCell<Vec<u8>>);

    impl BackingFile for Mem {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let bytes = self.0.borrow();
            let start = (offset as usize).min(bytes.len());
            let n = buf.len().min(bytes.len() - start);
            buf[..n].copy_from_slice(&bytes[start..start + n]);
            Ok(n)
        }

        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let mut bytes = self.0.borrow_mut();
            let end = offset as usize + buf.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[offset as usize..end].copy_from_slice(buf);
            Ok(())
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.borrow_mut().resize(len as usize, 0);
            Ok(())
        }
    }

    fn mem(bytes: &[u8]) -> Mem {
        Mem(RefCell::new(bytes.to_vec()))
    }

    fn all(data: &DirtyData, backing: &Mem) -> Vec<u8> {
        data.read(0, u32::MAX, backing).unwrap()
    }

    #[test]
    fn reads_see_writes_over_the_backing_file_until_written_back() {
        let backing = mem(b"hello world");
        let mut data = DirtyData::new(11);
        assert_eq!(data.write(6, b"WORLD!"), 6);
        assert_eq!(all(&data, &backing), b"hello WORLD!");
        assert_eq!(data.read(4, 4, &backing).unwrap(), b"o WO");
        assert_eq!(backing.0.borrow().as_slice(), b"hello world");
        assert_eq!(data.write_back(&backing).unwrap(), 6);
        assert!(data.is_clean());
        assert_eq!(data.dirty_bytes(), 0);
        assert_eq!(backing.0.borrow().as_slice(), b"hello WORLD!");
    }

    #[test]
    fn sequential_appends_grow_one_extent() {
        let backing = Mem::default();
        let mut data = DirtyData::new(0);
        for i in 0..100u8 {
            assert_eq!(data.write(u64::from(i) * 3, &[i; 3]), 3);
        }
        assert_eq!(data.extents.len(), 1);
        assert_eq!(data.dirty_bytes(), 300);
        let read = all(&data, &backing);
        assert_eq!(read.len(), 300);
        assert!(read.chunks(3).enumerate().all(|(i, c)| c == [i as u8; 3]));
    }

    #[test]
    fn overlapping_writes_merge_and_count_each_byte_once() {
        let backing = Mem::default();
        let mut data = DirtyData::new(0);
        assert_eq!(data.write(10, b"cccc"), 4);
        assert_eq!(data.write(0, b"aa"), 2);
        assert_eq!(data.write(20, b"ee"), 2);
        // Bridges the gap between the first two extents and overlaps the third's start.
        // The union is [0, 22): 22 bytes, of which 8 were held before.
        assert_eq!(data.write(1, b"BBBBBBBBBBBBBBBBBBBB"), 22 - 8);
        assert_eq!(data.extents.len(), 1);
        assert_eq!(data.dirty_bytes(), 22);
        let mut expected = b"aBBBBBBBBBBBBBBBBBBBBe".to_vec();
        assert_eq!(all(&data, &backing), expected);
        // An overwrite inside adds nothing.
        assert_eq!(data.write(5, b"xy"), 0);
        expected[5..7].copy_from_slice(b"xy");
        assert_eq!(all(&data, &backing), expected);
    }

    #[test]
    fn truncate_then_grow_reads_zeros_where_the_backing_file_was_cut() {
        let backing = mem(b"0123456789");
        let mut data = DirtyData::new(10);
        data.write(8, b"AB");
        assert_eq!(data.set_len(4), 2);
        assert_eq!(all(&data, &backing), b"0123");
        data.set_len(8);
        assert_eq!(all(&data, &backing), b"0123\0\0\0\0");
        data.write(6, b"Z");
        assert_eq!(all(&data, &backing), b"0123\0\0Z\0");
        data.write_back(&backing).unwrap();
        assert_eq!(backing.0.borrow().as_slice(), b"0123\0\0Z\0");
        assert!(data.is_clean());
    }

    #[test]
    fn truncation_cuts_an_extent_in_the_middle() {
        let backing = Mem::default();
        let mut data = DirtyData::new(0);
        data.write(0, b"abcdef");
        assert_eq!(data.set_len(2), 4);
        assert_eq!(data.dirty_bytes(), 2);
        data.set_len(4);
        assert_eq!(all(&data, &backing), b"ab\0\0");
    }

    #[test]
    fn growing_without_writes_is_dirty_and_reads_zeros() {
        let backing = mem(b"ab");
        let mut data = DirtyData::new(2);
        data.set_len(5);
        assert!(!data.is_clean());
        assert_eq!(data.dirty_bytes(), 0);
        assert_eq!(all(&data, &backing), b"ab\0\0\0");
        data.write_back(&backing).unwrap();
        assert_eq!(backing.0.borrow().as_slice(), b"ab\0\0\0");
    }

    #[test]
    fn reads_past_the_end_are_empty_and_short_reads_stop_at_len() {
        let backing = mem(b"abc");
        let data = DirtyData::new(3);
        assert!(data.read(3, 10, &backing).unwrap().is_empty());
        assert!(data.read(100, 10, &backing).unwrap().is_empty());
        assert_eq!(data.read(1, 10, &backing).unwrap(), b"bc");
    }

    /// Random writes, truncations and write-backs against a plain `Vec<u8>` model.
    #[test]
    fn matches_a_plain_buffer_under_random_operations() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
        let backing = Mem::default();
        let mut data = DirtyData::new(0);
        let mut model: Vec<u8> = Vec::new();
        for _ in 0..2_000 {
            match rng.random_range(0..10) {
                0 => {
                    let len = rng.random_range(0..300usize);
                    data.set_len(len as u64);
                    model.resize(len, 0);
                }
                1 => {
                    data.write_back(&backing).unwrap();
                    assert_eq!(*backing.0.borrow(), model);
                }
                _ => {
                    let offset = rng.random_range(0..280usize);
                    let len = rng.random_range(1..40usize);
                    let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                    data.write(offset as u64, &bytes);
                    if model.len() < offset + len {
                        model.resize(offset + len, 0);
                    }
                    model[offset..offset + len].copy_from_slice(&bytes);
                }
            }
            assert_eq!(all(&data, &backing), model);
            let held: u64 = data.extents.values().map(|b| b.len() as u64).sum();
            assert_eq!(data.dirty_bytes(), held);
            let mut last_end = None;
            for (&start, bytes) in &data.extents {
                assert!(!bytes.is_empty());
                assert!(last_end.is_none_or(|end| end < start), "extents touch");
                last_end = Some(start + bytes.len() as u64);
            }
        }
    }
}
