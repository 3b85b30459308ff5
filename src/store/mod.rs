//! The durable queue: every message a device was answered 2.04 for, until
//! the broker has it.
//!
//! One sled tree holds the messages under 8-byte big-endian sequence numbers
//! (so key order is arrival order) plus one counters record, written in the
//! same atomic batch as the messages it counts, so depth and bytes survive a
//! restart without a scan of the queue. A second tree holds dead letters.
//!
//! Invariants:
//! - Only the committer thread ([`commit`]) writes; readers (the uplink, the
//!   metrics) read concurrently. One writer makes the counters exact.
//! - A message is durable only after `Db::flush` (sled's `insert` is not,
//!   not even against kill -9) *and* our own fdatasync/fsync of sled's files
//!   (sled's flush ends in `sync_file_range`, which a power cut defeats; see
//!   `durable.rs`), so devices are answered only after both, for the batch
//!   that holds their message.
//! - Sequence numbers only grow, so reading from the first key resends in
//!   the order devices were answered.
//! - After an I/O error (a full disk, a directory made unwritable) sled
//!   fails every later operation, even once the cause is gone; only a reopen
//!   recovers. So the store can be *unavailable*: the sled handles are
//!   dropped, appenders are told so (devices get 5.03), readers see an empty
//!   queue, and the committer reopens the store at most once a second. What
//!   was flushed before the error is intact after the reopen. A reopen
//!   never moves the store aside (only the first open at start-up does),
//!   and every open first removes snapshots sled left unfinished, which a
//!   reopen on a still-full disk produces and sled would call corruption.

pub mod commit;
mod durable;
pub mod record;

pub use commit::{spawn_committer, AppendOutcome, Command, StoreHandle};
pub use record::Record;

#[cfg(test)]
mod tests;

use crate::config::OnFull;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// A message's place in the queue.
pub type Seq = u64;

/// The on-disk format this daemon writes; kept in the `meta` tree.
const FORMAT_VERSION: u64 = 1;
const FORMAT_KEY: &[u8] = b"format";
/// Sorts after every 8-byte message key.
const COUNTERS_KEY: &[u8] = b"\xff\xff\xff\xff\xff\xff\xff\xff#counters";
const LAST_MESSAGE_KEY: [u8; 8] = [0xff; 8];
/// Dead letters beyond this many push the oldest dead letter out.
pub const DEAD_LETTER_CAPACITY: usize = 10_000;
/// Recalls (what deduplication needs of a stored request after a restart)
/// kept at most: the default `coap.dedup_capacity`.
pub const RECALL_CAPACITY: usize = 65_536;
/// How long a recall is kept: EXCHANGE_LIFETIME (RFC 7252), the longest a
/// device retransmits a request.
pub const RECALL_LIFETIME_MS: u64 = 247_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("store {path}: written by a newer coap2mqtt (format {found}, this one reads up to {FORMAT_VERSION}); upgrade the daemon or move the directory aside")]
    NewerFormat { path: PathBuf, found: u64 },
    #[error("store {path}: sled reports damage ({reason}) on a reopen while running; the store is kept as it is and stays unavailable (a restart moves it aside)")]
    Damaged { path: PathBuf, reason: String },
    #[error("store {path}: could not move the corrupt store aside: {source}")]
    MoveAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How full the queue may get, and what happens then.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: u64,
    pub max_bytes: u64,
    pub on_full: OnFull,
}

/// Counters for metrics and status; written only by the committer.
#[derive(Debug, Default)]
pub struct Stats {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub appended: AtomicU64,
    pub removed: AtomicU64,
    pub rejected_full: AtomicU64,
    pub dropped_oldest: AtomicU64,
    pub failed_appends: AtomicU64,
    pub dead_letters: AtomicU64,
    pub commits: AtomicU64,
    pub commit_errors: AtomicU64,
    /// Batch sizes, latencies and liveness of the commit thread.
    pub commit: crate::metrics::CommitStats,
}

/// One message read back for publishing.
#[derive(Debug, Clone)]
pub struct Queued {
    pub seq: Seq,
    pub record: Record,
}

/// A stored value that does not decode; the uplink dead-letters it.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub seq: Seq,
    pub reason: String,
}

