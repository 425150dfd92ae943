//! One segment file: records back to back, the first one carrying the index in the file's name.
//!
//! A segment is *active* (appended to; preallocated to the segment size, zeros after the data)
//! or *sealed* (cut to its data, read-only). A sealed segment whose data is known to be on disk
//! is *finalized*: its sidecar index file (`<base>.idx`) is written only after the segment's
//! data was fsynced, so the sidecar's presence proves the segment whole. Recovery trusts
//! finalized segments and scans the others, cutting a torn tail.
//!
//! Sidecar index (`.idx`), little endian:
//!
//! ```text
//! +--------+---------+--------+---------+------------+-----------+----------+--------------+-------+
//! | "RMQI" | version | base   | count   | data_bytes | last_term | points n | n x (index,  | crc32c|
//! | 4 B    | u32     | u64    | u64     | u64        | u64       | u32      |  position)   | u32   |
//! +--------+---------+--------+---------+------------+-----------+----------+--------------+-------+
//! ```
//!
//! The sparse index keeps the position of the first record and of one record at least every
//! [`INDEX_INTERVAL_BYTES`], so a read finds its start by binary search and walks at most that
//! far through headers.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::error::SegmentError;
use super::record::{self, Decoded, InvalidRecord, RecordId};

/// Distance in bytes between two points of a segment's sparse index.
pub const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;

/// Bytes read at a time when walking through a segment.
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".log";
/// File name suffix of sidecar indexes.
pub const INDEX_SUFFIX: &str = ".idx";
/// File name suffix of files being written before their rename.
pub const TEMP_SUFFIX: &str = ".tmp";

const INDEX_MAGIC: &[u8; 4] = b"RMQI";
const INDEX_VERSION: u32 = 1;
/// The most sparse points a sidecar may claim, so a corrupt count cannot make us allocate much.
const MAX_INDEX_POINTS: u32 = 1 << 24;

/// The name of the segment whose first record has index `base`: 20 digits, so names sort as
/// indexes do.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// The name of the sidecar index of segment `base`.
pub fn index_file_name(base: u64) -> String {
    format!("{base:020}{INDEX_SUFFIX}")
}

