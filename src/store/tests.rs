//! The queue's promises, tested on real files in a temporary directory.

use super::*;
use crate::message::{Message, Qos};
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

fn limits(max_messages: u64, max_bytes: u64, on_full: OnFull) -> Limits {
    Limits {
        max_messages,
        max_bytes,
        on_full,
    }
}

fn roomy() -> Limits {
    limits(1 << 20, 1 << 30, OnFull::Reject)
}

fn open(dir: &Path, l: Limits) -> Queue {
    Queue::open(&dir.join("q"), l).expect("opens").queue
}

fn message(i: usize) -> Message {
    Message {
        topic: format!("t/{}", i % 3),
        payload: format!("m{i}").into_bytes(),
        qos: Qos::AtLeastOnce,
        retain: false,
        meta: Default::default(),
    }
}

fn append(i: usize, tx: &mpsc::UnboundedSender<(usize, AppendOutcome)>) -> Command<usize> {
    Command::Append {
        messages: vec![message(i)],
        received_ms: now_ms(),
        recall: Vec::new(),
        receipt: i,
        reply: tx.clone(),
    }
}

/// Runs commands through a real committer thread (batches of up to 64)
/// and waits for its end (and final write).
fn run(queue: &Queue, commands: Vec<Command<usize>>) {
    let (handle, thread) = spawn_committer::<usize>(queue.clone(), 64, 1024).expect("thread");
    for c in commands {
        handle.blocking_send(c).expect("committer alive");
    }
    drop(handle);
    thread.join().expect("committer ends");
}

/// Retires `seqs` as the uplink does after PUBACKs, telling the committer
/// when [`Queue::retire`] asks for it.
fn retire(queue: &Queue, seqs: &[Seq]) {
    let tell = seqs
        .iter()
        .fold(false, |tell, &seq| queue.retire(seq) | tell);
    run(
        queue,
        if tell {
            vec![Command::Retired]
        } else {
            Vec::new()
        },
    );
}

fn appends(
    range: std::ops::Range<usize>,
) -> (
    Vec<Command<usize>>,
    mpsc::UnboundedReceiver<(usize, AppendOutcome)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (range.map(|i| append(i, &tx)).collect(), rx)
}

fn outcomes(
    mut rx: mpsc::UnboundedReceiver<(usize, AppendOutcome)>,
) -> Vec<(usize, AppendOutcome)> {
    let mut out = Vec::new();
    while let Ok(x) = rx.try_recv() {
        out.push(x);
    }
    out.sort_by_key(|(i, _)| *i);
    out
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
        .map(|q| String::from_utf8(q.message.payload).expect("utf8"))
        .collect()
}

fn seqs(queue: &Queue) -> Vec<Seq> {
    queued(queue).iter().map(|q| q.seq).collect()
}

/// The store's files as they lie now (what a power cut would leave), copied
/// to `to` and opened there.
fn snapshot(dir: &Path, to: &Path) -> Queue {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
    let _ = std::fs::remove_dir_all(to);
    copy(&dir.join("q"), &to.join("q"));
    open(to, roomy())
}

#[test]
fn retirements_without_a_batch_reach_the_disk_while_the_committer_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), roomy());
    let (cmds, _rx) = appends(0..5);
    run(&q, cmds);
    let (handle, committer) = spawn_committer::<usize>(q.clone(), 64, 1024).expect("thread");
    let s = seqs(&q);
    assert!(q.retire(s[0]), "the first retirement asks for a write");
    assert!(
        s[1..].iter().all(|&seq| !q.retire(seq)),
        "the rest wait for the same write"
    );
    assert!(!q.retire(s[0]), "a message is retired once");
    assert_eq!(q.depth().0, 0, "retired in memory at once");
    assert_eq!(q.stats().removed.load(Ordering::Relaxed), 5);
    handle
        .blocking_send(Command::Retired)
        .expect("committer alive");
    // The committer writes them within ACK_INTERVAL of its last write, with
    // no batch and no shutdown to carry them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let depth = snapshot(dir.path(), copy.path()).depth().0;
        if depth == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the retirements are not on disk after 10 s: {depth} queued in a copy of the files"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(handle);
    committer.join().expect("committer ends");
}

