//! Group commit: the one thread that writes the queue.
//!
//! An fsync per message caps a gateway at a few thousand messages a second;
//! one per batch reaches tens of thousands. So the committer takes the
//! first waiting command, drains whatever else is already waiting (up to a
//! batch limit), retires what the broker acked, moves dead letters aside,
//! applies the queue's limits, writes the new messages as one frame,
//! fsyncs once, and only then tells each appender its outcome. Devices are
//! answered from those outcomes, which is what makes a 2.04 mean "on disk".
//!
//! Removals (after a PUBACK) need no sync of their own: if a crash loses
//! one, the message is sent again, which at-least-once allows. The uplink
//! retires a message in memory itself ([`Queue::retire`]) and does not
//! wake this thread for it: the acks ride on the next batch, or, when no
//! batch comes, the first retirement since the acks were last written
//! sends [`Command::Retired`] and this thread writes them once
//! [`ACK_INTERVAL`] has passed. Waking the committer for each PUBACK had
//! cost a thread switch per message: at 64 devices, two of every three
//! commits held a single removal.
//!
//! When the store cannot be opened, appenders hear `Unavailable` (devices
//! 5.03) and the committer tries again once a second; a write that fails
//! (a full disk) answers its batch `Unavailable` and the next batch tries
//! again.

use super::frame::{DeadLetter, Stored};
use super::ledger::Ledger;
use super::log::Log;
use super::operator::{self, Action, Decided, DecisionError, Which};
use super::{lock, now_ms, OnFull, Queue, Reader, Seq, Writer};
use crate::message::Message;
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often an unavailable store is opened again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// Ack frames are written at most this often when no batch carries them.
const ACK_INTERVAL: Duration = Duration::from_millis(200);
/// Under load, devices answered by one commit send again together, and
/// the first of them would otherwise start a commit of its own while the
/// rest are still on their way: commits then alternate between a few
/// messages and most of them, and each small one costs a sync and a page
/// written. So when commits have lately taken at least `LINGER_AFTER`
/// commands (a moving average) and fewer than half as many are waiting,
/// the committer waits `LINGER` (a fraction of one sync) before it
/// writes. A quiet gateway, whose commits are small, never waits; 256
/// devices at 15,556/s (the benchmark's 50% point) made 2-5% fewer commits
/// with it, their p99 unchanged beyond the runs' spread.
const LINGER_AFTER: usize = 16;
const LINGER: Duration = Duration::from_micros(100);

/// What the committer tells an appender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Written and fsynced.
    Stored,
    /// The queue is at its limit and `on_full = "reject"` (or the message
    /// was pushed out by later ones of its own batch under drop-oldest).
    Full,
    /// The store cannot write now (disk full, directory unwritable).
    /// Nothing of this batch is acknowledged.
    Unavailable,
    /// The store failed otherwise; nothing of this batch is acknowledged.
    Failed,
}

/// A request to the committer. `R` is the appender's receipt, handed back
/// untouched with the outcome so the appender can answer its device.
pub enum Command<R> {
    /// One request's messages: usually one; the records of a split SenML
    /// pack are several, and they are stored together or not at all (one
    /// outcome, in one batch frame).
    Append {
        messages: Vec<Message>,
        received_ms: u64,
        /// What deduplication must remember of the request after a restart
        /// (opaque here; see `coap::recall`), written in the same frame as
        /// the (first) message; empty for none.
        recall: Vec<u8>,
        receipt: R,
        reply: ReplyTo<R>,
    },
    /// Messages were retired in memory ([`Queue::retire`]) since the acks
    /// were last written: write them when [`ACK_INTERVAL`] allows.
    Retired,
    /// The broker keeps refusing it: move it to the dead letters.
    DeadLetter { seq: Seq, reason: String },
    /// These cannot be read back (damage): retire them as lost.
    Lost {
        first: Seq,
        end: Seq,
        reason: String,
    },
    /// An operator's decision about dead letters (`operator.rs`): answered
    /// once carried out, durably, or refused.
    DeadLetters {
        action: Action,
        which: Which,
        reply: tokio::sync::oneshot::Sender<Result<Vec<Decided>, DecisionError>>,
    },
    /// Answered once every command sent before it has been handled (applied
    /// or refused); makes nothing durable of its own. For callers that must
    /// know a dead letter or an operator's decision took effect (tests,
    /// operators' commands); a retirement takes effect in memory at once.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Where the committer sends an appender's receipt back with its outcome.
pub type ReplyTo<R> = mpsc::UnboundedSender<(R, AppendOutcome)>;

/// Where appenders and the uplink send their commands.
pub type StoreHandle<R> = mpsc::Sender<Command<R>>;

/// Starts the committer thread. It ends, after a final write of the acks,
/// when every [`StoreHandle`] is dropped.
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
            let committer = Committer {
                queue,
                last_acks_written: Cell::new(Instant::now()),
                unavailable_logged: Cell::new(false),
            };
            // Only for the deadline of the acks' write (`next_command`).
            let timer = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(timer) => timer,
                Err(e) => {
                    log::error!("store: the commit thread has no timer: {e}");
                    return;
                }
            };
            let mut batch = Vec::with_capacity(max_batch);
            let mut next_reopen = Instant::now();
            let mut linger = Linger::default();
            loop {
                if !committer.has_writer() {
                    if Instant::now() >= next_reopen {
                        next_reopen = Instant::now() + REOPEN_INTERVAL;
                        committer.try_reopen();
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
                    match committer.next_command(&timer, &mut rx) {
                        Next::Command(first) => batch.push(first),
                        Next::AcksDue => {
                            committer.write_retirements();
                            continue;
                        }
                        Next::Closed => break,
                    }
                }
                drain(&mut rx, &mut batch, max_batch);
                if linger.wait_for_more(batch.len()) {
                    std::thread::sleep(LINGER);
                    drain(&mut rx, &mut batch, max_batch);
                }
                linger.committed(batch.len());
                committer.commit(&mut batch);
            }
            committer.finish();
        })?;
    Ok((tx, thread))
}