/// The queue; cheap to clone, shared by the committer and the readers.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    cache_bytes: u64,
    /// None while the store is unavailable (see the module docs).
    handles: RwLock<Option<Handles>>,
    limits: Limits,
    stats: Stats,
    new_data: Notify,
    /// A reopen found damage and said so at error level; quieter until the
    /// store is back.
    damage_logged: std::sync::atomic::AtomicBool,
    /// Entries in the recall tree (counted at open, kept by the committer).
    recalls: std::sync::atomic::AtomicUsize,
}

/// The open sled database and its trees.
struct Handles {
    db: sled::Db,
    messages: sled::Tree,
    dead: sled::Tree,
    /// Recent stored requests for deduplication across restarts, under
    /// (received ms, seq) keys; see `coap::recall`.
    recalls: sled::Tree,
    /// sled's files, synced after every flush (see `durable.rs`); only the
    /// committer (and the final flush after it) uses them.
    files: std::sync::Mutex<durable::SledFiles>,
}

/// What opening the store found.
pub struct Opened {
    pub queue: Queue,
    /// Where a corrupt store was moved, when it was.
    pub moved_aside: Option<PathBuf>,
    /// Why the store could not be opened (the daemon runs on, answering
    /// devices 5.03, and the committer keeps trying).
    pub unavailable: Option<StoreError>,
}