#[test]
fn appended_messages_are_answered_stored_and_read_back_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(100, 1 << 20, OnFull::Reject));
    let (cmds, rx) = appends(0..10);
    run(&q, cmds);
    assert_eq!(
        outcomes(rx),
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
fn a_reader_continues_where_it_stopped_and_sees_later_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), roomy());
    let (cmds, _rx) = appends(0..5);
    run(&q, cmds);
    let mut reader = q.reader();
    let first = q.read(&mut reader, 2).expect("reads");
    let rest = q.read(&mut reader, 10).expect("reads");
    assert_eq!((first.len(), rest.len()), (2, 3));
    assert!(q.read(&mut reader, 10).expect("reads").is_empty());
    let (cmds, _rx) = appends(5..7);
    run(&q, cmds);
    let later = q.read(&mut reader, 10).expect("reads");
    assert_eq!(later.len(), 2, "the same reader sees what came since");
}

#[test]
fn removed_messages_leave_and_counters_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), roomy());
    let (cmds, _rx) = appends(0..4);
    run(&q, cmds);
    let s = seqs(&q);
    retire(&q, &[s[0], s[2]]);
    assert_eq!(payloads(&q), vec!["m1", "m3"]);
    assert_eq!(q.depth().0, 2);
    assert_eq!(q.stats().removed.load(Ordering::Relaxed), 2);
}

#[test]
fn removals_written_at_shutdown_hold_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let q = open(dir.path(), roomy());
        let (cmds, _rx) = appends(0..7);
        run(&q, cmds);
        let s = seqs(&q);
        // One in order and one out of order: the watermark and the set
        // above it must both come back.
        retire(&q, &[s[0], s[3]]);
    }
    let q = open(dir.path(), roomy());
    assert_eq!(q.depth().0, 5, "depth from the acks, not a count");
    assert_eq!(payloads(&q), vec!["m1", "m2", "m4", "m5", "m6"]);
}

#[test]
fn full_queue_rejects_when_configured_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(3, 1 << 20, OnFull::Reject));
    let (cmds, rx) = appends(0..5);
    run(&q, cmds);
    let got: Vec<AppendOutcome> = outcomes(rx).into_iter().map(|(_, o)| o).collect();
    assert_eq!(got[..3], [AppendOutcome::Stored; 3]);
    assert_eq!(got[3..], [AppendOutcome::Full; 2]);
    assert_eq!(payloads(&q), vec!["m0", "m1", "m2"]);
    assert_eq!(q.stats().rejected_full.load(Ordering::Relaxed), 2);
}

/// The records of a split SenML pack: one request, several messages.
fn append_group(
    receipt: usize,
    payloads: &[&str],
    tx: &mpsc::UnboundedSender<(usize, AppendOutcome)>,
) -> Command<usize> {
    Command::Append {
        messages: payloads
            .iter()
            .map(|p| Message {
                payload: p.as_bytes().to_vec(),
                ..message(0)
            })
            .collect(),
        received_ms: now_ms(),
        recall: vec![7],
        receipt,
        reply: tx.clone(),
    }
}

#[test]
fn a_request_s_messages_are_stored_together_or_not_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(4, 1 << 20, OnFull::Reject));
    let (tx, rx) = mpsc::unbounded_channel();
    // Three records fit; the next three do not all fit, so none is stored;
    // then a single message takes the last place.
    let cmds = vec![
        append_group(0, &["a0", "a1", "a2"], &tx),
        append_group(1, &["b0", "b1", "b2"], &tx),
        append_group(2, &["c0"], &tx),
    ];
    run(&q, cmds);
    assert_eq!(
        outcomes(rx),
        vec![
            (0, AppendOutcome::Stored),
            (1, AppendOutcome::Full),
            (2, AppendOutcome::Stored)
        ]
    );
    assert_eq!(payloads(&q), vec!["a0", "a1", "a2", "c0"]);
    // Each stored request's recall is written once (with its first
    // message): a reopened store recalls two requests, not four messages.
    drop(q);
    let reopened = open(dir.path(), limits(4, 1 << 20, OnFull::Reject));
    assert_eq!(reopened.take_recalls(0).len(), 2);
}