/// Whether to wait for more commands before a commit (see [`LINGER`]).
#[derive(Debug, Default)]
struct Linger {
    /// Commands per commit lately: a moving average (3/4 the old, 1/4 the
    /// newest).
    usual: usize,
}

impl Linger {
    fn wait_for_more(&self, waiting: usize) -> bool {
        self.usual >= LINGER_AFTER && waiting < self.usual / 2
    }

    fn committed(&mut self, commands: usize) {
        self.usual = (3 * self.usual + commands) / 4;
    }
}

/// What the committer waits for next.
enum Next<R> {
    Command(Command<R>),
    /// Retirements wait to be written and nothing else came in time.
    AcksDue,
    /// Every handle is gone.
    Closed,
}

/// Takes what is waiting, up to `max_batch` in all.
fn drain<R>(rx: &mut mpsc::Receiver<Command<R>>, batch: &mut Vec<Command<R>>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(cmd) => batch.push(cmd),
            Err(_) => break,
        }
    }
}

struct Committer {
    queue: Queue,
    last_acks_written: Cell<Instant>,
    unavailable_logged: Cell<bool>,
}

/// An append accepted into the batch being built.
struct Accepted<R> {
    /// One request's messages, stored together or not at all.
    stored: Vec<Stored>,
    receipt: R,
    reply: ReplyTo<R>,
}

impl Committer {
    fn has_writer(&self) -> bool {
        lock(&self.queue.inner.writer).is_some()
    }