impl Queue {
    /// Opens (or creates) the store. A store sled reports as corrupt is moved
    /// aside and a fresh one started, so the daemon never crash-loops on it.
    /// An I/O error leaves the store unavailable rather than failing: the
    /// daemon serves (5.03) and the committer retries. Only a store written
    /// by a newer version, or one that cannot be moved aside, is fatal.
    pub fn open(path: &Path, cache_bytes: u64, limits: Limits) -> Result<Opened, StoreError> {
        let queue = Queue {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                cache_bytes,
                handles: RwLock::new(None),
                limits,
                stats: Stats::default(),
                new_data: Notify::new(),
                damage_logged: Default::default(),
                recalls: Default::default(),
            }),
        };
        let mut opened = Opened {
            queue,
            moved_aside: None,
            unavailable: None,
        };
        match opened.queue.reopen(Damage::MoveAside) {
            Ok(aside) => opened.moved_aside = aside,
            Err(e @ (StoreError::NewerFormat { .. } | StoreError::MoveAside { .. })) => {
                return Err(e)
            }
            Err(e) => opened.unavailable = Some(e),
        }
        Ok(opened)
    }

    /// Opens the sled files and installs them. What a report of corruption
    /// does is `on_damage`'s to say: at start-up the store is moved aside
    /// (returning where), while running it stays unavailable (see
    /// [`Damage`]).
    fn reopen(&self, on_damage: Damage) -> Result<Option<PathBuf>, StoreError> {
        let path = &self.inner.path;
        let mut slot = self
            .inner
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner());
        // The old handles must be gone before sled can lock the files again.
        *slot = None;
        remove_unfinished_snapshots(path);
        let (handles, aside) = match Self::open_handles(path, self.inner.cache_bytes) {
            Ok(h) => (h, None),
            Err(OpenFailure::Corrupt(reason)) if on_damage == Damage::KeepUnavailable => {
                return Err(StoreError::Damaged {
                    path: path.to_path_buf(),
                    reason,
                });
            }
            Err(OpenFailure::Corrupt(reason)) => {
                let aside = aside_path(path);
                std::fs::rename(path, &aside).map_err(|source| StoreError::MoveAside {
                    path: path.to_path_buf(),
                    source,
                })?;
                log::error!(
                    "store {}: corrupt ({reason}); moved it to {} and started an empty queue. \
                     Messages in the old store are NOT forwarded; inspect or remove it by hand.",
                    path.display(),
                    aside.display()
                );
                match Self::open_handles(path, self.inner.cache_bytes) {
                    Ok(h) => (h, Some(aside)),
                    Err(OpenFailure::Corrupt(reason)) => {
                        return Err(StoreError::Sled {
                            path: path.to_path_buf(),
                            source: sled::Error::Unsupported(reason),
                        })
                    }
                    Err(OpenFailure::Other(e)) => return Err(e),
                }
            }
            Err(OpenFailure::Other(e)) => return Err(e),
        };
        let (count, bytes) = handles.counters().map_err(|source| StoreError::Sled {
            path: path.to_path_buf(),
            source,
        })?;
        let stats = &self.inner.stats;
        stats.messages.store(count, Ordering::Relaxed);
        stats.bytes.store(bytes, Ordering::Relaxed);
        stats
            .dead_letters
            .store(handles.dead.len() as u64, Ordering::Relaxed);
        // Bounded by RECALL_CAPACITY (plus one batch), so counting is cheap.
        self.inner
            .recalls
            .store(handles.recalls.len(), Ordering::Relaxed);
        *slot = Some(handles);
        Ok(aside)
    }

    fn open_handles(path: &Path, cache_bytes: u64) -> Result<Handles, OpenFailure> {
        let sled_err = |source| {
            OpenFailure::classify(StoreError::Sled {
                path: path.to_path_buf(),
                source,
            })
        };
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // Durability comes from our explicit flush per commit batch.
            .flush_every_ms(None);
        // sled has been seen to panic on damaged files rather than return an
        // error; treat that as corruption too.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|_| OpenFailure::Corrupt("sled panicked while opening it".into()))?
            .map_err(sled_err)?;
        let meta = db.open_tree("meta").map_err(sled_err)?;
        let messages = db.open_tree("messages").map_err(sled_err)?;
        let dead = db.open_tree("dead").map_err(sled_err)?;
        let recalls = db.open_tree("recalls").map_err(sled_err)?;
        match meta.get(FORMAT_KEY).map_err(sled_err)? {
            Some(v) => {
                let found = decode_u64(&v).unwrap_or(u64::MAX);
                if found > FORMAT_VERSION {
                    return Err(OpenFailure::Other(StoreError::NewerFormat {
                        path: path.to_path_buf(),
                        found,
                    }));
                }
            }
            None => {
                meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
        }
        let files = durable::SledFiles::open(path).map_err(|e| sled_err(sled::Error::Io(e)))?;
        Ok(Handles {
            db,
            messages,
            dead,
            recalls,
            files: std::sync::Mutex::new(files),
        })
    }

    /// Whether the store can take messages now.
    pub fn is_available(&self) -> bool {
        self.read_handles().is_some()
    }

    /// Drops the sled handles as an I/O error would (tests only).
    #[cfg(test)]
    fn drop_handles(&self) {
        *self
            .inner
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn read_handles(&self) -> std::sync::RwLockReadGuard<'_, Option<Handles>> {
        self.inner.handles.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Messages and bytes waiting for the broker.
    pub fn depth(&self) -> (u64, u64) {
        let s = &self.inner.stats;
        (
            s.messages.load(Ordering::Relaxed),
            s.bytes.load(Ordering::Relaxed),
        )
    }

    /// Resolves after the next commit that added messages (a permit is kept
    /// when nobody waits, so no commit is missed).
    pub async fn wait_for_new(&self) {
        self.inner.new_data.notified().await
    }

    /// Up to `limit` messages after `after` (from the start when None), in
    /// queue order. Values that do not decode come back as [`Unreadable`] so
    /// the caller can dead-letter them instead of stalling on them.
    pub fn read_after(
        &self,
        after: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Result<Queued, Unreadable>>, StoreError> {
        let start = match after {
            None => 0,
            Some(seq) if seq == u64::MAX => return Ok(Vec::new()),
            Some(seq) => seq + 1,
        };
        let guard = self.read_handles();
        let Some(handles) = guard.as_ref() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in handles
            .messages
            .range(start.to_be_bytes()..=LAST_MESSAGE_KEY)
            .take(limit)
        {
            let (k, v) = item.map_err(|source| self.error(source))?;
            let Some(seq) = decode_u64(&k) else { continue };
            out.push(match Record::decode(&v) {
                Ok(record) => Ok(Queued { seq, record }),
                Err(e) => Err(Unreadable {
                    seq,
                    reason: e.to_string(),
                }),
            });
        }
        Ok(out)
    }

    /// When the oldest waiting message was received (ms since the epoch).
    pub fn oldest_received_ms(&self) -> Option<u64> {
        let guard = self.read_handles();
        let (_, v) = guard
            .as_ref()?
            .messages
            .range(..=LAST_MESSAGE_KEY)
            .next()?
            .ok()?;
        Record::decode(&v).ok().map(|r| r.received_ms)
    }

    /// The recalls of requests received at or after `since_ms` (ms since
    /// the epoch), oldest first, each with when it was received.
    pub fn recent_recalls(&self, since_ms: u64) -> Vec<(u64, Vec<u8>)> {
        let guard = self.read_handles();
        let Some(handles) = guard.as_ref() else {
            return Vec::new();
        };
        handles
            .recalls
            .range(since_ms.to_be_bytes()..)
            .filter_map(|item| item.ok())
            .filter_map(|(k, v)| Some((decode_u64(k.get(..8)?)?, v.to_vec())))
            .collect()
    }

    /// Bytes the store's files take on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.read_handles()
            .as_ref()
            .and_then(|h| h.db.size_on_disk().ok())
            .unwrap_or(0)
    }

    /// Dead letters, oldest first, for inspection.
    pub fn dead_letters(&self, limit: usize) -> Vec<(Seq, String)> {
        let guard = self.read_handles();
        let Some(handles) = guard.as_ref() else {
            return Vec::new();
        };
        handles
            .dead
            .iter()
            .take(limit)
            .filter_map(|item| item.ok())
            .filter_map(|(k, v)| {
                let seq = decode_u64(&k)?;
                let reason_len = usize::from(u16::from_be_bytes([*v.first()?, *v.get(1)?]));
                let reason = String::from_utf8_lossy(v.get(2..2 + reason_len)?).into_owned();
                Some((seq, reason))
            })
            .collect()
    }

    /// Makes everything written so far durable (used at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        match self.read_handles().as_ref() {
            Some(h) => h.flush(true).map_err(|source| self.error(source)),
            None => Ok(()),
        }
    }

    fn error(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.inner.path.clone(),
            source,
        }
    }
}