/// The base index in a segment or sidecar file name.
pub fn parse_base(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A point of the sparse index: the record with `index` starts at byte `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexPoint {
    pub index: u64,
    pub position: u64,
}

/// A segment file and what is known of its records.
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    /// Index of the first record (from the file name).
    pub base: u64,
    pub file: Arc<File>,
    /// Records held: indexes `base..base + count`.
    pub count: u64,
    /// Where the data ends (the next record goes here).
    pub data_bytes: u64,
    /// The file's length (the preallocated size while active).
    pub file_bytes: u64,
    pub last_term: Option<u64>,
    pub sparse: Vec<IndexPoint>,
    /// No more appends; cut to its data.
    pub sealed: bool,
    /// The sidecar index exists: the data is known durable.
    pub finalized: bool,
}

/// Where a walk through records stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum WalkStop {
    /// Zeros or the end of the file at a record boundary.
    End { position: u64 },
    /// The visitor asked to stop, or the byte limit was reached, before the record here.
    Stopped { position: u64 },
    /// An invalid record here.
    Invalid {
        position: u64,
        reason: InvalidRecord,
    },
    /// A record here runs past the end of the file.
    Incomplete {
        position: u64,
        needed: u64,
        available: u64,
    },
}

/// What to do after a record.
pub enum Flow {
    Continue,
    Stop,
}

/// Reads `len` bytes at `position`, fewer at the end of the file.
fn read_chunk(file: &File, position: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], position + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Walks the records of `file` from `start` (a record boundary) up to byte `end`, handing each
/// valid record to `visit` with its position and its payload (a slice of the read buffer: the
/// bytes are read from disk once and not copied again).
pub fn walk(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    mut visit: impl FnMut(u64, RecordId, Bytes) -> Result<Flow, SegmentError>,
) -> Result<WalkStop, SegmentError> {
    let mut position = start;
    let mut chunk = Bytes::new();
    let mut chunk_start = start;
    // Whether `chunk` reaches as far as anything can be read (`end` or the end of the file).
    let mut read_all = false;
    loop {
        if position >= end {
            return Ok(WalkStop::End { position });
        }
        let offset = (position - chunk_start) as usize;
        match decode_at(&chunk, offset) {
            ChunkDecode::Record { id, payload, size } => {
                match visit(position, id, chunk.slice(payload))? {
                    Flow::Continue => position += size as u64,
                    Flow::Stop => return Ok(WalkStop::Stopped { position }),
                }
            }
            ChunkDecode::End => return Ok(WalkStop::End { position }),
            ChunkDecode::Invalid(reason) => return Ok(WalkStop::Invalid { position, reason }),
            ChunkDecode::NeedMore { size } if read_all => {
                let left = chunk.get(offset..).unwrap_or_default();
                if left.iter().all(|&b| b == 0) {
                    return Ok(WalkStop::End { position });
                }
                return Ok(WalkStop::Incomplete {
                    position,
                    needed: size as u64,
                    available: left.len() as u64,
                });
            }
            ChunkDecode::NeedMore { size } => {
                let available = usize::try_from(end - position).unwrap_or(usize::MAX);
                let want = size.max(READ_CHUNK_BYTES).min(available);
                let bytes = read_chunk(file, position, want)
                    .map_err(|e| SegmentError::io("reading", path, e))?;
                read_all = bytes.len() < want || want == available;
                chunk = Bytes::from(bytes);
                chunk_start = position;
            }
        }
    }
}

/// [`record::decode`] on a shared buffer, giving the payload as a range of it.
enum ChunkDecode {
    Record {
        id: RecordId,
        payload: std::ops::Range<usize>,
        size: usize,
    },
    NeedMore {
        size: usize,
    },
    End,
    Invalid(InvalidRecord),
}

fn decode_at(chunk: &[u8], offset: usize) -> ChunkDecode {
    let Some(bytes) = chunk.get(offset..) else {
        return ChunkDecode::NeedMore {
            size: record::HEADER_BYTES,
        };
    };
    if bytes.len() < record::HEADER_BYTES {
        // Too few bytes to tell: read more (a final all-zero remainder is judged by the caller).
        return ChunkDecode::NeedMore {
            size: record::HEADER_BYTES,
        };
    }
    match record::decode(bytes) {
        Decoded::Record { id, payload, size } => {
            let payload_start = offset + record::HEADER_BYTES;
            ChunkDecode::Record {
                id,
                payload: payload_start..payload_start + payload.len(),
                size,
            }
        }
        Decoded::End => ChunkDecode::End,
        Decoded::Incomplete { size } => ChunkDecode::NeedMore { size },
        Decoded::Invalid { reason } => ChunkDecode::Invalid(reason),
    }
}

/// What a scan of a whole segment found.
#[derive(Debug)]
pub struct Scan {
    pub count: u64,
    pub data_bytes: u64,
    pub last_term: Option<u64>,
    pub sparse: Vec<IndexPoint>,
    /// Why the scan stopped before the end of the file, if it did at something other than zeros.
    pub stop: WalkStop,
}

/// Reads every record of a segment from the start, checking CRCs and that indexes count up from
/// `base`. Stops at the end of the data or at the first bad record (reported in `stop`).
pub fn scan(file: &File, path: &Path, base: u64, file_bytes: u64) -> Result<Scan, SegmentError> {
    let mut count = 0u64;
    let mut last_term = None;
    let mut sparse = Vec::new();
    let mut next_point = 0u64;
    let mut out_of_order = None;
    let stop = walk(file, path, 0, file_bytes, |position, id, _payload| {
        let expected = base + count;
        if id.index != expected {
            out_of_order = Some(SegmentError::OutOfOrder {
                path: path.to_path_buf(),
                position,
                expected,
                found: id.index,
            });
            return Ok(Flow::Stop);
        }
        if position >= next_point {
            sparse.push(IndexPoint {
                index: id.index,
                position,
            });
            next_point = position + INDEX_INTERVAL_BYTES;
        }
        count += 1;
        last_term = Some(id.term);
        Ok(Flow::Continue)
    })?;
    if let Some(error) = out_of_order {
        return Err(error);
    }
    let data_bytes = match &stop {
        WalkStop::End { position }
        | WalkStop::Stopped { position }
        | WalkStop::Invalid { position, .. }
        | WalkStop::Incomplete { position, .. } => *position,
    };
    Ok(Scan {
        count,
        data_bytes,
        last_term,
        sparse,
        stop,
    })
}

impl Segment {
    /// Creates an empty active segment for records from `base` on, preallocated to
    /// `allocate_bytes` so that appends inside it cannot run out of space.
    pub fn create(dir: &Path, base: u64, allocate_bytes: u64) -> Result<Segment, SegmentError> {
        let path = dir.join(segment_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| SegmentError::io("creating", &path, e))?;
        if let Err(error) = allocate(&file, 0, allocate_bytes) {
            // Leave nothing behind: the caller may try again once space is freed.
            let _ = fs::remove_file(&path);
            return Err(SegmentError::io("preallocating", &path, error));
        }
        Ok(Segment {
            path,
            base,
            file: Arc::new(file),
            count: 0,
            data_bytes: 0,
            file_bytes: allocate_bytes,
            last_term: None,
            sparse: Vec::new(),
            sealed: false,
            finalized: false,
        })
    }

    /// Opens a segment file: from its sidecar index when that is valid (a finalized segment),
    /// otherwise by scanning it (see [`scan`]; the caller decides what a bad record means).
    pub fn open(dir: &Path, base: u64) -> Result<(Segment, Option<WalkStop>), SegmentError> {
        let path = dir.join(segment_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| SegmentError::io("opening", &path, e))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| SegmentError::io("reading the size of", &path, e))?
            .len();
        let sidecar = dir.join(index_file_name(base));
        if let Some(index) = read_sidecar(&sidecar, base, file_bytes) {
            let segment = Segment {
                path,
                base,
                file: Arc::new(file),
                count: index.count,
                data_bytes: index.data_bytes,
                file_bytes,
                last_term: index.last_term,
                sparse: index.sparse,
                sealed: true,
                finalized: true,
            };
            return Ok((segment, None));
        }
        let scan = scan(&file, &path, base, file_bytes)?;
        let bad = match scan.stop {
            WalkStop::End { .. } => None,
            other => Some(other),
        };
        let segment = Segment {
            path,
            base,
            file: Arc::new(file),
            count: scan.count,
            data_bytes: scan.data_bytes,
            file_bytes,
            last_term: scan.last_term,
            sparse: scan.sparse,
            sealed: false,
            finalized: false,
        };
        Ok((segment, bad))
    }

    /// The index after the last record.
    pub fn next_index(&self) -> u64 {
        self.base + self.count
    }

    /// The last record's index, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.count.checked_sub(1).map(|n| self.base + n)
    }

    /// Writes `bytes` (whole records, `ids` in order with their sizes) after the data.
    pub fn write_records(
        &mut self,
        bytes: &[u8],
        ids: &[(RecordId, usize)],
    ) -> Result<(), SegmentError> {
        self.file
            .write_all_at(bytes, self.data_bytes)
            .map_err(|e| SegmentError::io("writing", &self.path, e))?;
        let mut position = self.data_bytes;
        let mut next_point = self
            .sparse
            .last()
            .map_or(0, |p| p.position + INDEX_INTERVAL_BYTES);
        for &(id, size) in ids {
            if self.sparse.is_empty() || position >= next_point {
                self.sparse.push(IndexPoint {
                    index: id.index,
                    position,
                });
                next_point = position + INDEX_INTERVAL_BYTES;
            }
            position += size as u64;
            self.count += 1;
            self.last_term = Some(id.term);
        }
        self.data_bytes = position;
        self.file_bytes = self.file_bytes.max(position);
        Ok(())
    }

    /// The position of a record at or before `index` to start walking from.
    pub fn start_position(&self, index: u64) -> u64 {
        let at = self.sparse.partition_point(|p| p.index <= index);
        at.checked_sub(1).map_or(0, |i| self.sparse[i].position)
    }

    /// Cuts the segment after its first `keep` records (their bytes end at `keep_bytes`); the
    /// rest of the file reads as zeros again, preallocated up to `allocate_bytes`.
    pub fn cut(
        &mut self,
        keep: u64,
        keep_bytes: u64,
        allocate_bytes: u64,
    ) -> Result<(), SegmentError> {
        self.file
            .set_len(keep_bytes)
            .map_err(|e| SegmentError::io("truncating", &self.path, e))?;
        let allocate_to = allocate_bytes.max(keep_bytes);
        allocate(&self.file, keep_bytes, allocate_to - keep_bytes)
            .map_err(|e| SegmentError::io("preallocating", &self.path, e))?;
        self.file_bytes = allocate_to;
        self.count = keep;
        self.data_bytes = keep_bytes;
        self.sparse.retain(|p| p.index < self.base + keep);
        self.sealed = false;
        self.finalized = false;
        Ok(())
    }

    /// Reserves disk space up to `len` bytes (nothing past the data is written).
    pub fn reserve(&mut self, len: u64) -> Result<(), SegmentError> {
        if len <= self.file_bytes {
            return Ok(());
        }
        allocate(&self.file, self.file_bytes, len - self.file_bytes)
            .map_err(|e| SegmentError::io("reserving space in", &self.path, e))?;
        self.file_bytes = len;
        Ok(())
    }

    /// Ends appends: the file is cut to its data (the preallocated rest is given back).
    pub fn seal(&mut self) -> Result<(), SegmentError> {
        self.file
            .set_len(self.data_bytes)
            .map_err(|e| SegmentError::io("sealing", &self.path, e))?;
        self.file_bytes = self.data_bytes;
        self.sealed = true;
        Ok(())
    }

    /// Writes the sidecar index (write, fsync, rename; the caller fsyncs the directory). Only
    /// after the segment's data is durable.
    pub fn write_sidecar(&mut self, dir: &Path) -> Result<(), SegmentError> {
        let mut out = Vec::with_capacity(48 + self.sparse.len() * 16);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&self.base.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.data_bytes.to_le_bytes());
        out.extend_from_slice(&self.last_term.map_or(u64::MAX, |t| t).to_le_bytes());
        let points = u32::try_from(self.sparse.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&points.to_le_bytes());
        for point in self.sparse.iter().take(points as usize) {
            out.extend_from_slice(&point.index.to_le_bytes());
            out.extend_from_slice(&point.position.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let path = dir.join(index_file_name(self.base));
        write_file_durably(&path, &out)?;
        self.finalized = true;
        Ok(())
    }
}

/// Reserves `len` bytes of disk from `offset` (extending the file), so writes there cannot fail
/// for lack of space.
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let offset = i64::try_from(offset).map_err(io::Error::other)?;
    let len = i64::try_from(len).map_err(io::Error::other)?;
    nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::empty(), offset, len)
        .map_err(io::Error::from)
}

/// Writes `bytes` to `path` through a temporary file: write, fsync, rename. The caller fsyncs the
/// directory to make the rename durable.
pub fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<(), SegmentError> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(TEMP_SUFFIX);
    let temp = PathBuf::from(temp);
    let file = File::create(&temp).map_err(|e| SegmentError::io("creating", &temp, e))?;
    file.write_all_at(bytes, 0)
        .map_err(|e| SegmentError::io("writing", &temp, e))?;
    file.sync_all()
        .map_err(|e| SegmentError::io("syncing", &temp, e))?;
    fs::rename(&temp, path).map_err(|e| SegmentError::io("renaming", path, e))?;
    Ok(())
}

/// A valid sidecar's contents.
struct Sidecar {
    count: u64,
    data_bytes: u64,
    last_term: Option<u64>,
    sparse: Vec<IndexPoint>,
}

/// The sidecar at `path` if it is whole and matches the segment (its base and length); `None`
/// otherwise (missing, torn or stale: the segment is then scanned).
fn read_sidecar(path: &Path, base: u64, segment_bytes: u64) -> Option<Sidecar> {
    let bytes = fs::read(path).ok()?;
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return None;
    }
    let mut reader = FieldReader { bytes: body };
    if reader.take(4)? != INDEX_MAGIC || reader.u32()? != INDEX_VERSION {
        return None;
    }
    if reader.u64()? != base {
        return None;
    }
    let count = reader.u64()?;
    let data_bytes = reader.u64()?;
    let last_term = Some(reader.u64()?).filter(|&t| t != u64::MAX);
    let points = reader.u32()?;
    if points > MAX_INDEX_POINTS || data_bytes != segment_bytes {
        return None;
    }
    let mut sparse = Vec::with_capacity(points as usize);
    for _ in 0..points {
        let index = reader.u64()?;
        let position = reader.u64()?;
        sparse.push(IndexPoint { index, position });
    }
    let in_range = sparse
        .iter()
        .all(|p| p.index >= base && p.index < base + count && p.position < data_bytes);
    if !reader.bytes.is_empty() || !in_range || (count > 0 && sparse.is_empty()) {
        return None;
    }
    Some(Sidecar {
        count,
        data_bytes,
        last_term,
        sparse,
    })
}

struct FieldReader<'a> {
    bytes: &'a [u8],
}

impl<'a> FieldReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}
