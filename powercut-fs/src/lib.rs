//! powercut-fs: a FUSE filesystem for tests that loses, on command, everything
//! that was not made durable — a power cut without pulling a plug.
//!
//! # Why
//!
//! coap2mqtt answers a device with 2.04 only once the message is on disk,
//! flushed and fsynced. Killing the daemon (`kill -9`) cannot test that
//! promise: the kernel's page cache survives the death of a process, so
//! data that was merely written (or pushed with `sync_file_range`, as sled
//! 0.34's `flush` does) is still there when the daemon restarts. Only a power
//! failure shows the difference, and tests cannot cut the power of the
//! machine they run on. This crate is the same idea as Jepsen's LazyFS: a
//! filesystem that keeps what was not yet made durable in a volatile layer
//! and drops that layer when told to.
//!
//! # Durability model
//!
//! Everything lives in memory ([`model`]). Each inode has a *current* state,
//! which reads see, and a *durable* state, which survives a cut:
//!
//! - `fsync` or `fdatasync` of a file makes its current content, size and
//!   attributes durable. Nothing else does: not `close`, not `flush`, not
//!   `sync_file_range` (which never reaches a FUSE filesystem), not
//!   `sync(2)` or `syncfs(2)` (which FUSE does not forward as an fsync).
//! - `fsync` of a directory makes its current entries durable. A created,
//!   linked, renamed or unlinked name becomes durable only when its directory
//!   is synced (strict POSIX; a rename between directories needs both).
//! - [`Mounted::cut`] is the power failure: current := durable everywhere;
//!   anything reachable only through names that were never synced is gone.
//!   [`CutMode::Tear`] instead keeps, per file, a seeded random prefix of the
//!   writes since its last fsync, the last one possibly torn. Afterwards the
//!   filesystem is dead: every operation fails with `EIO`, so a process still
//!   running cannot make anything durable, until [`Mounted::revive`] (the
//!   reboot). A file descriptor opened before a cut keeps failing with `EIO`
//!   after the revive: its process would not have survived the cut.
//!
//! The kernel caches nothing that could hide a cut: attributes and entries
//! have a zero time-to-live and files are opened with direct I/O (see
//! `src/fs.rs`). Memory mappings of files are not covered (shared
//! writable mappings are refused by FUSE under direct I/O).
//!
//! # Use
//!
//! ```no_run
//! use std::io::Write;
//! let dir = tempfile::tempdir()?;
//! let fs = powercut_fs::mount(dir.path())?;
//! let mut f = std::fs::File::create(fs.path().join("f"))?;
//! f.write_all(b"gone")?;
//! drop(f);
//! fs.cut(powercut_fs::CutMode::LoseAll);
//! fs.revive();
//! assert!(!fs.path().join("f").exists());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Mounting needs `/dev/fuse` and root (fuser's own code calls `mount(2)`;
//! no libfuse). Not as root, fuser falls back to `fusermount3` (Debian
//! package `fuse3`) and the mount is then reachable only by its owner.

mod content;
mod fs;
pub mod model;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};

pub use model::{Counters, CutMode};

use crate::fs::{lock, PowercutFs, Shared};
use crate::model::Model;

/// How long [`Mounted`]'s drop waits for the FUSE thread to end after the
/// unmount, and again after aborting the connection.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// A mounted powercut filesystem, served by a background thread of this
/// process. Dropping it unmounts (lazily if the mount is busy) and stops
/// the thread.
pub struct Mounted {
    path: PathBuf,
    model: Shared,
    unmounter: Option<SessionUnmounter>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// The connection's name under /sys/fs/fuse/connections, to abort it if
    /// the thread does not stop after a lazy unmount.
    connection: Option<u64>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("path", &self.path)
            .field("dead", &lock(&self.model).is_dead())
            .finish()
    }
}

fn explain(mountpoint: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "powercut-fs: cannot mount a FUSE filesystem at {}: {e} \
             (needs /dev/fuse, and root or fusermount3 from the Debian package fuse3)",
            mountpoint.display()
        ),
    )
}

/// Mounts an empty powercut filesystem at `mountpoint` (an existing empty
/// directory) and serves it from a background thread. The root directory
/// has mode 0755 and belongs to this process's effective user and group.
pub fn mount(mountpoint: &Path) -> io::Result<Mounted> {
    // SAFETY: plain libc getters without arguments or failure modes.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let model: Shared = Arc::new(Mutex::new(Model::new(0o755, uid, gid)));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("powercut-fs".into()),
        MountOption::Subtype("powercut-fs".into()),
        // The kernel checks permissions against the modes we report.
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    // As root, let other users in too (a daemon under test may drop
    // privileges). fusermount3 refuses that to others without
    // user_allow_other, so only root asks for it.
    config.acl = if uid == 0 {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let mut session = Session::new(PowercutFs::new(model.clone()), mountpoint, &config)
        .map_err(|e| explain(mountpoint, e))?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("powercut-fs".into())
        .spawn(move || session.run())?;
    let mut mounted = Mounted {
        path: mountpoint.to_path_buf(),
        model,
        unmounter: Some(unmounter),
        thread: Some(thread),
        connection: None,
    };
    // Served by the thread just started: the mount answers.
    let dev = std::fs::metadata(mountpoint)
        .map_err(|e| explain(mountpoint, e))?
        .dev();
    // The kernel names the connection by its internal dev_t (major << 20 | minor).
    mounted.connection = Some((u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev)));
    Ok(mounted)
}

impl Mounted {
    /// The power failure: see [`CutMode`]. The filesystem is dead (every
    /// operation fails with `EIO`) until [`Mounted::revive`].
    pub fn cut(&self, mode: CutMode) {
        lock(&self.model).cut(mode);
    }

    /// The machine boots again: what survived the cut is the filesystem.
    pub fn revive(&self) {
        lock(&self.model).revive();
    }

    /// True between a cut and the next revive.
    pub fn is_dead(&self) -> bool {
        lock(&self.model).is_dead()
    }

    /// Counts of writes, bytes written, fsyncs and cuts so far.
    pub fn counters(&self) -> Counters {
        lock(&self.model).counters()
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn wait_for_thread(&self, how_long: Duration) -> bool {
        let Some(thread) = &self.thread else {
            return true;
        };
        let deadline = Instant::now() + how_long;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut unmounter) = self.unmounter.take() {
            if unmounter.unmount().is_err() {
                // Busy (an open file, a working directory): detach it now;
                // the kernel ends the connection when the last user leaves.
                if let Ok(path) = CString::new(self.path.as_os_str().as_bytes()) {
                    // SAFETY: a valid NUL-terminated path; umount2 has no
                    // other memory effects.
                    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        let mut stopped = self.wait_for_thread(STOP_WAIT);
        if !stopped {
            // Still in use after a lazy unmount: abort the connection (needs
            // fusectl mounted at /sys/fs/fuse/connections); every pending
            // and later request then fails with ENOTCONN.
            if let Some(id) = self.connection {
                let abort = format!("/sys/fs/fuse/connections/{id}/abort");
                if std::fs::write(abort, "1").is_ok() {
                    stopped = self.wait_for_thread(STOP_WAIT);
                }
            }
        }
        if let Some(thread) = self.thread.take() {
            if stopped {
                let _ = thread.join();
            }
            // Otherwise the thread is left detached rather than hanging the
            // caller; it ends when the last user of the mount goes away.
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mounted_can_be_shared_between_threads() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<super::Mounted>();
    }
}
