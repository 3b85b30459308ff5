//! The durability model: an in-memory filesystem in which every inode has a
//! *current* state (what reads see now) and a *durable* state (what survives a
//! power cut). Plain Rust, no FUSE: `fs.rs` translates kernel requests into
//! calls on [`Model`], and the unit tests below drive it directly.
//!
//! The rules:
//! - `fsync` (with or without `datasync`) of a file makes its current content,
//!   size and attributes durable. Nothing else does: not close, not flush,
//!   not `sync_file_range` (which never reaches a FUSE filesystem at all).
//! - `fsyncdir` of a directory makes its current entries (name -> inode)
//!   durable, and its attributes. Creating, linking, renaming or unlinking
//!   changes entries only in the current state until the directory concerned
//!   is synced; a rename between two directories needs both synced.
//! - [`Model::cut`] is the power failure: current state := durable state
//!   everywhere; an inode no longer reachable from the root through durable
//!   entries is gone. Under [`CutMode::Tear`] each file keeps a random prefix
//!   of its writes since its last fsync (the last one possibly torn). After a
//!   cut every operation fails with [`Error::Io`] until [`Model::revive`].
//!
//! Inode numbers are never reused, so the kernel can never confuse a new file
//! with one it still remembers from before a cut.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::time::SystemTime;

use crate::content::Content;
pub use crate::content::MAX_FILE_SIZE;

/// An inode number. The root directory is [`ROOT_INO`].
pub type Ino = u64;

/// The root directory's inode number (FUSE's fixed root id).
pub const ROOT_INO: Ino = 1;

/// The longest file name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// How a power cut treats writes that were not made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CutMode {
    /// Every write since a file's last fsync is lost.
    #[default]
    LoseAll,
    /// For each file, a random prefix (chosen with `seed`, so reproducible)
    /// of its writes since its last fsync survives, and the first write after
    /// that prefix may survive partly (a prefix of its bytes): what a disk
    /// that had started writing back its cache might hold. Directory changes
    /// that were not synced are still all lost.
    Tear {
        /// Seeds the choice of prefixes; the same seed on the same history
        /// gives the same result.
        seed: u64,
    },
}

/// Calls counted since the filesystem was created (successful calls only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `write` calls.
    pub writes: u64,
    /// Bytes written by those calls.
    pub bytes_written: u64,
    /// `fsync` calls on files without the datasync flag.
    pub fsync: u64,
    /// `fsync` calls on files with the datasync flag (`fdatasync`).
    pub fdatasync: u64,
    /// `fsyncdir` calls (fsync of a directory).
    pub fsyncdir: u64,
    /// Power cuts.
    pub cuts: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "writes={} bytes_written={} fsync={} fdatasync={} fsyncdir={} cuts={}",
            self.writes, self.bytes_written, self.fsync, self.fdatasync, self.fsyncdir, self.cuts
        )
    }
}

/// Why an operation failed; `fs.rs` maps each to an errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// ENOENT: no such inode or entry.
    NotFound,
    /// EEXIST: the name is taken.
    Exists,
    /// ENOTDIR: a directory was needed.
    NotDir,
    /// EISDIR: a directory where it may not be.
    IsDir,
    /// ENOTEMPTY: removing or replacing a non-empty directory.
    NotEmpty,
    /// EINVAL: e.g. moving a directory into itself.
    Invalid,
    /// EPERM: e.g. a hard link to a directory.
    NotPermitted,
    /// ENAMETOOLONG.
    NameTooLong,
    /// EFBIG: past [`MAX_FILE_SIZE`].
    TooBig,
    /// EIO: the filesystem is dead (cut and not yet revived), or a file
    /// handle from before the last cut was used.
    Io,
}

/// The result of a model operation.
pub type Result<T> = std::result::Result<T, Error>;

/// The kind of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
}

/// Ownership, permissions and times of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (including setuid, setgid, sticky).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access.
    pub atime: SystemTime,
    /// Last modification of content or entries.
    pub mtime: SystemTime,
    /// Last change of the inode.
    pub ctime: SystemTime,
    /// Creation.
    pub crtime: SystemTime,
}

impl Meta {
    fn new(perm: u16, uid: u32, gid: u32) -> Meta {
        let now = SystemTime::now();
        Meta {
            perm: perm & 0o7777,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
        }
    }
}

/// What `getattr` reports: the current state of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes (files: content; directories: entry count; symlinks: target length).
    pub size: u64,
    /// Bytes stored (holes excluded).
    pub allocated: u64,
    /// Hard links (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Device number of a device node.
    pub rdev: u32,
    /// Ownership, permissions, times.
    pub meta: Meta,
}

/// Attribute changes of a `setattr` (each `None` leaves it alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits.
    pub perm: Option<u16>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend with zeros).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SystemTime>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
    /// New change time.
    pub ctime: Option<SystemTime>,
}

/// What an `fallocate` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Falloc {
    /// Mode 0 (`keep_size == false`): make the file at least `offset + len`
    /// long. With `FALLOC_FL_KEEP_SIZE`: nothing to do in memory.
    Allocate {
        /// `FALLOC_FL_KEEP_SIZE`.
        keep_size: bool,
    },
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`: zero the range.
    PunchHole,
    /// `FALLOC_FL_ZERO_RANGE`: zero the range, growing the file unless
    /// `keep_size`.
    ZeroRange {
        /// `FALLOC_FL_KEEP_SIZE`.
        keep_size: bool,
    },
}

/// One directory entry as `readdir` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The inode it names.
    pub ino: Ino,
    /// That inode's kind.
    pub kind: Kind,
    /// The name (including "." and "..").
    pub name: OsString,
}

/// Filesystem-wide usage for `statfs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bytes stored in current file contents.
    pub bytes: u64,
    /// Inodes in existence.
    pub inodes: u64,
}

