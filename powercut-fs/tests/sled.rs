//! A real storage engine on the powercut filesystem: sled 0.34.7, the version
//! coap2mqtt uses. Does `Db::flush()` survive a power cut?
//!
//! sled runs in a child process (this test binary again, running the ignored
//! test `sled_child_process`), as a daemon would. The parent waits until the
//! child has flushed, cuts the power, kills the child (it dies in the cut: no
//! destructor runs, as none would), revives and opens the database itself to
//! count what survived.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use powercut_fs::{Counters, CutMode};
use support::{fsync_dir, mount};

const KEYS: u64 = 1000;
const READY: &str = "POWERCUT-SLED-CHILD-READY";

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("message {i:06} {}", "x".repeat(50)).into_bytes()
}

fn open(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        // No periodic flusher: only the explicit flush below writes.
        .flush_every_ms(None)
        .open()
        .unwrap_or_else(|e| panic!("opening sled at {}: {e}", dir.display()))
}

/// What the child does after `flush()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    /// Nothing: sled's flush alone.
    Nothing,
    /// fsync of sled's directory only.
    DirOnly,
    /// fdatasync of sled's `db` file only.
    DataOnly,
    /// Both.
    Both,
}

impl Sync {
    const ENV: &'static str = "POWERCUT_SLED_SYNC";

    fn from_env() -> Sync {
        match std::env::var(Self::ENV).as_deref() {
            Ok("dir") => Sync::DirOnly,
            Ok("data") => Sync::DataOnly,
            Ok("both") => Sync::Both,
            _ => Sync::Nothing,
        }
    }

    fn to_env(self) -> &'static str {
        match self {
            Sync::Nothing => "nothing",
            Sync::DirOnly => "dir",
            Sync::DataOnly => "data",
            Sync::Both => "both",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Sync::Nothing => "flush only",
            Sync::DirOnly => "flush + fsync(dir)",
            Sync::DataOnly => "flush + fdatasync(db)",
            Sync::Both => "flush + fdatasync(db) + fsync(dir)",
        }
    }
}

/// The child's work: insert, flush, optionally fsync sled's files, say so,
/// then wait to be killed (or for the parent to go away).
#[test]
#[ignore = "the sled tests run this in a child process"]
fn sled_child_process() {
    let Some(dir) = std::env::var_os("POWERCUT_SLED_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let sync = Sync::from_env();
    let db = open(dir);
    for i in 0..KEYS {
        db.insert(key(i), value(i)).unwrap();
    }
    db.flush().unwrap();
    // What the daemon can add after sled's flush: fdatasync of sled's log
    // file (its content) and fsync of sled's directory (the file's name).
    if matches!(sync, Sync::DataOnly | Sync::Both) {
        File::open(dir.join("db")).unwrap().sync_data().unwrap();
    }
    if matches!(sync, Sync::DirOnly | Sync::Both) {
        fsync_dir(dir).unwrap();
    }
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    // Blocks until the parent kills this process or closes the pipe.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    std::mem::forget(db);
    std::process::exit(0);
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn diff(after: Counters, before: Counters) -> String {
    format!(
        "writes={} bytes={} fsync={} fdatasync={} fsyncdir={}",
        after.writes - before.writes,
        after.bytes_written - before.bytes_written,
        after.fsync - before.fsync,
        after.fdatasync - before.fdatasync,
        after.fsyncdir - before.fsyncdir
    )
}

/// Runs the child on a fresh mount, cuts, and returns how many of the
/// flushed keys came back intact.
fn survivors_after_cut(sync: Sync) -> u64 {
    let fx = mount();
    let dir = fx.path("sled");
    // The database directory itself exists durably, as it would on a
    // machine where the daemon ran before.
    std::fs::create_dir(&dir).unwrap();
    fsync_dir(fx.fs.path()).unwrap();
    let before = fx.fs.counters();

    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["sled_child_process", "--exact", "--ignored", "--nocapture"])
        .env("POWERCUT_SLED_DIR", &dir)
        .env(Sync::ENV, sync.to_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = KillOnDrop(command.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains(READY));
    assert!(ready, "the sled child process ended before flushing");

    let flushed = fx.fs.counters();
    fx.fs.cut(CutMode::LoseAll);
    drop(child); // killed: it dies with the power
    fx.fs.revive();

    let db = open(&dir);
    let survived = (0..KEYS)
        .filter(|&i| db.get(key(i)).unwrap().as_deref() == Some(&value(i)[..]))
        .count() as u64;
    eprintln!(
        "sled 0.34.7, {KEYS} inserts + {}: {survived} of {KEYS} survived the power cut; \
         calls reaching the filesystem up to the cut: {}",
        sync.describe(),
        diff(flushed, before)
    );
    drop(db);
    survived
}

#[test]
fn sled_flush_alone_does_not_survive_a_power_cut() {
    let survived = survivors_after_cut(Sync::Nothing);
    assert!(
        survived < KEYS,
        "all {KEYS} flushed keys survived without an fsync: sled's flush would be durable"
    );
}

#[test]
fn sled_flush_plus_a_directory_fsync_alone_does_not_survive_a_power_cut() {
    // The log file's name survives, its content (never fsynced) does not.
    assert!(survivors_after_cut(Sync::DirOnly) < KEYS);
}

#[test]
fn sled_flush_plus_fdatasync_of_a_never_named_db_file_does_not_survive_a_power_cut() {
    // The content is durable but the file's name never was.
    assert!(survivors_after_cut(Sync::DataOnly) < KEYS);
}

#[test]
fn sled_flush_plus_fsync_of_db_file_and_directory_survives_a_power_cut() {
    assert_eq!(survivors_after_cut(Sync::Both), KEYS);
}
