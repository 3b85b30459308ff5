//! The FUSE adapter: turns kernel requests (through `fuser`) into calls on the
//! [`Model`] and its answers into replies. No durability logic lives here.
//!
//! Two things here keep the kernel from hiding a cut:
//! - every attribute and entry is answered with a time-to-live of zero, so
//!   the kernel asks again instead of trusting what it saw before the cut;
//! - every file is opened with `FOPEN_DIRECT_IO` (and without
//!   `FOPEN_KEEP_CACHE`), so reads and writes go straight to the model and
//!   the kernel keeps no page cache of our files.
//!
//! A file handle carries the boot ([`Model::boot`]) it was opened in; used
//! after a cut, even after the revive, it fails with EIO, as a descriptor of
//! a process that the power cut killed would.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::model::{self, Attr, Falloc, Kind, Model, SetAttr};

/// Attributes and entries are never cached by the kernel.
const TTL: Duration = Duration::ZERO;

/// Block size reported by `stat` and `statfs`.
const BLOCK: u32 = 4096;

/// The capacity `statfs` reports: plausible for tools that check free space.
const CAPACITY: u64 = 64 << 30;

/// The inode count `statfs` reports as the maximum.
const MAX_INODES: u64 = 1 << 24;

/// The model shared between the FUSE thread and [`crate::Mounted`].
pub(crate) type Shared = Arc<Mutex<Model>>;

/// Locks the model; a panic elsewhere (a poisoned lock) must not make every
/// later request panic too.
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, Model> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `fuser::Filesystem` implementation.
pub(crate) struct PowercutFs {
    model: Shared,
    next_handle: AtomicU64,
}

fn errno(e: model::Error) -> Errno {
    match e {
        model::Error::NotFound => Errno::ENOENT,
        model::Error::Exists => Errno::EEXIST,
        model::Error::NotDir => Errno::ENOTDIR,
        model::Error::IsDir => Errno::EISDIR,
        model::Error::NotEmpty => Errno::ENOTEMPTY,
        model::Error::Invalid => Errno::EINVAL,
        model::Error::NotPermitted => Errno::EPERM,
        model::Error::NameTooLong => Errno::ENAMETOOLONG,
        model::Error::TooBig => Errno::EFBIG,
        model::Error::Io => Errno::EIO,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.allocated.min(a.size.next_multiple_of(512)) / 512,
        atime: a.meta.atime,
        mtime: a.meta.mtime,
        ctime: a.meta.ctime,
        crtime: a.meta.crtime,
        kind: file_type(a.kind),
        perm: a.meta.perm,
        nlink: a.nlink,
        uid: a.meta.uid,
        gid: a.meta.gid,
        rdev: a.rdev,
        blksize: BLOCK,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// The kind of node a `mknod` mode asks for.
fn mknod_kind(mode: u32) -> Option<Kind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Some(Kind::File),
        libc::S_IFIFO => Some(Kind::Fifo),
        libc::S_IFSOCK => Some(Kind::Socket),
        libc::S_IFCHR => Some(Kind::CharDevice),
        libc::S_IFBLK => Some(Kind::BlockDevice),
        _ => None,
    }
}

fn perm(mode: u32) -> u16 {
    (mode & 0o7777) as u16
}

impl PowercutFs {
    pub(crate) fn new(model: Shared) -> PowercutFs {
        PowercutFs {
            model,
            next_handle: AtomicU64::new(1),
        }
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        lock(&self.model)
    }

    /// A new handle: the boot in the high 32 bits, a sequence number below.
    fn handle(&self, model: &Model) -> FileHandle {
        let seq = self.next_handle.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
        FileHandle((model.boot() << 32) | seq)
    }

