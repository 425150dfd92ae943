//! The lazy filesystem really mounted: runs as root where /dev/fuse and fusermount3 exist
//! (CI is root and `scripts/test.sh` installs fuse3), otherwise prints why it is skipped and
//! passes. Set JEPSEN_LITE_REQUIRE_FUSE=1 to make a missing capability a failure instead.
//!
//! Every test keeps its mount in a [`MountedLazyFs`], which unmounts when dropped, also when
//! the test fails; each test ends by checking that its mount is gone.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jepsen_lite::lazyfs::append::valid_records;
use jepsen_lite::lazyfs::mount::support;
use jepsen_lite::lazyfs::{CONTROL_FILE, LazyFsOptions, MountedLazyFs, STAGING_DIR};

const BIN: &str = env!("CARGO_BIN_EXE_jepsen-lite");
/// Records the appender must report synced before it is killed.
const APPENDS_BEFORE_KILL: u64 = 200;
/// Budget for the appender to get there.
const APPEND_TIMEOUT: Duration = Duration::from_secs(60);
const RECORD_BYTES: usize = 4096;

/// `true` (after printing why) when this machine cannot mount.
fn skipped() -> bool {
    let Err(reason) = support() else {
        return false;
    };
    assert!(
        std::env::var_os("JEPSEN_LITE_REQUIRE_FUSE").is_none(),
        "lazy filesystem tests required but impossible here: {reason}"
    );
    println!("SKIPPED: lazy filesystem test needs root and /dev/fuse (and fusermount3): {reason}");
    true
}

/// A backing directory, a mount point and the mount. Fields drop in order: a failing test
/// unmounts before the directories are removed.
struct Mounted {
    fs: Option<MountedLazyFs>,
    mountpoint: tempfile::TempDir,
    backing: tempfile::TempDir,
}

impl Mounted {
    fn new(options: &LazyFsOptions) -> Self {
        let backing = tempfile::tempdir().unwrap();
        let mountpoint = tempfile::tempdir().unwrap();
        let fs = MountedLazyFs::mount(backing.path(), mountpoint.path(), options).unwrap();
        Self {
            backing,
            mountpoint,
            fs: Some(fs),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mountpoint.path().join(name)
    }

    fn fs(&self) -> &MountedLazyFs {
        self.fs.as_ref().unwrap()
    }

    /// Unmounts and checks that the mount is gone from the mount table.
    fn unmount(mut self) {
        let canonical = self.mountpoint.path().canonicalize().unwrap();
        self.fs.take().unwrap().unmount().unwrap();
        assert!(
            !self.backing.path().join(STAGING_DIR).exists(),
            "unmounting deletes the staging directory"
        );
        assert!(
            !mounted_at(&canonical),
            "{} still mounted",
            canonical.display()
        );
    }
}

fn mounted_at(path: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let wanted = path.to_string_lossy();
    mounts
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some(&*wanted))
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn only_the_synced_part_of_a_file_survives_a_power_loss() {
    if skipped() {
        return;
    }
    let m = Mounted::new(&LazyFsOptions::default());
    let path = m.path("log");
    let mut file = File::create(&path).unwrap();
    sync_dir(m.mountpoint.path());
    file.write_all(b"synced part;").unwrap();
    file.sync_all().unwrap();
    file.write_all(b"unsynced part").unwrap();
    drop(file);
    assert_eq!(fs::read(&path).unwrap(), b"synced part;unsynced part");
    assert_eq!(
        fs::read(m.backing.path().join("log")).unwrap(),
        b"synced part;"
    );

    let report = m.fs().power_loss().unwrap();
    assert_eq!(report.dropped_bytes, 13);
    assert_eq!(fs::read(&path).unwrap(), b"synced part;");
    assert_eq!(fs::metadata(&path).unwrap().len(), 12);
    m.unmount();
}

#[test]
fn a_file_synced_but_not_its_directory_is_gone_after_a_power_loss() {
    if skipped() {
        return;
    }
    let m = Mounted::new(&LazyFsOptions::default());
    let path = m.path("segment-0");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"data").unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert!(path.exists());

    m.fs().power_loss().unwrap();
    assert!(!path.exists());
    assert_eq!(fs::read_dir(m.mountpoint.path()).unwrap().count(), 0);
    m.unmount();
}

#[test]
fn a_file_synced_with_its_directory_stays_after_a_power_loss() {
    if skipped() {
        return;
    }
    let m = Mounted::new(&LazyFsOptions::default());
    fs::create_dir(m.path("data")).unwrap();
    sync_dir(m.mountpoint.path());
    let path = m.path("data/segment-0");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"data").unwrap();
    file.sync_all().unwrap();
    sync_dir(&m.path("data"));
    drop(file);

    m.fs().power_loss().unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"data");
    assert_eq!(
        fs::read(m.backing.path().join("data/segment-0")).unwrap(),
        b"data"
    );
    m.unmount();
}

