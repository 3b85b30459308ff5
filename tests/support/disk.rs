//! A small filesystem of the test's own (a size-limited tmpfs), to fill the
//! daemon's disk on purpose. Needs root: [`SmallDisk::mount`] returns None
//! elsewhere (the soak reports the fault kind as skipped), and
//! [`SmallDisk::mount_or_fail`] fails the test saying why (scripts/test
//! leaves such tests out, and says so, when not run as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A size-limited tmpfs, unmounted on drop.
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    pub fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| SmallDisk {
            dir: dir.to_path_buf(),
        })
    }

    /// [`mount`](Self::mount), or a test failure saying why not.
    pub fn mount_or_fail(dir: &Path, size: &str) -> SmallDisk {
        SmallDisk::mount(dir, size).unwrap_or_else(|| {
            panic!(
                "this test needs root to mount a tmpfs at {} (CI runs as root; \
                 scripts/test leaves it out when not root)",
                dir.display()
            )
        })
    }

    /// Remounts the filesystem read-write (`true`) or read-only (`false`).
    pub fn remount(&self, writable: bool) -> bool {
        let options = if writable { "remount,rw" } else { "remount,ro" };
        Command::new("mount")
            .args(["-o", options])
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Writes a filler file until the filesystem refuses more.
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0x5au8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
