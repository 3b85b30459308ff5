//! A model-based test of the store: random sequences of appends, removals
//! (PUBACKs), dead letters, reads, process kills, power cuts and clean
//! restarts, checked against a model of the queue after every step.
//!
//! The store runs in a worker process (this test binary run again, see
//! [`worker`]), so that a kill is a real SIGKILL (the kernel's page cache
//! survives, the process's memory does not) and a power cut is a real cut
//! of the power-cut filesystem the store lives on (everything not fsynced
//! is gone) followed by a SIGKILL. What must hold, after every step:
//! - every append the store answered `Stored` is in the queue, in append
//!   order, until it is removed or dead-lettered;
//! - a removal is in force at once, and survives a kill or cut once a
//!   later flush (an append that stored something, a dead letter, a clean
//!   shutdown) made it durable; before that it may be undone (the message
//!   comes back: at-least-once);
//! - an append that was never answered (a cut in the middle) may or may not
//!   be there, in order; one answered `Full` is not;
//! - dead letters are what was dead-lettered; depth and bytes agree with
//!   what is there; every acknowledged message has its recall.
//!
//! Failures shrink to a minimal sequence, and proptest keeps their seeds in
//! tests/store_model.proptest-regressions, which is committed so they are
//! tried first on every run. `STORE_MODEL_CASES` sets how many sequences
//! are tried (default 48); the count of cases and steps is printed.

mod support;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use support::powercut::{CutMode, Mounted};

const WORKER_ENV: &str = "COAP2MQTT_STORE_MODEL_WORKER";
/// The queue's limit in the worker, small enough to be reached.
const MAX_MESSAGES: u64 = 24;

/// One step of a sequence.
#[derive(Debug, Clone)]
enum Op {
    /// Append this many messages and wait for every outcome.
    Append(u8),
    /// Append, and cut the power once `after` of them were answered.
    AppendThenCut { n: u8, after: u8, tear: Option<u64> },
    /// The broker acked one of the queued messages.
    Remove(Index),
    /// The uplink gave up on one of the queued messages.
    DeadLetter(Index),
    /// kill -9 of the process, then a restart.
    Kill,
    /// A power cut (the filesystem loses what was not synced, optionally
    /// tearing the last unsynced writes), then a restart.
    Cut { tear: Option<u64> },
    /// SIGTERM-like: the committer's final flush, then a restart.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let tear = prop::option::of(any::<u64>());
    prop_oneof![
        4 => (1u8..=8).prop_map(Op::Append),
        2 => (1u8..=8, 0u8..=8, tear.clone())
            .prop_map(|(n, after, tear)| Op::AppendThenCut { n, after, tear }),
        4 => any::<Index>().prop_map(Op::Remove),
        1 => any::<Index>().prop_map(Op::DeadLetter),
        1 => Just(Op::Kill),
        1 => tear.prop_map(|tear| Op::Cut { tear }),
        1 => Just(Op::Restart),
    ]
}

/// What the model knows of one appended message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Answered `Stored` and not removed: must be in the queue.
    Live,
    /// Removed, not yet made durable by a flush.
    Removed,
    /// Removed, and a flush since: must not come back.
    RemovedDurably,
    /// Removed, then a crash before a flush: may be there or not; the next
    /// look decides.
    MaybeBack,
    /// Never answered (cut mid-append): may be there or not.
    Unknown,
    /// Dead-lettered (durably: a dead letter is flushed with its batch).
    Dead,
    /// Not in the queue and never coming back.
    Gone,
}

#[derive(Debug)]
struct Entry {
    payload: String,
    seq: Option<u64>,
    state: State,
}

#[derive(Default)]
struct Model {
    entries: Vec<Entry>,
    next: usize,
    /// How many entries there were when the worker last started.
    at_last_start: usize,
}

impl Model {
    fn queued(&self) -> Vec<usize> {
        (0..self.entries.len())
            .filter(|&i| self.entries[i].state == State::Live && self.entries[i].seq.is_some())
            .collect()
    }

    /// A flush happened: every removal so far is durable.
    fn flushed(&mut self) {
        for e in &mut self.entries {
            if e.state == State::Removed {
                e.state = State::RemovedDurably;
            }
        }
    }

    /// A worker starts (and recovers the recalls of what is there).
    fn started(&mut self) {
        self.at_last_start = self.entries.len();
    }

    /// The process died: undurable removals may be undone.
    fn crashed(&mut self) {
        for e in &mut self.entries {
            if e.state == State::Removed {
                e.state = State::MaybeBack;
            }
        }
    }

