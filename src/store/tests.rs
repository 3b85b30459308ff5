//! The queue's promises, tested on a real sled directory.

use super::*;
use crate::message::{Message, Qos};
use tokio::sync::mpsc;

fn limits(max_messages: u64, max_bytes: u64, on_full: OnFull) -> Limits {
    Limits {
        max_messages,
        max_bytes,
        on_full,
    }
}

fn open(dir: &Path, l: Limits) -> Queue {
    Queue::open(&dir.join("q"), 4 << 20, l)
        .expect("opens")
        .queue
}

fn message(i: usize) -> Message {
    Message {
        topic: format!("t/{}", i % 3),
        payload: format!("m{i}").into_bytes(),
        qos: Qos::AtLeastOnce,
        retain: false,
    }
}

/// Runs commands through a real committer thread and returns the outcomes
/// in the order they were answered.
fn run(queue: &Queue, commands: Vec<Command<usize>>) {
    let (handle, thread) = spawn_committer::<usize>(queue.clone(), 64, 1024).expect("thread");
    for c in commands {
        handle.blocking_send(c).expect("committer alive");
    }
    drop(handle);
    thread.join().expect("committer ends");
}

fn appends(
    range: std::ops::Range<usize>,
) -> (
    Vec<Command<usize>>,
    mpsc::UnboundedReceiver<(usize, AppendOutcome)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let cmds = range
        .map(|i| Command::Append {
            message: message(i),
            received_ms: 1_000 + i as u64,
            recall: Vec::new(),
            receipt: i,
            reply: tx.clone(),
        })
        .collect();
    (cmds, rx)
}

fn outcomes(
    mut rx: mpsc::UnboundedReceiver<(usize, AppendOutcome)>,
) -> Vec<(usize, AppendOutcome)> {
    let mut out = Vec::new();
    while let Ok(x) = rx.try_recv() {
        out.push(x);
    }
    out
}

fn payloads(queue: &Queue) -> Vec<String> {
    queue
        .read_after(None, usize::MAX)
        .expect("reads")
        .into_iter()
        .map(|r| String::from_utf8(r.expect("decodes").record.message.payload).expect("utf8"))
        .collect()
}

#[test]
fn appended_messages_are_answered_stored_and_read_back_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
    let (cmds, rx) = appends(0..10);
    run(&q, cmds);
    let got = outcomes(rx);
    assert_eq!(
        got,
        (0..10)
            .map(|i| (i, AppendOutcome::Stored))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        payloads(&q),
        (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(q.depth().0, 10);
}

#[test]
fn read_after_continues_from_a_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
    let (cmds, _rx) = appends(0..5);
    run(&q, cmds);
    let first = q.read_after(None, 2).expect("reads");
    let cursor = first.last().and_then(|r| r.as_ref().ok()).map(|r| r.seq);
    let rest = q.read_after(cursor, 10).expect("reads");
    assert_eq!(first.len(), 2);
    assert_eq!(rest.len(), 3);
}

#[test]
fn removed_messages_leave_and_counters_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
    let (cmds, _rx) = appends(0..4);
    run(&q, cmds);
    let seqs: Vec<Seq> = q
        .read_after(None, 10)
        .expect("reads")
        .into_iter()
        .map(|r| r.expect("ok").seq)
        .collect();
    run(
        &q,
        vec![
            Command::Remove(seqs[0]),
            Command::Remove(seqs[2]),
            Command::Remove(seqs[2]),
        ],
    );
    assert_eq!(payloads(&q), vec!["m1", "m3"]);
    assert_eq!(q.depth().0, 2);
    assert_eq!(q.stats().removed.load(Ordering::Relaxed), 2);
}

#[test]
fn depth_survives_a_reopen_without_a_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = limits(100, 1 << 20, OnFull::Reject);
    let bytes = {
        let q = open(dir.path(), l);
        let (cmds, _rx) = appends(0..7);
        run(&q, cmds);
        let seq = q.read_after(None, 1).expect("reads")[0]
            .as_ref()
            .expect("ok")
            .seq;
        run(&q, vec![Command::Remove(seq)]);
        q.depth().1
    };
    // A message slipped in behind the counters' back: a scan at open would
    // count 7; the counters record says 6.
    {
        let db = sled::open(dir.path().join("q")).expect("sled opens");
        let messages = db.open_tree("messages").expect("tree");
        messages
            .insert(
                u64::MAX.to_be_bytes().map(|b| b / 2),
                Record {
                    message: message(99),
                    received_ms: 1,
                }
                .encode(),
            )
            .expect("insert");
        db.flush().expect("flush");
    }
    let q = open(dir.path(), l);
    assert_eq!(q.depth(), (6, bytes), "depth read from the counters record");
    assert_eq!(payloads(&q).len(), 7, "the slipped-in message is there");
}

