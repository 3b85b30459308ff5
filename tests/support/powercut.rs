//! The power-cut filesystem (the workspace's `powercut-fs` crate) for
//! tests: everything not fsynced is lost on [`Mounted::cut`].
//!
//! It needs /dev/fuse and root (CI runs as root). Where it cannot mount,
//! the test fails saying why: scripts/test leaves these tests out, and says
//! so, when it is not run as root.

#[allow(unused_imports)] // each test uses its part
pub use powercut_fs::{CutMode, Mounted};
use std::path::Path;

/// Mounts a power-cut filesystem at `mountpoint` (created if missing);
/// panics with the reason when it cannot.
pub fn mount(mountpoint: &Path) -> Mounted {
    std::fs::create_dir_all(mountpoint)
        .unwrap_or_else(|e| panic!("create {}: {e}", mountpoint.display()));
    powercut_fs::mount(mountpoint).unwrap_or_else(|e| {
        panic!(
            "this test needs the power-cut filesystem (FUSE) and could not mount it at {}: {e}",
            mountpoint.display()
        )
    })
}