/// A content change of a file not yet made durable, kept in order so that
/// [`CutMode::Tear`] can replay a prefix of them.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
    Zero { offset: u64, len: u64 },
}

impl Pending {
    fn apply(&self, content: &mut Content) {
        match self {
            Pending::Write { offset, data } => content.write(*offset, data),
            Pending::SetLen(len) => content.set_len(*len),
            Pending::Zero { offset, len } => content.zero(*offset, *len),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct FileBody {
    current: Content,
    durable: Content,
    /// Changes since the last fsync, oldest first; `durable` plus all of
    /// them applied in order equals `current`.
    pending: Vec<Pending>,
}

impl FileBody {
    fn change(&mut self, op: Pending) {
        op.apply(&mut self.current);
        self.pending.push(op);
    }
}

#[derive(Clone, Debug)]
struct DirBody {
    current: BTreeMap<OsString, Ino>,
    durable: BTreeMap<OsString, Ino>,
    /// The directory holding this one in the current state.
    parent: Ino,
}

#[derive(Clone, Debug)]
enum Body {
    File(FileBody),
    Dir(DirBody),
    Symlink(OsString),
    Special { rdev: u32 },
}

#[derive(Clone, Debug)]
struct Inode {
    kind: Kind,
    body: Body,
    meta: Meta,
    durable_meta: Meta,
    /// Entries naming this inode in current directory states.
    nlink: u32,
    /// Entries naming this inode in durable directory states (of any
    /// directory, reachable or not): while non-zero a cut could bring it back.
    durable_nlink: u32,
    /// Lookups the kernel holds (FUSE lookup count): while non-zero the
    /// kernel may still read or write the inode (an open, unlinked file).
    kernel_refs: u64,
}

impl Inode {
    fn new(kind: Kind, body: Body, meta: Meta) -> Inode {
        Inode {
            kind,
            body,
            meta,
            // Until its first fsync an inode's durable attributes are the
            // ones it was created with.
            durable_meta: meta,
            nlink: 0,
            durable_nlink: 0,
            kernel_refs: 0,
        }
    }
}

/// A small seeded generator (SplitMix64) for [`CutMode::Tear`]: deterministic
/// across platforms and releases, which a library generator would not promise.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..=max` (the bias is irrelevant here).
    fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next() % n,
            None => self.next(),
        }
    }
}

/// The whole filesystem: inodes, liveness and counters.
#[derive(Debug)]
pub struct Model {
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    dead: bool,
    boot: u64,
    counters: Counters,
}

fn check_name(name: &OsStr) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::Invalid);
    }
    Ok(())
}

fn end_of(offset: u64, len: u64) -> Result<u64> {
    match offset.checked_add(len) {
        Some(end) if end <= MAX_FILE_SIZE => Ok(end),
        _ => Err(Error::TooBig),
    }
}