    /// Compares what the worker sees with the model, then learns from it
    /// which of the "maybe" messages are there.
    fn check(&mut self, seen: &Seen) -> Result<(), TestCaseError> {
        let index: HashMap<String, usize> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.payload.clone(), i))
            .collect();
        let mut last = None;
        let mut present = vec![false; self.entries.len()];
        for (seq, payload) in &seen.queue {
            let Some(&i) = index.get(payload) else {
                return Err(TestCaseError::fail(format!(
                    "the queue holds {payload:?}, which was never appended"
                )));
            };
            prop_assert!(
                last.is_none_or(|l| l < i),
                "{payload:?} is out of append order"
            );
            last = Some(i);
            present[i] = true;
            let entry = &self.entries[i];
            match entry.state {
                State::Live | State::MaybeBack | State::Unknown => {}
                other => {
                    return Err(TestCaseError::fail(format!(
                        "{payload:?} is in the queue but the model says {other:?}"
                    )))
                }
            }
            if let Some(known) = entry.seq {
                prop_assert_eq!(known, *seq, "{:?} changed its sequence number", payload);
            }
        }
        for (i, e) in self.entries.iter_mut().enumerate() {
            match (e.state, present[i]) {
                (State::Live, false) => {
                    return Err(TestCaseError::fail(format!(
                        "{:?} was acknowledged as stored and is missing",
                        e.payload
                    )))
                }
                (State::MaybeBack | State::Unknown, true) => e.state = State::Live,
                (State::MaybeBack | State::Unknown, false) => e.state = State::Gone,
                _ => {}
            }
        }
        for (seq, payload) in &seen.queue {
            if let Some(&i) = index.get(payload) {
                self.entries[i].seq = Some(*seq);
            }
        }
        let dead: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.state == State::Dead)
            .filter_map(|e| e.seq)
            .collect();
        let mut seen_dead = seen.dead.clone();
        seen_dead.sort_unstable();
        prop_assert_eq!(&seen_dead, &dead, "dead letters");
        prop_assert_eq!(seen.depth, seen.queue.len() as u64, "depth counter");
        // Recalls are recovered at open: every message acknowledged before
        // the worker's last start must have one.
        for e in &self.entries[..self.at_last_start.min(self.entries.len())] {
            if e.state == State::Live {
                prop_assert!(
                    seen.recalls.contains(&e.payload),
                    "{:?} is stored but its recall is missing",
                    e.payload
                );
            }
        }
        Ok(())
    }
}

/// What the worker reports of the store.
#[derive(Debug, Default)]
struct Seen {
    depth: u64,
    queue: Vec<(u64, String)>,
    dead: Vec<u64>,
    recalls: Vec<String>,
}

/// The worker process, driven over its stdin and stdout.
struct Worker {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Worker {
    fn start(store: &Path) -> Worker {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "worker",
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, store)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the store worker");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        let mut worker = Worker {
            child,
            input,
            output,
        };
        worker.expect("opened");
        worker
    }

    fn send(&mut self, line: &str) {
        writeln!(self.input, "{line}").expect("write to the worker");
        self.input.flush().expect("flush to the worker");
    }

    /// The next line of the worker's protocol (what follows `@@ `; the
    /// test harness's own lines are skipped).
    fn line(&mut self) -> Vec<String> {
        loop {
            let mut line = String::new();
            let n = self.output.read_line(&mut line).expect("read the worker");
            assert!(n > 0, "the store worker died");
            // The harness may print "test worker ... " before the first.
            if let Some((_, rest)) = line.trim_end().split_once("@@ ") {
                return rest.split(' ').map(str::to_string).collect();
            }
        }
    }

    fn expect(&mut self, word: &str) {
        let line = self.line();
        assert_eq!(line[0], word, "worker said {line:?}");
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exit(mut self) {
        self.send("exit");
        self.expect("bye");
        let _ = self.child.wait();
    }

    fn look(&mut self) -> Seen {
        self.send("state");
        let mut seen = Seen::default();
        loop {
            let line = self.line();
            match line[0].as_str() {
                "depth" => seen.depth = line[1].parse().expect("depth"),
                "msg" => seen
                    .queue
                    .push((line[1].parse().expect("seq"), line[2].clone())),
                "dead" => seen.dead.push(line[1].parse().expect("seq")),
                "recall" => seen.recalls.push(line[1].clone()),
                "end" => return seen,
                other => panic!("worker said {other}"),
            }
        }
    }
}

struct Counts {
    cases: AtomicUsize,
    steps: AtomicUsize,
    kills: AtomicUsize,
    cuts: AtomicUsize,
}

