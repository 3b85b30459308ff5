//! What an operator decides about dead letters: put them back at the tail
//! of the queue (requeue), or let them go (purge).
//!
//! Both run on the committer thread, the store's only writer, as one
//! [`Command::DeadLetters`](super::Command::DeadLetters), so they are
//! ordered with the devices' appends and never race the uplink's removals.
//!
//! Invariants:
//! - A requeued message is appended (synced) before its dead letter is
//!   forgotten (synced): a crash in between leaves a copy in both, never in
//!   neither (the rule `dead.rs` keeps the other way round).
//! - It gets a new sequence number after everything already queued: the
//!   queue's order is commit order, so it is published after the messages
//!   that arrived while it was dead, not in its old place.
//! - A decision naming an id that is not a dead letter changes nothing.
//! - A requeue the queue's limits cannot take is refused whole; it never
//!   pushes other messages out, whatever `on_full` says.

use super::frame::Stored;
use super::{Queue, Seq, Writer};
use std::sync::atomic::Ordering;

/// Dead letters requeued per batch frame, at most: bounds the memory of
/// `requeue --all` (each letter's message is read into memory).
const REQUEUE_CHUNK: usize = 256;
/// And at most about this many bytes of them (messages may be up to
/// `mqtt.max_packet_size` each).
const REQUEUE_CHUNK_BYTES: u64 = 4 << 20;

/// What to do with dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Back to the tail of the queue, to be published again.
    Requeue,
    /// Forgotten for good.
    Purge,
}

/// Which dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    All,
    /// By id (the sequence number the message had in the queue).
    Ids(Vec<Seq>),
}

/// One dead letter an action was applied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Its dead-letter id.
    pub id: Seq,
    pub topic: String,
    /// Its new place in the queue, when requeued.
    pub requeued_as: Option<Seq>,
}

/// Why a decision was not (wholly) carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("{}; nothing was changed", unknown_ids(.0))]
    Unknown(Vec<Seq>),
    #[error(
        "the queue has no room for {wanted} more messages ({depth} of at most {max_messages} \
         queued, {bytes} of at most {max_bytes} bytes); nothing was changed: wait for the \
         queue to drain, or requeue fewer"
    )]
    Full {
        wanted: u64,
        depth: u64,
        max_messages: u64,
        bytes: u64,
        max_bytes: u64,
    },
    #[error("the store cannot be written now; nothing was changed")]
    Unavailable,
    #[error("store {path}: {error} ({done} were done before it)")]
    Io {
        path: String,
        error: String,
        done: usize,
    },
}

fn unknown_ids(ids: &[Seq]) -> String {
    let shown: Vec<String> = ids.iter().take(20).map(Seq::to_string).collect();
    let more = match ids.len().saturating_sub(20) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    match ids.len() {
        1 => format!("no dead letter has id {}", shown.join("")),
        _ => format!("no dead letters have ids {}{more}", shown.join(", ")),
    }
}

/// Carries out `action` on `which` dead letters; the committer's part.
pub(super) fn decide(
    queue: &Queue,
    writer: &mut Writer,
    action: Action,
    which: &Which,
) -> Result<Vec<Decided>, DecisionError> {
    let ids = match which {
        Which::All => writer.dead.seqs(),
        Which::Ids(ids) => {
            let mut seen = std::collections::HashSet::new();
            let ids: Vec<Seq> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
            let unknown: Vec<Seq> = ids
                .iter()
                .copied()
                .filter(|id| !writer.dead.contains(*id))
                .collect();
            if !unknown.is_empty() {
                return Err(DecisionError::Unknown(unknown));
            }
            ids
        }
    };
    let result = match action {
        Action::Purge => purge(queue, writer, &ids),
        Action::Requeue => requeue(queue, writer, &ids),
    };
    queue
        .inner
        .stats
        .dead_letters
        .store(writer.dead.len() as u64, Ordering::Relaxed);
    result
}

