//! End-to-end through the kernel: each test mounts a powercut filesystem in
//! a temporary directory and uses it with std::fs and libc, as a program
//! would. These need /dev/fuse and root; without them they fail saying so.

mod support;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use powercut_fs::CutMode;
use support::{assert_eio, fsync_dir, is_eio, mount, write_durably};

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap()
}

#[test]
fn unsynced_write_is_lost_after_cut() {
    let fx = mount();
    let f = fx.path("f");
    write_durably(&f, b"").unwrap();
    fs::write(&f, b"written, closed, never fsynced").unwrap();
    assert_eq!(read(&f), b"written, closed, never fsynced");
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(read(&f), b"");
}

#[test]
fn fsynced_write_survives_cut() {
    let fx = mount();
    let f = fx.path("f");
    write_durably(&f, b"durable").unwrap();
    let mut file = File::options().append(true).open(&f).unwrap();
    file.write_all(b" and volatile").unwrap();
    drop(file);
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(read(&f), b"durable");
}

#[test]
fn fdatasync_makes_the_write_survive_cut() {
    let fx = mount();
    let f = fx.path("f");
    write_durably(&f, b"").unwrap();
    let mut file = File::options().write(true).open(&f).unwrap();
    file.write_all(b"datasynced").unwrap();
    file.sync_data().unwrap();
    drop(file);
    let c = fx.fs.counters();
    assert_eq!((c.fdatasync, c.fsync, c.fsyncdir), (1, 1, 1), "{c}");
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(read(&f), b"datasynced");
}

#[test]
fn new_file_is_gone_after_cut_unless_its_directory_was_fsynced() {
    let fx = mount();
    // Name synced, content not: there after the cut, empty.
    fs::write(fx.path("named"), b"data").unwrap();
    fsync_dir(fx.fs.path()).unwrap();
    // Content fsynced, name not: gone.
    let mut file = File::create(fx.path("unnamed")).unwrap();
    file.write_all(b"fsynced data under an unsynced name")
        .unwrap();
    file.sync_all().unwrap();
    drop(file);
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(names(fx.fs.path()), ["named"]);
    assert_eq!(read(&fx.path("named")), b"");
    assert!(!fx.path("unnamed").exists());
}

#[test]
fn file_in_a_new_directory_needs_the_parent_fsynced_too() {
    let fx = mount();
    fs::create_dir(fx.path("d")).unwrap();
    write_durably(&fx.path("d/f"), b"data").unwrap();
    fx.cut_and_revive(CutMode::LoseAll);
    assert!(!fx.path("d").exists());
    fs::create_dir(fx.path("d")).unwrap();
    write_durably(&fx.path("d/f"), b"data").unwrap();
    fsync_dir(fx.fs.path()).unwrap();
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(read(&fx.path("d/f")), b"data");
}

#[test]
fn rename_is_undone_by_cut_without_a_directory_fsync() {
    let fx = mount();
    write_durably(&fx.path("tmp"), b"new").unwrap();
    write_durably(&fx.path("final"), b"old").unwrap();
    fs::rename(fx.path("tmp"), fx.path("final")).unwrap();
    assert_eq!(read(&fx.path("final")), b"new");
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(names(fx.fs.path()), ["final", "tmp"]);
    assert_eq!(read(&fx.path("final")), b"old");
}

#[test]
fn rename_over_a_file_survives_cut_with_a_directory_fsync() {
    let fx = mount();
    write_durably(&fx.path("tmp"), b"new").unwrap();
    write_durably(&fx.path("final"), b"old").unwrap();
    fs::rename(fx.path("tmp"), fx.path("final")).unwrap();
    fsync_dir(fx.fs.path()).unwrap();
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(names(fx.fs.path()), ["final"]);
    assert_eq!(read(&fx.path("final")), b"new");
}

#[test]
fn rename_between_directories_needs_both_fsynced() {
    let fx = mount();
    fs::create_dir(fx.path("a")).unwrap();
    fs::create_dir(fx.path("b")).unwrap();
    fsync_dir(fx.fs.path()).unwrap();
    write_durably(&fx.path("a/f"), b"moved").unwrap();
    fs::rename(fx.path("a/f"), fx.path("b/f")).unwrap();
    fsync_dir(&fx.path("b")).unwrap();
    fsync_dir(&fx.path("a")).unwrap();
    fx.cut_and_revive(CutMode::LoseAll);
    assert!(names(&fx.path("a")).is_empty());
    assert_eq!(read(&fx.path("b/f")), b"moved");
}