#[test]
fn full_queue_rejects_when_configured_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(3, 1 << 20, OnFull::Reject));
    let (cmds, rx) = appends(0..5);
    run(&q, cmds);
    let got = outcomes(rx);
    let full: Vec<usize> = got
        .iter()
        .filter(|x| x.1 == AppendOutcome::Full)
        .map(|x| x.0)
        .collect();
    assert_eq!(full, vec![3, 4]);
    assert_eq!(payloads(&q), vec!["m0", "m1", "m2"]);
    assert_eq!(q.stats().rejected_full.load(Ordering::Relaxed), 2);
}

#[test]
fn full_queue_drops_the_oldest_when_configured_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(3, 1 << 20, OnFull::DropOldest));
    let (cmds, _rx) = appends(0..3);
    run(&q, cmds);
    let (cmds, _rx) = appends(3..5);
    run(&q, cmds);
    assert_eq!(payloads(&q), vec!["m2", "m3", "m4"]);
    assert_eq!(q.depth().0, 3);
    assert_eq!(q.stats().dropped_oldest.load(Ordering::Relaxed), 2);
}

#[test]
fn drop_oldest_never_answers_stored_for_a_message_evicted_in_its_own_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(3, 1 << 20, OnFull::DropOldest));
    // One batch (the committer takes 64 at a time) of five for three slots.
    let (cmds, rx) = appends(0..5);
    run(&q, cmds);
    let mut got = outcomes(rx);
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(
        got,
        vec![
            (0, AppendOutcome::Full),
            (1, AppendOutcome::Full),
            (2, AppendOutcome::Stored),
            (3, AppendOutcome::Stored),
            (4, AppendOutcome::Stored),
        ],
        "a 2.04 only for what is on disk"
    );
    assert_eq!(payloads(&q), vec!["m2", "m3", "m4"]);
}

#[test]
fn byte_limit_counts_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = Record {
        message: message(0),
        received_ms: 0,
    }
    .encode()
    .len() as u64;
    let q = open(dir.path(), limits(100, one * 2, OnFull::Reject));
    let (cmds, rx) = appends(0..3);
    run(&q, cmds);
    let full = outcomes(rx)
        .iter()
        .filter(|x| x.1 == AppendOutcome::Full)
        .count();
    assert_eq!(full, 1);
}

#[test]
fn dead_letters_leave_the_queue_with_their_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
    let (cmds, _rx) = appends(0..2);
    run(&q, cmds);
    let seq = q.read_after(None, 1).expect("reads")[0]
        .as_ref()
        .expect("ok")
        .seq;
    run(
        &q,
        vec![Command::DeadLetter {
            seq,
            reason: "too large".into(),
        }],
    );
    assert_eq!(payloads(&q), vec!["m1"]);
    assert_eq!(q.dead_letters(10), vec![(seq, "too large".to_string())]);
    assert_eq!(q.stats().dead_letters.load(Ordering::Relaxed), 1);
}

#[test]
fn a_corrupt_store_is_moved_aside_and_a_fresh_one_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q");
    {
        let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
        let (cmds, _rx) = appends(0..3);
        run(&q, cmds);
    }
    // Overwrite the data files with garbage, as a failing SD card might.
    for entry in std::fs::read_dir(&path).expect("store dir") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            std::fs::write(&p, vec![0xA5u8; 4096]).expect("write garbage");
        }
    }
    let opened =
        Queue::open(&path, 4 << 20, limits(100, 1 << 20, OnFull::Reject)).expect("opens fresh");
    let aside = opened.moved_aside.expect("moved aside");
    assert!(aside.exists());
    assert_eq!(opened.queue.depth().0, 0);
}