fn run_case(
    mount: &Mounted,
    case: usize,
    ops: &[Op],
    counts: &Counts,
) -> Result<(), TestCaseError> {
    let store = mount.path().join(format!("case-{case}")).join("q");
    std::fs::create_dir_all(store.parent().expect("parent")).expect("case dir");
    sync_dir(store.parent().expect("parent"));
    sync_dir(mount.path());
    let mut model = Model::default();
    let mut worker = Worker::start(&store);
    model.started();
    for op in ops {
        counts.steps.fetch_add(1, Ordering::Relaxed);
        match *op {
            Op::Append(n) => {
                let outcomes = append(&mut worker, &mut model, n, None);
                if outcomes.iter().any(|o| o.as_deref() == Some("stored")) {
                    model.flushed();
                }
            }
            Op::AppendThenCut { n, after, tear } => {
                append(&mut worker, &mut model, n, Some(after));
                cut(mount, tear);
                worker.kill();
                counts.cuts.fetch_add(1, Ordering::Relaxed);
                mount.revive();
                model.crashed();
                worker = Worker::start(&store);
                model.started();
            }
            Op::Remove(index) => {
                let queued = model.queued();
                if queued.is_empty() {
                    continue;
                }
                let i = queued[index.index(queued.len())];
                let seq = model.entries[i].seq.expect("known seq");
                worker.send(&format!("remove {seq}"));
                worker.expect("done");
                model.entries[i].state = State::Removed;
            }
            Op::DeadLetter(index) => {
                let queued = model.queued();
                if queued.is_empty() {
                    continue;
                }
                let i = queued[index.index(queued.len())];
                let seq = model.entries[i].seq.expect("known seq");
                worker.send(&format!("dead {seq}"));
                worker.expect("done");
                model.entries[i].state = State::Dead;
                model.flushed();
            }
            Op::Kill => {
                worker.kill();
                counts.kills.fetch_add(1, Ordering::Relaxed);
                model.crashed();
                worker = Worker::start(&store);
                model.started();
            }
            Op::Cut { tear } => {
                cut(mount, tear);
                worker.kill();
                counts.cuts.fetch_add(1, Ordering::Relaxed);
                mount.revive();
                model.crashed();
                worker = Worker::start(&store);
                model.started();
            }
            Op::Restart => {
                worker.exit();
                model.flushed();
                worker = Worker::start(&store);
                model.started();
            }
        }
        let seen = worker.look();
        if let Err(e) = model.check(&seen) {
            worker.kill();
            return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
        }
    }
    worker.exit();
    Ok(())
}

/// Sends `n` appends; with `cut_after`, returns as soon as that many were
/// answered (the caller cuts the power then). Outcomes by append, `None`
/// where none came.
fn append(
    worker: &mut Worker,
    model: &mut Model,
    n: u8,
    cut_after: Option<u8>,
) -> Vec<Option<String>> {
    let first = model.next;
    model.next += usize::from(n);
    for i in first..model.next {
        model.entries.push(Entry {
            payload: format!("m{i}"),
            seq: None,
            state: State::Unknown,
        });
    }
    worker.send(&format!("append {n} {first}"));
    let mut outcomes = vec![None; usize::from(n)];
    let mut answered = 0u8;
    if cut_after == Some(0) {
        return outcomes;
    }
    loop {
        let line = worker.line();
        match line[0].as_str() {
            "outcome" => {
                let k: usize = line[1].parse().expect("index");
                let outcome = line[2].clone();
                let entry = &mut model.entries[first + k];
                entry.state = match outcome.as_str() {
                    "stored" => State::Live,
                    _ => State::Gone,
                };
                outcomes[k] = Some(outcome);
                answered += 1;
                if cut_after == Some(answered) {
                    return outcomes;
                }
            }
            "done" => return outcomes,
            other => panic!("worker said {other}"),
        }
    }
}

fn cut(mount: &Mounted, tear: Option<u64>) {
    mount.cut(match tear {
        Some(seed) => CutMode::Tear { seed },
        None => CutMode::LoseAll,
    });
}