#[test]
fn rename_noreplace_refuses_and_exchange_is_not_supported() {
    let fx = mount();
    fs::write(fx.path("x"), b"x").unwrap();
    fs::write(fx.path("y"), b"y").unwrap();
    let (x, y) = (c_path(&fx.path("x")), c_path(&fx.path("y")));
    let rename2 = |flags| {
        // SAFETY: valid NUL-terminated paths.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                x.as_ptr(),
                libc::AT_FDCWD,
                y.as_ptr(),
                flags,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error())
        }
    };
    assert_eq!(rename2(libc::RENAME_NOREPLACE), Err(Some(libc::EEXIST)));
    let exchange = rename2(libc::RENAME_EXCHANGE);
    assert!(
        matches!(exchange, Err(Some(libc::EINVAL | libc::ENOSYS))),
        "{exchange:?}"
    );
    assert_eq!(read(&fx.path("x")), b"x");
    assert_eq!(read(&fx.path("y")), b"y");
}

#[test]
fn unlink_is_undone_by_cut_without_a_directory_fsync() {
    let fx = mount();
    write_durably(&fx.path("f"), b"still here").unwrap();
    write_durably(&fx.path("g"), b"really gone").unwrap();
    fs::remove_file(fx.path("f")).unwrap();
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(read(&fx.path("f")), b"still here");
    fs::remove_file(fx.path("g")).unwrap();
    fsync_dir(fx.fs.path()).unwrap();
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(names(fx.fs.path()), ["f"]);
}

#[test]
fn mkdir_and_rmdir_are_undone_by_cut_without_a_directory_fsync() {
    let fx = mount();
    fs::create_dir(fx.path("kept")).unwrap();
    fs::create_dir(fx.path("removed")).unwrap();
    fsync_dir(fx.fs.path()).unwrap();
    fs::create_dir(fx.path("new")).unwrap();
    fs::remove_dir(fx.path("removed")).unwrap();
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(names(fx.fs.path()), ["kept", "removed"]);
}

#[test]
fn every_operation_fails_with_eio_between_cut_and_revive() {
    let fx = mount();
    write_durably(&fx.path("f"), b"data").unwrap();
    let open = File::options()
        .read(true)
        .write(true)
        .open(fx.path("f"))
        .unwrap();
    fx.fs.cut(CutMode::LoseAll);
    assert!(fx.fs.is_dead());
    let mut buf = [0u8; 4];
    assert_eio("read through an open descriptor", open.read_at(&mut buf, 0));
    assert_eio("write through an open descriptor", open.write_at(b"x", 0));
    assert_eio("fsync", open.sync_all());
    assert_eio("fdatasync", open.sync_data());
    assert_eio("ftruncate", open.set_len(0));
    assert_eio("fstat", open.metadata());
    assert_eio("open", File::open(fx.path("f")));
    assert_eio("create", File::create(fx.path("new")));
    assert_eio("stat", fs::metadata(fx.path("f")));
    assert_eio(
        "read_dir",
        fs::read_dir(fx.fs.path()).and_then(|mut d| d.next().transpose()),
    );
    assert_eio("mkdir", fs::create_dir(fx.path("d")));
    assert_eio("unlink", fs::remove_file(fx.path("f")));
    assert_eio("rename", fs::rename(fx.path("f"), fx.path("g")));
    drop(open);
    fx.fs.revive();
    assert!(!fx.fs.is_dead());
    assert_eq!(read(&fx.path("f")), b"data");
    assert_eq!(fx.fs.counters().cuts, 1);
}

#[test]
fn descriptor_opened_before_cut_still_fails_after_revive() {
    let fx = mount();
    write_durably(&fx.path("f"), b"data").unwrap();
    let open = File::options()
        .read(true)
        .write(true)
        .open(fx.path("f"))
        .unwrap();
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eio(
        "write through a pre-cut descriptor",
        open.write_at(b"zombie", 0),
    );
    assert_eio("fsync of a pre-cut descriptor", open.sync_all());
    let mut buf = [0u8; 4];
    assert_eio(
        "read through a pre-cut descriptor",
        open.read_at(&mut buf, 0),
    );
    assert_eq!(read(&fx.path("f")), b"data");
}

