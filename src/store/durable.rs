//! What makes a sled flush survive a power cut.
//!
//! sled 0.34.7's `Db::flush` writes its log out and then, on Linux, calls
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on the `db` file
//! (its src/pagecache/iobuf.rs). That call starts and waits for the write
//! of the dirty pages, and nothing more: it persists none of the file's
//! metadata (a log that grew has a new size that is not on disk) and does
//! not flush the device's write cache. sled's only `sync_all` of that file
//! is in its periodic flusher, which the store turns off because it commits
//! explicitly. sled also never syncs its small `conf` file, the files it
//! writes values larger than a quarter of a segment to (`blobs/`), or the
//! directories that name them. A flush alone survives a process kill (the
//! kernel's page cache does) but not a power cut: measured with a
//! power-cut filesystem, every acknowledged message still queued at the cut
//! was lost.
//!
//! So after each flush the store calls [`SledFiles::sync`]: `fdatasync` of
//! the `db` file (data and the size that reaches it), `fsync` of any blob
//! file written since the last sync and of `blobs/`, and `fsync` of the
//! store directory (sled renames snapshot files into place there). Only then
//! is anyone in the batch answered.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// A value at least this large may have gone to its own file in `blobs/`:
/// sled moves values over `segment_size / 4` (128 KiB by default) there; the
/// margin covers its headers.
pub const BLOB_CANDIDATE: usize = 96 * 1024;

/// Open handles on the files and directories of one sled store.
pub struct SledFiles {
    dir: File,
    db: File,
    blobs: PathBuf,
    /// Blob files already made durable, so each is synced once.
    synced_blobs: BTreeSet<std::ffi::OsString>,
}

impl SledFiles {
    /// Opens the files of the store at `path` (which sled has just opened)
    /// and makes what sled created durable: its `conf`, `db`, `blobs/`,
    /// their directory entries, and the store directory's own entry in its
    /// parent (sled creates the directory on the first start; without this
    /// a power cut soon after could take the whole store with it).
    pub fn open(path: &Path) -> io::Result<SledFiles> {
        let dir = File::open(path)?;
        let db = File::open(path.join("db"))?;
        let mut files = SledFiles {
            dir,
            db,
            blobs: path.join("blobs"),
            synced_blobs: BTreeSet::new(),
        };
        if let Ok(conf) = File::open(path.join("conf")) {
            conf.sync_all()?;
        }
        files.db.sync_all()?;
        files.sync_blobs()?;
        files.dir.sync_all()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(files)
    }

    /// Makes everything sled flushed durable. `large_values`: the flushed
    /// batch held a value of [`BLOB_CANDIDATE`] bytes or more, so new blob
    /// files may exist.
    pub fn sync(&mut self, large_values: bool) -> io::Result<()> {
        self.db.sync_data()?;
        if large_values {
            self.sync_blobs()?;
        }
        // Cheap when nothing changed; needed when sled renamed a snapshot
        // into place or created a file since the last sync.
        self.dir.sync_all()
    }

    fn sync_blobs(&mut self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = BTreeSet::new();
        let mut synced_any = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                File::open(entry.path())?.sync_all()?;
                synced_any = true;
            }
            present.insert(name);
        }
        if synced_any || present.len() != self.synced_blobs.len() {
            File::open(&self.blobs)?.sync_all()?;
        }
        // Forget blobs sled has removed, so the set stays as small as the
        // directory.
        self.synced_blobs = present;
        Ok(())
    }
}
