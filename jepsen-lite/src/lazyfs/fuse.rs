//! The `fuser::Filesystem` of the lazy filesystem: each kernel request becomes one call on
//! the [`Model`] under one lock, and its error becomes an errno through
//! [`LazyFsError::errno`]. The only work done outside the lock is the disk flush of a file
//! `fsync`, so one slow fsync does not stall every other request.
//!
//! Kernel caching is kept out of the way of power losses: attributes and entries have a TTL
//! of zero (the kernel asks again each time) and files open without `FOPEN_KEEP_CACHE` (the
//! kernel drops a file's cached pages when it is opened again).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tokio_util::sync::CancellationToken;

use super::control::{self, ControlCommand};
use super::error::LazyFsError;
use super::model::{
    Attr, CONTROL_FILE, CONTROL_INO, DirEntry, Kind, Model, PowerLossReport, ROOT_INO, SetAttr,
};

/// How long the kernel may cache attributes and names: not at all, so that what a power loss
/// dropped disappears at once.
const TTL: Duration = Duration::ZERO;
/// Open directory handles (each holds a listing); past this, `opendir` fails with EMFILE.
const MAX_OPEN_DIRS: usize = 4096;
/// Block size reported by `stat`.
const BLOCK_SIZE: u32 = 4096;

/// State shared by the FUSE threads and the [`super::MountedLazyFs`] handle.
#[derive(Debug)]
pub struct Shared {
    model: Mutex<Model>,
    dirs: Mutex<DirHandles>,
    /// Cancelled when the session ends (unmounted by us or by anyone else).
    pub ended: CancellationToken,
}

impl Shared {
    pub fn new(model: Model) -> Self {
        Self {
            model: Mutex::new(model),
            dirs: Mutex::new(DirHandles::default()),
            ended: CancellationToken::new(),
        }
    }

    /// The model; a panic in another request does not make it unusable (every model call
    /// leaves it consistent before it can fail).
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn power_loss(&self) -> Result<PowerLossReport, LazyFsError> {
        let report = self.model().power_loss()?;
        tracing::info!(
            dropped_bytes = report.dropped_bytes,
            dropped_files = report.dropped_files,
            dropped_entries = report.dropped_entries,
            "lazyfs: power loss"
        );
        Ok(report)
    }

    fn dirs(&self) -> MutexGuard<'_, DirHandles> {
        self.dirs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Listings of open directories, taken at `opendir` so that entries removed while a program
/// walks the directory do not shift the offsets it resumes from.
#[derive(Debug, Default)]
struct DirHandles {
    next: u64,
    open: HashMap<u64, Vec<(u64, FileType, std::ffi::OsString)>>,
}

/// The filesystem the FUSE session runs.
#[derive(Debug)]
pub struct LazyFilesystem {
    shared: Arc<Shared>,
    /// Told (or dropped) when the session ends, for a blocking unmount to wait on.
    session_done: SyncSender<()>,
}

impl LazyFilesystem {
    pub fn new(shared: Arc<Shared>, session_done: SyncSender<()>) -> Self {
        Self {
            shared,
            session_done,
        }
    }

    fn control_attr() -> FileAttr {
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(CONTROL_INO),
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: FileType::RegularFile,
            perm: 0o600,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLOCK_SIZE,
            flags: 0,
        }
    }

