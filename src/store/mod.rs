//! The durable queue: every message a device was answered 2.04 for, until
//! the broker has it.
//!
//! A log of segment files (`<store>/segments/*.log`, see `log.rs`): each
//! commit batch is one frame appended to the newest segment and fsynced
//! before any of its devices is answered; sequence numbers are consecutive
//! and in the order devices were answered. PUBACKs retire messages in
//! memory (`ledger.rs`); how far the broker got is written with the next
//! batch (an ack frame), and a segment wholly retired is deleted. Dead
//! letters live in `<store>/dead.log` (`dead.rs`). Memory and writes follow
//! the rate of work, not the depth of the backlog: a queued message costs
//! its bytes on disk and nothing in memory.
//!
//! Invariants:
//! - Only the committer thread (`commit.rs`) writes; readers (the uplink,
//!   the metrics) read concurrently, up to what is durable.
//! - A message is counted (and its device answered) only after the fsync
//!   of the batch that holds it.
//! - Sequence numbers only grow, so reading from the oldest resends in the
//!   order devices were answered.
//! - What a crash can lose is only what nobody was told: a torn tail of the
//!   newest segment, or recent acks (their messages are sent again).
//!
//! A store written by coap2mqtt 0.1 (sled, format 1) is converted in place
//! at the first start (`legacy.rs`); one written by a newer version is
//! refused. If the store cannot be opened (permissions, a full disk) the
//! daemon still serves (5.03) and the committer tries again every second.

pub mod commit;
mod dead;
pub mod frame;
mod ledger;
mod legacy;
mod log;
pub mod operator;
mod reader;
mod segment;
mod stats;

pub(crate) use crate::clock::now_ms;
pub use commit::{spawn_committer, AppendOutcome, Command, StoreHandle};
pub use dead::DEAD_LETTER_CAPACITY;
pub use frame::{DeadLetter, Stored};
pub use operator::{Action, Decided, DecisionError, Which};
pub use reader::Reader;
pub use stats::{CommitStats, Stats};

#[cfg(test)]
mod tests;

use crate::message::Message;
use ledger::Ledger;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

/// A message's place in the queue.
pub type Seq = u64;

/// Recalls (what deduplication needs of a stored request after a restart)
/// recovered at start-up at most: the default `coap.dedup_capacity`.
pub const RECALL_CAPACITY: usize = 65_536;
/// How long a recall matters: EXCHANGE_LIFETIME (RFC 7252), the longest a
/// device retransmits a request.
pub const RECALL_LIFETIME_MS: u64 = 247_000;

/// What to do when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Refuse new messages (5.03) until there is room.
    Reject,
    /// Drop the oldest queued messages to make room.
    DropOldest,
}

/// How full the queue may get, and what happens then.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: u64,
    /// The most bytes the queue's segment files may take.
    pub max_bytes: u64,
    pub on_full: OnFull,
}

impl Limits {
    /// The size of a segment under these limits: [`log::SEGMENT_BYTES`], or
    /// an eighth of `max_bytes` when that is smaller, so that the byte
    /// limit is met a segment at a time.
    pub fn segment_bytes(&self) -> u64 {
        log::SEGMENT_BYTES.min(self.max_bytes / 8).max(4096)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {path}: written by a newer coap2mqtt ({detail}); upgrade the daemon or move the directory aside")]
    NewerFormat { path: PathBuf, detail: String },
    #[error("store {path}: the coap2mqtt 0.1 store could not be converted: {reason}")]
    Legacy { path: PathBuf, reason: String },
}

/// One message read back for publishing.
#[derive(Debug, Clone)]
pub struct Queued {
    pub seq: Seq,
    pub message: Message,
    pub received_ms: u64,
}

/// Messages that cannot be read back (damage on disk): `first..end`.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub first: Seq,
    pub end: Seq,
    pub reason: String,
}

/// The queue; cheap to clone, shared by the committer and the readers.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    limits: Limits,
    /// What is queued and retired; empty while the store is unavailable.
    ledger: RwLock<Ledger>,
    /// The log's writer and the dead letters; `None` while unavailable.
    writer: Mutex<Option<Writer>>,
    available: AtomicBool,
    /// Recalls found at open, until the daemon takes them.
    recalls: Mutex<Vec<(u64, Vec<u8>)>>,
    stats: Stats,
    /// Messages were retired since the committer last wrote the acks.
    retirements_unwritten: AtomicBool,
    new_data: Notify,
    /// (watermark, received ms of its message), for the metrics.
    oldest: Mutex<Option<(Seq, u64)>>,
}

/// What only the committer writes with.
struct Writer {
    log: log::Log,
    dead: dead::DeadLetters,
}