#[test]
fn file_reopened_after_revive_reads_durable_content_not_a_stale_cache() {
    let fx = mount();
    let f = fx.path("f");
    write_durably(&f, b"durable content, long").unwrap();
    // Overwrite and shrink without fsync, and read it back through several
    // paths so that any kernel cache would hold the volatile version.
    let file = File::options().write(true).open(&f).unwrap();
    file.write_at(b"VOLATILE", 0).unwrap();
    file.set_len(8).unwrap();
    drop(file);
    assert_eq!(read(&f), b"VOLATILE");
    assert_eq!(fs::metadata(&f).unwrap().len(), 8);
    let mut reader = File::open(&f).unwrap();
    let mut s = String::new();
    reader.read_to_string(&mut s).unwrap();
    assert_eq!(s, "VOLATILE");
    drop(reader);
    // Last before the cut: a lookup and getattr the kernel could cache.
    assert_eq!(fs::metadata(&f).unwrap().len(), 8);

    fx.cut_and_revive(CutMode::LoseAll);

    // First after the revive: the size must come from the filesystem.
    assert_eq!(fs::metadata(&f).unwrap().len(), 21);
    let mut reader = File::open(&f).unwrap();
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"durable content, long");
    reader.seek(SeekFrom::Start(8)).unwrap();
    let mut tail = Vec::new();
    reader.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"content, long");
}

#[test]
fn same_size_overwrite_is_not_served_from_a_stale_page_cache_after_revive() {
    // A size change makes the kernel drop cached pages by itself; an
    // overwrite in place does not, so only direct I/O (no page cache)
    // keeps the volatile bytes from being read back after the cut.
    let fx = mount();
    let f = fx.path("f");
    write_durably(&f, b"AAAAAAAA").unwrap();
    let file = File::options().read(true).write(true).open(&f).unwrap();
    file.write_at(b"BBBBBBBB", 0).unwrap();
    let mut buf = [0u8; 8];
    file.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"BBBBBBBB");
    let reader = File::open(&f).unwrap();
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"BBBBBBBB");
    fx.cut_and_revive(CutMode::LoseAll);
    drop((file, reader));
    assert_eq!(read(&f), b"AAAAAAAA");
}

#[test]
fn sync_file_range_does_not_make_a_write_durable() {
    let fx = mount();
    let f = fx.path("f");
    write_durably(&f, b"").unwrap();
    let file = File::options().write(true).open(&f).unwrap();
    file.write_at(b"what sled's flush does", 0).unwrap();
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a valid open descriptor; no memory is passed.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 22, flags) };
    assert_eq!(r, 0, "sync_file_range: {}", std::io::Error::last_os_error());
    drop(file);
    let c = fx.fs.counters();
    assert_eq!(
        (c.fsync, c.fdatasync),
        (1, 0),
        "only write_durably's fsync: {c}"
    );
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(read(&f), b"");
}

#[test]
fn truncate_and_holes_behave_like_a_disk_through_the_kernel() {
    let fx = mount();
    let f = fx.path("f");
    write_durably(&f, b"0123456789").unwrap();
    let file = File::options().read(true).write(true).open(&f).unwrap();
    file.set_len(4).unwrap();
    file.set_len(6).unwrap();
    assert_eq!(read(&f), b"0123\0\0");
    // A write far past the end leaves a hole that reads as zeros.
    let far = 1 << 20;
    file.write_at(b"end", far).unwrap();
    let all = read(&f);
    assert_eq!(all.len() as u64, far + 3);
    assert_eq!(&all[..6], b"0123\0\0");
    assert!(all[6..far as usize].iter().all(|&b| b == 0));
    assert_eq!(&all[far as usize..], b"end");
    let meta = fs::metadata(&f).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < meta.len(),
        "sparse: {} blocks",
        meta.blocks()
    );
    file.sync_all().unwrap();
    file.set_len(0).unwrap();
    drop(file);
    fx.cut_and_revive(CutMode::LoseAll);
    assert_eq!(read(&f), all);
}