#[test]
fn drop_oldest_makes_room_for_a_whole_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(4, 1 << 20, OnFull::DropOldest));
    let (cmds, _rx) = appends(0..4);
    run(&q, cmds);
    let (tx, rx) = mpsc::unbounded_channel();
    run(&q, vec![append_group(9, &["s0", "s1", "s2"], &tx)]);
    assert_eq!(outcomes(rx), vec![(9, AppendOutcome::Stored)]);
    assert_eq!(payloads(&q), vec!["m3", "s0", "s1", "s2"]);
    // A request larger than the whole queue can never fit: refused, and
    // nothing is dropped for it.
    let (tx, rx) = mpsc::unbounded_channel();
    run(&q, vec![append_group(10, &["x"; 5], &tx)]);
    assert_eq!(outcomes(rx), vec![(10, AppendOutcome::Full)]);
    assert_eq!(payloads(&q), vec!["m3", "s0", "s1", "s2"]);
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
    assert_eq!(
        outcomes(rx),
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
fn the_byte_limit_is_the_queues_disk_use_and_drop_oldest_frees_a_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 32 KiB: segments of 4 KiB; 4,000 messages take about 52 KiB.
    let l = limits(1 << 20, 32 << 10, OnFull::Reject);
    let q = open(dir.path(), l);
    let (cmds, rx) = appends(0..4_000);
    run(&q, cmds);
    let stored = outcomes(rx)
        .iter()
        .filter(|(_, o)| *o == AppendOutcome::Stored)
        .count();
    assert!(stored > 1_000 && stored < 4_000, "{stored} stored");
    assert!(q.depth().1 <= 32 << 10, "{} bytes", q.depth().1);

    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(1 << 20, 32 << 10, OnFull::DropOldest));
    let (cmds, rx) = appends(0..4_000);
    run(&q, cmds);
    assert!(outcomes(rx)
        .iter()
        .all(|(_, o)| *o == AppendOutcome::Stored));
    assert!(q.depth().1 <= 32 << 10, "{} bytes", q.depth().1);
    let kept = payloads(&q);
    assert_eq!(
        kept.last().map(String::as_str),
        Some("m3999"),
        "the newest kept"
    );
    assert_eq!(
        kept.len() as u64 + q.stats().dropped_oldest.load(Ordering::Relaxed),
        4_000
    );
}

#[test]
fn dead_letters_leave_the_queue_with_their_reason_and_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), roomy());
    let (cmds, _rx) = appends(0..3);
    run(&q, cmds);
    let s = seqs(&q);
    run(
        &q,
        vec![Command::DeadLetter {
            seq: s[1],
            reason: "too large for the broker".into(),
        }],
    );
    assert_eq!(payloads(&q), vec!["m0", "m2"]);
    let dead = q.dead_letters(10);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, s[1]);
    assert_eq!(dead[0].reason, "too large for the broker");
    assert_eq!(dead[0].stored.message.payload, b"m1");
    assert_eq!(q.stats().dead_letters.load(Ordering::Relaxed), 1);
    drop(q);
    let q = open(dir.path(), roomy());
    assert_eq!((q.dead_letters(10).len(), payloads(&q).len()), (1, 2));
}

#[test]
fn the_dead_letter_count_stays_at_its_cap_and_drops_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), roomy());
    let over = DEAD_LETTER_CAPACITY + 5;
    let (cmds, _rx) = appends(0..over);
    run(&q, cmds);
    let s = seqs(&q);
    let dead = |seqs: &[Seq]| -> Vec<Command<usize>> {
        seqs.iter()
            .map(|&seq| Command::DeadLetter {
                seq,
                reason: "test".into(),
            })
            .collect()
    };
    run(&q, dead(&s[..DEAD_LETTER_CAPACITY]));
    assert_eq!(
        q.stats().dead_letters.load(Ordering::Relaxed),
        DEAD_LETTER_CAPACITY as u64
    );
    run(&q, dead(&s[DEAD_LETTER_CAPACITY..]));
    assert_eq!(
        q.stats().dead_letters.load(Ordering::Relaxed),
        DEAD_LETTER_CAPACITY as u64,
        "the count must not overshoot its cap"
    );
    let kept = q.dead_letters(usize::MAX);
    assert_eq!(kept.len(), DEAD_LETTER_CAPACITY);
    assert_eq!(
        kept.first().map(|d| d.seq),
        Some(s[5]),
        "the oldest five went"
    );
}

