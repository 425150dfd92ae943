//! The lazy filesystem's state, without FUSE: what the mount shows (the *visible* tree) and
//! what a power loss would leave (the *durable* tree, which is exactly the backing directory).
//!
//! - Every file and directory is a [`Node`] with an inode number that is never reused, so an
//!   inode from before a power loss is recognisably stale.
//! - A node's data lives in its *backing object*: a file or directory in the backing
//!   directory, either under its durable name or, while it has none, in the hidden staging
//!   directory `.lazyfs-staging/<inode>` (emptied by every power loss and every mount,
//!   deleted at unmount).
//! - File data: writes since the last `fsync`/`fdatasync` stay in memory ([`DirtyData`]);
//!   either call writes them to the backing object. `fsync` also applies mode and owner.
//! - Directory entries: each loaded directory keeps two maps, `visible` (what `ls` shows) and
//!   `durable` (what is in the backing directory). Creating, unlinking and renaming change
//!   `visible` only; `fsync` of the directory makes `durable` equal to `visible` by renaming
//!   backing objects into place or out to staging. An object has one backing location, so a
//!   rename between two directories becomes durable as a whole when either directory is synced
//!   (as a journaling filesystem commits a rename in one transaction): it never ends up under
//!   both names or under neither.
//! - A power loss forgets every node and empties the staging directory; the next lookup
//!   loads the tree again from the backing directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dirty::DirtyData;
use super::error::LazyFsError;

/// The root's inode number (FUSE's fixed root id).
pub const ROOT_INO: u64 = 1;
/// The control file's inode number (see [`super::control`]).
pub const CONTROL_INO: u64 = 2;
const FIRST_NODE_INO: u64 = 3;
/// The hidden directory in the backing root holding objects that have no durable name.
pub const STAGING_DIR: &str = ".lazyfs-staging";
/// The control file's name in the mount's root.
pub const CONTROL_FILE: &str = ".lazyfs-control";
/// Directory depth at which a path is refused (a guard against a corrupted parent chain).
const MAX_DEPTH: usize = 4096;
/// Largest file size (the kernel's limit for offsets).
const MAX_FILE_BYTES: u64 = i64::MAX as u64;
/// `fallocate` mode bit: allocate without changing the size (nothing to do here).
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;

type Result<T> = std::result::Result<T, LazyFsError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// Attributes as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// Attribute changes of a `setattr` (each `None` leaves that attribute alone).
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

/// One directory entry as `readdir` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: OsString,
}

/// What a power loss dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PowerLossReport {
    /// Unsynced bytes of file data that were held in memory.
    pub dropped_bytes: u64,
    /// Files whose data or size differed from their backing file.
    pub dropped_files: u64,
    /// Directory entries that differed from the backing directory.
    pub dropped_entries: u64,
}

/// Counters for the control file and the harness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub power_losses: u64,
    pub unsynced_bytes: u64,
    pub max_unsynced_bytes: u64,
    pub nodes: u64,
    pub last_power_loss: Option<PowerLossReport>,
}

/// Where a node's backing object is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    /// The backing directory itself.
    Root,
    /// `<backing of parent>/<name>`, a durable name.
    Durable { parent: u64, name: OsString },
    /// `<staging>/<ino>`: no durable name.
    Staged,
}