    fn ledger(&self) -> std::sync::RwLockReadGuard<'_, Ledger> {
        self.queue.ledger()
    }

    fn ledger_mut(&self) -> std::sync::RwLockWriteGuard<'_, Ledger> {
        self.queue.ledger_mut()
    }

    fn try_reopen(&self) {
        match self.queue.reopen() {
            Ok(notes) => {
                for note in notes {
                    log::warn!("store {}: {note}", self.queue.path().display());
                }
                log::warn!(
                    "store {}: available again; {} messages queued",
                    self.queue.path().display(),
                    self.queue.depth().0
                );
                self.queue.inner.new_data.notify_one();
            }
            Err(e) => log::debug!(
                "store {}: still unavailable: {e}",
                self.queue.path().display()
            ),
        }
    }

    /// Applies one batch of commands and answers its appenders.
    fn commit<R>(&self, commands: &mut Vec<Command<R>>) {
        let started = Instant::now();
        let stats = &self.queue.inner.stats;
        let batch_len = commands.len();
        stats.commit.begin(now_ms());
        let mut appends = Vec::new();
        let mut dead = Vec::new();
        let mut barriers = Vec::new();
        let mut decisions = Vec::new();
        for command in commands.drain(..) {
            match command {
                Command::Append {
                    messages,
                    received_ms,
                    mut recall,
                    receipt,
                    reply,
                } => appends.push(Accepted {
                    stored: messages
                        .into_iter()
                        .map(|message| Stored {
                            message,
                            received_ms,
                            recall: std::mem::take(&mut recall),
                        })
                        .collect(),
                    receipt,
                    reply,
                }),
                Command::Retired => {}
                Command::DeadLetter { seq, reason } => dead.push((seq, reason)),
                Command::Lost { first, end, reason } => {
                    log::error!(
                        "store {}: messages {first}..{end} cannot be read back and are lost: {reason}",
                        self.queue.path().display()
                    );
                    let mut l = self.ledger_mut();
                    let mut lost = 0;
                    for seq in first..end {
                        lost += u64::from(l.retire(seq));
                    }
                    stats.lost_to_damage.fetch_add(lost, Ordering::Relaxed);
                }
                Command::DeadLetters {
                    action,
                    which,
                    reply,
                } => decisions.push((action, which, reply)),
                Command::Barrier(done) => barriers.push(done),
            }
        }
        let mut guard = lock(&self.queue.inner.writer);
        let ok = match guard.as_mut() {
            None => {
                for a in appends {
                    let _ = a.reply.send((a.receipt, AppendOutcome::Unavailable));
                }
                for (_, _, reply) in decisions {
                    let _ = reply.send(Err(DecisionError::Unavailable));
                }
                true
            }
            Some(writer) => {
                let mut ok = self.dead_letter(writer, dead);
                ok &= self.append(writer, appends);
                // After the devices' appends of this batch: a requeued
                // message goes behind everything already queued.
                for (action, which, reply) in decisions {
                    let _ = reply.send(operator::decide(&self.queue, writer, action, &which));
                }
                self.retirements(writer);
                ok
            }
        };
        drop(guard);
        self.publish_depth();
        for done in barriers {
            let _ = done.send(());
        }
        stats.commit.end(batch_len, started.elapsed(), ok, now_ms());
    }

    /// Copies the messages to the dead letters (synced), then retires them.
    fn dead_letter(&self, writer: &mut Writer, dead: Vec<(Seq, String)>) -> bool {
        if dead.is_empty() {
            return true;
        }
        let mut letters = Vec::new();
        for (seq, reason) in dead {
            if self.ledger().is_retired(seq) {
                continue;
            }
            let mut reader = Reader::new(writer.log.dir().to_path_buf(), seq);
            let found = reader
                .read(&self.queue.inner.ledger, 1)
                .ok()
                .and_then(|items| items.into_iter().next())
                .and_then(Result::ok)
                .filter(|q| q.seq == seq);
            let Some(queued) = found else {
                continue;
            };
            letters.push(DeadLetter {
                seq,
                dead_ms: now_ms(),
                reason,
                stored: Stored {
                    message: queued.message,
                    received_ms: queued.received_ms,
                    recall: Vec::new(),
                },
            });
        }
        // Written before they leave the queue: a crash in between leaves a
        // copy in both, never in neither.
        if let Err(e) = writer.dead.add(&letters) {
            log::error!(
                "store {}: cannot write dead letters (they stay queued): {e}",
                self.queue.path().display()
            );
            return false;
        }
        let mut l = self.ledger_mut();
        for letter in &letters {
            l.retire(letter.seq);
            log::error!(queue_seq = letter.seq; "message {} moved to dead letters: {}", letter.seq, letter.reason);
        }
        drop(l);
        // Dead letters are rare and must not come back to the queue after
        // a crash (they would be dead-lettered twice): their retirement is
        // made durable now.
        if !letters.is_empty() {
            self.queue.retirements_written();
            let written = writer
                .log
                .write_acks(&self.ledger())
                .and_then(|()| writer.log.sync());
            if let Err(e) = written {
                self.queue.retirements_not_written();
                log::warn!("store: the dead letters' acks are not durable yet: {e}");
            }
            self.last_acks_written.set(Instant::now());
        }
        self.queue
            .inner
            .stats
            .dead_letters
            .store(writer.dead.len() as u64, Ordering::Relaxed);
        true
    }

    /// Applies the limits to `appends`, writes what is accepted as one
    /// batch, and answers every appender.
    fn append<R>(&self, writer: &mut Writer, appends: Vec<Accepted<R>>) -> bool {
        if appends.is_empty() {
            return true;
        }
        let stats = &self.queue.inner.stats;
        let (accepted, refused, dropped) = self.make_room(writer, appends);
        stats.dropped_oldest.fetch_add(dropped, Ordering::Relaxed);
        if dropped > 0 {
            log::warn!(
                "queue full: dropped the {dropped} oldest messages (on_full = \"drop-oldest\")"
            );
        }
        stats
            .rejected_full
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
        for a in refused {
            let _ = a.reply.send((a.receipt, AppendOutcome::Full));
        }
        if accepted.is_empty() {
            return true;
        }
        let mut accepted = accepted;
        let messages: Vec<Stored> = accepted
            .iter_mut()
            .flat_map(|a| std::mem::take(&mut a.stored))
            .collect();
        // The batch frame carries the acks as they are now.
        self.queue.retirements_written();
        let appended = {
            let l = self.ledger();
            writer.log.append(&l, &messages)
        };
        match appended {
            Ok(appended) => {
                appended.apply(&mut self.ledger_mut());
                self.last_acks_written.set(Instant::now());
                stats
                    .appended
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
                stats.commits.fetch_add(1, Ordering::Relaxed);
                if self.unavailable_logged.replace(false) {
                    log::warn!("store {}: writing again", self.queue.path().display());
                }
                self.queue.inner.available.store(true, Ordering::Relaxed);
                self.publish_depth();
                for a in accepted {
                    let _ = a.reply.send((a.receipt, AppendOutcome::Stored));
                }
                self.queue.inner.new_data.notify_one();
                true
            }
            Err(e) => {
                // The acks of the failed frame were not written either.
                self.queue.retirements_not_written();
                stats.commit_errors.fetch_add(1, Ordering::Relaxed);
                stats
                    .failed_appends
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
                if !self.unavailable_logged.replace(true) {
                    log::error!(
                        "store {}: {e}; devices get 5.03 until the store can be written again",
                        self.queue.path().display()
                    );
                }
                self.queue.inner.available.store(false, Ordering::Relaxed);
                for a in accepted {
                    let _ = a.reply.send((a.receipt, AppendOutcome::Unavailable));
                }
                false
            }
        }
    }

    /// Splits `appends` into those that fit the limits and those refused,
    /// making room from the oldest end under drop-oldest. Returns (accepted,
    /// refused, messages dropped).
    fn make_room<R>(
        &self,
        writer: &mut Writer,
        appends: Vec<Accepted<R>>,
    ) -> (Vec<Accepted<R>>, Vec<Accepted<R>>, u64) {
        let limits = self.queue.inner.limits;
        let (mut depth, mut bytes) = {
            let l = self.ledger();
            (l.depth(), l.disk_bytes())
        };
        let mut accepted: Vec<Accepted<R>> = Vec::with_capacity(appends.len());
        let mut refused = Vec::new();
        let mut dropped = 0u64;
        let mut adding = 0u64;
        for a in appends {
            let size = estimated_size(&a.stored);
            let count = a.stored.len() as u64;
            let fits = |depth: u64, bytes: u64, adding: u64| {
                depth + count <= limits.max_messages && bytes + adding + size <= limits.max_bytes
            };
            if count > limits.max_messages || size > limits.max_bytes {
                // Could never fit, even in an empty queue: nothing is
                // dropped for it.
                refused.push(a);
                continue;
            }
            if !fits(depth, bytes, adding) && limits.on_full == OnFull::DropOldest {
                // Retired segments still on disk go first, then the oldest
                // queued messages: by count one at a time, by bytes a whole
                // segment at a time.
                if !fits(depth, bytes, adding) {
                    bytes -= self.delete_retired(writer, true);
                }
                while depth + count > limits.max_messages {
                    let mut l = self.ledger_mut();
                    match l.oldest() {
                        Some(seq) => {
                            l.retire(seq);
                            depth -= 1;
                            dropped += 1;
                        }
                        None => break,
                    }
                }
                while bytes + adding + size > limits.max_bytes {
                    let freed = self.drop_oldest_segment(writer, &mut depth, &mut dropped);
                    if freed == 0 {
                        break;
                    }
                    bytes -= freed.min(bytes);
                }
                // Nothing on disk left to drop: the oldest is an earlier
                // append of this batch, never written, so its device hears
                // 5.03 (never a 2.04 for what is not on disk).
                while !fits(depth, bytes, adding) && !accepted.is_empty() {
                    let earliest = accepted.remove(0);
                    depth -= earliest.stored.len() as u64;
                    adding -= estimated_size(&earliest.stored);
                    refused.push(earliest);
                }
            }
            if !fits(depth, bytes, adding) {
                refused.push(a);
                continue;
            }
            depth += count;
            adding += size;
            accepted.push(a);
        }
        (accepted, refused, dropped)
    }

    /// Retires every message of the oldest segment that is not the one
    /// being written, and deletes it; returns the bytes freed.
    fn drop_oldest_segment(&self, writer: &mut Writer, depth: &mut u64, dropped: &mut u64) -> u64 {
        {
            let mut l = self.ledger_mut();
            if l.segments.len() < 2 {
                return 0;
            }
            let end = l.segments[0].end_seq;
            while let Some(seq) = l.oldest().filter(|s| *s < end) {
                l.retire(seq);
                *depth = depth.saturating_sub(1);
                *dropped += 1;
            }
        }
        self.delete_retired(writer, true)
    }

    /// Deletes the segments wholly retired; returns the bytes freed.
    fn delete_retired(&self, writer: &Writer, force: bool) -> u64 {
        let gone = Log::retired_segments(&self.ledger(), now_ms(), force);
        if gone.is_empty() {
            return 0;
        }
        let deleted = writer.log.delete_segments(&gone);
        let mut l = self.ledger_mut();
        let mut freed = 0;
        l.segments.retain(|s| {
            let drop = deleted.contains(&s.first_seq);
            if drop {
                freed += s.len;
            }
            !drop
        });
        freed
    }

    /// What the committer waits for next: a command, or, while retirements
    /// wait to be written, a command or their deadline.
    fn next_command<R>(
        &self,
        timer: &tokio::runtime::Runtime,
        rx: &mut mpsc::Receiver<Command<R>>,
    ) -> Next<R> {
        let received = match self.acks_due() {
            None => rx.blocking_recv(),
            Some(due) => {
                let waited =
                    timer.block_on(async { tokio::time::timeout_at(due.into(), rx.recv()).await });
                match waited {
                    Ok(received) => received,
                    Err(_) => return Next::AcksDue,
                }
            }
        };
        received.map_or(Next::Closed, Next::Command)
    }

    /// When the retirements not yet on disk are to be written.
    fn acks_due(&self) -> Option<Instant> {
        self.queue
            .has_unwritten_retirements()
            .then(|| self.last_acks_written.get() + ACK_INTERVAL)
    }

    /// The retirements' part of a commit on its own (no batch came).
    fn write_retirements(&self) {
        let mut guard = lock(&self.queue.inner.writer);
        if let Some(writer) = guard.as_mut() {
            self.retirements(writer);
        }
        drop(guard);
        self.publish_depth();
    }

    /// Writes the acks when retirements wait and [`ACK_INTERVAL`] has
    /// passed, and deletes the segments nothing in the queue needs.
    fn retirements(&self, writer: &mut Writer) {
        if self.acks_due().is_some_and(|due| due <= Instant::now()) {
            self.queue.retirements_written();
            if let Err(e) = writer.log.write_acks(&self.ledger()) {
                self.queue.retirements_not_written();
                log::debug!("store: acks not written now: {e}");
            }
            self.last_acks_written.set(Instant::now());
        }
        self.delete_retired(writer, false);
    }

    fn publish_depth(&self) {
        let l = self.ledger();
        let stats = &self.queue.inner.stats;
        stats.messages.store(l.depth(), Ordering::Relaxed);
        stats.bytes.store(l.disk_bytes(), Ordering::Relaxed);
    }

    /// At the end: the acks written and synced, so a clean restart sends
    /// nothing twice.
    fn finish(&self) {
        let mut guard = lock(&self.queue.inner.writer);
        if let Some(writer) = guard.as_mut() {
            let l = self.ledger();
            if let Err(e) = writer.log.write_acks(&l).and_then(|()| writer.log.sync()) {
                log::error!("final write of the queue's acks failed: {e}");
            }
        }
    }
}