#[test]
fn an_unavailable_store_answers_unavailable_and_applies_removals_once_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
    let (cmds, _rx) = appends(0..3);
    run(&q, cmds);
    let first = q.read_after(None, 1).expect("reads")[0]
        .as_ref()
        .expect("ok")
        .seq;

    // Lose the store: the handles go, and a file where the directory was
    // makes every reopen fail until the directory is back.
    q.drop_handles();
    let path = dir.path().join("q");
    let away = dir.path().join("q.away");
    std::fs::rename(&path, &away).expect("move store away");
    std::fs::write(&path, b"not a directory").expect("block the path");

    let (handle, thread) = spawn_committer::<usize>(q.clone(), 64, 1024).expect("thread");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let append = |i: usize| Command::Append {
        message: message(i),
        received_ms: 0,
        recall: Vec::new(),
        receipt: i,
        reply: tx.clone(),
    };
    handle.blocking_send(Command::Remove(first)).expect("alive");
    handle.blocking_send(append(3)).expect("alive");
    assert_eq!(rx.blocking_recv(), Some((3, AppendOutcome::Unavailable)));
    assert!(!q.is_available());

    std::fs::remove_file(&path).expect("unblock");
    std::fs::rename(&away, &path).expect("store back");
    let mut i = 4;
    loop {
        handle.blocking_send(append(i)).expect("alive");
        match rx.blocking_recv() {
            Some((_, AppendOutcome::Stored)) => break,
            Some((_, AppendOutcome::Unavailable)) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                i += 1;
                assert!(i < 100, "the store never came back");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(handle);
    thread.join().expect("committer ends");
    assert_eq!(
        payloads(&q),
        vec!["m1".to_string(), "m2".into(), format!("m{i}")]
    );
}

/// A snapshot sled began when the disk was full: an empty
/// `snap.*.generating` file, which sled alone would read as corruption.
fn leave_unfinished_snapshot(path: &Path) {
    std::fs::write(path.join("snap.FFFFFFFFFFFFFFFF.generating"), b"").expect("write");
}

#[test]
fn an_unfinished_snapshot_left_by_a_full_disk_does_not_cost_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q");
    {
        let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
        let (cmds, _rx) = appends(0..3);
        run(&q, cmds);
    }
    leave_unfinished_snapshot(&path);
    let opened = Queue::open(&path, 4 << 20, limits(100, 1 << 20, OnFull::Reject)).expect("opens");
    assert_eq!(
        opened.moved_aside, None,
        "the store must not be moved aside"
    );
    assert_eq!(payloads(&opened.queue), vec!["m0", "m1", "m2"]);
}

#[test]
fn damage_found_while_running_keeps_the_store_and_leaves_it_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q");
    let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
    let (cmds, _rx) = appends(0..3);
    run(&q, cmds);
    q.flush().expect("flush");
    // An I/O error dropped the handles; meanwhile a finished-looking but
    // broken snapshot appeared (sorts last, so sled reads it).
    q.drop_handles();
    std::fs::write(path.join("snap.FFFFFFFFFFFFFFFF"), b"broken").expect("write");
    q.try_recover();
    assert!(!q.is_available(), "damage while running: stay unavailable");
    assert!(path.exists(), "the store stays where it is");
    let siblings: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        siblings,
        vec![std::ffi::OsString::from("q")],
        "nothing moved aside"
    );
    // Once the damage is gone, the next attempt recovers every message.
    std::fs::remove_file(path.join("snap.FFFFFFFFFFFFFFFF")).expect("remove");
    q.try_recover();
    assert!(q.is_available());
    assert_eq!(payloads(&q), vec!["m0", "m1", "m2"]);
}

#[test]
fn recalls_are_written_with_their_messages_and_read_back_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    {
        let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
        let (tx, _rx) = mpsc::unbounded_channel();
        let cmds = (0..3)
            .map(|i| Command::Append {
                message: message(i),
                received_ms: now - 1_000 + i as u64,
                recall: vec![i as u8; 4],
                receipt: i,
                reply: tx.clone(),
            })
            .collect();
        run(&q, cmds);
    }
    let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
    let recalls = q.recent_recalls(now - 2_000);
    assert_eq!(
        recalls,
        (0..3)
            .map(|i| (now - 1_000 + i as u64, vec![i as u8; 4]))
            .collect::<Vec<_>>()
    );
    assert_eq!(q.recent_recalls(now - 999).len(), 2);
}