    fn control_write(&self, data: &[u8]) -> Result<u32, LazyFsError> {
        match ControlCommand::parse(data)? {
            ControlCommand::PowerLoss => {
                self.shared.power_loss()?;
            }
            ControlCommand::SpaceLeft(bytes) => self.shared.model().set_space_left(Some(bytes)),
            ControlCommand::SpaceUnlimited => self.shared.model().set_space_left(None),
        };
        u32::try_from(data.len()).map_err(|_| LazyFsError::TooLarge)
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
    }
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.ctime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn time(value: TimeOrNow) -> SystemTime {
    match value {
        TimeOrNow::SpecificTime(at) => at,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Logs what the application will see as an errno; I/O errors on the backing directory are
/// the ones worth a warning.
fn errno(error: &LazyFsError, op: &str) -> fuser::Errno {
    match error {
        LazyFsError::Io { .. } | LazyFsError::UnsyncedCapReached { .. } => {
            tracing::warn!(op, error = %error, "lazyfs")
        }
        _ => tracing::debug!(op, error = %error, "lazyfs"),
    }
    error.errno()
}

fn is_control(parent: INodeNo, name: &OsStr) -> bool {
    parent.0 == ROOT_INO && name == CONTROL_FILE
}

/// Permission bits of a `mode` after the caller's umask.
fn perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl Filesystem for LazyFilesystem {
    fn destroy(&mut self) {
        if let Err(e) = self.shared.model().remove_staging() {
            tracing::warn!(error = %e, "lazyfs: at unmount");
        }
        self.shared.ended.cancel();
        // A full channel means someone was told already.
        let _ = self.session_done.try_send(());
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if is_control(parent, name) {
            return reply.entry(&TTL, &Self::control_attr(), Generation(0));
        }
        match self.shared.model().lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(&e, "lookup")),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Err(e) = self.shared.model().forget(ino.0, nlookup) {
            errno(&e, "forget");
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 == CONTROL_INO {
            return reply.attr(&TTL, &Self::control_attr());
        }
        match self.shared.model().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(&e, "getattr")),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino.0 == CONTROL_INO {
            // `echo ... > control` truncates first; there is nothing to truncate.
            return reply.attr(&TTL, &Self::control_attr());
        }
        let change = SetAttr {
            size,
            perm: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self.shared.model().setattr(ino.0, &change) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(&e, "setattr")),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let made =
            self.shared
                .model()
                .mkdir(parent.0, name, perm(mode, umask), req.uid(), req.gid());
        match made {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(&e, "mkdir")),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if is_control(parent, name) {
            return reply.error(errno(&LazyFsError::Reserved(CONTROL_FILE), "unlink"));
        }
        match self.shared.model().unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "unlink")),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.shared.model().rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "rmdir")),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if is_control(parent, name) {
            return reply.error(errno(&LazyFsError::Reserved(CONTROL_FILE), "rename"));
        }
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            let unsupported = LazyFsError::Unsupported("rename flags other than NOREPLACE");
            return reply.error(errno(&unsupported, "rename"));
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let renamed = self
            .shared
            .model()
            .rename(parent.0, name, newparent.0, newname, no_replace);
        match renamed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "rename")),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == CONTROL_INO {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }
        match self.shared.model().open(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e, "open")),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 == CONTROL_INO {
            let text = control::status_text(&self.shared.model().stats());
            let bytes = text.as_bytes();
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(size as usize).min(bytes.len());
            return reply.data(&bytes[start..end]);
        }
        match self.shared.model().read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e, "read")),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let written = if ino.0 == CONTROL_INO {
            self.control_write(data)
        } else {
            self.shared.model().write(ino.0, offset, data)
        };
        match written {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e, "write")),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if ino.0 != CONTROL_INO
            && let Err(e) = self.shared.model().release(ino.0)
        {
            errno(&e, "release");
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        if ino.0 == CONTROL_INO {
            return reply.ok();
        }
        // The lock is released before the disk flush.
        let pending = self.shared.model().fsync(ino.0, datasync);
        let synced = pending.and_then(|pending| pending.map_or(Ok(()), |sync| sync.complete()));
        match synced {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "fsync")),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let listing = {
            let mut model = self.shared.model();
            model
                .readdir(ino.0)
                .and_then(|entries| Ok((entries, model.parent(ino.0)?)))
        };
        let (entries, parent) = match listing {
            Ok(listing) => listing,
            Err(e) => return reply.error(errno(&e, "opendir")),
        };
        let mut listing = vec![
            (ino.0, FileType::Directory, ".".into()),
            (parent, FileType::Directory, "..".into()),
        ];
        listing.extend(
            entries
                .into_iter()
                .map(|DirEntry { ino, kind, name }| (ino, file_type(kind), name)),
        );
        let mut dirs = self.shared.dirs();
        if dirs.open.len() >= MAX_OPEN_DIRS {
            return reply.error(fuser::Errno::EMFILE);
        }
        dirs.next += 1;
        let fh = dirs.next;
        dirs.open.insert(fh, listing);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dirs = self.shared.dirs();
        let Some(listing) = dirs.open.get(&fh.0) else {
            return reply.error(fuser::Errno::EBADF);
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, (ino, kind, name)) in listing.iter().enumerate().skip(skip) {
            // The offset of an entry is where the next call resumes.
            if reply.add(INodeNo(*ino), index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.dirs().open.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.shared.model().fsync_dir(ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "fsyncdir")),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (backing, space_left) = {
            let model = self.shared.model();
            (model.backing().to_path_buf(), model.space_left())
        };
        match nix::sys::statvfs::statvfs(&backing) {
            Ok(s) => {
                // Under a size limit, free space is what the limit leaves (in whole blocks).
                let block = s.fragment_size().max(1);
                let limit = |blocks: u64| match space_left {
                    Some(left) => blocks.min(left / block),
                    None => blocks,
                };
                reply.statfs(
                    s.blocks(),
                    limit(s.blocks_free()),
                    limit(s.blocks_available()),
                    s.files(),
                    s.files_free(),
                    u32::try_from(s.block_size()).unwrap_or(BLOCK_SIZE),
                    u32::try_from(s.name_max()).unwrap_or(255),
                    u32::try_from(s.fragment_size()).unwrap_or(BLOCK_SIZE),
                )
            }
            Err(e) => reply.error(fuser::Errno::from_i32(e as i32)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks permissions itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let created =
            self.shared
                .model()
                .create(parent.0, name, perm(mode, umask), req.uid(), req.gid());
        match created {
            Ok(attr) => reply.created(
                &TTL,
                &file_attr(&attr),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&e, "create")),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.shared.model().fallocate(ino.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "fallocate")),
        }
    }
}