#[derive(Clone, Debug)]
struct Meta {
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Meta {
    fn of(metadata: &fs::Metadata) -> Self {
        Self {
            perm: (metadata.mode() & 0o7777) as u16,
            uid: metadata.uid(),
            gid: metadata.gid(),
            atime: system_time(metadata.atime(), metadata.atime_nsec()),
            mtime: system_time(metadata.mtime(), metadata.mtime_nsec()),
            ctime: system_time(metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    fn new(perm: u16, uid: u32, gid: u32) -> Self {
        let now = SystemTime::now();
        Self {
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }
}

fn system_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs) + nanos,
        Err(_) => UNIX_EPOCH,
    }
}

#[derive(Debug)]
struct FileBody {
    data: DirtyData,
    /// The backing object, open while the file is open in the mount.
    handle: Option<Arc<File>>,
}

#[derive(Debug, Default)]
struct DirBody {
    /// Whether `visible` and `durable` hold the entries yet (read from the backing directory
    /// on first use).
    loaded: bool,
    visible: BTreeMap<OsString, u64>,
    /// Invariant: `durable[name] == ino` exactly when node `ino` is at
    /// `Location::Durable { parent: this, name }`.
    durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Body {
    File(FileBody),
    Dir(DirBody),
}

#[derive(Debug)]
struct Node {
    body: Body,
    /// Parent and name in the visible tree; `None` once unlinked or replaced.
    visible: Option<(u64, OsString)>,
    location: Location,
    meta: Meta,
    /// Mode or owner changed since the last `fsync` (not `fdatasync`).
    meta_dirty: bool,
    /// The kernel's lookup count.
    lookups: u64,
    /// Open handles of the mount on this file.
    open: u32,
}

impl Node {
    fn kind(&self) -> Kind {
        match self.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
        }
    }

    /// Still reachable by name, inode or handle; a node that is not alive and has no durable
    /// name is garbage.
    fn alive(&self) -> bool {
        self.visible.is_some() || self.lookups > 0 || self.open > 0
    }
}

/// An `fsync` whose data is in the backing file and whose disk flush is still to be done,
/// outside the model's lock, by [`SyncHandle::complete`].
#[derive(Debug)]
pub struct SyncHandle {
    file: Arc<File>,
    datasync: bool,
}

impl SyncHandle {
    pub fn complete(self) -> Result<()> {
        let synced = if self.datasync {
            self.file.sync_data()
        } else {
            self.file.sync_all()
        };
        synced.map_err(|e| LazyFsError::io("fsync of a backing file", e))
    }
}

/// The lazy filesystem's state; see the module docs.
#[derive(Debug)]
pub struct Model {
    backing: PathBuf,
    staging: PathBuf,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    unsynced_bytes: u64,
    max_unsynced_bytes: u64,
    power_losses: u64,
    last_power_loss: Option<PowerLossReport>,
    /// The size limit of a full-disk fault: bytes that files may still grow by (`None`: no
    /// limit beyond the backing disk's).
    space_left: Option<u64>,
}

impl Model {
    /// A model over `backing` (an existing directory); empties the staging directory, whose
    /// contents are never durable.
    pub fn new(backing: &Path, max_unsynced_bytes: u64) -> Result<Self> {
        let backing = backing
            .canonicalize()
            .map_err(|e| LazyFsError::io(format!("backing directory {}", backing.display()), e))?;
        if !backing.is_dir() {
            return Err(LazyFsError::io(
                format!("backing directory {}", backing.display()),
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        let staging = backing.join(STAGING_DIR);
        let mut model = Self {
            backing,
            staging,
            nodes: HashMap::new(),
            next_ino: FIRST_NODE_INO,
            unsynced_bytes: 0,
            max_unsynced_bytes,
            power_losses: 0,
            last_power_loss: None,
            space_left: None,
        };
        model.reset()?;
        Ok(model)
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    pub fn stats(&self) -> Stats {
        Stats {
            power_losses: self.power_losses,
            unsynced_bytes: self.unsynced_bytes,
            max_unsynced_bytes: self.max_unsynced_bytes,
            nodes: self.nodes.len() as u64,
            last_power_loss: self.last_power_loss.clone(),
        }
    }

    /// Limits how much files may still grow, in total (a full disk: `Some(0)`), or lifts the
    /// limit (`None`). Shrinking or removing files gives space back while a limit is set.
    pub fn set_space_left(&mut self, left: Option<u64>) {
        self.space_left = left;
    }

    /// What the size limit still allows, if one is set (`statfs` reports it as free space).
    pub fn space_left(&self) -> Option<u64> {
        self.space_left
    }

    /// Takes `growth` bytes from the size limit, or fails with ENOSPC leaving it unchanged.
    fn take_space(&mut self, growth: u64) -> Result<()> {
        match self.space_left {
            Some(left) if growth > left => Err(LazyFsError::NoSpace {
                wanted: growth,
                left,
            }),
            Some(left) => {
                self.space_left = Some(left - growth);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Gives `freed` bytes back to the size limit, if one is set.
    fn give_space(&mut self, freed: u64) {
        if let Some(left) = &mut self.space_left {
            *left = left.saturating_add(freed);
        }
    }

    /// The visible size of a file node (0 for anything else).
    fn file_size(&self, ino: u64) -> Result<u64> {
        Ok(match &self.node(ino)?.body {
            Body::File(file) => file.data.size(),
            _ => 0,
        })
    }

    /// Drops everything not synced: the mount then shows exactly the backing directory.
    pub fn power_loss(&mut self) -> Result<PowerLossReport> {
        let mut report = PowerLossReport {
            dropped_bytes: self.unsynced_bytes,
            ..PowerLossReport::default()
        };
        for node in self.nodes.values() {
            match &node.body {
                Body::File(file) if !file.data.is_clean() => report.dropped_files += 1,
                Body::File(_) => {}
                Body::Dir(dir) => {
                    let names: BTreeSet<&OsString> =
                        dir.visible.keys().chain(dir.durable.keys()).collect();
                    report.dropped_entries += names
                        .into_iter()
                        .filter(|name| dir.visible.get(*name) != dir.durable.get(*name))
                        .count() as u64;
                }
            }
        }
        self.power_losses += 1;
        self.last_power_loss = Some(report.clone());
        self.reset()?;
        Ok(report)
    }

    /// At unmount: deletes the staging directory (nothing in it is durable), so the backing
    /// directory holds only the durable state.
    pub fn remove_staging(&mut self) -> Result<()> {
        self.nodes.retain(|&ino, _| ino == ROOT_INO);
        self.unsynced_bytes = 0;
        match fs::remove_dir_all(&self.staging) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LazyFsError::io("deleting the staging directory", e)),
        }
    }

    /// Forgets every node and empties the staging directory.
    fn reset(&mut self) -> Result<()> {
        self.nodes.clear();
        self.unsynced_bytes = 0;
        match fs::remove_dir_all(&self.staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LazyFsError::io("emptying the staging directory", e)),
        }
        fs::create_dir(&self.staging)
            .map_err(|e| LazyFsError::io("creating the staging directory", e))?;
        let metadata = fs::metadata(&self.backing)
            .map_err(|e| LazyFsError::io("stat of the backing directory", e))?;
        self.nodes.insert(
            ROOT_INO,
            Node {
                body: Body::Dir(DirBody::default()),
                visible: None,
                location: Location::Root,
                meta: Meta::of(&metadata),
                meta_dirty: false,
                lookups: 0,
                open: 0,
            },
        );
        Ok(())
    }

    // ----- lookups and attributes -----

    /// Finds `name` in `parent` and counts a kernel lookup on it.
    pub fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<Attr> {
        let ino = self.child(parent, name)?;
        self.node_mut(ino)?.lookups += 1;
        self.attr(ino)
    }

    /// The inode of `name` in `parent` (no lookup counted).
    pub fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64> {
        self.ensure_loaded(parent)?;
        self.dir(parent)?
            .visible
            .get(name)
            .copied()
            .ok_or(LazyFsError::NotFound)
    }

    /// The kernel forgets `count` lookups of `ino`.
    pub fn forget(&mut self, ino: u64, count: u64) -> Result<()> {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return Ok(()); // from before a power loss
        };
        node.lookups = node.lookups.saturating_sub(count);
        self.collect_garbage(ino)
    }

    pub fn attr(&self, ino: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        let (size, nlink) = match &node.body {
            Body::File(file) => (file.data.size(), u32::from(node.visible.is_some())),
            Body::Dir(dir) => {
                let subdirs = dir
                    .visible
                    .values()
                    .filter(|child| self.nodes.get(child).is_some_and(|n| n.kind() == Kind::Dir))
                    .count();
                (4096, 2 + u32::try_from(subdirs).unwrap_or(u32::MAX - 2))
            }
        };
        Ok(Attr {
            ino,
            kind: node.kind(),
            size,
            perm: node.meta.perm,
            nlink,
            uid: node.meta.uid,
            gid: node.meta.gid,
            atime: node.meta.atime,
            mtime: node.meta.mtime,
            ctime: node.meta.ctime,
        })
    }

    pub fn setattr(&mut self, ino: u64, change: &SetAttr) -> Result<Attr> {
        let now = SystemTime::now();
        if let Some(size) = change.size {
            let old = self.file_size(ino)?;
            self.take_space(size.saturating_sub(old))?;
            self.give_space(old.saturating_sub(size));
        }
        let node = self.node_mut(ino)?;
        let mut freed = 0;
        if let Some(size) = change.size {
            let Body::File(file) = &mut node.body else {
                return Err(LazyFsError::IsADirectory);
            };
            if size > MAX_FILE_BYTES {
                return Err(LazyFsError::TooLarge);
            }
            freed = file.data.set_len(size);
            node.meta.mtime = now;
        }
        if change.perm.is_some() || change.uid.is_some() || change.gid.is_some() {
            node.meta.perm = change.perm.unwrap_or(node.meta.perm);
            node.meta.uid = change.uid.unwrap_or(node.meta.uid);
            node.meta.gid = change.gid.unwrap_or(node.meta.gid);
            node.meta_dirty = true;
        }
        if let Some(atime) = change.atime {
            node.meta.atime = atime;
        }
        if let Some(mtime) = change.mtime {
            node.meta.mtime = mtime;
        }
        node.meta.ctime = now;
        self.unsynced_bytes -= freed;
        self.attr(ino)
    }

    /// The visible entries of a directory, sorted by name.
    pub fn readdir(&mut self, ino: u64) -> Result<Vec<DirEntry>> {
        self.ensure_loaded(ino)?;
        let dir = self.dir(ino)?;
        dir.visible
            .iter()
            .map(|(name, &child)| {
                Ok(DirEntry {
                    ino: child,
                    kind: self.node(child)?.kind(),
                    name: name.clone(),
                })
            })
            .collect()
    }

    /// The visible parent of a directory (the root is its own parent).
    pub fn parent(&self, ino: u64) -> Result<u64> {
        Ok(self
            .node(ino)?
            .visible
            .as_ref()
            .map_or(ROOT_INO, |(p, _)| *p))
    }

    // ----- namespace changes (visible only, until the directory is synced) -----

    /// Creates an empty file, counted as looked up and open once.
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.check_new_name(parent, name)?;
        let ino = self.allocate_ino();
        let path = self.staged_path(ino);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(u32::from(perm))
            .open(&path)
            .map_err(|e| LazyFsError::io(format!("creating {}", path.display()), e))?;
        self.insert_new(
            ino,
            parent,
            name,
            Body::File(FileBody {
                data: DirtyData::new(0),
                handle: Some(Arc::new(file)),
            }),
            Meta::new(perm, uid, gid),
        )?;
        let node = self.node_mut(ino)?;
        node.lookups = 1;
        node.open = 1;
        self.attr(ino)
    }

    /// Creates an empty directory, counted as looked up once.
    pub fn mkdir(
        &mut self,
        parent: u64,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.check_new_name(parent, name)?;
        let ino = self.allocate_ino();
        let path = self.staged_path(ino);
        fs::DirBuilder::new()
            .mode(u32::from(perm))
            .create(&path)
            .map_err(|e| LazyFsError::io(format!("creating {}", path.display()), e))?;
        let body = Body::Dir(DirBody {
            loaded: true,
            ..DirBody::default()
        });
        self.insert_new(ino, parent, name, body, Meta::new(perm, uid, gid))?;
        self.node_mut(ino)?.lookups = 1;
        self.attr(ino)
    }

    pub fn unlink(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        let ino = self.child(parent, name)?;
        if self.node(ino)?.kind() == Kind::Dir {
            return Err(LazyFsError::IsADirectory);
        }
        let size = self.file_size(ino)?;
        self.remove_visible(parent, name, ino)?;
        self.give_space(size);
        Ok(())
    }

    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        let ino = self.child(parent, name)?;
        if self.node(ino)?.kind() != Kind::Dir {
            return Err(LazyFsError::NotADirectory);
        }
        self.ensure_loaded(ino)?;
        if !self.dir(ino)?.visible.is_empty() {
            return Err(LazyFsError::NotEmpty);
        }
        self.remove_visible(parent, name, ino)
    }

    /// `rename(2)`; with `no_replace` an existing target is an error (`RENAME_NOREPLACE`).
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<()> {
        check_name(new_parent, new_name)?;
        let ino = self.child(parent, name)?;
        self.check_visible_dir(new_parent)?;
        if parent == new_parent && name == new_name {
            return Ok(());
        }
        let kind = self.node(ino)?.kind();
        if kind == Kind::Dir {
            // A directory cannot move into itself or below itself.
            let mut at = new_parent;
            for _ in 0..MAX_DEPTH {
                if at == ino {
                    return Err(LazyFsError::Invalid("a directory cannot move into itself"));
                }
                if at == ROOT_INO {
                    break;
                }
                at = self.parent(at)?;
            }
        }
        let target = self.dir(new_parent)?.visible.get(new_name).copied();
        if let Some(target) = target {
            if no_replace {
                return Err(LazyFsError::Exists);
            }
            match (kind, self.node(target)?.kind()) {
                (Kind::File, Kind::Dir) => return Err(LazyFsError::IsADirectory),
                (Kind::Dir, Kind::File) => return Err(LazyFsError::NotADirectory),
                (Kind::Dir, Kind::Dir) => {
                    self.ensure_loaded(target)?;
                    if !self.dir(target)?.visible.is_empty() {
                        return Err(LazyFsError::NotEmpty);
                    }
                }
                (Kind::File, Kind::File) => {}
            }
        }
        self.dir_mut(parent)?.visible.remove(name);
        self.dir_mut(new_parent)?
            .visible
            .insert(new_name.to_os_string(), ino);
        self.node_mut(ino)?.visible = Some((new_parent, new_name.to_os_string()));
        self.node_mut(ino)?.meta.ctime = SystemTime::now();
        if let Some(target) = target {
            self.node_mut(target)?.visible = None;
            self.collect_garbage(target)?;
        }
        Ok(())
    }

    // ----- file data -----

    pub fn open(&mut self, ino: u64) -> Result<()> {
        let node = self.node_mut(ino)?;
        if node.kind() == Kind::Dir {
            return Err(LazyFsError::IsADirectory);
        }
        node.open += 1;
        Ok(())
    }

    pub fn release(&mut self, ino: u64) -> Result<()> {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return Ok(()); // from before a power loss
        };
        node.open = node.open.saturating_sub(1);
        if node.open == 0
            && let Body::File(file) = &mut node.body
        {
            file.handle = None;
        }
        self.collect_garbage(ino)
    }

    pub fn read(&mut self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let handle = self.file_handle(ino)?;
        let file = self.file(ino)?;
        file.data
            .read(offset, size, &*handle)
            .map_err(|e| LazyFsError::io("reading a backing file", e))
    }

    /// Keeps the write in memory; fails with [`LazyFsError::UnsyncedCapReached`] when the
    /// unsynced bytes would pass the cap (counting the whole write, even where it overwrites
    /// unsynced bytes).
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let wanted = data.len() as u64;
        let end = offset.checked_add(wanted).ok_or(LazyFsError::TooLarge)?;
        if end > MAX_FILE_BYTES {
            return Err(LazyFsError::TooLarge);
        }
        if self.unsynced_bytes + wanted > self.max_unsynced_bytes {
            return Err(LazyFsError::UnsyncedCapReached {
                held: self.unsynced_bytes,
                wanted,
                cap: self.max_unsynced_bytes,
            });
        }
        let written = u32::try_from(data.len()).map_err(|_| LazyFsError::TooLarge)?;
        let size = self.file_size(ino)?;
        self.take_space(end.saturating_sub(size))?;
        let node = self.node_mut(ino)?;
        node.meta.mtime = SystemTime::now();
        let Body::File(file) = &mut node.body else {
            return Err(LazyFsError::IsADirectory);
        };
        let added = file.data.write(offset, data);
        self.unsynced_bytes += added;
        Ok(written)
    }

    /// `fallocate`: mode 0 grows the file (zeros) to cover the range; `FALLOC_FL_KEEP_SIZE`
    /// changes nothing visible; other modes (punching holes, ...) are not supported.
    pub fn fallocate(&mut self, ino: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        let end = offset.checked_add(length).ok_or(LazyFsError::TooLarge)?;
        if end > MAX_FILE_BYTES {
            return Err(LazyFsError::TooLarge);
        }
        if mode == 0 {
            let size = self.file_size(ino)?;
            self.take_space(end.saturating_sub(size))?;
        }
        let node = self.node_mut(ino)?;
        let Body::File(file) = &mut node.body else {
            return Err(LazyFsError::IsADirectory);
        };
        match mode {
            0 => {
                if end > file.data.size() {
                    file.data.set_len(end);
                    node.meta.mtime = SystemTime::now();
                }
                Ok(())
            }
            FALLOC_FL_KEEP_SIZE => Ok(()),
            _ => Err(LazyFsError::Unsupported(
                "fallocate modes other than 0 and KEEP_SIZE",
            )),
        }
    }

    /// `fsync`/`fdatasync` of a file: writes its unsynced data (and with `fsync` its mode and
    /// owner) into the backing object; the returned handle flushes it to disk. A directory
    /// is synced at once ([`Model::fsync_dir`]) and returns `None`.
    pub fn fsync(&mut self, ino: u64, datasync: bool) -> Result<Option<SyncHandle>> {
        if self.node(ino)?.kind() == Kind::Dir {
            self.fsync_dir(ino, datasync)?;
            return Ok(None);
        }
        let handle = self.file_handle(ino)?;
        let node = self.node_mut(ino)?;
        let Body::File(file) = &mut node.body else {
            return Err(LazyFsError::IsADirectory);
        };
        let freed = file
            .data
            .write_back(&*handle)
            .map_err(|e| LazyFsError::io("writing back unsynced data", e))?;
        if !datasync && node.meta_dirty {
            apply_meta(&handle, &node.meta)?;
            node.meta_dirty = false;
        }
        self.unsynced_bytes -= freed;
        Ok(Some(SyncHandle {
            file: handle,
            datasync,
        }))
    }

    /// `fsync` of a directory: its durable entries become its visible entries.
    ///
    /// 1. Every durable entry that changed moves its object out to staging.
    /// 2. Every visible entry that changed moves its object in (from staging, or from its
    ///    durable name in another directory: the whole rename becomes durable).
    /// 3. An object moved out in step 1 that is visible in another directory moves there (the
    ///    other half of a rename across directories); one that is nowhere stays in staging
    ///    and is deleted once nothing refers to it.
    pub fn fsync_dir(&mut self, ino: u64, datasync: bool) -> Result<()> {
        self.ensure_loaded(ino)?;
        let dir = self.dir(ino)?;
        let names: BTreeSet<&OsString> = dir.visible.keys().chain(dir.durable.keys()).collect();
        let changed: Vec<(OsString, Option<u64>, Option<u64>)> = names
            .into_iter()
            .filter(|name| dir.visible.get(*name) != dir.durable.get(*name))
            .map(|name| {
                (
                    name.clone(),
                    dir.durable.get(name).copied(),
                    dir.visible.get(name).copied(),
                )
            })
            .collect();
        if changed.is_empty() && (datasync || !self.node(ino)?.meta_dirty) {
            // The backing directory already holds what is visible.
            return Ok(());
        }
        let mut touched = BTreeSet::from([ino]);
        let mut moved_out = Vec::new();
        for (_, durable, _) in &changed {
            if let Some(old) = durable {
                touched.extend(self.unbind(*old)?);
                moved_out.push(*old);
            }
        }
        for (name, _, visible) in &changed {
            if let Some(new) = visible {
                touched.extend(self.bind(*new, ino, name)?);
            }
        }
        for old in moved_out {
            let node = self.node(old)?;
            if node.location != Location::Staged {
                continue;
            }
            if let Some((other, name)) = node.visible.clone() {
                let displaced = self.dir(other)?.durable.get(&name).copied();
                if let Some(displaced) = displaced {
                    touched.extend(self.unbind(displaced)?);
                    self.collect_garbage(displaced)?;
                }
                match self.bind(old, other, &name) {
                    Ok(source) => {
                        touched.insert(other);
                        touched.extend(source);
                    }
                    // Only a move into a directory that is itself staged below `old` can fail
                    // here; `old` then stays in staging (nameless after a power loss).
                    Err(e) => tracing::warn!(error = %e, "lazyfs: cannot complete a rename"),
                }
            }
            self.collect_garbage(old)?;
        }
        let node = self.node_mut(ino)?;
        if !datasync && node.meta_dirty {
            let meta = node.meta.clone();
            node.meta_dirty = false;
            let path = self.backing_path(ino)?;
            let dir = File::open(&path)
                .map_err(|e| LazyFsError::io(format!("opening {}", path.display()), e))?;
            apply_meta(&dir, &meta)?;
        }
        let mut paths = BTreeSet::new();
        for dir in touched {
            if self.nodes.contains_key(&dir) {
                paths.insert(self.backing_path(dir)?);
            }
        }
        paths.insert(self.staging.clone());
        for path in paths {
            File::open(&path)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| LazyFsError::io(format!("fsync of {}", path.display()), e))?;
        }
        Ok(())
    }