fn io_error(queue: &Queue, error: std::io::Error, done: usize) -> DecisionError {
    DecisionError::Io {
        path: queue.path().display().to_string(),
        error: error.to_string(),
        done,
    }
}

fn purge(queue: &Queue, writer: &mut Writer, ids: &[Seq]) -> Result<Vec<Decided>, DecisionError> {
    let decided: Vec<Decided> = ids
        .iter()
        .map(|id| Decided {
            id: *id,
            topic: writer
                .dead
                .get(*id)
                .map(|d| d.stored.message.topic)
                .unwrap_or_default(),
            requeued_as: None,
        })
        .collect();
    writer.dead.forget(ids).map_err(|e| io_error(queue, e, 0))?;
    queue
        .inner
        .stats
        .dead_letters_purged
        .fetch_add(ids.len() as u64, Ordering::Relaxed);
    Ok(decided)
}

fn requeue(queue: &Queue, writer: &mut Writer, ids: &[Seq]) -> Result<Vec<Decided>, DecisionError> {
    let limits = queue.inner.limits;
    let (depth, bytes) = {
        let l = queue.ledger();
        (l.depth(), l.disk_bytes())
    };
    let wanted = ids.len() as u64;
    let adding: u64 = ids.iter().filter_map(|id| writer.dead.frame_len(*id)).sum();
    if depth + wanted > limits.max_messages || bytes + adding > limits.max_bytes {
        return Err(DecisionError::Full {
            wanted,
            depth,
            max_messages: limits.max_messages,
            bytes,
            max_bytes: limits.max_bytes,
        });
    }
    let mut decided = Vec::with_capacity(ids.len());
    for chunk in chunks(writer, ids) {
        let letters: Vec<_> = chunk.iter().filter_map(|id| writer.dead.get(*id)).collect();
        if letters.len() != chunk.len() {
            return Err(io_error(
                queue,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a dead letter cannot be read back from dead.log",
                ),
                decided.len(),
            ));
        }
        let messages: Vec<Stored> = letters
            .iter()
            .map(|d| Stored {
                message: d.stored.message.clone(),
                received_ms: d.stored.received_ms,
                recall: Vec::new(),
            })
            .collect();
        // Appended and synced first: from here on a crash leaves it in both.
        let appended = {
            let l = queue.ledger();
            writer.log.append(&l, &messages)
        }
        .map_err(|e| io_error(queue, e, decided.len()))?;
        let first = queue.ledger().next_seq;
        appended.apply(&mut queue.ledger_mut());
        queue.inner.new_data.notify_one();
        writer
            .dead
            .forget(&chunk)
            .map_err(|e| io_error(queue, e, decided.len()))?;
        queue
            .inner
            .stats
            .dead_letters_requeued
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        for (i, letter) in letters.into_iter().enumerate() {
            decided.push(Decided {
                id: letter.seq,
                topic: letter.stored.message.topic,
                requeued_as: Some(first + i as u64),
            });
        }
    }
    Ok(decided)
}

