//! Group commit: the one thread that writes the queue.
//!
//! Flushing sled per message caps a gateway at a few thousand messages a
//! second; flushing per batch reaches tens of thousands. So the committer
//! takes the first waiting command, drains whatever else is already waiting
//! (up to a batch limit), applies it all as one atomic sled batch, flushes
//! once, and only then tells each appender its outcome. Devices are answered
//! from those outcomes, which is what makes a 2.04 mean "on disk".
//!
//! Removals (after a PUBACK) need no flush of their own: if a crash loses
//! one, the message is sent again, which at-least-once allows. They ride
//! along with the next flush.
//!
//! When sled reports an I/O error the committer drops the sled handles (the
//! store is unavailable: appenders hear `Unavailable`, devices 5.03) and
//! reopens the store once a second until it works again.

use super::{
    decode_u64, Handles, Queue, Record, Seq, COUNTERS_KEY, DEAD_LETTER_CAPACITY, LAST_MESSAGE_KEY,
    RECALL_CAPACITY, RECALL_LIFETIME_MS,
};
use crate::config::OnFull;
use crate::message::Message;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Removals kept while the store is unavailable (8 bytes each).
const MAX_DEFERRED_REMOVALS: usize = 1 << 20;

/// How often an unavailable store is reopened.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
use tokio::sync::mpsc;

/// What the committer tells an appender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Flushed to disk.
    Stored,
    /// The queue is at its limit and `on_full = "reject"` (or the message
    /// alone is larger than the byte limit).
    Full,
    /// The store cannot write now (disk full, directory unwritable); it is
    /// being reopened. Nothing of this batch is acknowledged.
    Unavailable,
    /// sled failed otherwise; nothing of this batch is acknowledged.
    Failed,
}

/// A request to the committer. `R` is the appender's receipt, handed back
/// untouched with the outcome so the appender can answer its device.
pub enum Command<R> {
    Append {
        message: Message,
        received_ms: u64,
        /// What deduplication must remember of the request after a restart
        /// (opaque here; see `coap::recall`), written in the same commit as
        /// the message; empty for none.
        recall: Vec<u8>,
        receipt: R,
        reply: ReplyTo<R>,
    },
    /// The broker has it: forget it.
    Remove(Seq),
    /// The broker keeps refusing it: move it to the dead letters.
    DeadLetter { seq: Seq, reason: String },
    /// Answered once every command sent before it has been handled (applied
    /// or refused); makes nothing durable of its own. For callers that must
    /// know a removal took effect (tests, operators' commands).
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Where the committer sends an appender's receipt back with its outcome.
pub type ReplyTo<R> = mpsc::UnboundedSender<(R, AppendOutcome)>;

/// Where appenders and the uplink send their commands.
pub type StoreHandle<R> = mpsc::Sender<Command<R>>;

/// Starts the committer thread. It ends, after a final flush, when every
/// [`StoreHandle`] is dropped.
pub fn spawn_committer<R: Send + 'static>(
    queue: Queue,
    max_batch: usize,
    channel_capacity: usize,
) -> std::io::Result<(StoreHandle<R>, JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<Command<R>>(channel_capacity.max(1));
    let max_batch = max_batch.max(1);
    let thread = std::thread::Builder::new()
        .name("store-commit".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(max_batch);
            let mut deferred = Vec::new();
            let mut next_reopen = Instant::now();
            loop {
                if !queue.is_available() {
                    if Instant::now() >= next_reopen {
                        next_reopen = Instant::now() + REOPEN_INTERVAL;
                        queue.try_recover();
                    }
                    // Keep answering (Unavailable) while waiting to retry.
                    match rx.try_recv() {
                        Ok(cmd) => batch.push(cmd),
                        Err(mpsc::error::TryRecvError::Empty) => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    }
                } else {
                    match rx.blocking_recv() {
                        Some(first) => batch.push(first),
                        None => break,
                    }
                }
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(cmd) => batch.push(cmd),
                        Err(_) => break,
                    }
                }
                queue.commit(&mut batch, &mut deferred);
            }
            if let Err(e) = queue.flush() {
                log::error!("final flush of the queue failed: {e}");
            }
        })?;
    Ok((tx, thread))
}

/// An append accepted into the batch being built.
struct Accepted<R> {
    seq: Seq,
    size: u64,
    receipt: R,
    reply: ReplyTo<R>,
}