#[test]
fn recalls_are_written_with_their_messages_and_read_back_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    {
        let q = open(dir.path(), roomy());
        let (tx, _rx) = mpsc::unbounded_channel();
        let cmds = (0..3)
            .map(|i| Command::Append {
                messages: vec![message(i)],
                received_ms: now - 1_000 + i as u64,
                recall: vec![i as u8; 4],
                receipt: i,
                reply: tx.clone(),
            })
            .collect();
        run(&q, cmds);
        // Acked messages keep their recalls: a retransmission after a
        // restart must still be recognised.
        retire(&q, &seqs(&q)[..1]);
    }
    let q = open(dir.path(), roomy());
    assert_eq!(
        q.take_recalls(now - 2_000),
        (0..3)
            .map(|i| (now - 1_000 + i as u64, vec![i as u8; 4]))
            .collect::<Vec<_>>()
    );
    assert!(q.take_recalls(0).is_empty(), "taken once");
}

#[test]
fn recalls_older_than_asked_are_left_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_ms();
    {
        let q = open(dir.path(), roomy());
        let (tx, _rx) = mpsc::unbounded_channel();
        let old = Command::Append {
            messages: vec![message(0)],
            received_ms: now - RECALL_LIFETIME_MS - 10,
            recall: vec![0],
            receipt: 0,
            reply: tx.clone(),
        };
        run(&q, vec![old, append(1, &tx)]);
    }
    let q = open(dir.path(), roomy());
    let recalls = q.take_recalls(now - RECALL_LIFETIME_MS);
    assert_eq!(recalls.len(), 0, "the append without a recall has none");
}

#[test]
fn a_torn_tail_is_cut_at_open_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let q = open(dir.path(), roomy());
        let (cmds, _rx) = appends(0..5);
        run(&q, cmds);
    }
    let segments = dir.path().join("q/segments");
    let newest = std::fs::read_dir(&segments)
        .expect("segments")
        .flatten()
        .map(|e| e.path())
        .max()
        .expect("a segment");
    let whole = std::fs::metadata(&newest).expect("size").len();
    // Half a frame, as a power cut in the middle of a write leaves it.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .expect("open");
    std::io::Write::write_all(&mut f, &[1, 0, 0, 0, 40, 9, 9, 9, 9, 1, 2, 3]).expect("write");
    drop(f);
    let opened = Queue::open(&dir.path().join("q"), roomy()).expect("opens");
    assert!(
        opened.notes.iter().any(|n| n.contains("cut 12 bytes")),
        "{:?}",
        opened.notes
    );
    assert_eq!(std::fs::metadata(&newest).expect("size").len(), whole);
    assert_eq!(payloads(&opened.queue).len(), 5);
    // And the next batch lands where the torn one was.
    let (cmds, _rx) = appends(5..6);
    run(&opened.queue, cmds);
    assert_eq!(payloads(&opened.queue).len(), 6);
}

#[test]
fn commits_that_fill_a_page_are_padded_to_its_end_and_everything_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Messages of about 60 bytes, so that a commit of 64 fills more than
    // half a page and every full commit is padded.
    let payload = |i: usize| format!("m{i:050}");
    let all = |range: std::ops::Range<usize>| range.map(payload).collect::<Vec<_>>();
    // The segment index's (segment, first seq of a batch, its offset).
    let indexed: Vec<(Seq, Seq, u64)>;
    {
        let q = open(dir.path(), roomy());
        let (tx, _rx) = mpsc::unbounded_channel();
        let cmds = (0..8_000)
            .map(|i| Command::Append {
                messages: vec![Message {
                    payload: payload(i).into_bytes(),
                    ..message(i)
                }],
                received_ms: now_ms(),
                recall: Vec::new(),
                receipt: i,
                reply: tx.clone(),
            })
            .collect();
        run(&q, cmds);
        assert_eq!(payloads(&q), all(0..8_000));
        indexed = q
            .ledger()
            .segments
            .iter()
            .flat_map(|s| s.index.iter().map(move |&(seq, at)| (s.first_seq, seq, at)))
            .collect();
        // A reader that starts in the middle seeks from those offsets.
        retire(&q, &seqs(&q)[..7_000]);
        assert_eq!(payloads(&q), all(7_000..8_000));
    }
    // The frames as they lie: some padding, every batch that follows
    // padding starts on a fresh page, and the index points at batches.
    let mut padded = 0;
    let mut batches = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("q/segments")).expect("segments") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let segment_first = segment::parse_name(name).expect("a segment name");
        let file = std::fs::File::open(&path).expect("open");
        let scan = segment::scan(&file, |_| {}).expect("scan");
        assert!(scan.stopped.is_none() && scan.damaged.is_empty());
        for f in &scan.frames {
            if let segment::FrameInfo::Batch {
                first_seq, offset, ..
            } = f
            {
                batches.push((segment_first, *first_seq, *offset));
            }
        }
        for pair in scan.frames.windows(2) {
            if let [segment::FrameInfo::Padding, segment::FrameInfo::Batch { offset, .. }] = pair {
                padded += 1;
                assert_eq!(offset % frame::PAGE, 0, "a batch after padding at {offset}");
            }
        }
    }
    assert!(padded > 0, "no commit was padded");
    assert!(
        indexed.len() > 3,
        "the index has entries past the first batch"
    );
    for entry in &indexed {
        assert!(
            batches.contains(entry),
            "index entry {entry:?} is not a batch"
        );
    }
    assert_eq!(payloads(&open(dir.path(), roomy())), all(7_000..8_000));
}

