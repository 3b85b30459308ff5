//! Fixed-bucket histograms on relaxed atomics: recording is a handful of
//! atomic adds, no lock, no allocation. The store's commit figures use it;
//! the metrics render it.

use std::sync::atomic::{AtomicU64, Ordering};

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
}