#[test]
fn fallocate_extends_a_file_and_statfs_is_plausible() {
    let fx = mount();
    let file = File::create(fx.path("f")).unwrap();
    // SAFETY: a valid open descriptor.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, 1 << 20) };
    assert_eq!(r, 0, "fallocate: {}", std::io::Error::last_os_error());
    assert_eq!(file.metadata().unwrap().len(), 1 << 20);
    // SAFETY: as above; KEEP_SIZE must not change the size.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, 2 << 20) };
    assert_eq!(
        r,
        0,
        "fallocate keep_size: {}",
        std::io::Error::last_os_error()
    );
    assert_eq!(file.metadata().unwrap().len(), 1 << 20);

    let path = c_path(fx.fs.path());
    // SAFETY: statvfs fills the zeroed struct passed to it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0 && st.f_bfree <= st.f_blocks && st.f_bavail <= st.f_blocks);
    assert!(st.f_bsize >= 512 && st.f_namemax == 255);
    assert!(st.f_files > st.f_ffree && st.f_ffree > 0);
}

#[test]
fn large_directory_lists_every_entry() {
    let fx = mount();
    let want: Vec<String> = (0..1500)
        .map(|i| format!("entry-with-a-longish-name-{i:05}"))
        .collect();
    for name in &want {
        File::create(fx.path(name)).unwrap();
    }
    assert_eq!(names(fx.fs.path()), want);
}

#[test]
fn tear_keeps_a_prefix_of_unsynced_writes_and_is_reproducible() {
    // Ten 4 KiB writes of distinct bytes after a synced base; whatever
    // survives must be the base plus a prefix of them, the last one possibly
    // cut short, and the same seed must give the same survivor.
    let run = |seed| {
        let fx = mount();
        let f = fx.path("f");
        write_durably(&f, b"").unwrap();
        let file = File::options().write(true).open(&f).unwrap();
        for i in 0..10u8 {
            file.write_at(&[b'a' + i; 4096], u64::from(i) * 4096)
                .unwrap();
        }
        drop(file);
        fx.cut_and_revive(CutMode::Tear { seed });
        read(&f)
    };
    let mut lengths = std::collections::BTreeSet::new();
    for seed in 0..12 {
        let got = run(seed);
        for (i, &b) in got.iter().enumerate() {
            assert_eq!(b, b'a' + (i / 4096) as u8, "seed {seed}: byte {i}");
        }
        assert_eq!(run(seed), got, "seed {seed} is not reproducible");
        lengths.insert(got.len());
    }
    assert!(
        lengths.len() > 3,
        "tear should land in different places: {lengths:?}"
    );
}

#[test]
fn counters_count_writes_syncs_and_cuts() {
    let fx = mount();
    let file = File::create(fx.path("f")).unwrap();
    file.write_at(b"12345", 0).unwrap();
    file.write_at(b"678", 5).unwrap();
    file.sync_all().unwrap();
    file.sync_data().unwrap();
    drop(file);
    fsync_dir(fx.fs.path()).unwrap();
    fx.cut_and_revive(CutMode::LoseAll);
    let c = fx.fs.counters();
    assert_eq!(
        (
            c.writes,
            c.bytes_written,
            c.fsync,
            c.fdatasync,
            c.fsyncdir,
            c.cuts
        ),
        (2, 8, 1, 1, 1, 1),
        "{c}"
    );
}

fn mounted_at(path: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_string_lossy();
    mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.as_ref()))
}

#[test]
fn drop_unmounts_even_while_dead() {
    let dir = tempfile::tempdir().unwrap();
    let fs = powercut_fs::mount(dir.path())
        .unwrap_or_else(|e| panic!("this test needs a FUSE mount: {e}"));
    assert!(mounted_at(dir.path()));
    fs.cut(CutMode::LoseAll);
    drop(fs);
    assert!(!mounted_at(dir.path()));
}

#[test]
fn drop_unmounts_lazily_while_a_file_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let fs = powercut_fs::mount(dir.path())
        .unwrap_or_else(|e| panic!("this test needs a FUSE mount: {e}"));
    let open = File::create(dir.path().join("f")).unwrap();
    drop(fs);
    assert!(!mounted_at(dir.path()), "a busy mount is detached");
    // The detached filesystem keeps serving its last user until it closes.
    open.write_at(b"x", 0).unwrap();
    drop(open);
}

#[test]
fn mount_failure_says_why() {
    let missing = Path::new("/nonexistent/powercut-fs-mountpoint");
    let err = powercut_fs::mount(missing).expect_err("no such mountpoint");
    let message = err.to_string();
    assert!(message.contains("cannot mount"), "{message}");
    assert!(message.contains("/dev/fuse"), "{message}");
    assert!(!is_eio(&err));
}