#[test]
fn segments_roll_and_the_disk_is_given_back_after_a_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 64 KiB: segments of 8 KiB; 3,000 messages take about 40 KiB. Received
    // longer than EXCHANGE_LIFETIME ago, so no segment is kept for the
    // recalls of its messages.
    let q = open(dir.path(), limits(1 << 20, 64 << 10, OnFull::Reject));
    let (tx, _rx) = mpsc::unbounded_channel();
    let cmds = (0..3_000)
        .map(|i| Command::Append {
            messages: vec![message(i)],
            received_ms: now_ms() - RECALL_LIFETIME_MS - 1_000,
            recall: vec![1],
            receipt: i,
            reply: tx.clone(),
        })
        .collect();
    run(&q, cmds);
    let files = |dir: &Path| {
        std::fs::read_dir(dir.join("q/segments"))
            .expect("dir")
            .count()
    };
    let full = files(dir.path());
    assert!(full > 2, "{full} segments");
    let all = seqs(&q);
    retire(&q, &all);
    assert_eq!(q.depth().0, 0);
    assert_eq!(
        files(dir.path()),
        1,
        "only the segment being written is left"
    );
    assert!(q.depth().1 <= 8 << 10, "{} bytes left", q.depth().1);
    drop(q);
    let q = open(dir.path(), limits(1 << 20, 64 << 10, OnFull::Reject));
    assert!(payloads(&q).is_empty(), "nothing comes back");
}

#[test]
fn retired_segments_holding_recent_recalls_are_kept_for_a_while() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), limits(1 << 20, 64 << 10, OnFull::Reject));
    let (cmds, _rx) = appends(0..3_000);
    run(&q, cmds);
    let all = seqs(&q);
    retire(&q, &all);
    let files = std::fs::read_dir(dir.path().join("q/segments"))
        .expect("dir")
        .count();
    assert!(files > 2, "recent segments kept for deduplication: {files}");
}

#[test]
fn a_reader_skips_what_was_retired_after_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), roomy());
    let (cmds, _rx) = appends(0..4);
    run(&q, cmds);
    let s = seqs(&q);
    let mut reader = q.reader();
    retire(&q, &s[1..2]);
    let got: Vec<Seq> = q
        .read(&mut reader, 10)
        .expect("reads")
        .into_iter()
        .map(|r| r.expect("readable").seq)
        .collect();
    assert_eq!(got, vec![s[0], s[2], s[3]]);
}

/// Flips a bit in the middle of the `nth` oldest segment file.
fn damage_segment(dir: &Path, nth: usize) {
    let mut names: Vec<_> = std::fs::read_dir(dir.join("q/segments"))
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut bytes = std::fs::read(&names[nth]).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&names[nth], bytes).expect("write");
}