/// `ids` cut into runs of at most [`REQUEUE_CHUNK`] letters and about
/// [`REQUEUE_CHUNK_BYTES`] (a single larger letter is a run of its own).
fn chunks(writer: &Writer, ids: &[Seq]) -> Vec<Vec<Seq>> {
    let mut runs: Vec<Vec<Seq>> = Vec::new();
    let mut run = Vec::new();
    let mut bytes = 0u64;
    for id in ids {
        let len = writer.dead.frame_len(*id).unwrap_or(0);
        if !run.is_empty() && (run.len() >= REQUEUE_CHUNK || bytes + len > REQUEUE_CHUNK_BYTES) {
            runs.push(std::mem::take(&mut run));
            bytes = 0;
        }
        run.push(*id);
        bytes += len;
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Qos};
    use crate::store::{
        now_ms, spawn_committer, AppendOutcome, Command, Limits, OnFull, Queued, StoreHandle,
    };
    use std::path::Path;
    use tokio::sync::{mpsc, oneshot};

    fn open(dir: &Path, max_messages: u64) -> Queue {
        let limits = Limits {
            max_messages,
            max_bytes: 1 << 30,
            on_full: OnFull::DropOldest,
        };
        Queue::open(&dir.join("q"), limits).expect("opens").queue
    }

    fn committer(queue: &Queue) -> (StoreHandle<u32>, std::thread::JoinHandle<()>) {
        spawn_committer::<u32>(queue.clone(), 64, 64).expect("thread")
    }

    fn append(store: &StoreHandle<u32>, payloads: &[&str]) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for (i, payload) in payloads.iter().enumerate() {
            let command = Command::Append {
                messages: vec![Message {
                    topic: format!("t/{payload}"),
                    payload: payload.as_bytes().to_vec(),
                    qos: Qos::AtLeastOnce,
                    retain: false,
                    meta: Default::default(),
                }],
                received_ms: now_ms(),
                recall: Vec::new(),
                receipt: i as u32,
                reply: tx.clone(),
            };
            store.blocking_send(command).expect("committer alive");
            assert_eq!(
                rx.blocking_recv().map(|(_, o)| o),
                Some(AppendOutcome::Stored)
            );
        }
    }

    fn dead_letter(store: &StoreHandle<u32>, seq: Seq) {
        let reason = "refused by the broker".to_string();
        store
            .blocking_send(Command::DeadLetter { seq, reason })
            .expect("committer alive");
        barrier(store);
    }

    fn barrier(store: &StoreHandle<u32>) {
        let (tx, rx) = oneshot::channel();
        store
            .blocking_send(Command::Barrier(tx))
            .expect("committer alive");
        rx.blocking_recv().expect("barrier answered");
    }

    fn decide(
        store: &StoreHandle<u32>,
        action: Action,
        which: Which,
    ) -> Result<Vec<Decided>, DecisionError> {
        let (reply, rx) = oneshot::channel();
        store
            .blocking_send(Command::DeadLetters {
                action,
                which,
                reply,
            })
            .expect("committer alive");
        rx.blocking_recv().expect("decision answered")
    }

    fn queued(queue: &Queue) -> Vec<Queued> {
        let mut reader = queue.reader();
        queue
            .read(&mut reader, usize::MAX)
            .expect("reads")
            .into_iter()
            .map(|r| r.expect("readable"))
            .collect()
    }

    fn payloads(queue: &Queue) -> Vec<String> {
        queued(queue)
            .into_iter()
            .map(|q| String::from_utf8_lossy(&q.message.payload).into_owned())
            .collect()
    }

    fn dead_ids(queue: &Queue) -> Vec<Seq> {
        queue
            .dead_letters(usize::MAX)
            .iter()
            .map(|d| d.seq)
            .collect()
    }

    /// A queue holding "a", "b", "c" of which "a" died; returns its id.
    fn with_a_dead_letter(queue: &Queue) -> Seq {
        let (store, thread) = committer(queue);
        append(&store, &["a", "b", "c"]);
        let id = queued(queue)[0].seq;
        dead_letter(&store, id);
        drop(store);
        thread.join().expect("committer ends");
        assert_eq!(payloads(queue), ["b", "c"]);
        id
    }

    #[test]
    fn a_requeued_message_is_queued_after_the_rest_and_no_longer_dead_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = open(dir.path(), 100);
        let id = with_a_dead_letter(&queue);
        let (store, thread) = committer(&queue);
        let decided = decide(&store, Action::Requeue, Which::Ids(vec![id])).expect("requeued");
        assert_eq!(decided.len(), 1);
        assert_eq!(decided[0].id, id);
        assert_eq!(decided[0].topic, "t/a");
        let new_seq = decided[0].requeued_as.expect("a new place");
        drop(store);
        thread.join().expect("committer ends");
        drop(queue);

        let queue = open(dir.path(), 100);
        assert_eq!(payloads(&queue), ["b", "c", "a"]);
        assert_eq!(queued(&queue)[2].seq, new_seq);
        assert!(dead_ids(&queue).is_empty());
        assert_eq!(queue.stats().dead_letters.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_purged_dead_letter_stays_gone_after_a_reopen_and_the_queue_is_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = open(dir.path(), 100);
        let id = with_a_dead_letter(&queue);
        let (store, thread) = committer(&queue);
        let decided = decide(&store, Action::Purge, Which::Ids(vec![id])).expect("purged");
        assert_eq!((decided[0].id, decided[0].requeued_as), (id, None));
        drop(store);
        thread.join().expect("committer ends");
        drop(queue);

        let queue = open(dir.path(), 100);
        assert!(dead_ids(&queue).is_empty());
        assert_eq!(payloads(&queue), ["b", "c"]);
    }

    #[test]
    fn an_unknown_id_is_named_and_nothing_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = open(dir.path(), 100);
        let id = with_a_dead_letter(&queue);
        let (store, thread) = committer(&queue);
        for action in [Action::Requeue, Action::Purge] {
            let refused = decide(&store, action, Which::Ids(vec![id, 999]));
            assert_eq!(refused, Err(DecisionError::Unknown(vec![999])));
            let message = refused.expect_err("refused").to_string();
            assert!(message.contains("999"), "{message}");
        }
        drop(store);
        thread.join().expect("committer ends");
        assert_eq!(dead_ids(&queue), [id]);
        assert_eq!(payloads(&queue), ["b", "c"]);
    }

    #[test]
    fn requeue_all_and_purge_all_take_every_dead_letter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = open(dir.path(), 100);
        let (store, thread) = committer(&queue);
        append(&store, &["a", "b", "c", "d"]);
        let seqs: Vec<Seq> = queued(&queue).iter().map(|q| q.seq).collect();
        for seq in &seqs[..3] {
            dead_letter(&store, *seq);
        }
        let decided = decide(&store, Action::Requeue, Which::All).expect("requeued");
        assert_eq!(decided.len(), 3);
        assert_eq!(payloads(&queue), ["d", "a", "b", "c"]);
        let moved: Vec<Seq> = queued(&queue).iter().map(|q| q.seq).collect();
        dead_letter(&store, moved[1]);
        dead_letter(&store, moved[2]);
        assert_eq!(
            decide(&store, Action::Purge, Which::All).map(|d| d.len()),
            Ok(2)
        );
        drop(store);
        thread.join().expect("committer ends");
        assert!(dead_ids(&queue).is_empty());
        assert_eq!(payloads(&queue), ["d", "c"]);
    }

    #[test]
    fn requeue_all_of_more_letters_than_a_chunk_keeps_their_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = open(dir.path(), 1000);
        let (store, thread) = committer(&queue);
        let names: Vec<String> = (0..REQUEUE_CHUNK + 44).map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        append(&store, &refs);
        for q in queued(&queue) {
            let reason = "refused".to_string();
            let command = Command::DeadLetter { seq: q.seq, reason };
            store.blocking_send(command).expect("committer alive");
        }
        barrier(&store);
        assert_eq!(dead_ids(&queue).len(), names.len());
        let decided = decide(&store, Action::Requeue, Which::All).expect("requeued");
        drop(store);
        thread.join().expect("committer ends");
        assert_eq!(decided.len(), names.len());
        assert_eq!(payloads(&queue), names);
        assert!(dead_ids(&queue).is_empty());
    }

    #[test]
    fn a_requeue_the_queue_has_no_room_for_is_refused_and_drops_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = with_a_dead_letter(&open(dir.path(), 3));
        // Two queued, at most two: no room for the third.
        let queue = open(dir.path(), 2);
        let (store, thread) = committer(&queue);
        let refused = decide(&store, Action::Requeue, Which::Ids(vec![id]));
        assert!(
            matches!(refused, Err(DecisionError::Full { .. })),
            "{refused:?}"
        );
        drop(store);
        thread.join().expect("committer ends");
        assert_eq!(dead_ids(&queue), [id]);
        assert_eq!(payloads(&queue), ["b", "c"]);
    }
}
