//! The model without FUSE: each test drives [`Model`] over a temporary backing directory,
//! calls [`Model::power_loss`] and checks both what the model shows and what is on disk.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

const CAP: u64 = 1 << 20;

struct Fixture {
    dir: tempfile::TempDir,
    model: Model,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = Model::new(dir.path(), CAP).unwrap();
        Self { dir, model }
    }

    fn backing(&self) -> &Path {
        self.dir.path()
    }

    /// The inode at a `/`-separated path from the root.
    fn ino(&mut self, path: &str) -> Result<u64> {
        let mut at = ROOT_INO;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            at = self.model.child(at, OsStr::new(name))?;
        }
        Ok(at)
    }

    fn create(&mut self, parent: &str, name: &str) -> u64 {
        let parent = self.ino(parent).unwrap();
        self.model
            .create(parent, OsStr::new(name), 0o644, 0, 0)
            .unwrap()
            .ino
    }

    /// A new file in `dir` holding `data`, synced (its name is not).
    fn create_synced(&mut self, dir: &str, name: &str, data: &[u8]) {
        self.create(dir, name);
        let path = format!("{dir}/{name}");
        self.write(&path, 0, data);
        self.fsync(&path, false);
    }

    fn mkdir(&mut self, parent: &str, name: &str) -> u64 {
        let parent = self.ino(parent).unwrap();
        self.model
            .mkdir(parent, OsStr::new(name), 0o755, 0, 0)
            .unwrap()
            .ino
    }

    fn write(&mut self, path: &str, offset: u64, data: &[u8]) {
        let ino = self.ino(path).unwrap();
        assert_eq!(
            self.model.write(ino, offset, data).unwrap() as usize,
            data.len()
        );
    }

    fn read(&mut self, path: &str) -> Result<Vec<u8>> {
        let ino = self.ino(path)?;
        self.model.read(ino, 0, u32::MAX)
    }

    fn fsync(&mut self, path: &str, datasync: bool) {
        let ino = self.ino(path).unwrap();
        if let Some(sync) = self.model.fsync(ino, datasync).unwrap() {
            sync.complete().unwrap();
        }
    }

    fn names(&mut self, path: &str) -> Vec<String> {
        let ino = self.ino(path).unwrap();
        let entries = self.model.readdir(ino).unwrap();
        entries
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    }

    fn on_disk(&self, path: &str) -> Option<Vec<u8>> {
        fs::read(self.backing().join(path)).ok()
    }

    fn staging_is_empty(&self) -> bool {
        fs::read_dir(self.backing().join(STAGING_DIR))
            .unwrap()
            .next()
            .is_none()
    }

    fn power_loss(&mut self) -> PowerLossReport {
        self.model.power_loss().unwrap()
    }
}

#[test]
fn written_not_synced_data_is_dropped_by_power_loss() {
    let mut f = Fixture::new();
    fs::write(f.backing().join("log"), b"old").unwrap();
    let ino = f.ino("log").unwrap();
    f.model.open(ino).unwrap();
    f.write("log", 3, b" and new");
    assert_eq!(
        f.read("log").unwrap(),
        b"old and new",
        "reads see unsynced writes"
    );
    assert_eq!(f.model.stats().unsynced_bytes, 8);
    assert_eq!(
        f.on_disk("log").unwrap(),
        b"old",
        "nothing reaches the disk before fsync"
    );

    let report = f.power_loss();
    assert_eq!(report.dropped_bytes, 8);
    assert_eq!(report.dropped_files, 1);
    assert_eq!(f.read("log").unwrap(), b"old");
    assert_eq!(f.model.stats().unsynced_bytes, 0);
    assert!(
        matches!(f.model.read(ino, 0, 10), Err(LazyFsError::Stale)),
        "inodes from before the power loss are stale"
    );
}

