//! Helpers shared by the integration tests: a mount in a fresh temporary
//! directory, and the sync calls a storage engine would make.

#![allow(dead_code)] // each test file uses a different subset

use std::fs::File;
use std::io;
use std::path::Path;

use powercut_fs::Mounted;
use tempfile::TempDir;

/// A mounted powercut filesystem in its own temporary directory. Fields
/// drop in order: the unmount comes before the directory is removed.
pub struct Fixture {
    pub fs: Mounted,
    _dir: TempDir,
}

/// Mounts, or fails the test saying why (never a silent pass).
pub fn mount() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory for the mountpoint");
    let fs = powercut_fs::mount(dir.path())
        .unwrap_or_else(|e| panic!("this test needs a FUSE mount and could not get one: {e}"));
    Fixture { fs, _dir: dir }
}

impl Fixture {
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.fs.path().join(name)
    }

    /// The power cut and the reboot.
    pub fn cut_and_revive(&self, mode: powercut_fs::CutMode) {
        self.fs.cut(mode);
        self.fs.revive();
    }
}

/// fsync of a directory, as a careful storage engine does after creating
/// or renaming a file in it.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a new file and fsyncs it and its directory: durable.
pub fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    std::fs::write(path, data)?;
    File::options().write(true).open(path)?.sync_all()?;
    fsync_dir(path.parent().expect("a file in a directory"))
}

/// True if the error is EIO, the answer of a dead filesystem.
pub fn is_eio(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

/// Unwraps the error of a result that must be EIO.
#[track_caller]
pub fn assert_eio<T: std::fmt::Debug>(what: &str, result: io::Result<T>) {
    match result {
        Err(e) if is_eio(&e) => {}
        other => panic!("{what}: expected EIO while dead, got {other:?}"),
    }
}