impl Queue {
    /// Reopens an unavailable store; logs the outcome once per attempt.
    pub(super) fn try_recover(&self) {
        match self.reopen(super::Damage::KeepUnavailable) {
            Ok(_) => {
                self.inner.damage_logged.store(false, Ordering::Relaxed);
                log::warn!(
                    "store {}: available again; {} messages queued",
                    self.inner.path.display(),
                    self.depth().0
                );
                self.inner.new_data.notify_one();
            }
            // Damage found on a reopen is loud (it needs a person if it
            // lasts); an I/O error was logged when it happened.
            Err(e @ super::StoreError::Damaged { .. }) => {
                if self.inner.damage_logged.swap(true, Ordering::Relaxed) {
                    log::debug!("{e}");
                } else {
                    log::error!("{e}");
                }
            }
            Err(e) => log::debug!(
                "store {}: still unavailable: {e}",
                self.inner.path.display()
            ),
        }
    }

    /// Applies one batch of commands atomically and answers its appenders.
    /// Removals that arrive while the store is unavailable wait in
    /// `deferred` and are applied with the first batch after it is back.
    fn commit<R>(&self, commands: &mut Vec<Command<R>>, deferred: &mut Vec<Seq>) {
        let guard = self.read_handles();
        let Some(handles) = guard.as_ref() else {
            drop(guard);
            for command in commands.drain(..) {
                match command {
                    Command::Append { receipt, reply, .. } => {
                        let _ = reply.send((receipt, AppendOutcome::Unavailable));
                    }
                    // Past the bound a removal is dropped: the message is
                    // then sent again after a reconnect (at-least-once).
                    Command::Remove(seq) if deferred.len() < MAX_DEFERRED_REMOVALS => {
                        deferred.push(seq)
                    }
                    // A dead letter is decided again when it is sent again.
                    Command::Remove(_) | Command::DeadLetter { .. } => {}
                    Command::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
            return;
        };
        if !deferred.is_empty() {
            let mut all: Vec<Command<R>> = deferred.drain(..).map(Command::Remove).collect();
            all.append(commands);
            *commands = all;
        }
        let failed = self.apply(handles, commands);
        drop(guard);
        if let Some(e) = failed {
            if matches!(e, sled::Error::Io(_)) {
                log::error!(
                    "store {}: {e}; devices get 5.03 until the store can be written again \
                     (reopening every {REOPEN_INTERVAL:?})",
                    self.inner.path.display()
                );
                let mut slot = self
                    .inner
                    .handles
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                *slot = None;
            }
        }
    }

    /// Applies one batch to the open store; returns sled's error if it failed.
    fn apply<R>(&self, h: &Handles, commands: &mut Vec<Command<R>>) -> Option<sled::Error> {
        let started = Instant::now();
        let stats = &self.inner.stats;
        let batch_len = commands.len();
        stats.commit.begin(super::now_ms());
        let limits = self.inner.limits;
        let mut count = stats.messages.load(Ordering::Relaxed);
        let mut bytes = stats.bytes.load(Ordering::Relaxed);
        let mut batch = sled::Batch::default();
        let mut gone: HashSet<Seq> = HashSet::new();
        let mut accepted: VecDeque<Accepted<R>> = VecDeque::new();
        let mut refused: Vec<(R, ReplyTo<R>, AppendOutcome)> = Vec::new();
        let mut dead: Vec<(Seq, sled::IVec, String)> = Vec::new();
        let mut evict_after: Option<Seq> = None;
        let (mut removed, mut dropped) = (0u64, 0u64);
        let mut failure: Option<sled::Error> = None;
        let mut large_values = false;
        let mut recalls: Vec<([u8; 16], Vec<u8>)> = Vec::new();
        let mut barriers = Vec::new();

        for command in commands.drain(..) {
            match command {
                Command::Barrier(done) => barriers.push(done),
                Command::Remove(seq) | Command::DeadLetter { seq, .. } if gone.contains(&seq) => {}
                Command::Remove(seq) => match h.messages.get(seq.to_be_bytes()) {
                    Ok(Some(v)) => {
                        batch.remove(&seq.to_be_bytes());
                        gone.insert(seq);
                        count = count.saturating_sub(1);
                        bytes = bytes.saturating_sub(v.len() as u64);
                        removed += 1;
                    }
                    Ok(None) => {}
                    Err(e) => failure = Some(e),
                },
                Command::DeadLetter { seq, reason } => match h.messages.get(seq.to_be_bytes()) {
                    Ok(Some(v)) => {
                        batch.remove(&seq.to_be_bytes());
                        gone.insert(seq);
                        count = count.saturating_sub(1);
                        bytes = bytes.saturating_sub(v.len() as u64);
                        large_values |= v.len() >= super::durable::BLOB_CANDIDATE;
                        dead.push((seq, v, reason));
                    }
                    Ok(None) => {}
                    Err(e) => failure = Some(e),
                },
                Command::Append {
                    message,
                    received_ms,
                    recall,
                    receipt,
                    reply,
                } => {
                    let value = Record {
                        message,
                        received_ms,
                    }
                    .encode();
                    let size = value.len() as u64;
                    let fits =
                        |c: u64, b: u64| c < limits.max_messages && b + size <= limits.max_bytes;
                    if !fits(count, bytes) {
                        if limits.on_full == OnFull::DropOldest && size <= limits.max_bytes {
                            // Make room from the oldest end: first what is on
                            // disk, then what this batch added before.
                            while !fits(count, bytes) {
                                match oldest_after(h, evict_after, &gone) {
                                    Ok(Some((seq, len))) => {
                                        batch.remove(&seq.to_be_bytes());
                                        gone.insert(seq);
                                        evict_after = Some(seq);
                                        count = count.saturating_sub(1);
                                        bytes = bytes.saturating_sub(len);
                                        dropped += 1;
                                    }
                                    // Nothing on disk left to drop: the
                                    // oldest is an earlier append of this
                                    // batch, never written, so its device
                                    // hears 5.03 (never a 2.04 for what is
                                    // not on disk) and may try again.
                                    Ok(None) => match accepted.pop_front() {
                                        Some(a) => {
                                            batch.remove(&a.seq.to_be_bytes());
                                            count = count.saturating_sub(1);
                                            bytes = bytes.saturating_sub(a.size);
                                            recalls
                                                .retain(|(key, _)| key[8..] != a.seq.to_be_bytes());
                                            refused.push((a.receipt, a.reply, AppendOutcome::Full));
                                        }
                                        None => break,
                                    },
                                    Err(e) => {
                                        failure = Some(e);
                                        break;
                                    }
                                }
                            }
                        }
                        if !fits(count, bytes) {
                            refused.push((receipt, reply, AppendOutcome::Full));
                            continue;
                        }
                    }
                    match h.db.generate_id() {
                        Ok(seq) => {
                            large_values |= value.len() >= super::durable::BLOB_CANDIDATE;
                            batch.insert(&seq.to_be_bytes(), value);
                            if !recall.is_empty() {
                                recalls.push((recall_key(received_ms, seq), recall));
                            }
                            count += 1;
                            bytes += size;
                            accepted.push_back(Accepted {
                                seq,
                                size,
                                receipt,
                                reply,
                            });
                        }
                        Err(e) => {
                            failure = Some(e);
                            refused.push((receipt, reply, AppendOutcome::Failed));
                        }
                    }
                }
            }
        }

        let mut counters = [0u8; 16];
        counters[..8].copy_from_slice(&count.to_be_bytes());
        counters[8..].copy_from_slice(&bytes.to_be_bytes());
        batch.insert(COUNTERS_KEY, &counters);

        let result: Result<(), sled::Error> = failure.map_or(Ok(()), Err).and_then(|()| {
            // Dead letters are written before they leave the queue: a crash
            // in between leaves a copy in both, never in neither.
            for (seq, value, reason) in &dead {
                h.dead
                    .insert(seq.to_be_bytes(), dead_letter(value, reason))?;
            }
            // Recalls go in before the flush that makes their messages
            // durable; one without its message only means a retransmission
            // of an unstored request is answered 2.04 again, and that cannot
            // happen: both are lost or kept by the same flush.
            let mut recall_batch = sled::Batch::default();
            for (key, recall) in &recalls {
                recall_batch.insert(key, recall.as_slice());
            }
            h.recalls.apply_batch(recall_batch)?;
            h.messages.apply_batch(batch)?;
            if !accepted.is_empty() || !dead.is_empty() {
                h.flush(large_values)?;
            }
            Ok(())
        });

        let ok = result.is_ok();
        match result {
            Ok(()) => {
                stats.messages.store(count, Ordering::Relaxed);
                stats.bytes.store(bytes, Ordering::Relaxed);
                stats
                    .appended
                    .fetch_add(accepted.len() as u64, Ordering::Relaxed);
                stats.removed.fetch_add(removed, Ordering::Relaxed);
                stats.dropped_oldest.fetch_add(dropped, Ordering::Relaxed);
                if !dead.is_empty() {
                    // Only a batch that added dead letters can push the tree
                    // past its cap; the counter (exact: one writer) says by
                    // how much, so no commit ever counts the tree.
                    let total = stats.dead_letters.load(Ordering::Relaxed) + dead.len() as u64;
                    let kept = trim_dead_letters(h, total);
                    stats.dead_letters.store(kept, Ordering::Relaxed);
                }
                stats.commits.fetch_add(1, Ordering::Relaxed);
                if dropped > 0 {
                    log::warn!("queue full: dropped the {dropped} oldest messages (on_full = \"drop-oldest\")");
                }
                for (seq, _, reason) in &dead {
                    log::error!(queue_seq = *seq; "message {seq} moved to dead letters: {reason}");
                }
                self.trim_recalls(h, recalls.len());
                let had_appends = !accepted.is_empty();
                for a in accepted {
                    let _ = a.reply.send((a.receipt, AppendOutcome::Stored));
                }
                if had_appends {
                    self.inner.new_data.notify_one();
                }
            }
            Err(ref e) => {
                stats.commit_errors.fetch_add(1, Ordering::Relaxed);
                stats
                    .failed_appends
                    .fetch_add(accepted.len() as u64, Ordering::Relaxed);
                let outcome = if matches!(e, sled::Error::Io(_)) {
                    AppendOutcome::Unavailable
                } else {
                    log::error!("store {}: commit failed: {e}", self.inner.path.display());
                    AppendOutcome::Failed
                };
                for a in accepted {
                    let _ = a.reply.send((a.receipt, outcome));
                }
            }
        }
        let full = refused
            .iter()
            .filter(|r| r.2 == AppendOutcome::Full)
            .count();
        stats
            .rejected_full
            .fetch_add(full as u64, Ordering::Relaxed);
        for (receipt, reply, outcome) in refused {
            let _ = reply.send((receipt, outcome));
        }
        for done in barriers {
            let _ = done.send(());
        }
        stats
            .commit
            .end(batch_len, started.elapsed(), ok, super::now_ms());
        log::trace!("commit took {:?}", started.elapsed());
        result.err()
    }
}

impl Queue {
    /// Keeps the recall tree within [`RECALL_CAPACITY`] and forgets entries
    /// older than [`RECALL_LIFETIME_MS`]: the oldest go first.
    fn trim_recalls(&self, h: &Handles, added: usize) {
        let count = &self.inner.recalls;
        let mut n = count.load(Ordering::Relaxed) + added;
        let too_old = super::now_ms().saturating_sub(RECALL_LIFETIME_MS);
        loop {
            let over = n > RECALL_CAPACITY;
            let expired = match h.recalls.first() {
                Ok(Some((k, _))) => decode_u64(&k[..8.min(k.len())]).is_some_and(|ms| ms < too_old),
                _ => false,
            };
            if !(over || expired) {
                break;
            }
            match h.recalls.pop_min() {
                Ok(Some(_)) => n -= 1,
                _ => break,
            }
        }
        count.store(n, Ordering::Relaxed);
    }
}

/// Recalls sort by when they were received, then by sequence number.
fn recall_key(received_ms: u64, seq: Seq) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&received_ms.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The oldest message after `after` not already removed in this batch.
fn oldest_after(
    h: &Handles,
    after: Option<Seq>,
    gone: &HashSet<Seq>,
) -> Result<Option<(Seq, u64)>, sled::Error> {
    let start = after.map_or(0, |s| s.saturating_add(1));
    for item in h.messages.range(start.to_be_bytes()..=LAST_MESSAGE_KEY) {
        let (k, v) = item?;
        if let Some(seq) = decode_u64(&k) {
            if !gone.contains(&seq) {
                return Ok(Some((seq, v.len() as u64)));
            }
        }
    }
    Ok(None)
}

/// Removes the oldest dead letters beyond [`DEAD_LETTER_CAPACITY`] from a
/// tree holding `total`; returns how many are left.
fn trim_dead_letters(h: &Handles, total: u64) -> u64 {
    let mut left = total;
    while left > DEAD_LETTER_CAPACITY as u64 {
        match h.dead.pop_min() {
            Ok(Some(_)) => left -= 1,
            _ => break,
        }
    }
    left
}

/// A dead letter: why it died, then the record as it was queued.
fn dead_letter(record: &[u8], reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(1024)];
    let mut out = Vec::with_capacity(2 + reason.len() + record.len());
    out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
    out.extend_from_slice(reason);
    out.extend_from_slice(record);
    out
}