#[test]
fn damage_in_an_older_segment_is_reported_as_a_range_and_retired_as_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 64 KiB: segments of 8 KiB; 3,000 messages fill several.
    let l = limits(1 << 20, 64 << 10, OnFull::Reject);
    {
        let q = open(dir.path(), l);
        let (cmds, _rx) = appends(0..3_000);
        run(&q, cmds);
    }
    damage_segment(dir.path(), 0);
    let q = open(dir.path(), l);
    let mut reader = q.reader();
    let items = q.read(&mut reader, usize::MAX).expect("reads");
    let lost: Vec<&Unreadable> = items.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(lost.len(), 1, "one range: {lost:?}");
    assert!(
        lost[0].end - lost[0].first <= 64,
        "one batch, not the segment: {lost:?}"
    );
    let readable = items.iter().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(
        readable + (lost[0].end - lost[0].first),
        3_000,
        "nothing unaccounted"
    );
    run(
        &q,
        vec![Command::Lost {
            first: lost[0].first,
            end: lost[0].end,
            reason: lost[0].reason.clone(),
        }],
    );
    assert_eq!(q.depth().0, readable);
    assert_eq!(
        q.stats().lost_to_damage.load(Ordering::Relaxed),
        lost[0].end - lost[0].first
    );
}

#[test]
fn damage_in_the_newest_segment_is_not_taken_for_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let q = open(dir.path(), roomy());
        let (cmds, _rx) = appends(0..1_000);
        run(&q, cmds);
    }
    damage_segment(dir.path(), 0);
    let opened = Queue::open(&dir.path().join("q"), roomy()).expect("opens");
    let q = opened.queue;
    let lost = q.stats().lost_to_damage.load(Ordering::Relaxed);
    assert!(lost > 0 && lost <= 64, "one batch lost: {lost}");
    assert_eq!(
        payloads(&q).len() as u64 + lost,
        1_000,
        "everything after it kept"
    );
    assert_eq!(q.depth().0 + lost, 1_000);
}

#[test]
fn a_store_that_cannot_be_opened_answers_unavailable_until_it_can() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q");
    std::fs::write(&path, b"a file where the store's directory should be").expect("block");
    let opened = Queue::open(&path, roomy()).expect("not fatal");
    assert!(opened.unavailable.is_some());
    let q = opened.queue;
    assert!(!q.is_available());
    let (handle, thread) = spawn_committer::<usize>(q.clone(), 64, 1024).expect("thread");
    let (tx, mut rx) = mpsc::unbounded_channel();
    handle.blocking_send(append(1, &tx)).expect("alive");
    assert_eq!(rx.blocking_recv(), Some((1, AppendOutcome::Unavailable)));
    std::fs::remove_file(&path).expect("unblock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut i = 2;
    loop {
        handle.blocking_send(append(i, &tx)).expect("alive");
        match rx.blocking_recv() {
            Some((_, AppendOutcome::Stored)) => break,
            Some((_, AppendOutcome::Unavailable)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                i += 1;
            }
            other => panic!("the store did not come back: {other:?}"),
        }
    }
    drop(handle);
    thread.join().expect("committer ends");
    assert!(q.is_available());
    assert_eq!(payloads(&q).len(), 1);
}

#[test]
fn a_store_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let q = open(dir.path(), roomy());
        let (cmds, _rx) = appends(0..1);
        run(&q, cmds);
    }
    let segment = std::fs::read_dir(dir.path().join("q/segments"))
        .expect("dir")
        .flatten()
        .next()
        .expect("a segment")
        .path();
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[11] = 9;
    std::fs::write(&segment, bytes).expect("write");
    match Queue::open(&dir.path().join("q"), roomy()) {
        Err(e @ StoreError::NewerFormat { .. }) => {
            assert!(e.to_string().contains("newer coap2mqtt"), "{e}")
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("opened a store of a newer format"),
    }
}

/// Not a test: commit latency (the committer's own histogram) for single
/// appends with the dead letters at their cap, for docs/BENCHMARKS.md.
/// `cargo test --release --lib commit_latency_with_full_dead_letters -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; prints figures"]
fn commit_latency_with_full_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), roomy());
    let (cmds, _rx) = appends(0..DEAD_LETTER_CAPACITY);
    run(&q, cmds);
    let all = seqs(&q);
    run(
        &q,
        all.into_iter()
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
        handle.blocking_send(append(i, &tx)).expect("committer");
        rx.blocking_recv().expect("outcome");
    }
    drop(handle);
    thread.join().expect("committer ends");
    let (buckets, _, count) = q.stats().commit.latency_us.snapshot();
    let earlier: Vec<u64> = before.0.iter().map(|(_, n)| *n).collect();
    let total = count - before.2;
    let mut p50 = None;
    for (i, (bound, n)) in buckets.iter().enumerate() {
        let seen = n - earlier.get(i).copied().unwrap_or(0);
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
