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

use super::{decode_u64, Queue, Record, Seq, COUNTERS_KEY, DEAD_LETTER_CAPACITY, LAST_MESSAGE_KEY};
use crate::config::OnFull;
use crate::message::Message;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::mpsc;

/// What the committer tells an appender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Flushed to disk.
    Stored,
    /// The queue is at its limit and `on_full = "reject"` (or the message
    /// alone is larger than the byte limit).
    Full,
    /// sled failed; nothing of this batch is acknowledged.
    Failed,
}

/// A request to the committer. `R` is the appender's receipt, handed back
/// untouched with the outcome so the appender can answer its device.
pub enum Command<R> {
    Append {
        message: Message,
        received_ms: u64,
        receipt: R,
        reply: ReplyTo<R>,
    },
    /// The broker has it: forget it.
    Remove(Seq),
    /// The broker keeps refusing it: move it to the dead letters.
    DeadLetter { seq: Seq, reason: String },
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
            while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(cmd) => batch.push(cmd),
                        Err(_) => break,
                    }
                }
                queue.commit(&mut batch);
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
    /// Applies one batch of commands atomically and answers its appenders.
    fn commit<R>(&self, commands: &mut Vec<Command<R>>) {
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

        for command in commands.drain(..) {
            match command {
                Command::Remove(seq) | Command::DeadLetter { seq, .. } if gone.contains(&seq) => {}
                Command::Remove(seq) => match self.inner.messages.get(seq.to_be_bytes()) {
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
                Command::DeadLetter { seq, reason } => {
                    match self.inner.messages.get(seq.to_be_bytes()) {
                        Ok(Some(v)) => {
                            batch.remove(&seq.to_be_bytes());
                            gone.insert(seq);
                            count = count.saturating_sub(1);
                            bytes = bytes.saturating_sub(v.len() as u64);
                            dead.push((seq, v, reason));
                        }
                        Ok(None) => {}
                        Err(e) => failure = Some(e),
                    }
                }
                Command::Append {
                    message,
                    received_ms,
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
                                match self.oldest_after(evict_after, &gone) {
                                    Ok(Some((seq, len))) => {
                                        batch.remove(&seq.to_be_bytes());
                                        gone.insert(seq);
                                        evict_after = Some(seq);
                                        count = count.saturating_sub(1);
                                        bytes = bytes.saturating_sub(len);
                                        dropped += 1;
                                    }
                                    Ok(None) => match accepted.pop_front() {
                                        Some(a) => {
                                            batch.remove(&a.seq.to_be_bytes());
                                            count = count.saturating_sub(1);
                                            bytes = bytes.saturating_sub(a.size);
                                            dropped += 1;
                                            // Its device was promised storage
                                            // only as far as the policy allows.
                                            let _ =
                                                a.reply.send((a.receipt, AppendOutcome::Stored));
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
                    match self.inner.db.generate_id() {
                        Ok(seq) => {
                            batch.insert(&seq.to_be_bytes(), value);
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
                self.inner
                    .dead
                    .insert(seq.to_be_bytes(), dead_letter(value, reason))?;
            }
            self.inner.messages.apply_batch(batch)?;
            if !accepted.is_empty() || !dead.is_empty() {
                self.inner.db.flush()?;
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
                stats
                    .dead_letters
                    .fetch_add(dead.len() as u64, Ordering::Relaxed);
                stats.commits.fetch_add(1, Ordering::Relaxed);
                if dropped > 0 {
                    log::warn!("queue full: dropped the {dropped} oldest messages (on_full = \"drop-oldest\")");
                }
                for (seq, _, reason) in &dead {
                    log::error!(queue_seq = *seq; "message {seq} moved to dead letters: {reason}");
                }
                self.trim_dead_letters();
                let had_appends = !accepted.is_empty();
                for a in accepted {
                    let _ = a.reply.send((a.receipt, AppendOutcome::Stored));
                }
                if had_appends {
                    self.inner.new_data.notify_one();
                }
            }
            Err(e) => {
                stats.commit_errors.fetch_add(1, Ordering::Relaxed);
                stats
                    .failed_appends
                    .fetch_add(accepted.len() as u64, Ordering::Relaxed);
                log::error!("store {}: commit failed: {e}", self.inner.path.display());
                for a in accepted {
                    let _ = a.reply.send((a.receipt, AppendOutcome::Failed));
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
        stats
            .commit
            .end(batch_len, started.elapsed(), ok, super::now_ms());
        log::trace!("commit took {:?}", started.elapsed());
    }

    /// The oldest message after `after` not already removed in this batch.
    fn oldest_after(
        &self,
        after: Option<Seq>,
        gone: &HashSet<Seq>,
    ) -> Result<Option<(Seq, u64)>, sled::Error> {
        let start = after.map_or(0, |s| s.saturating_add(1));
        for item in self
            .inner
            .messages
            .range(start.to_be_bytes()..=LAST_MESSAGE_KEY)
        {
            let (k, v) = item?;
            if let Some(seq) = decode_u64(&k) {
                if !gone.contains(&seq) {
                    return Ok(Some((seq, v.len() as u64)));
                }
            }
        }
        Ok(None)
    }

    fn trim_dead_letters(&self) {
        let dead = &self.inner.dead;
        let excess = dead.len().saturating_sub(DEAD_LETTER_CAPACITY);
        for _ in 0..excess {
            if dead.pop_min().is_err() {
                break;
            }
        }
    }
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