impl Model {
    /// An empty filesystem: a root directory with mode `perm`, owned by
    /// `uid`:`gid`, durable as it is.
    pub fn new(perm: u16, uid: u32, gid: u32) -> Model {
        let mut root = Inode::new(
            Kind::Dir,
            Body::Dir(DirBody {
                current: BTreeMap::new(),
                durable: BTreeMap::new(),
                parent: ROOT_INO,
            }),
            Meta::new(perm, uid, gid),
        );
        root.nlink = 1;
        root.durable_nlink = 1;
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT_INO, root);
        Model {
            inodes,
            next_ino: ROOT_INO + 1,
            dead: false,
            boot: 0,
            counters: Counters::default(),
        }
    }

    // ----- liveness -----

    /// Fails with [`Error::Io`] while the filesystem is dead.
    pub fn alive(&self) -> Result<()> {
        if self.dead {
            Err(Error::Io)
        } else {
            Ok(())
        }
    }

    /// True between a cut and the next revive.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Counts cuts: a file handle records the boot it was opened in, and
    /// one from an earlier boot is refused (its process "died" in the cut).
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The power failure: see the module documentation and [`CutMode`].
    /// The filesystem is dead afterwards, until [`Model::revive`].
    pub fn cut(&mut self, mode: CutMode) {
        let mut rng = match mode {
            CutMode::LoseAll => None,
            CutMode::Tear { seed } => Some(SplitMix64(seed)),
        };
        // Ordered by inode number (a BTreeMap), so a seed gives one result.
        for inode in self.inodes.values_mut() {
            inode.meta = inode.durable_meta;
            match &mut inode.body {
                Body::File(file) => {
                    if let Some(rng) = rng.as_mut() {
                        tear(file, rng);
                    }
                    file.pending.clear();
                    file.current = file.durable.clone();
                }
                Body::Dir(dir) => dir.current = dir.durable.clone(),
                Body::Symlink(_) | Body::Special { .. } => {}
            }
        }
        self.keep_reachable();
        self.dead = true;
        self.boot += 1;
        self.counters.cuts += 1;
    }

    /// The machine boots again: what survived the cut is what there is.
    pub fn revive(&mut self) {
        self.dead = false;
    }

    /// After a cut: drops every inode not reachable from the root, a second
    /// entry for a directory (a rename synced in both directories' old and
    /// new state is possible in this model; a directory has one parent), and
    /// recounts links.
    fn keep_reachable(&mut self) {
        let mut reached = BTreeSet::from([ROOT_INO]);
        let mut queue = VecDeque::from([ROOT_INO]);
        while let Some(dir_ino) = queue.pop_front() {
            let entries = match self.inodes.get(&dir_ino).map(|i| &i.body) {
                Some(Body::Dir(dir)) => dir.current.clone(),
                _ => continue,
            };
            let mut kept = BTreeMap::new();
            for (name, child) in entries {
                let Some(inode) = self.inodes.get_mut(&child) else {
                    continue;
                };
                if let Body::Dir(sub) = &mut inode.body {
                    if !reached.insert(child) {
                        continue;
                    }
                    sub.parent = dir_ino;
                    queue.push_back(child);
                } else {
                    reached.insert(child);
                }
                kept.insert(name, child);
            }
            if let Some(Body::Dir(dir)) = self.inodes.get_mut(&dir_ino).map(|i| &mut i.body) {
                dir.durable = kept.clone();
                dir.current = kept;
            }
        }
        self.inodes.retain(|ino, _| reached.contains(ino));
        let mut links: BTreeMap<Ino, u32> = BTreeMap::new();
        for inode in self.inodes.values() {
            if let Body::Dir(dir) = &inode.body {
                for child in dir.current.values() {
                    *links.entry(*child).or_default() += 1;
                }
            }
        }
        for (ino, inode) in self.inodes.iter_mut() {
            let n = if *ino == ROOT_INO {
                1
            } else {
                links.get(ino).copied().unwrap_or(0)
            };
            inode.nlink = n;
            inode.durable_nlink = n;
        }
    }

    // ----- reading -----

    fn inode(&self, ino: Ino) -> Result<&Inode> {
        self.inodes.get(&ino).ok_or(Error::NotFound)
    }

    fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(Error::NotFound)
    }

    fn dir(&self, ino: Ino) -> Result<&DirBody> {
        match &self.inode(ino)?.body {
            Body::Dir(dir) => Ok(dir),
            _ => Err(Error::NotDir),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut DirBody> {
        match &mut self.inode_mut(ino)?.body {
            Body::Dir(dir) => Ok(dir),
            _ => Err(Error::NotDir),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut FileBody> {
        match &mut self.inode_mut(ino)?.body {
            Body::File(file) => Ok(file),
            Body::Dir(_) => Err(Error::IsDir),
            _ => Err(Error::Invalid),
        }
    }

    fn attr_of(&self, ino: Ino, inode: &Inode) -> Attr {
        let (size, allocated, rdev) = match &inode.body {
            Body::File(file) => (file.current.len(), file.current.allocated(), 0),
            Body::Dir(dir) => (dir.current.len() as u64, 0, 0),
            Body::Symlink(target) => (target.len() as u64, 0, 0),
            Body::Special { rdev } => (0, 0, *rdev),
        };
        let nlink = match &inode.body {
            Body::Dir(dir) => {
                let subdirs = dir
                    .current
                    .values()
                    .filter(|c| self.inodes.get(c).is_some_and(|i| i.kind == Kind::Dir))
                    .count();
                2u32.saturating_add(subdirs as u32)
            }
            _ => inode.nlink,
        };
        Attr {
            ino,
            kind: inode.kind,
            size,
            allocated,
            nlink,
            rdev,
            meta: inode.meta,
        }
    }

    /// The current attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.alive()?;
        Ok(self.attr_of(ino, self.inode(ino)?))
    }

    /// The inode named `name` in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        self.alive()?;
        if name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong);
        }
        let child = *self.dir(parent)?.current.get(name).ok_or(Error::NotFound)?;
        self.getattr(child)
    }

    /// Up to `size` bytes of file `ino` from `offset`.
    pub fn read(&self, ino: Ino, offset: u64, size: usize) -> Result<Vec<u8>> {
        self.alive()?;
        match &self.inode(ino)?.body {
            Body::File(file) => Ok(file.current.read(offset, size)),
            Body::Dir(_) => Err(Error::IsDir),
            _ => Err(Error::Invalid),
        }
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: Ino) -> Result<OsString> {
        self.alive()?;
        match &self.inode(ino)?.body {
            Body::Symlink(target) => Ok(target.clone()),
            _ => Err(Error::Invalid),
        }
    }

    /// The entries of directory `ino`, "." and ".." first, then by name.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        self.alive()?;
        let dir = self.dir(ino)?;
        let mut out = vec![
            DirEntry {
                ino,
                kind: Kind::Dir,
                name: ".".into(),
            },
            DirEntry {
                ino: dir.parent,
                kind: Kind::Dir,
                name: "..".into(),
            },
        ];
        for (name, child) in &dir.current {
            if let Some(inode) = self.inodes.get(child) {
                out.push(DirEntry {
                    ino: *child,
                    kind: inode.kind,
                    name: name.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Usage figures for `statfs`.
    pub fn usage(&self) -> Result<Usage> {
        self.alive()?;
        let bytes = self
            .inodes
            .values()
            .map(|i| match &i.body {
                Body::File(file) => file.current.allocated(),
                _ => 0,
            })
            .sum();
        Ok(Usage {
            bytes,
            inodes: self.inodes.len() as u64,
        })
    }

    // ----- kernel references -----

    /// The kernel was handed `ino` (a lookup, create, mkdir...): it keeps the
    /// inode alive until [`Model::forget`] even with no name left.
    pub fn kernel_ref(&mut self, ino: Ino) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.kernel_refs += 1;
        }
    }

    /// The kernel dropped `n` references to `ino`. Works while dead, and an
    /// unknown inode is ignored (it may have vanished in a cut).
    pub fn forget(&mut self, ino: Ino, n: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.kernel_refs = inode.kernel_refs.saturating_sub(n);
            self.free_if_unused(ino);
        }
    }

    /// Drops `ino` if nothing can reach it any more: no current entry, no
    /// durable entry, no kernel reference. A dropped directory releases what
    /// its entries held.
    fn free_if_unused(&mut self, ino: Ino) {
        let mut work = vec![ino];
        while let Some(ino) = work.pop() {
            if ino == ROOT_INO {
                continue;
            }
            let unused = self
                .inodes
                .get(&ino)
                .is_some_and(|i| i.nlink == 0 && i.durable_nlink == 0 && i.kernel_refs == 0);
            if !unused {
                continue;
            }
            let Some(inode) = self.inodes.remove(&ino) else {
                continue;
            };
            if let Body::Dir(dir) = inode.body {
                for child in dir.durable.values() {
                    if let Some(c) = self.inodes.get_mut(child) {
                        c.durable_nlink = c.durable_nlink.saturating_sub(1);
                        work.push(*child);
                    }
                }
                for child in dir.current.values() {
                    if let Some(c) = self.inodes.get_mut(child) {
                        c.nlink = c.nlink.saturating_sub(1);
                        work.push(*child);
                    }
                }
            }
        }
    }

    // ----- creating and naming -----

    fn add_entry(&mut self, parent: Ino, name: &OsStr, child: Ino) -> Result<()> {
        let dir = self.dir_mut(parent)?;
        dir.current.insert(name.to_owned(), child);
        let now = SystemTime::now();
        let parent_inode = self.inode_mut(parent)?;
        parent_inode.meta.mtime = now;
        parent_inode.meta.ctime = now;
        let child_inode = self.inode_mut(child)?;
        child_inode.nlink += 1;
        child_inode.meta.ctime = now;
        Ok(())
    }

    fn check_free_name(&self, parent: Ino, name: &OsStr) -> Result<()> {
        check_name(name)?;
        if self.dir(parent)?.current.contains_key(name) {
            return Err(Error::Exists);
        }
        Ok(())
    }

    fn make(
        &mut self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        body: Body,
        meta: Meta,
    ) -> Result<Attr> {
        self.alive()?;
        self.check_free_name(parent, name)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::new(kind, body, meta));
        self.add_entry(parent, name, ino)?;
        self.getattr(ino)
    }

    /// Creates a node of `kind` (not a directory or symlink) named `name` in
    /// `parent`: `create` and `mknod`. Its content is durable from the start
    /// (empty), its name only once `parent` is synced.
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &mut self,
        parent: Ino,
        name: &OsStr,
        kind: Kind,
        perm: u16,
        uid: u32,
        gid: u32,
        rdev: u32,
    ) -> Result<Attr> {
        let body = match kind {
            Kind::File => Body::File(FileBody::default()),
            Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice => {
                Body::Special { rdev }
            }
            Kind::Dir | Kind::Symlink => return Err(Error::Invalid),
        };
        self.make(parent, name, kind, body, Meta::new(perm, uid, gid))
    }

    /// Creates directory `name` in `parent`.
    pub fn mkdir(
        &mut self,
        parent: Ino,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        let body = Body::Dir(DirBody {
            current: BTreeMap::new(),
            durable: BTreeMap::new(),
            parent,
        });
        self.make(parent, name, Kind::Dir, body, Meta::new(perm, uid, gid))
    }

    /// Creates symlink `name` in `parent` pointing at `target`.
    pub fn symlink(
        &mut self,
        parent: Ino,
        name: &OsStr,
        target: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        let body = Body::Symlink(target.to_owned());
        self.make(
            parent,
            name,
            Kind::Symlink,
            body,
            Meta::new(0o777, uid, gid),
        )
    }

    /// A new name `newname` in `newparent` for `ino` (not a directory).
    pub fn link(&mut self, ino: Ino, newparent: Ino, newname: &OsStr) -> Result<Attr> {
        self.alive()?;
        if self.inode(ino)?.kind == Kind::Dir {
            return Err(Error::NotPermitted);
        }
        self.check_free_name(newparent, newname)?;
        self.add_entry(newparent, newname, ino)?;
        self.getattr(ino)
    }

    /// Removes entry `name` (not a directory) from `parent`.
    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        self.alive()?;
        let child = *self.dir(parent)?.current.get(name).ok_or(Error::NotFound)?;
        if self.inode(child)?.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        self.remove_entry(parent, name, child)
    }

    /// Removes empty directory `name` from `parent`.
    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<()> {
        self.alive()?;
        let child = *self.dir(parent)?.current.get(name).ok_or(Error::NotFound)?;
        if !self.dir(child)?.current.is_empty() {
            return Err(Error::NotEmpty);
        }
        self.remove_entry(parent, name, child)
    }

    fn remove_entry(&mut self, parent: Ino, name: &OsStr, child: Ino) -> Result<()> {
        self.dir_mut(parent)?.current.remove(name);
        let now = SystemTime::now();
        let parent_inode = self.inode_mut(parent)?;
        parent_inode.meta.mtime = now;
        parent_inode.meta.ctime = now;
        let child_inode = self.inode_mut(child)?;
        child_inode.nlink = child_inode.nlink.saturating_sub(1);
        child_inode.meta.ctime = now;
        self.free_if_unused(child);
        Ok(())
    }

    /// True if `ino` is `ancestor` or lies below it (current state).
    fn is_within(&self, mut ino: Ino, ancestor: Ino) -> bool {
        // Bounded walk: a corrupt parent chain cannot loop forever.
        for _ in 0..=self.inodes.len() {
            if ino == ancestor {
                return true;
            }
            if ino == ROOT_INO {
                return false;
            }
            match self.dir(ino) {
                Ok(dir) => ino = dir.parent,
                Err(_) => return false,
            }
        }
        false
    }

    /// Moves entry `name` of `parent` to `newname` in `newparent`, replacing
    /// what was there (POSIX `rename`); with `noreplace`, fails instead.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        noreplace: bool,
    ) -> Result<()> {
        self.alive()?;
        check_name(newname)?;
        let src = *self.dir(parent)?.current.get(name).ok_or(Error::NotFound)?;
        let dst = self.dir(newparent)?.current.get(newname).copied();
        let src_is_dir = self.inode(src)?.kind == Kind::Dir;
        if let Some(dst) = dst {
            if noreplace {
                return Err(Error::Exists);
            }
            if dst == src {
                // Two names of one inode (or the same name): POSIX says do nothing.
                return Ok(());
            }
            let dst_is_dir = self.inode(dst)?.kind == Kind::Dir;
            match (src_is_dir, dst_is_dir) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) if !self.dir(dst)?.current.is_empty() => return Err(Error::NotEmpty),
                _ => {}
            }
        }
        if src_is_dir && self.is_within(newparent, src) {
            return Err(Error::Invalid);
        }
        if let Some(dst) = dst {
            self.remove_entry(newparent, newname, dst)?;
        }
        // The new name first, so that `src` never looks unused in between.
        self.add_entry(newparent, newname, src)?;
        self.remove_entry(parent, name, src)?;
        if src_is_dir {
            self.dir_mut(src)?.parent = newparent;
        }
        Ok(())
    }

    // ----- changing content and attributes -----

    /// Writes `data` at `offset` of file `ino`; returns the bytes written.
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<usize> {
        self.alive()?;
        end_of(offset, data.len() as u64)?;
        let file = self.file_mut(ino)?;
        if !data.is_empty() {
            file.change(Pending::Write {
                offset,
                data: data.to_vec(),
            });
        }
        let now = SystemTime::now();
        let inode = self.inode_mut(ino)?;
        inode.meta.mtime = now;
        inode.meta.ctime = now;
        self.counters.writes += 1;
        self.counters.bytes_written += data.len() as u64;
        Ok(data.len())
    }

    /// Changes attributes; a size change truncates or extends with zeros.
    pub fn setattr(&mut self, ino: Ino, set: SetAttr) -> Result<Attr> {
        self.alive()?;
        if let Some(size) = set.size {
            end_of(size, 0)?;
            let file = self.file_mut(ino)?;
            if size != file.current.len() {
                file.change(Pending::SetLen(size));
            }
        }
        let now = SystemTime::now();
        let meta = &mut self.inode_mut(ino)?.meta;
        if set.size.is_some() {
            meta.mtime = now;
        }
        if let Some(perm) = set.perm {
            meta.perm = perm & 0o7777;
        }
        if let Some(uid) = set.uid {
            meta.uid = uid;
        }
        if let Some(gid) = set.gid {
            meta.gid = gid;
        }
        if let Some(atime) = set.atime {
            meta.atime = atime;
        }
        if let Some(mtime) = set.mtime {
            meta.mtime = mtime;
        }
        meta.ctime = set.ctime.unwrap_or(now);
        self.getattr(ino)
    }

    /// `fallocate` of `len` bytes at `offset` of file `ino`.
    pub fn fallocate(&mut self, ino: Ino, offset: u64, len: u64, mode: Falloc) -> Result<()> {
        self.alive()?;
        let end = end_of(offset, len)?;
        let file = self.file_mut(ino)?;
        let grow = match mode {
            Falloc::Allocate { keep_size } | Falloc::ZeroRange { keep_size } => !keep_size,
            Falloc::PunchHole => false,
        };
        if grow && end > file.current.len() {
            file.change(Pending::SetLen(end));
        }
        if matches!(mode, Falloc::PunchHole | Falloc::ZeroRange { .. }) {
            file.change(Pending::Zero { offset, len });
        }
        let now = SystemTime::now();
        let meta = &mut self.inode_mut(ino)?.meta;
        meta.mtime = now;
        meta.ctime = now;
        Ok(())
    }

    // ----- durability -----

    /// `fsync`/`fdatasync` of `ino`: a file's content, size and attributes
    /// become durable (for a directory this is [`Model::fsyncdir`]).
    pub fn fsync(&mut self, ino: Ino, datasync: bool) -> Result<()> {
        self.alive()?;
        if self.inode(ino)?.kind == Kind::Dir {
            return self.fsyncdir(ino);
        }
        let inode = self.inode_mut(ino)?;
        inode.durable_meta = inode.meta;
        if let Body::File(file) = &mut inode.body {
            file.durable = file.current.clone();
            file.pending.clear();
        }
        if datasync {
            self.counters.fdatasync += 1;
        } else {
            self.counters.fsync += 1;
        }
        Ok(())
    }

    /// `fsync` of directory `ino`: its current entries and attributes become
    /// durable.
    pub fn fsyncdir(&mut self, ino: Ino) -> Result<()> {
        self.alive()?;
        let inode = self.inode_mut(ino)?;
        let meta = inode.meta;
        let Body::Dir(dir) = &mut inode.body else {
            return Err(Error::NotDir);
        };
        inode.durable_meta = meta;
        let new: Vec<Ino> = dir.current.values().copied().collect();
        let old = std::mem::replace(&mut dir.durable, dir.current.clone());
        for child in &new {
            if let Some(c) = self.inodes.get_mut(child) {
                c.durable_nlink += 1;
            }
        }
        for child in old.values() {
            if let Some(c) = self.inodes.get_mut(child) {
                c.durable_nlink = c.durable_nlink.saturating_sub(1);
            }
            self.free_if_unused(*child);
        }
        self.counters.fsyncdir += 1;
        Ok(())
    }
}