impl Handles {
    /// Flushes sled and makes the flush durable (see `durable.rs`): only
    /// after this returns may anyone be told their message is stored.
    /// `large_values`: something flushed may have gone to a blob file.
    fn flush(&self, large_values: bool) -> Result<(), sled::Error> {
        self.db.flush()?;
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync(large_values)
            .map_err(sled::Error::Io)
    }

    /// Depth and bytes from the counters record; a store without one is new
    /// (or damaged) and is counted once.
    fn counters(&self) -> Result<(u64, u64), sled::Error> {
        if let Some(v) = self.messages.get(COUNTERS_KEY)? {
            if v.len() == 16 {
                return Ok((
                    decode_u64(&v[..8]).unwrap_or(0),
                    decode_u64(&v[8..]).unwrap_or(0),
                ));
            }
        }
        let (mut count, mut bytes) = (0, 0);
        for item in self.messages.range(..=LAST_MESSAGE_KEY) {
            let (_, v) = item?;
            count += 1;
            bytes += v.len() as u64;
        }
        Ok((count, bytes))
    }
}

/// What a reopen does when sled reports the store's files as damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// At start-up: move the store aside and start empty, so a store that
    /// really is damaged cannot crash-loop the daemon.
    MoveAside,
    /// While running (after an I/O error such as a full disk): never
    /// abandon a store that held acknowledged messages a moment ago. The
    /// "damage" is then most likely a file sled left half-written when the
    /// disk filled; the store stays unavailable and is tried again.
    KeepUnavailable,
}

/// Removes `snap.*.generating` files: snapshots sled began to write but
/// never finished (it writes them under that name, syncs, then renames
/// them, and deletes older snapshots only after the rename). One left
/// behind by a full disk is empty or truncated, and sled, which reads the
/// newest-sorting snapshot file, would report the whole store as corrupt.
/// The older snapshot and the log hold everything, so the leftover can go.
fn remove_unfinished_snapshots(path: &Path) {
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => log::warn!(
                    "store {}: removed {name}, a snapshot sled never finished writing",
                    path.display()
                ),
                Err(e) => log::warn!(
                    "store {}: cannot remove the unfinished snapshot {name}: {e}",
                    path.display()
                ),
            }
        }
    }
}

enum OpenFailure {
    Corrupt(String),
    Other(StoreError),
}

impl OpenFailure {
    fn classify(e: StoreError) -> OpenFailure {
        // I/O errors (permissions, a full disk) are the operator's to fix and
        // must not cost the queue; anything else sled says about its own
        // files (corruption, an unreadable config record) means damage.
        match e {
            StoreError::Sled {
                source: sled::Error::Io(_),
                ..
            } => OpenFailure::Other(e),
            other => OpenFailure::Corrupt(other.to_string()),
        }
    }
}

fn aside_path(path: &Path) -> PathBuf {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "queue".into());
    path.with_file_name(format!("{name}.corrupt-{stamp}"))
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(array))
}

/// Milliseconds since the Unix epoch, for `Record::received_ms`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
