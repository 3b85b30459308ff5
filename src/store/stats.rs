//! The store's own figures: counters and the commit thread's histograms,
//! written by the committer (and the depth and removals by
//! [`Queue::retire`](super::Queue::retire)), read by the metrics. The store depends on
//! nothing of the metrics; the metrics read these.

use crate::histogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Counters for metrics and status.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages waiting for the broker.
    pub messages: AtomicU64,
    /// Bytes the queue's segment files take.
    pub bytes: AtomicU64,
    pub appended: AtomicU64,
    pub removed: AtomicU64,
    pub rejected_full: AtomicU64,
    pub dropped_oldest: AtomicU64,
    pub failed_appends: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Dead letters an operator put back in the queue.
    pub dead_letters_requeued: AtomicU64,
    /// Dead letters an operator let go.
    pub dead_letters_purged: AtomicU64,
    /// Messages that could not be read back (damage on disk) and were
    /// retired as lost.
    pub lost_to_damage: AtomicU64,
    pub commits: AtomicU64,
    pub commit_errors: AtomicU64,
    /// Batch sizes, latencies and liveness of the commit thread.
    pub commit: CommitStats,
}

/// Commands per commit batch.
const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];
/// Commit latency, in microseconds (rendered in seconds).
const LATENCY_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// What the commit thread records about each batch; part of `store::Stats`.
#[derive(Debug)]
pub struct CommitStats {
    pub batch_size: Histogram,
    pub latency_us: Histogram,
    last_failed: AtomicBool,
    /// When the batch being committed started (ms since the epoch); 0 when
    /// the committer is waiting for work.
    running_since_ms: AtomicU64,
    last_done_ms: AtomicU64,
}

impl Default for CommitStats {
    fn default() -> CommitStats {
        CommitStats {
            batch_size: Histogram::new(BATCH_BOUNDS),
            latency_us: Histogram::new(LATENCY_BOUNDS_US),
            last_failed: AtomicBool::new(false),
            running_since_ms: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }
}

impl CommitStats {
    /// The committer took a batch of `commands` commands.
    pub fn begin(&self, now_ms: u64) {
        self.running_since_ms
            .store(now_ms.max(1), Ordering::Relaxed);
    }

    /// The batch is applied (or failed) after `took`.
    pub fn end(&self, commands: usize, took: Duration, ok: bool, now_ms: u64) {
        self.batch_size.observe(commands as u64);
        self.latency_us
            .observe(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
        self.last_failed.store(!ok, Ordering::Relaxed);
        self.last_done_ms.store(now_ms, Ordering::Relaxed);
        self.running_since_ms.store(0, Ordering::Relaxed);
    }

    pub fn last_ok(&self) -> bool {
        !self.last_failed.load(Ordering::Relaxed)
    }

    pub fn running_since_ms(&self) -> Option<u64> {
        match self.running_since_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    pub fn last_done_ms(&self) -> u64 {
        self.last_done_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_in_progress_is_visible_until_it_ends() {
        let c = CommitStats::default();
        assert_eq!(c.running_since_ms(), None);
        c.begin(5_000);
        assert_eq!(c.running_since_ms(), Some(5_000));
        c.end(3, Duration::from_millis(2), false, 5_002);
        assert_eq!(c.running_since_ms(), None);
        assert!(!c.last_ok());
        assert_eq!(c.last_done_ms(), 5_002);
        assert_eq!(c.batch_size.snapshot().2, 1);
    }
}