#[test]
fn synced_data_survives_and_what_follows_the_sync_does_not() {
    let mut f = Fixture::new();
    f.create("", "log");
    f.fsync("", false);
    f.write("log", 0, b"synced;");
    f.fsync("log", true);
    assert_eq!(f.on_disk("log").unwrap(), b"synced;");
    f.write("log", 7, b"lost");
    assert_eq!(f.read("log").unwrap(), b"synced;lost");

    f.power_loss();
    assert_eq!(f.read("log").unwrap(), b"synced;");
}

#[test]
fn a_truncation_is_data_and_is_undone_unless_synced() {
    let mut f = Fixture::new();
    fs::write(f.backing().join("seg"), b"0123456789").unwrap();
    let ino = f.ino("seg").unwrap();
    let cut = SetAttr {
        size: Some(4),
        ..SetAttr::default()
    };
    assert_eq!(f.model.setattr(ino, &cut).unwrap().size, 4);
    assert_eq!(f.read("seg").unwrap(), b"0123");
    f.power_loss();
    assert_eq!(f.read("seg").unwrap(), b"0123456789");

    let ino = f.ino("seg").unwrap();
    f.model.setattr(ino, &cut).unwrap();
    f.fsync("seg", true);
    f.power_loss();
    assert_eq!(f.read("seg").unwrap(), b"0123");
}

#[test]
fn a_created_file_disappears_unless_its_directory_is_synced() {
    let mut f = Fixture::new();
    f.create("", "new");
    f.write("new", 0, b"data");
    f.fsync("new", false);
    assert_eq!(f.names(""), ["new"]);
    assert_eq!(f.on_disk("new"), None, "the name is not durable");

    f.power_loss();
    assert_eq!(f.names(""), Vec::<String>::new());
    assert!(matches!(f.ino("new"), Err(LazyFsError::NotFound)));
    assert!(f.staging_is_empty());
}

#[test]
fn a_created_file_stays_once_its_directory_is_synced_with_only_its_synced_data() {
    let mut f = Fixture::new();
    f.create("", "a");
    f.create("", "b");
    f.write("a", 0, b"synced");
    f.fsync("a", false);
    f.write("b", 0, b"never synced");
    f.fsync("", false);
    assert_eq!(f.on_disk("a").unwrap(), b"synced");
    f.write("a", 6, b"+more");

    f.power_loss();
    assert_eq!(f.names(""), ["a", "b"]);
    assert_eq!(f.read("a").unwrap(), b"synced");
    assert_eq!(
        f.read("b").unwrap(),
        b"",
        "the name survived, the data was never synced"
    );
}

#[test]
fn a_rename_is_undone_unless_the_directory_is_synced() {
    let mut f = Fixture::new();
    fs::write(f.backing().join("tmp"), b"new").unwrap();
    fs::write(f.backing().join("current"), b"old").unwrap();
    // The atomic-replace pattern: rename over the old file.
    f.model
        .rename(
            ROOT_INO,
            OsStr::new("tmp"),
            ROOT_INO,
            OsStr::new("current"),
            false,
        )
        .unwrap();
    assert_eq!(f.names(""), ["current"]);
    assert_eq!(f.read("current").unwrap(), b"new");

    f.power_loss();
    assert_eq!(f.names(""), ["current", "tmp"]);
    assert_eq!(f.read("current").unwrap(), b"old");

    f.model
        .rename(
            ROOT_INO,
            OsStr::new("tmp"),
            ROOT_INO,
            OsStr::new("current"),
            false,
        )
        .unwrap();
    f.fsync("", false);
    f.power_loss();
    assert_eq!(f.names(""), ["current"]);
    assert_eq!(f.read("current").unwrap(), b"new");
    assert!(f.staging_is_empty(), "the replaced file is deleted");
}

#[test]
fn rename_no_replace_refuses_an_existing_target() {
    let mut f = Fixture::new();
    f.create("", "a");
    f.create("", "b");
    let refused = f
        .model
        .rename(ROOT_INO, OsStr::new("a"), ROOT_INO, OsStr::new("b"), true);
    assert!(matches!(refused, Err(LazyFsError::Exists)));
    assert_eq!(f.names(""), ["a", "b"]);
}