/// What opening the store found.
pub struct Opened {
    pub queue: Queue,
    /// Why the store could not be opened (the daemon runs on, answering
    /// devices 5.03, and the committer keeps trying).
    pub unavailable: Option<StoreError>,
    /// What recovery did that an operator should hear of.
    pub notes: Vec<String>,
}

impl Queue {
    /// Opens (or creates) the store at `path`. An I/O error leaves the
    /// store unavailable rather than failing; only a store written by a
    /// newer version, or a 0.1 store that cannot be converted, is fatal.
    pub fn open(path: &Path, limits: Limits) -> Result<Opened, StoreError> {
        let queue = Queue {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                limits,
                ledger: RwLock::new(Ledger::default()),
                writer: Mutex::new(None),
                available: AtomicBool::new(false),
                recalls: Mutex::new(Vec::new()),
                stats: Stats::default(),
                retirements_unwritten: AtomicBool::new(false),
                new_data: Notify::new(),
                oldest: Mutex::new(None),
            }),
        };
        let mut opened = Opened {
            queue,
            unavailable: None,
            notes: Vec::new(),
        };
        match opened.queue.reopen() {
            Ok(notes) => opened.notes = notes,
            Err(e @ (StoreError::NewerFormat { .. } | StoreError::Legacy { .. })) => return Err(e),
            Err(e) => opened.unavailable = Some(e),
        }
        Ok(opened)
    }

    /// Opens the files (converting a 0.1 store first) and installs them.
    fn reopen(&self) -> Result<Vec<String>, StoreError> {
        let path = &self.inner.path;
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut notes = legacy::convert_if_needed(path, self.inner.limits)?;
        let (log, ledger, recovered) =
            log::Log::open(&path.join("segments"), self.inner.limits.segment_bytes()).map_err(
                |e| match e {
                    log::OpenError::Io(e) => io(e),
                    log::OpenError::NewerFormat { path, found } => StoreError::NewerFormat {
                        path,
                        detail: format!(
                            "queue format {found}, this one reads up to {}",
                            frame::FORMAT
                        ),
                    },
                },
            )?;
        let (dead, dead_torn) = dead::DeadLetters::open(&path.join("dead.log")).map_err(io)?;
        if recovered.torn_bytes > 0 {
            notes.push(format!(
                "cut {} bytes of an unfinished write off the end of the queue (a batch no device was answered for)",
                recovered.torn_bytes
            ));
        }
        if dead_torn > 0 {
            notes.push(format!(
                "cut {dead_torn} bytes of an unfinished write off the dead letters"
            ));
        }
        for damage in &recovered.damaged {
            let lost = damage.end - damage.first;
            ::log::error!(
                "store {}: {} damaged bytes in the newest segment ({}); {lost} messages ({}..{}) cannot be read back and are LOST",
                path.display(),
                damage.len,
                damage.reason,
                damage.first,
                damage.end
            );
            self.inner
                .stats
                .lost_to_damage
                .fetch_add(lost, Ordering::Relaxed);
        }
        for name in &recovered.set_aside {
            notes.push(format!(
                "set aside the unfinished segment file {name} (nothing in it was answered)"
            ));
        }
        let stats = &self.inner.stats;
        stats.messages.store(ledger.depth(), Ordering::Relaxed);
        stats.bytes.store(ledger.disk_bytes(), Ordering::Relaxed);
        stats
            .dead_letters
            .store(dead.len() as u64, Ordering::Relaxed);
        *lock(&self.inner.recalls) = recovered.recalls;
        *self.inner.ledger.write().unwrap_or_else(|p| p.into_inner()) = ledger;
        *lock(&self.inner.writer) = Some(Writer { log, dead });
        self.inner.available.store(true, Ordering::Relaxed);
        Ok(notes)
    }

    /// Whether the store can take messages now.
    pub fn is_available(&self) -> bool {
        self.inner.available.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Messages waiting for the broker, and the bytes the queue's files take.
    pub fn depth(&self) -> (u64, u64) {
        let s = &self.inner.stats;
        (
            s.messages.load(Ordering::Relaxed),
            s.bytes.load(Ordering::Relaxed),
        )
    }

    /// Retires a message the broker has: at once in memory (readers skip
    /// it, the depth falls), on disk with the committer's next write of the
    /// acks. Returns whether the committer must be told
    /// ([`Command::Retired`]): only the first retirement since it last
    /// wrote them, so that PUBACKs do not wake it one by one.
    pub fn retire(&self, seq: Seq) -> bool {
        let mut ledger = self.ledger_mut();
        if !ledger.retire(seq) {
            return false;
        }
        let stats = &self.inner.stats;
        stats.messages.store(ledger.depth(), Ordering::Relaxed);
        drop(ledger);
        stats.removed.fetch_add(1, Ordering::Relaxed);
        !self
            .inner
            .retirements_unwritten
            .swap(true, Ordering::AcqRel)
    }

    /// Whether retirements wait to be written.
    fn has_unwritten_retirements(&self) -> bool {
        self.inner.retirements_unwritten.load(Ordering::Acquire)
    }

    /// The committer is about to write the acks as the ledger holds them
    /// now; a retirement after this call will tell it again.
    fn retirements_written(&self) {
        self.inner
            .retirements_unwritten
            .store(false, Ordering::Release);
    }

    /// That write failed: the retirements still wait (tried again
    /// ACK_INTERVAL later, or with the next batch).
    fn retirements_not_written(&self) {
        self.inner
            .retirements_unwritten
            .store(true, Ordering::Release);
    }

    /// Resolves after the next commit that added messages (a permit is kept
    /// when nobody waits, so no commit is missed).
    pub async fn wait_for_new(&self) {
        self.inner.new_data.notified().await
    }

    /// A reader from the oldest message not yet retired.
    pub fn reader(&self) -> Reader {
        let from = self.ledger().watermark;
        Reader::new(self.inner.path.join("segments"), from)
    }

    /// Up to `limit` messages from `reader`'s position (blocking file reads).
    pub fn read(
        &self,
        reader: &mut Reader,
        limit: usize,
    ) -> Result<Vec<Result<Queued, Unreadable>>, StoreError> {
        reader
            .read(&self.inner.ledger, limit)
            .map_err(|source| StoreError::Io {
                path: self.inner.path.clone(),
                source,
            })
    }

    /// When the oldest waiting message was received (ms since the epoch).
    pub fn oldest_received_ms(&self) -> Option<u64> {
        let oldest = self.ledger().oldest()?;
        if let Some((seq, ms)) = *lock(&self.inner.oldest) {
            if seq == oldest {
                return Some(ms);
            }
        }
        let mut reader = Reader::new(self.inner.path.join("segments"), oldest);
        let first = reader
            .read(&self.inner.ledger, 1)
            .ok()?
            .into_iter()
            .next()?
            .ok()?;
        *lock(&self.inner.oldest) = Some((oldest, first.received_ms));
        Some(first.received_ms)
    }

    /// Bytes the store's files take on disk.
    pub fn size_on_disk(&self) -> u64 {
        let dead = std::fs::metadata(self.inner.path.join("dead.log")).map_or(0, |m| m.len());
        self.ledger().disk_bytes() + dead
    }

    /// Dead letters, oldest first, with why they died.
    pub fn dead_letters(&self, limit: usize) -> Vec<DeadLetter> {
        match lock(&self.inner.writer).as_ref() {
            Some(w) => w.dead.list(limit),
            None => Vec::new(),
        }
    }

    /// Hands each of the oldest `limit` dead letters to `visit`, oldest
    /// first, one at a time (blocking file reads; the committer waits
    /// meanwhile, so keep `visit` short).
    pub fn visit_dead_letters(&self, limit: usize, visit: impl FnMut(DeadLetter)) {
        if let Some(w) = lock(&self.inner.writer).as_ref() {
            w.dead.visit(limit, visit);
        }
    }

    /// The newest `limit` dead letters, newest first.
    pub fn newest_dead_letters(&self, limit: usize) -> Vec<DeadLetter> {
        match lock(&self.inner.writer).as_ref() {
            Some(w) => w.dead.newest(limit),
            None => Vec::new(),
        }
    }

    /// One dead letter by its id (the sequence number it had in the queue).
    pub fn dead_letter(&self, id: Seq) -> Option<DeadLetter> {
        lock(&self.inner.writer).as_ref()?.dead.get(id)
    }

    /// The recalls found at open (received ms, recall), oldest first, of
    /// requests received at or after `since_ms`. Taken once: a second call
    /// gets nothing.
    pub fn take_recalls(&self, since_ms: u64) -> Vec<(u64, Vec<u8>)> {
        let mut all = std::mem::take(&mut *lock(&self.inner.recalls));
        all.retain(|(ms, _)| *ms >= since_ms);
        all
    }

    fn ledger(&self) -> std::sync::RwLockReadGuard<'_, Ledger> {
        self.inner.ledger.read().unwrap_or_else(|p| p.into_inner())
    }

    fn ledger_mut(&self) -> std::sync::RwLockWriteGuard<'_, Ledger> {
        self.inner.ledger.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// fsync of a directory: makes the names in it (created, renamed, removed)
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