/// Under [`CutMode::Tear`]: makes a random prefix of `file`'s pending changes
/// durable, the change after that prefix torn if it is a write.
fn tear(file: &mut FileBody, rng: &mut SplitMix64) {
    if file.pending.is_empty() {
        return;
    }
    let whole = rng.up_to(file.pending.len() as u64) as usize;
    for op in &file.pending[..whole] {
        op.apply(&mut file.durable);
    }
    if let Some(Pending::Write { offset, data }) = file.pending.get(whole) {
        let part = rng.up_to(data.len() as u64 - 1) as usize;
        if part > 0 {
            file.durable.write(*offset, &data[..part]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model::new(0o755, 0, 0)
    }

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn new_file(m: &mut Model, parent: Ino, n: &str) -> Ino {
        m.mknod(parent, name(n), Kind::File, 0o644, 0, 0, 0)
            .unwrap()
            .ino
    }

    fn read_all(m: &Model, ino: Ino) -> Vec<u8> {
        m.read(ino, 0, usize::MAX).unwrap()
    }

    fn names(m: &Model, dir: Ino) -> Vec<String> {
        m.readdir(dir)
            .unwrap()
            .into_iter()
            .skip(2)
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    }

    fn cut_and_revive(m: &mut Model, mode: CutMode) {
        m.cut(mode);
        m.revive();
    }

    /// A file whose name and (empty) existence are durable.
    fn durable_file(m: &mut Model, n: &str) -> Ino {
        let ino = new_file(m, ROOT_INO, n);
        m.fsyncdir(ROOT_INO).unwrap();
        ino
    }

    #[test]
    fn write_without_fsync_is_gone_after_cut() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.write(f, 0, b"lost").unwrap();
        assert_eq!(read_all(&m, f), b"lost");
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(read_all(&m, f), b"");
        assert_eq!(m.getattr(f).unwrap().size, 0);
    }

    #[test]
    fn fsynced_write_is_kept_and_later_unsynced_write_is_not() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.write(f, 0, b"kept").unwrap();
        m.fsync(f, false).unwrap();
        m.write(f, 4, b" and lost").unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(read_all(&m, f), b"kept");
    }

    #[test]
    fn fdatasync_makes_the_write_durable_like_fsync() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.write(f, 0, b"data").unwrap();
        m.fsync(f, true).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(read_all(&m, f), b"data");
        let c = m.counters();
        assert_eq!((c.fdatasync, c.fsync, c.fsyncdir, c.cuts), (1, 0, 1, 1));
        assert_eq!((c.writes, c.bytes_written), (1, 4));
    }

    #[test]
    fn new_file_whose_directory_was_not_fsynced_is_gone_after_cut() {
        let mut m = model();
        let f = new_file(&mut m, ROOT_INO, "f");
        m.write(f, 0, b"synced data, unsynced name").unwrap();
        m.fsync(f, false).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(m.lookup(ROOT_INO, name("f")), Err(Error::NotFound));
        assert_eq!(m.getattr(f), Err(Error::NotFound));
        assert!(names(&m, ROOT_INO).is_empty());
    }

    #[test]
    fn new_file_with_directory_fsynced_but_not_itself_is_empty_after_cut() {
        let mut m = model();
        let f = new_file(&mut m, ROOT_INO, "f");
        m.write(f, 0, b"unsynced").unwrap();
        m.fsyncdir(ROOT_INO).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        let attr = m.lookup(ROOT_INO, name("f")).unwrap();
        assert_eq!((attr.ino, attr.size), (f, 0));
    }

    #[test]
    fn file_in_a_new_directory_needs_both_directories_synced() {
        let mut m = model();
        let d = m.mkdir(ROOT_INO, name("d"), 0o755, 0, 0).unwrap().ino;
        let f = new_file(&mut m, d, "f");
        m.fsync(f, false).unwrap();
        m.fsyncdir(d).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(m.lookup(ROOT_INO, name("d")), Err(Error::NotFound));
        assert_eq!(m.getattr(f), Err(Error::NotFound));

        let d = m.mkdir(ROOT_INO, name("d"), 0o755, 0, 0).unwrap().ino;
        let f = new_file(&mut m, d, "f");
        m.fsyncdir(d).unwrap();
        m.fsyncdir(ROOT_INO).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(m.lookup(d, name("f")).unwrap().ino, f);
    }

    #[test]
    fn rename_without_directory_fsync_is_undone_by_cut() {
        let mut m = model();
        let f = durable_file(&mut m, "tmp");
        m.write(f, 0, b"v1").unwrap();
        m.fsync(f, false).unwrap();
        m.rename(ROOT_INO, name("tmp"), ROOT_INO, name("final"), false)
            .unwrap();
        assert_eq!(names(&m, ROOT_INO), ["final"]);
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(names(&m, ROOT_INO), ["tmp"]);
        assert_eq!(read_all(&m, f), b"v1");
    }

    #[test]
    fn rename_with_directory_fsync_is_kept_after_cut() {
        let mut m = model();
        let old = durable_file(&mut m, "final");
        m.write(old, 0, b"old").unwrap();
        m.fsync(old, false).unwrap();
        let new = new_file(&mut m, ROOT_INO, "tmp");
        m.write(new, 0, b"new").unwrap();
        m.fsync(new, false).unwrap();
        m.rename(ROOT_INO, name("tmp"), ROOT_INO, name("final"), false)
            .unwrap();
        m.fsyncdir(ROOT_INO).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(names(&m, ROOT_INO), ["final"]);
        assert_eq!(
            read_all(&m, m.lookup(ROOT_INO, name("final")).unwrap().ino),
            b"new"
        );
        // The replaced inode is unreachable and dropped.
        assert_eq!(m.getattr(old), Err(Error::NotFound));
    }

    #[test]
    fn rename_between_directories_needs_both_synced() {
        let mut m = model();
        let a = m.mkdir(ROOT_INO, name("a"), 0o755, 0, 0).unwrap().ino;
        let b = m.mkdir(ROOT_INO, name("b"), 0o755, 0, 0).unwrap().ino;
        m.fsyncdir(ROOT_INO).unwrap();
        let f = new_file(&mut m, a, "f");
        m.fsyncdir(a).unwrap();
        m.rename(a, name("f"), b, name("f"), false).unwrap();
        // Only the destination synced: the file now has two durable names.
        m.fsyncdir(b).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(m.lookup(a, name("f")).unwrap().ino, f);
        assert_eq!(m.lookup(b, name("f")).unwrap().ino, f);
        assert_eq!(m.getattr(f).unwrap().nlink, 2);
        // Both synced: one name.
        m.rename(a, name("f"), b, name("g"), false).unwrap();
        m.fsyncdir(a).unwrap();
        m.fsyncdir(b).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(names(&m, a), Vec::<String>::new());
        assert_eq!(names(&m, b), ["f", "g"]);
    }

    #[test]
    fn a_directory_moved_with_only_its_new_parent_synced_keeps_one_parent() {
        let mut m = model();
        let a = m.mkdir(ROOT_INO, name("a"), 0o755, 0, 0).unwrap().ino;
        let b = m.mkdir(ROOT_INO, name("b"), 0o755, 0, 0).unwrap().ino;
        let d = m.mkdir(a, name("d"), 0o755, 0, 0).unwrap().ino;
        m.fsyncdir(a).unwrap();
        m.fsyncdir(ROOT_INO).unwrap();
        m.rename(a, name("d"), b, name("d"), false).unwrap();
        m.fsyncdir(b).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        // Reached first through "a" (breadth first, by name); "b"'s entry is dropped.
        assert_eq!(m.lookup(a, name("d")).unwrap().ino, d);
        assert_eq!(m.lookup(b, name("d")), Err(Error::NotFound));
        assert_eq!(m.readdir(d).unwrap()[1].ino, a);
    }

    #[test]
    fn unlink_without_directory_fsync_is_undone_by_cut() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.write(f, 0, b"still here").unwrap();
        m.fsync(f, false).unwrap();
        m.unlink(ROOT_INO, name("f")).unwrap();
        assert_eq!(m.lookup(ROOT_INO, name("f")), Err(Error::NotFound));
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(m.lookup(ROOT_INO, name("f")).unwrap().ino, f);
        assert_eq!(read_all(&m, f), b"still here");
    }

    #[test]
    fn unlink_with_directory_fsync_is_kept_and_frees_the_inode() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.unlink(ROOT_INO, name("f")).unwrap();
        assert!(m.getattr(f).is_ok(), "a durable entry still holds it");
        m.fsyncdir(ROOT_INO).unwrap();
        assert_eq!(m.getattr(f), Err(Error::NotFound));
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(m.lookup(ROOT_INO, name("f")), Err(Error::NotFound));
    }

    #[test]
    fn an_unlinked_file_the_kernel_still_holds_stays_readable() {
        let mut m = model();
        let f = new_file(&mut m, ROOT_INO, "f");
        m.kernel_ref(f);
        m.write(f, 0, b"open").unwrap();
        m.unlink(ROOT_INO, name("f")).unwrap();
        assert_eq!(read_all(&m, f), b"open");
        m.forget(f, 1);
        assert_eq!(m.getattr(f), Err(Error::NotFound));
    }

    #[test]
    fn operations_fail_with_eio_between_cut_and_revive() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.cut(CutMode::LoseAll);
        assert!(m.is_dead());
        assert_eq!(m.getattr(f), Err(Error::Io));
        assert_eq!(m.lookup(ROOT_INO, name("f")), Err(Error::Io));
        assert_eq!(m.read(f, 0, 1), Err(Error::Io));
        assert_eq!(m.write(f, 0, b"x"), Err(Error::Io));
        assert_eq!(m.fsync(f, false), Err(Error::Io));
        assert_eq!(m.fsyncdir(ROOT_INO), Err(Error::Io));
        assert_eq!(m.unlink(ROOT_INO, name("f")), Err(Error::Io));
        assert_eq!(m.readdir(ROOT_INO), Err(Error::Io));
        assert_eq!(m.counters().writes, 0);
        m.revive();
        assert_eq!(m.getattr(f).unwrap().size, 0);
        assert_eq!(m.boot(), 1);
    }

    /// Six distinct writes after an fsync, then a Tear cut: the survivor must
    /// be the durable base plus a prefix of those writes, the next one
    /// possibly torn.
    fn torn_result(seed: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.write(f, 0, b"base").unwrap();
        m.fsync(f, false).unwrap();
        let mut expected_states = vec![b"base".to_vec()];
        let mut content = b"base".to_vec();
        for i in 0..6u8 {
            let chunk = vec![b'a' + i; 10];
            m.write(f, content.len() as u64, &chunk).unwrap();
            // Every torn state of this write, then the whole write.
            for part in 1..=chunk.len() {
                let mut s = content.clone();
                s.extend_from_slice(&chunk[..part]);
                expected_states.push(s);
            }
            content.extend_from_slice(&chunk);
        }
        cut_and_revive(&mut m, CutMode::Tear { seed });
        (read_all(&m, f), expected_states)
    }

    #[test]
    fn tear_keeps_a_prefix_of_the_unsynced_writes_deterministically() {
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            let (got, allowed) = torn_result(seed);
            assert!(
                allowed.contains(&got),
                "seed {seed}: {got:?} is not a prefix state"
            );
            assert_eq!(torn_result(seed).0, got, "seed {seed} is not deterministic");
            seen.insert(got.len());
        }
        // Over 64 seeds the cut lands in many places (nothing, some, all).
        assert!(seen.len() > 10, "tear lengths seen: {seen:?}");
        assert!(seen.contains(&4) || seen.contains(&64), "{seen:?}");
    }

    #[test]
    fn tear_still_loses_unsynced_directory_changes() {
        let mut m = model();
        let f = new_file(&mut m, ROOT_INO, "f");
        m.write(f, 0, b"data").unwrap();
        cut_and_revive(&mut m, CutMode::Tear { seed: 7 });
        assert_eq!(m.lookup(ROOT_INO, name("f")), Err(Error::NotFound));
    }

    #[test]
    fn truncate_shrinks_extends_with_zeros_and_is_undone_unless_synced() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.write(f, 0, b"0123456789").unwrap();
        m.fsync(f, false).unwrap();
        let shrink = SetAttr {
            size: Some(4),
            ..SetAttr::default()
        };
        assert_eq!(m.setattr(f, shrink).unwrap().size, 4);
        let grow = SetAttr {
            size: Some(8),
            ..SetAttr::default()
        };
        m.setattr(f, grow).unwrap();
        assert_eq!(read_all(&m, f), b"0123\0\0\0\0");
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(read_all(&m, f), b"0123456789");
        m.setattr(f, shrink).unwrap();
        m.fsync(f, false).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(read_all(&m, f), b"0123");
    }

    #[test]
    fn holes_read_as_zeros() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        let far = 3 * crate::content::CHUNK as u64 + 5;
        m.write(f, far, b"end").unwrap();
        let attr = m.getattr(f).unwrap();
        assert_eq!(attr.size, far + 3);
        assert!(attr.allocated < attr.size);
        let all = read_all(&m, f);
        assert!(all[..far as usize].iter().all(|&b| b == 0));
        assert_eq!(&all[far as usize..], b"end");
        assert_eq!(m.read(f, far + 3, 10).unwrap(), b"");
    }

    #[test]
    fn fallocate_extends_and_punch_hole_zeros_without_shrinking() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.write(f, 0, b"abcdef").unwrap();
        m.fallocate(f, 0, 100, Falloc::Allocate { keep_size: false })
            .unwrap();
        assert_eq!(m.getattr(f).unwrap().size, 100);
        m.fallocate(f, 0, 1000, Falloc::Allocate { keep_size: true })
            .unwrap();
        assert_eq!(m.getattr(f).unwrap().size, 100);
        m.fallocate(f, 1, 2, Falloc::PunchHole).unwrap();
        assert_eq!(&read_all(&m, f)[..6], b"a\0\0def");
        assert_eq!(m.getattr(f).unwrap().size, 100);
    }

    #[test]
    fn writes_past_the_size_limit_fail_with_file_too_big() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        assert_eq!(m.write(f, MAX_FILE_SIZE, b"x"), Err(Error::TooBig));
        assert_eq!(m.write(f, u64::MAX, b"x"), Err(Error::TooBig));
        let huge = SetAttr {
            size: Some(u64::MAX),
            ..SetAttr::default()
        };
        assert_eq!(m.setattr(f, huge), Err(Error::TooBig));
    }

    #[test]
    fn rename_refuses_a_directory_into_itself_and_a_non_empty_target() {
        let mut m = model();
        let a = m.mkdir(ROOT_INO, name("a"), 0o755, 0, 0).unwrap().ino;
        let sub = m.mkdir(a, name("sub"), 0o755, 0, 0).unwrap().ino;
        assert_eq!(
            m.rename(ROOT_INO, name("a"), sub, name("x"), false),
            Err(Error::Invalid)
        );
        let b = m.mkdir(ROOT_INO, name("b"), 0o755, 0, 0).unwrap().ino;
        new_file(&mut m, b, "f");
        assert_eq!(
            m.rename(ROOT_INO, name("a"), ROOT_INO, name("b"), false),
            Err(Error::NotEmpty)
        );
        assert_eq!(
            m.rename(b, name("f"), ROOT_INO, name("a"), false),
            Err(Error::IsDir)
        );
        assert_eq!(
            m.rename(ROOT_INO, name("a"), b, name("f"), false),
            Err(Error::NotDir)
        );
        assert_eq!(
            m.rename(ROOT_INO, name("a"), ROOT_INO, name("b"), true),
            Err(Error::Exists)
        );
        assert_eq!(m.rmdir(ROOT_INO, name("b")), Err(Error::NotEmpty));
    }

    #[test]
    fn attributes_revert_to_their_last_synced_values() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        let chmod = |perm| SetAttr {
            perm: Some(perm),
            ..SetAttr::default()
        };
        m.setattr(f, chmod(0o600)).unwrap();
        m.fsync(f, false).unwrap();
        m.setattr(f, chmod(0o640)).unwrap();
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(m.getattr(f).unwrap().meta.perm, 0o600);
    }

    #[test]
    fn hard_links_count_and_survive_only_when_synced() {
        let mut m = model();
        let f = durable_file(&mut m, "f");
        m.link(f, ROOT_INO, name("g")).unwrap();
        assert_eq!(m.getattr(f).unwrap().nlink, 2);
        cut_and_revive(&mut m, CutMode::LoseAll);
        assert_eq!(m.getattr(f).unwrap().nlink, 1);
        assert_eq!(m.lookup(ROOT_INO, name("g")), Err(Error::NotFound));
        let d = m.mkdir(ROOT_INO, name("d"), 0o755, 0, 0).unwrap().ino;
        assert_eq!(m.link(d, ROOT_INO, name("e")), Err(Error::NotPermitted));
    }

    #[test]
    fn inode_numbers_are_not_reused_after_a_cut() {
        let mut m = model();
        let lost = new_file(&mut m, ROOT_INO, "f");
        cut_and_revive(&mut m, CutMode::LoseAll);
        let next = new_file(&mut m, ROOT_INO, "f");
        assert!(next > lost);
    }
}