/// `jepsen-lite lazyfs-append` appends 4 KiB records with an fdatasync each; it is killed
/// after reporting some synced, then the power fails: every reported record is there, and
/// no torn record follows them.
#[test]
fn every_synced_append_survives_a_kill_and_a_power_loss() {
    if skipped() {
        return;
    }
    let m = Mounted::new(&LazyFsOptions::default());
    let path = m.path("log");
    let mut child = Command::new(BIN)
        .args(["lazyfs-append", "--progress", "--records", "1000000"])
        .args(["--record-bytes", &RECORD_BYTES.to_string()])
        .arg("--file")
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The reader keeps the last index the appender printed and passes progress on without
    // ever blocking (a full channel just skips a notice).
    let (tx, rx) = mpsc::sync_channel(64);
    let reader = std::thread::spawn(move || {
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(index) = line.strip_prefix("synced ") {
                let index: u64 = index.parse().unwrap();
                last = Some(index);
                let _ = tx.try_send(index);
            }
        }
        last
    });
    let deadline = Instant::now() + APPEND_TIMEOUT;
    let mut progress = None;
    while progress.is_none_or(|i| i + 1 < APPENDS_BEFORE_KILL) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(index) => progress = Some(index),
            Err(e) => {
                let _ = child.kill();
                panic!("appender stalled at {progress:?}: {e}");
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Everything the appender printed before it died.
    let reported = reader.join().unwrap().unwrap() + 1;

    let report = m.fs().power_loss().unwrap();
    let bytes = fs::read(&path).unwrap();
    let (records, trailing) = valid_records(&bytes, RECORD_BYTES);
    assert!(
        !trailing,
        "a torn or wrong record after {records} good ones"
    );
    assert!(
        records == reported || records == reported + 1,
        "{records} records survived, {reported} were reported synced (one more may have \
         been synced before the kill)"
    );
    println!("{reported} appends reported synced, {records} survived; power loss: {report:?}");
    m.unmount();
}

/// The harness mounts in the root mount namespace and runs the member under `ip netns exec`,
/// which gives it a mount namespace of its own (a slave copy of ours); `unshare` does the
/// same here.
#[test]
fn a_process_in_another_mount_namespace_uses_the_mount() {
    if skipped() {
        return;
    }
    if Command::new("unshare").arg("--help").output().is_err() {
        println!("SKIPPED: mount-namespace test needs unshare (util-linux)");
        return;
    }
    let m = Mounted::new(&LazyFsOptions::default());
    let path = m.path("log");
    let status = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "slave",
            "--",
            BIN,
            "lazyfs-append",
        ])
        .args(["--records", "3", "--record-bytes", "64", "--file"])
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    m.fs().power_loss().unwrap();
    assert_eq!(valid_records(&fs::read(&path).unwrap(), 64), (3, false));
    m.unmount();
}

#[test]
fn the_control_file_triggers_a_power_loss_and_reports_counters() {
    if skipped() {
        return;
    }
    let m = Mounted::new(&LazyFsOptions::default());
    fs::write(m.path("unsynced"), b"gone soon").unwrap();
    let control = m.path(CONTROL_FILE);
    let status = fs::read_to_string(&control).unwrap();
    assert!(status.contains("power_losses 0\n"), "{status}");
    assert!(status.contains("unsynced_bytes 9\n"), "{status}");
    assert!(
        fs::read_dir(m.mountpoint.path())
            .unwrap()
            .all(|e| e.unwrap().file_name() != CONTROL_FILE),
        "the control file is not listed"
    );

    fs::write(&control, b"clear-cache\n").unwrap();
    assert!(!m.path("unsynced").exists());
    let status = fs::read_to_string(&control).unwrap();
    assert!(status.contains("power_losses 1\n"), "{status}");
    assert!(status.contains("last_dropped_bytes 9\n"), "{status}");

    let refused = fs::write(&control, b"reboot\n").unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidInput);
    assert!(fs::remove_file(&control).is_err());
    m.unmount();
}

#[test]
fn fallocate_and_the_unsynced_cap_work_through_the_mount() {
    if skipped() {
        return;
    }
    let cap = 1 << 20;
    let m = Mounted::new(&LazyFsOptions {
        max_unsynced_bytes: cap,
    });
    let path = m.path("segment");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    nix::fcntl::posix_fallocate(&file, 0, 64 << 10).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 64 << 10);
    let mut zeros = vec![1u8; 64 << 10];
    file.read_exact_at(&mut zeros, 0).unwrap();
    assert!(zeros.iter().all(|&b| b == 0));

    let chunk = vec![7u8; 256 << 10];
    let mut offset = 0;
    let refused = loop {
        match file.write_all_at(&chunk, offset) {
            Ok(()) => offset += chunk.len() as u64,
            Err(e) => break e,
        }
        assert!(offset <= cap, "the cap of {cap} bytes was not enforced");
    };
    assert_eq!(refused.raw_os_error(), Some(nix::libc::ENOSPC), "{refused}");
    file.sync_data().unwrap();
    file.write_all_at(&chunk, offset).unwrap();
    drop(file);
    m.unmount();
}