    // ----- internals -----

    fn node(&self, ino: u64) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(LazyFsError::Stale)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(LazyFsError::Stale)
    }

    fn dir(&self, ino: u64) -> Result<&DirBody> {
        match &self.node(ino)?.body {
            Body::Dir(dir) => Ok(dir),
            Body::File(_) => Err(LazyFsError::NotADirectory),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirBody> {
        match &mut self.node_mut(ino)?.body {
            Body::Dir(dir) => Ok(dir),
            Body::File(_) => Err(LazyFsError::NotADirectory),
        }
    }

    fn file(&self, ino: u64) -> Result<&FileBody> {
        match &self.node(ino)?.body {
            Body::File(file) => Ok(file),
            Body::Dir(_) => Err(LazyFsError::IsADirectory),
        }
    }

    fn allocate_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    fn staged_path(&self, ino: u64) -> PathBuf {
        self.staging.join(ino.to_string())
    }

    /// Where a node's backing object is now.
    fn backing_path(&self, ino: u64) -> Result<PathBuf> {
        let mut names = Vec::new();
        let mut at = ino;
        for _ in 0..MAX_DEPTH {
            match &self.node(at)?.location {
                Location::Root => {
                    let mut path = self.backing.clone();
                    path.extend(names.iter().rev());
                    return Ok(path);
                }
                Location::Staged => {
                    let mut path = self.staged_path(at);
                    path.extend(names.iter().rev());
                    return Ok(path);
                }
                Location::Durable { parent, name } => {
                    names.push(name.clone());
                    at = *parent;
                }
            }
        }
        Err(LazyFsError::Invalid("directory tree deeper than MAX_DEPTH"))
    }

    /// The backing object of an open file, kept open while the mount has it open.
    fn file_handle(&mut self, ino: u64) -> Result<Arc<File>> {
        if let Some(handle) = &self.file(ino)?.handle {
            return Ok(Arc::clone(handle));
        }
        let path = self.backing_path(ino)?;
        let handle = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map(Arc::new)
            .map_err(|e| LazyFsError::io(format!("opening {}", path.display()), e))?;
        let node = self.node_mut(ino)?;
        if node.open > 0
            && let Body::File(file) = &mut node.body
        {
            file.handle = Some(Arc::clone(&handle));
        }
        Ok(handle)
    }

    /// Reads a directory's entries from its backing directory on first use.
    fn ensure_loaded(&mut self, ino: u64) -> Result<()> {
        if self.dir(ino)?.loaded {
            return Ok(());
        }
        let path = self.backing_path(ino)?;
        let listing = fs::read_dir(&path)
            .map_err(|e| LazyFsError::io(format!("listing {}", path.display()), e))?;
        let mut entries = BTreeMap::new();
        for entry in listing {
            let entry =
                entry.map_err(|e| LazyFsError::io(format!("listing {}", path.display()), e))?;
            let name = entry.file_name();
            if ino == ROOT_INO && (name == STAGING_DIR || name == CONTROL_FILE) {
                continue;
            }
            // `DirEntry::metadata` does not follow symlinks.
            let metadata = entry
                .metadata()
                .map_err(|e| LazyFsError::io(format!("stat of {}", entry.path().display()), e))?;
            let body = if metadata.is_file() {
                Body::File(FileBody {
                    data: DirtyData::new(metadata.len()),
                    handle: None,
                })
            } else if metadata.is_dir() {
                Body::Dir(DirBody::default())
            } else {
                tracing::warn!(path = %entry.path().display(), "lazyfs: skipping an entry that is neither a file nor a directory");
                continue;
            };
            let child = self.allocate_ino();
            self.nodes.insert(
                child,
                Node {
                    body,
                    visible: Some((ino, name.clone())),
                    location: Location::Durable {
                        parent: ino,
                        name: name.clone(),
                    },
                    meta: Meta::of(&metadata),
                    meta_dirty: false,
                    lookups: 0,
                    open: 0,
                },
            );
            entries.insert(name, child);
        }
        let dir = self.dir_mut(ino)?;
        dir.visible = entries.clone();
        dir.durable = entries;
        dir.loaded = true;
        Ok(())
    }

    fn check_new_name(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        check_name(parent, name)?;
        self.check_visible_dir(parent)?;
        if self.dir(parent)?.visible.contains_key(name) {
            return Err(LazyFsError::Exists);
        }
        Ok(())
    }

    /// A directory that can take new entries: loaded and not removed.
    fn check_visible_dir(&mut self, ino: u64) -> Result<()> {
        self.ensure_loaded(ino)?;
        if ino != ROOT_INO && self.node(ino)?.visible.is_none() {
            return Err(LazyFsError::NotFound);
        }
        Ok(())
    }

    /// Adds a new (staged) node under `parent`.
    fn insert_new(
        &mut self,
        ino: u64,
        parent: u64,
        name: &OsStr,
        body: Body,
        meta: Meta,
    ) -> Result<()> {
        self.nodes.insert(
            ino,
            Node {
                body,
                visible: Some((parent, name.to_os_string())),
                location: Location::Staged,
                meta,
                // The backing object was created with our own owner.
                meta_dirty: true,
                lookups: 0,
                open: 0,
            },
        );
        let now = SystemTime::now();
        let parent_node = self.node_mut(parent)?;
        parent_node.meta.mtime = now;
        parent_node.meta.ctime = now;
        self.dir_mut(parent)?
            .visible
            .insert(name.to_os_string(), ino);
        Ok(())
    }

    fn remove_visible(&mut self, parent: u64, name: &OsStr, ino: u64) -> Result<()> {
        self.dir_mut(parent)?.visible.remove(name);
        let node = self.node_mut(ino)?;
        node.visible = None;
        node.meta.ctime = SystemTime::now();
        self.collect_garbage(ino)
    }

    /// Moves a node's backing object out to staging (it loses its durable name); returns the
    /// directory it left.
    fn unbind(&mut self, ino: u64) -> Result<Option<u64>> {
        let Location::Durable { parent, name } = self.node(ino)?.location.clone() else {
            return Ok(None);
        };
        let from = self.backing_path(ino)?;
        let to = self.staged_path(ino);
        fs::rename(&from, &to).map_err(|e| {
            LazyFsError::io(format!("moving {} to {}", from.display(), to.display()), e)
        })?;
        self.dir_mut(parent)?.durable.remove(&name);
        self.node_mut(ino)?.location = Location::Staged;
        Ok(Some(parent))
    }

    /// Moves a node's backing object to `dir/name` (which must be free in the backing
    /// directory); returns the directory it left, if it had a durable name.
    fn bind(&mut self, ino: u64, dir: u64, name: &OsStr) -> Result<Option<u64>> {
        if self.dir(dir)?.durable.contains_key(name) {
            return Err(LazyFsError::Exists);
        }
        let from = self.backing_path(ino)?;
        let to = self.backing_path(dir)?.join(name);
        fs::rename(&from, &to).map_err(|e| {
            LazyFsError::io(format!("moving {} to {}", from.display(), to.display()), e)
        })?;
        let new_location = Location::Durable {
            parent: dir,
            name: name.to_os_string(),
        };
        let old = std::mem::replace(&mut self.node_mut(ino)?.location, new_location);
        let left = match old {
            Location::Durable { parent, name } => {
                self.dir_mut(parent)?.durable.remove(&name);
                Some(parent)
            }
            Location::Staged | Location::Root => None,
        };
        self.dir_mut(dir)?.durable.insert(name.to_os_string(), ino);
        Ok(left)
    }

    /// Deletes a node that nothing refers to and that has no durable name, with its backing
    /// object. Objects durably inside a deleted directory that are still alive move to
    /// staging first.
    fn collect_garbage(&mut self, ino: u64) -> Result<()> {
        let Some(node) = self.nodes.get(&ino) else {
            return Ok(());
        };
        if ino == ROOT_INO || node.alive() || node.location != Location::Staged {
            return Ok(());
        }
        self.evacuate_and_forget_children(ino)?;
        let path = self.staged_path(ino);
        let removed = match self.node(ino)?.kind() {
            Kind::File => fs::remove_file(&path),
            Kind::Dir => fs::remove_dir_all(&path),
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(LazyFsError::io(format!("deleting {}", path.display()), e));
            }
        }
        self.forget_node(ino);
        Ok(())
    }

    /// For a directory about to be deleted: moves its alive durable children out to staging
    /// and forgets the others (recursively).
    fn evacuate_and_forget_children(&mut self, ino: u64) -> Result<()> {
        let children: Vec<u64> = match &self.node(ino)?.body {
            Body::Dir(dir) => dir.durable.values().copied().collect(),
            Body::File(_) => return Ok(()),
        };
        for child in children {
            if self.node(child)?.alive() {
                self.unbind(child)?;
            } else {
                self.evacuate_and_forget_children(child)?;
                self.forget_node(child);
            }
        }
        Ok(())
    }

    fn forget_node(&mut self, ino: u64) {
        if let Some(node) = self.nodes.remove(&ino)
            && let Body::File(file) = node.body
        {
            self.unsynced_bytes -= file.data.dirty_bytes();
        }
    }
}

/// Names the mount must not create: the staging directory and the control file in the root.
fn check_name(parent: u64, name: &OsStr) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(LazyFsError::Invalid("empty name, . or .."));
    }
    if parent == ROOT_INO {
        if name == STAGING_DIR {
            return Err(LazyFsError::Reserved(STAGING_DIR));
        }
        if name == CONTROL_FILE {
            return Err(LazyFsError::Reserved(CONTROL_FILE));
        }
    }
    Ok(())
}

fn apply_meta(object: &File, meta: &Meta) -> Result<()> {
    object
        .set_permissions(Permissions::from_mode(u32::from(meta.perm)))
        .map_err(|e| LazyFsError::io("chmod of a backing object", e))?;
    std::os::unix::fs::fchown(object, Some(meta.uid), Some(meta.gid))
        .map_err(|e| LazyFsError::io("chown of a backing object", e))
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