#[test]
fn recalls_older_than_exchange_lifetime_are_trimmed_and_a_refused_message_leaves_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    let q = open(dir.path(), limits(2, 1 << 20, OnFull::Reject));
    let (tx, _rx) = mpsc::unbounded_channel();
    let append = |i: usize, received_ms: u64| Command::Append {
        message: message(i),
        received_ms,
        recall: vec![i as u8],
        receipt: i,
        reply: tx.clone(),
    };
    run(&q, vec![append(0, now - RECALL_LIFETIME_MS - 10)]);
    run(&q, vec![append(1, now), append(2, now)]);
    // The second batch trimmed the first recall; the third append found the
    // queue full, so neither its message nor its recall was kept.
    assert_eq!(q.recent_recalls(0), vec![(now, vec![1u8])]);
}

#[test]
fn the_dead_letter_count_stays_at_its_cap_and_drops_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(1 << 20, 1 << 30, OnFull::Reject));
    let over = DEAD_LETTER_CAPACITY + 5;
    let (cmds, _rx) = appends(0..over);
    run(&q, cmds);
    let seqs: Vec<Seq> = q
        .read_after(None, usize::MAX)
        .expect("reads")
        .into_iter()
        .map(|r| r.expect("decodes").seq)
        .collect();
    let dead = |seqs: &[Seq]| -> Vec<Command<usize>> {
        seqs.iter()
            .map(|&seq| Command::DeadLetter {
                seq,
                reason: "test".into(),
            })
            .collect()
    };
    run(&q, dead(&seqs[..DEAD_LETTER_CAPACITY]));
    assert_eq!(
        q.stats().dead_letters.load(Ordering::Relaxed),
        DEAD_LETTER_CAPACITY as u64
    );
    run(&q, dead(&seqs[DEAD_LETTER_CAPACITY..]));
    assert_eq!(
        q.stats().dead_letters.load(Ordering::Relaxed),
        DEAD_LETTER_CAPACITY as u64,
        "the count must not overshoot its cap between reopens"
    );
    let kept = q.dead_letters(usize::MAX);
    assert_eq!(kept.len(), DEAD_LETTER_CAPACITY);
    assert_eq!(
        kept.first().map(|d| d.0),
        Some(seqs[5]),
        "the oldest five went"
    );
}

/// Not a test: commit latency (the committer's own histogram) for single
/// appends with the dead-letter tree at its cap, for docs/BENCHMARKS.md.
/// `cargo test --release --lib commit_latency_with_full_dead_letters -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; prints figures"]
fn commit_latency_with_full_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(1 << 20, 1 << 30, OnFull::Reject));
    let (cmds, _rx) = appends(0..DEAD_LETTER_CAPACITY);
    run(&q, cmds);
    let seqs: Vec<Seq> = q
        .read_after(None, usize::MAX)
        .expect("reads")
        .into_iter()
        .map(|r| r.expect("decodes").seq)
        .collect();
    run(
        &q,
        seqs.into_iter()
            .map(|seq| Command::DeadLetter {
                seq,
                reason: "measurement".into(),
            })
            .collect(),
    );
    assert_eq!(q.dead_letters(usize::MAX).len(), DEAD_LETTER_CAPACITY);
    let before = q.stats().commit.latency_us.snapshot();
    let (handle, thread) = spawn_committer::<usize>(q.clone(), 64, 1024).expect("thread");
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..2_000 {
        handle
            .blocking_send(Command::Append {
                message: message(i),
                received_ms: now_ms(),
                recall: Vec::new(),
                receipt: i,
                reply: tx.clone(),
            })
            .expect("committer");
        rx.blocking_recv().expect("outcome");
    }
    drop(handle);
    thread.join().expect("committer ends");
    let (buckets, _, count) = q.stats().commit.latency_us.snapshot();
    let earlier: Vec<u64> = before.0.iter().map(|(_, n)| *n).collect();
    let mut seen = 0;
    let total = count - before.2;
    let mut p50 = None;
    for (i, (bound, n)) in buckets.iter().enumerate() {
        seen += n - earlier.get(i).copied().unwrap_or(0);
        if p50.is_none() && seen * 2 >= total {
            p50 = Some(*bound);
        }
        if seen * 100 >= total * 99 {
            eprintln!(
                "commit latency, {total} single-append commits, {} dead letters: p50 <= {} us, p99 <= {bound} us",
                q.dead_letters(usize::MAX).len(),
                p50.unwrap_or(*bound)
            );
            return;
        }
    }
    eprintln!("commit latency: p99 above the last bucket");
}