/// What a request's messages add to the queue's files, for the byte limit
/// (their frame share; the varints, flags and properties are counted
/// generously).
fn estimated_size(stored: &[Stored]) -> u64 {
    stored
        .iter()
        .map(|s| {
            let meta = &s.message.meta;
            let properties = meta.coap_path.len() + meta.identity.as_deref().map_or(0, str::len);
            (s.message.topic.len() + s.message.payload.len() + s.recall.len() + properties + 32)
                as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::Linger;

    #[test]
    fn the_committer_lingers_only_when_commits_have_been_large_and_few_commands_wait() {
        let mut linger = Linger::default();
        assert!(!linger.wait_for_more(0), "a fresh committer writes at once");
        // Commits of about 7 (a few hundred devices at a moderate rate).
        for _ in 0..50 {
            linger.committed(7);
        }
        assert!(!linger.wait_for_more(1));
        // 64 devices in a closed loop: commits of about 40.
        for _ in 0..50 {
            linger.committed(40);
        }
        assert!(linger.wait_for_more(3), "a few waiting after large commits");
        assert!(
            !linger.wait_for_more(25),
            "half or more of the usual is there"
        );
        // Back to quiet: after a few small commits it stops waiting.
        for _ in 0..20 {
            linger.committed(1);
        }
        assert!(!linger.wait_for_more(1));
    }
}