    /// EIO while dead, and for a handle opened before the last cut.
    fn check_handle(model: &Model, fh: FileHandle) -> Result<(), Errno> {
        model.alive().map_err(errno)?;
        if fh.0 >> 32 != model.boot() & 0xffff_ffff {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// Replies with an entry and records the kernel's new reference.
    fn entry(model: &mut Model, result: model::Result<Attr>, reply: ReplyEntry) {
        match result {
            Ok(attr) => {
                model.kernel_ref(attr.ino);
                reply.entry(&TTL, &file_attr(&attr), Generation(0));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn empty(result: Result<(), Errno>, reply: ReplyEmpty) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for PowercutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut m = self.model();
        let result = m.lookup(parent.0, name);
        Self::entry(&mut m, result, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.model().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let m = self.model();
        if let Some(fh) = fh {
            if let Err(e) = Self::check_handle(&m, fh) {
                return reply.error(e);
            }
        }
        match m.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(e)),
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
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut m = self.model();
        if let Some(fh) = fh {
            if let Err(e) = Self::check_handle(&m, fh) {
                return reply.error(e);
            }
        }
        let set = SetAttr {
            perm: mode.map(perm),
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            ctime,
        };
        match m.setattr(ino.0, set) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.model().readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let Some(kind) = mknod_kind(mode) else {
            return reply.error(Errno::EINVAL);
        };
        let mut m = self.model();
        let result = m.mknod(parent.0, name, kind, perm(mode), req.uid(), req.gid(), rdev);
        Self::entry(&mut m, result, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut m = self.model();
        let result = m.mkdir(parent.0, name, perm(mode), req.uid(), req.gid());
        Self::entry(&mut m, result, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(self.model().unlink(parent.0, name).map_err(errno), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::empty(self.model().rmdir(parent.0, name).map_err(errno), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut m = self.model();
        let result = m.symlink(
            parent.0,
            link_name,
            target.as_os_str(),
            req.uid(),
            req.gid(),
        );
        Self::entry(&mut m, result, reply);
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
        // RENAME_EXCHANGE and RENAME_WHITEOUT are not implemented.
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let result = self
            .model()
            .rename(parent.0, name, newparent.0, newname, noreplace);
        Self::empty(result.map_err(errno), reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut m = self.model();
        let result = m.link(ino.0, newparent.0, newname);
        Self::entry(&mut m, result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let m = self.model();
        match m.getattr(ino.0) {
            Ok(attr) if attr.kind == Kind::Dir => reply.error(Errno::EISDIR),
            Ok(_) => reply.opened(self.handle(&m), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let m = self.model();
        if let Err(e) = Self::check_handle(&m, fh) {
            return reply.error(e);
        }
        match m.read(ino.0, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut m = self.model();
        if let Err(e) = Self::check_handle(&m, fh) {
            return reply.error(e);
        }
        match m.write(ino.0, offset, data) {
            // data.len() <= max_write (16 MiB), so it fits in u32.
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Makes nothing durable: close(2) is not fsync(2).
        Self::empty(Self::check_handle(&self.model(), fh), reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // No per-handle state to drop; the kernel ignores the answer.
        Self::empty(self.model().alive().map_err(errno), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut m = self.model();
        let result =
            Self::check_handle(&m, fh).and_then(|()| m.fsync(ino.0, datasync).map_err(errno));
        Self::empty(result, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let m = self.model();
        match m.getattr(ino.0) {
            Ok(attr) if attr.kind != Kind::Dir => reply.error(Errno::ENOTDIR),
            Ok(_) => reply.opened(self.handle(&m), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let m = self.model();
        if let Err(e) = Self::check_handle(&m, fh) {
            return reply.error(e);
        }
        let entries = match m.readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(e)),
        };
        // The offset of an entry is its position + 1 in the sorted listing.
        // An entry added or removed between two readdir calls of one listing
        // may shift the rest by one, as on many filesystems.
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, entry) in entries.iter().enumerate().skip(skip) {
            if reply.add(
                INodeNo(entry.ino),
                i as u64 + 1,
                file_type(entry.kind),
                &entry.name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        Self::empty(self.model().alive().map_err(errno), reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut m = self.model();
        let result = Self::check_handle(&m, fh).and_then(|()| m.fsyncdir(ino.0).map_err(errno));
        Self::empty(result, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let usage = match self.model().usage() {
            Ok(usage) => usage,
            Err(e) => return reply.error(errno(e)),
        };
        let blocks = CAPACITY / u64::from(BLOCK);
        let free = blocks.saturating_sub(usage.bytes.div_ceil(u64::from(BLOCK)));
        let free_inodes = MAX_INODES.saturating_sub(usage.inodes);
        reply.statfs(
            blocks,
            free,
            free,
            MAX_INODES,
            free_inodes,
            BLOCK,
            model::MAX_NAME_LEN as u32,
            BLOCK,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (mounted with
        // default_permissions); this only says whether the inode exists.
        Self::empty(
            self.model().getattr(ino.0).map(|_| ()).map_err(errno),
            reply,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(kind) = mknod_kind(mode) else {
            return reply.error(Errno::EINVAL);
        };
        let mut m = self.model();
        match m.mknod(parent.0, name, kind, perm(mode), req.uid(), req.gid(), 0) {
            Ok(attr) => {
                m.kernel_ref(attr.ino);
                let fh = self.handle(&m);
                reply.created(
                    &TTL,
                    &file_attr(&attr),
                    Generation(0),
                    fh,
                    FopenFlags::FOPEN_DIRECT_IO,
                );
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let falloc = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => Falloc::Allocate { keep_size },
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => Falloc::PunchHole,
            libc::FALLOC_FL_ZERO_RANGE => Falloc::ZeroRange { keep_size },
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        let mut m = self.model();
        let result = Self::check_handle(&m, fh)
            .and_then(|()| m.fallocate(ino.0, offset, length, falloc).map_err(errno));
        Self::empty(result, reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_error_maps_to_its_errno() {
        use model::Error::*;
        let pairs = [
            (NotFound, libc::ENOENT),
            (Exists, libc::EEXIST),
            (NotDir, libc::ENOTDIR),
            (IsDir, libc::EISDIR),
            (NotEmpty, libc::ENOTEMPTY),
            (Invalid, libc::EINVAL),
            (NotPermitted, libc::EPERM),
            (NameTooLong, libc::ENAMETOOLONG),
            (TooBig, libc::EFBIG),
            (Io, libc::EIO),
        ];
        for (e, code) in pairs {
            assert_eq!(errno(e).code(), code, "{e:?}");
        }
    }

    #[test]
    fn mknod_modes_map_to_kinds() {
        assert_eq!(mknod_kind(libc::S_IFREG | 0o644), Some(Kind::File));
        assert_eq!(mknod_kind(libc::S_IFIFO | 0o644), Some(Kind::Fifo));
        assert_eq!(mknod_kind(libc::S_IFDIR | 0o755), None);
        assert_eq!(perm(libc::S_IFREG | 0o4755), 0o4755);
    }
}
