//! Fixed-bucket histograms on relaxed atomics, and the commit thread's
//! figures. Recording is a handful of atomic adds; no lock, no allocation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Counts of observations at or below each bound (not cumulative in
/// memory; cumulated when rendered), plus their sum and count.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// `bounds` must be increasing; observations above the last one count
    /// only in `+Inf`.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// (bound, cumulative count) per bucket, then the sum and the count.
    pub fn snapshot(&self) -> (Vec<(u64, u64)>, u64, u64) {
        let mut running = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(self.buckets.iter())
            .map(|(bound, n)| {
                running += n.load(Ordering::Relaxed);
                (*bound, running)
            })
            .collect();
        (
            buckets,
            self.sum.load(Ordering::Relaxed),
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// Commands per commit batch.
const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];
/// Commit latency, in microseconds (rendered in seconds).
const LATENCY_BOUNDS_US: &[u64] = &[
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
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
    fn buckets_are_cumulative_and_the_overflow_counts_only_in_the_total() {
        let h = Histogram::new(&[1, 10, 100]);
        for v in [0, 1, 5, 10, 11, 1000] {
            h.observe(v);
        }
        let (buckets, sum, count) = h.snapshot();
        assert_eq!(buckets, vec![(1, 2), (10, 4), (100, 5)]);
        assert_eq!(sum, 1027);
        assert_eq!(count, 6);
    }

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