#[test]
fn an_unlink_is_undone_unless_the_directory_is_synced() {
    let mut f = Fixture::new();
    fs::write(f.backing().join("old-segment"), b"kept").unwrap();
    f.model.unlink(ROOT_INO, OsStr::new("old-segment")).unwrap();
    assert_eq!(f.names(""), Vec::<String>::new());
    f.power_loss();
    assert_eq!(f.read("old-segment").unwrap(), b"kept");

    f.model.unlink(ROOT_INO, OsStr::new("old-segment")).unwrap();
    f.fsync("", false);
    assert_eq!(f.on_disk("old-segment"), None);
    assert!(f.staging_is_empty(), "nothing refers to the file any more");
    f.power_loss();
    assert_eq!(f.names(""), Vec::<String>::new());
}

#[test]
fn an_unlinked_open_file_stays_readable_until_released() {
    let mut f = Fixture::new();
    fs::write(f.backing().join("f"), b"data").unwrap();
    let ino = f.ino("f").unwrap();
    f.model.open(ino).unwrap();
    f.model.unlink(ROOT_INO, OsStr::new("f")).unwrap();
    f.fsync("", false);
    assert_eq!(f.model.read(ino, 0, 100).unwrap(), b"data");
    assert!(!f.staging_is_empty());
    f.model.release(ino).unwrap();
    assert!(f.staging_is_empty());
    assert!(matches!(f.model.read(ino, 0, 1), Err(LazyFsError::Stale)));
}