fn sync_dir(path: &Path) {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

#[test]
fn the_store_keeps_every_acknowledged_message_through_kills_and_power_cuts() {
    let cases: u32 = std::env::var("STORE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let dir = tempfile::tempdir().expect("tempdir");
    let mount = support::powercut::mount(&dir.path().join("mnt"));
    let counts = Counts {
        cases: AtomicUsize::new(0),
        steps: AtomicUsize::new(0),
        kills: AtomicUsize::new(0),
        cuts: AtomicUsize::new(0),
    };
    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/store_model.proptest-regressions",
        ))),
        // Each case starts processes; shrinking is still worth it.
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..32), |ops| {
        let case = counts.cases.fetch_add(1, Ordering::Relaxed);
        run_case(&mount, case, &ops, &counts)
    });
    eprintln!(
        "store model: {} cases, {} steps, {} kills, {} power cuts",
        counts.cases.load(Ordering::Relaxed),
        counts.steps.load(Ordering::Relaxed),
        counts.kills.load(Ordering::Relaxed),
        counts.cuts.load(Ordering::Relaxed),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Not a test of its own: the store worker, when the driver above runs
/// this binary with [`WORKER_ENV`] set (ignored, so runners list it as
/// skipped rather than as a test that passed).
#[test]
#[ignore = "the store model's worker process, started by the model test"]
fn worker() {
    let Some(path) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    store_worker::run(PathBuf::from(path));
}

mod store_worker {
    use coap2mqtt::config::OnFull;
    use coap2mqtt::message::{Message, Qos};
    use coap2mqtt::store::{spawn_committer, AppendOutcome, Command, Limits, Queue};
    use std::io::{BufRead, Write};
    use std::path::PathBuf;
    use tokio::sync::{mpsc, oneshot};

    fn say(line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "@@ {line}");
        let _ = out.flush();
    }

    pub fn run(path: PathBuf) {
        let limits = Limits {
            max_messages: super::MAX_MESSAGES,
            max_bytes: 1 << 20,
            on_full: OnFull::Reject,
        };
        let opened = Queue::open(&path, limits).expect("open the store");
        assert!(
            opened.unavailable.is_none(),
            "the store could not be opened"
        );
        let queue = opened.queue;
        let recalls = queue.take_recalls(0);
        let (handle, committer) =
            spawn_committer::<usize>(queue.clone(), 16, 1024).expect("committer");
        say("opened");
        let barrier = || {
            let (tx, rx) = oneshot::channel();
            handle
                .blocking_send(Command::Barrier(tx))
                .expect("committer");
            rx.blocking_recv().expect("barrier answered");
        };
        for line in std::io::stdin().lock().lines() {
            let line = line.expect("stdin");
            let words: Vec<&str> = line.split(' ').collect();
            match words[0] {
                "append" => {
                    let n: usize = words[1].parse().expect("n");
                    let first: usize = words[2].parse().expect("first");
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    for k in 0..n {
                        let payload = format!("m{}", first + k);
                        handle
                            .blocking_send(Command::Append {
                                messages: vec![Message {
                                    topic: "t".into(),
                                    payload: payload.clone().into_bytes(),
                                    qos: Qos::AtLeastOnce,
                                    retain: false,
                                    meta: Default::default(),
                                }],
                                received_ms: coap2mqtt::clock::now_ms(),
                                recall: payload.into_bytes(),
                                receipt: k,
                                reply: tx.clone(),
                            })
                            .expect("committer");
                    }
                    for _ in 0..n {
                        let (k, outcome) = rx.blocking_recv().expect("an outcome");
                        let word = match outcome {
                            AppendOutcome::Stored => "stored",
                            AppendOutcome::Full => "full",
                            AppendOutcome::Unavailable => "unavailable",
                            AppendOutcome::Failed => "failed",
                        };
                        say(&format!("outcome {k} {word}"));
                    }
                    say("done");
                }
                "remove" => {
                    let seq = words[1].parse().expect("seq");
                    // As the uplink does after a PUBACK.
                    if queue.retire(seq) {
                        handle.blocking_send(Command::Retired).expect("committer");
                    }
                    barrier();
                    say("done");
                }
                "dead" => {
                    let seq = words[1].parse().expect("seq");
                    handle
                        .blocking_send(Command::DeadLetter {
                            seq,
                            reason: "model".into(),
                        })
                        .expect("committer");
                    barrier();
                    say("done");
                }
                "state" => {
                    barrier();
                    say(&format!("depth {}", queue.depth().0));
                    let mut reader = queue.reader();
                    for item in queue.read(&mut reader, usize::MAX).expect("read") {
                        let queued = item.expect("readable");
                        let payload = String::from_utf8(queued.message.payload).expect("utf-8");
                        say(&format!("msg {} {payload}", queued.seq));
                    }
                    for dead in queue.dead_letters(usize::MAX) {
                        say(&format!("dead {}", dead.seq));
                    }
                    for (_, recall) in &recalls {
                        say(&format!("recall {}", String::from_utf8_lossy(recall)));
                    }
                    say("end");
                }
                "exit" => {
                    drop(handle);
                    committer.join().expect("committer ends");
                    say("bye");
                    return;
                }
                other => panic!("unknown worker command {other}"),
            }
        }
    }
}