#[test]
fn fdatasync_makes_data_durable_but_only_fsync_makes_the_mode_durable() {
    let mut f = Fixture::new();
    fs::write(f.backing().join("f"), b"").unwrap();
    fs::set_permissions(f.backing().join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    let ino = f.ino("f").unwrap();
    let chmod = SetAttr {
        perm: Some(0o600),
        ..SetAttr::default()
    };

    f.model.setattr(ino, &chmod).unwrap();
    f.write("f", 0, b"by fdatasync");
    f.fsync("f", true);
    assert_eq!(f.model.attr(ino).unwrap().perm, 0o600);
    f.power_loss();
    let ino = f.ino("f").unwrap();
    assert_eq!(f.read("f").unwrap(), b"by fdatasync");
    assert_eq!(
        f.model.attr(ino).unwrap().perm,
        0o644,
        "fdatasync left the mode"
    );

    f.model.setattr(ino, &chmod).unwrap();
    f.fsync("f", false);
    f.power_loss();
    let ino = f.ino("f").unwrap();
    assert_eq!(
        f.model.attr(ino).unwrap().perm,
        0o600,
        "fsync made the mode durable"
    );
}

#[test]
fn fallocate_grows_with_zeros_and_keep_size_changes_nothing() {
    let mut f = Fixture::new();
    let ino = f.create("", "seg");
    f.write("seg", 0, b"ab");
    f.model.fallocate(ino, 0, 8, 0).unwrap();
    assert_eq!(f.read("seg").unwrap(), b"ab\0\0\0\0\0\0");
    f.model.fallocate(ino, 0, 100, FALLOC_FL_KEEP_SIZE).unwrap();
    assert_eq!(f.model.attr(ino).unwrap().size, 8);
    assert!(matches!(
        f.model.fallocate(ino, 0, 4, 0x02),
        Err(LazyFsError::Unsupported(_))
    ));
    f.fsync("seg", true);
    f.fsync("", false);
    f.power_loss();
    assert_eq!(f.read("seg").unwrap(), b"ab\0\0\0\0\0\0");
}

#[test]
fn a_new_directory_needs_its_parent_synced_and_its_entries_need_it_synced() {
    let mut f = Fixture::new();
    f.mkdir("", "data");
    f.create_synced("data", "seg-1", b"one");
    f.fsync("data", false);
    // The directory's own name is not durable yet: everything is gone.
    f.power_loss();
    assert_eq!(f.names(""), Vec::<String>::new());

    f.mkdir("", "data");
    f.create_synced("data", "seg-1", b"one");
    f.fsync("", false);
    // The directory is durable, its entry for seg-1 is not.
    f.power_loss();
    assert_eq!(f.names("data"), Vec::<String>::new());

    f.create_synced("data", "seg-1", b"one");
    f.fsync("data", false);
    f.power_loss();
    assert_eq!(f.read("data/seg-1").unwrap(), b"one");
    assert_eq!(f.on_disk("data/seg-1").unwrap(), b"one");
}

#[test]
fn a_rename_across_directories_is_never_under_both_names_or_neither() {
    for sync_source in [true, false] {
        let mut f = Fixture::new();
        fs::create_dir(f.backing().join("src")).unwrap();
        fs::create_dir(f.backing().join("dst")).unwrap();
        fs::write(f.backing().join("src/f"), b"payload").unwrap();
        let src = f.ino("src").unwrap();
        let dst = f.ino("dst").unwrap();
        f.model
            .rename(src, OsStr::new("f"), dst, OsStr::new("g"), false)
            .unwrap();
        f.fsync(if sync_source { "src" } else { "dst" }, false);
        f.power_loss();
        assert_eq!(
            f.names("src"),
            Vec::<String>::new(),
            "sync_source={sync_source}"
        );
        assert_eq!(f.names("dst"), ["g"], "sync_source={sync_source}");
        assert_eq!(f.read("dst/g").unwrap(), b"payload");
        assert!(f.staging_is_empty());
    }
}

#[test]
fn data_synced_under_a_new_name_lands_in_the_durable_file() {
    let mut f = Fixture::new();
    fs::write(f.backing().join("a"), b"").unwrap();
    f.model
        .rename(ROOT_INO, OsStr::new("a"), ROOT_INO, OsStr::new("b"), false)
        .unwrap();
    f.write("b", 0, b"synced through b");
    f.fsync("b", true);
    // The rename is lost, the data is not: it belongs to the file, not the name.
    f.power_loss();
    assert_eq!(f.names(""), ["a"]);
    assert_eq!(f.read("a").unwrap(), b"synced through b");
}

#[test]
fn swapping_two_names_and_syncing_keeps_both_files() {
    let mut f = Fixture::new();
    fs::write(f.backing().join("x"), b"X").unwrap();
    fs::write(f.backing().join("y"), b"Y").unwrap();
    for (from, to) in [("x", "t"), ("y", "x"), ("t", "y")] {
        f.model
            .rename(ROOT_INO, OsStr::new(from), ROOT_INO, OsStr::new(to), false)
            .unwrap();
    }
    f.fsync("", false);
    f.power_loss();
    assert_eq!(f.read("x").unwrap(), b"Y");
    assert_eq!(f.read("y").unwrap(), b"X");
    assert!(f.staging_is_empty());
}

#[test]
fn rmdir_of_a_durable_tree_needs_the_parent_synced() {
    let mut f = Fixture::new();
    fs::create_dir(f.backing().join("d")).unwrap();
    fs::write(f.backing().join("d/f"), b"f").unwrap();
    let d = f.ino("d").unwrap();
    assert!(matches!(
        f.model.rmdir(ROOT_INO, OsStr::new("d")),
        Err(LazyFsError::NotEmpty)
    ));
    f.model.unlink(d, OsStr::new("f")).unwrap();
    f.model.rmdir(ROOT_INO, OsStr::new("d")).unwrap();
    f.power_loss();
    assert_eq!(f.read("d/f").unwrap(), b"f");

    let d = f.ino("d").unwrap();
    f.model.unlink(d, OsStr::new("f")).unwrap();
    f.model.rmdir(ROOT_INO, OsStr::new("d")).unwrap();
    f.fsync("", false);
    f.power_loss();
    assert_eq!(f.names(""), Vec::<String>::new());
    assert!(!f.backing().join("d").exists());
}

#[test]
fn a_directory_cannot_move_below_itself() {
    let mut f = Fixture::new();
    let a = f.mkdir("", "a");
    f.mkdir("a", "b");
    let b = f.ino("a/b").unwrap();
    let refused = f
        .model
        .rename(ROOT_INO, OsStr::new("a"), b, OsStr::new("a"), false);
    assert!(matches!(refused, Err(LazyFsError::Invalid(_))));
    assert_eq!(f.model.parent(b).unwrap(), a);
}

#[test]
fn writes_past_the_cap_fail_until_a_sync_frees_memory() {
    let mut f = Fixture::new();
    let ino = f.create("", "big");
    let chunk = vec![7u8; (CAP / 4) as usize];
    for i in 0..4 {
        f.model.write(ino, i * chunk.len() as u64, &chunk).unwrap();
    }
    let refused = f.model.write(ino, CAP, b"x");
    assert!(
        matches!(refused, Err(LazyFsError::UnsyncedCapReached { held, wanted: 1, cap: CAP }) if held == CAP)
    );
    assert_eq!(refused.unwrap_err().errno(), fuser::Errno::ENOSPC);
    f.fsync("big", true);
    assert_eq!(f.model.stats().unsynced_bytes, 0);
    f.model.write(ino, CAP, b"x").unwrap();
    assert_eq!(f.model.attr(ino).unwrap().size, CAP + 1);
}

#[test]
fn dropping_an_unsynced_file_frees_its_unsynced_bytes() {
    let mut f = Fixture::new();
    let ino = f.create("", "tmp");
    f.write("tmp", 0, b"12345");
    f.model.unlink(ROOT_INO, OsStr::new("tmp")).unwrap();
    f.model.release(ino).unwrap();
    assert_eq!(
        f.model.stats().unsynced_bytes,
        5,
        "still looked up by the kernel"
    );
    f.model.forget(ino, 1).unwrap();
    assert_eq!(f.model.stats().unsynced_bytes, 0);
    assert!(f.staging_is_empty());
}

#[test]
fn reserved_names_cannot_be_created_in_the_root() {
    let mut f = Fixture::new();
    for name in [STAGING_DIR, CONTROL_FILE] {
        let refused = f.model.create(ROOT_INO, OsStr::new(name), 0o644, 0, 0);
        assert!(matches!(refused, Err(LazyFsError::Reserved(_))), "{name}");
    }
    fs::write(f.backing().join(STAGING_DIR).join("junk"), b"").unwrap();
    assert_eq!(
        f.names(""),
        Vec::<String>::new(),
        "the staging directory is hidden"
    );
    let reopened = Model::new(f.backing(), CAP).unwrap();
    drop(reopened);
    assert!(
        f.staging_is_empty(),
        "a new model empties the staging directory"
    );
}

#[test]
fn a_size_limit_refuses_growth_with_enospc_and_keeps_what_was_written() {
    let mut f = Fixture::new();
    f.create_synced("", "log", b"0123456789");
    let ino = f.ino("log").unwrap();
    f.model.set_space_left(Some(4));
    // Overwriting inside the file takes no space; growing past the limit is refused whole.
    f.write("log", 0, b"abcdefghij");
    let refused = f.model.write(ino, 8, b"KLMNOPQ").unwrap_err();
    assert!(
        matches!(refused, LazyFsError::NoSpace { wanted: 5, left: 4 }),
        "{refused:?}"
    );
    assert_eq!(refused.errno(), fuser::Errno::ENOSPC);
    assert_eq!(f.read("log").unwrap(), b"abcdefghij");
    // Growing by what is left works; then the disk is full, for fallocate too.
    f.write("log", 10, b"wxyz");
    assert_eq!(f.model.space_left(), Some(0));
    assert!(matches!(
        f.model.fallocate(ino, 0, 20, 0),
        Err(LazyFsError::NoSpace { .. })
    ));
    // Removing a file gives its space back.
    f.model.set_space_left(None);
    f.create_synced("", "old", b"12345678");
    f.model.set_space_left(Some(0));
    f.model.unlink(ROOT_INO, OsStr::new("old")).unwrap();
    assert_eq!(f.model.space_left(), Some(8));
    // Lifting the limit lets anything through again.
    f.model.set_space_left(None);
    f.write("log", 14, &[7u8; 4096]);
    assert_eq!(f.read("log").unwrap().len(), 14 + 4096);
}
