//! What the queue holds and what of it is retired: the in-memory account
//! that readers consult and the committer keeps.
//!
//! Sequence numbers are consecutive. Everything below the *watermark* is
//! retired (acked by the broker, dead-lettered or dropped), and so is each
//! number in `retired`, the few retired out of order above it (an ack that
//! overtook another, a dead letter in the middle). The depth is therefore
//! `next_seq - watermark - retired.len()`: no scan, whatever the backlog.
//! Memory follows the segments (a few dozen bytes each, a sparse index of
//! one entry per [`INDEX_EVERY`] bytes) and the out-of-order set, never the
//! number of messages queued.

use super::Seq;
use std::collections::BTreeSet;

/// One sparse-index entry per this many bytes of a segment, so that a
/// reader finds a sequence number by reading at most this far.
pub const INDEX_EVERY: u64 = 64 * 1024;

/// One segment file as the ledger knows it.
#[derive(Debug, Clone)]
pub struct SegmentMeta {
    pub first_seq: Seq,
    /// One past its last message (for the newest: `next_seq`).
    pub end_seq: Seq,
    /// Bytes readers may read: what was made durable.
    pub len: u64,
    /// When its newest message was received (ms), 0 when not known.
    pub newest_ms: u64,
    /// (first sequence number of a batch frame, its offset), one every
    /// [`INDEX_EVERY`] bytes; empty for segments found at start-up, which a
    /// reader walks from the start instead.
    pub index: Vec<(Seq, u64)>,
}

impl SegmentMeta {
    /// Where to start reading for `seq`: the offset of a frame at or before
    /// it, and the sequence number it starts with.
    pub fn start_for(&self, seq: Seq) -> Option<(u64, Seq)> {
        let i = self.index.partition_point(|(s, _)| *s <= seq);
        i.checked_sub(1).map(|i| (self.index[i].1, self.index[i].0))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Oldest first; the last is the one being written.
    pub segments: Vec<SegmentMeta>,
    /// The sequence number the next appended message gets.
    pub next_seq: Seq,
    pub watermark: Seq,
    /// Retired numbers at or above the watermark.
    pub retired: BTreeSet<Seq>,
}

impl Ledger {
    /// Messages waiting for the broker.
    pub fn depth(&self) -> u64 {
        self.next_seq
            .saturating_sub(self.watermark)
            .saturating_sub(self.retired.len() as u64)
    }

    /// Bytes of the segment files (what `store.max_bytes` limits).
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    pub fn is_retired(&self, seq: Seq) -> bool {
        seq < self.watermark || self.retired.contains(&seq)
    }

    /// Retires `seq`; false when it was retired already or never queued.
    pub fn retire(&mut self, seq: Seq) -> bool {
        if seq < self.watermark || seq >= self.next_seq {
            return false;
        }
        if seq == self.watermark {
            self.watermark += 1;
            while self.retired.remove(&self.watermark) {
                self.watermark += 1;
            }
            true
        } else {
            self.retired.insert(seq)
        }
    }

    /// The oldest message not retired.
    pub fn oldest(&self) -> Option<Seq> {
        (self.watermark < self.next_seq).then_some(self.watermark)
    }

    /// The segment holding `seq`.
    pub fn segment_for(&self, seq: Seq) -> Option<&SegmentMeta> {
        let i = self.segments.partition_point(|s| s.first_seq <= seq);
        let segment = self.segments.get(i.checked_sub(1)?)?;
        (seq < segment.end_seq).then_some(segment)
    }

    /// The segment that starts at `first`.
    pub fn segment(&self, first: Seq) -> Option<&SegmentMeta> {
        self.segments.iter().find(|s| s.first_seq == first)
    }

    /// The segment after the one that starts at `first`.
    pub fn segment_after(&self, first: Seq) -> Option<&SegmentMeta> {
        let i = self.segments.partition_point(|s| s.first_seq <= first);
        self.segments.get(i)
    }

    /// What an ack frame must say now.
    pub fn acks(&self) -> super::frame::Acks {
        super::frame::Acks {
            watermark: self.watermark,
            above: self.retired.iter().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(next: Seq) -> Ledger {
        Ledger {
            next_seq: next,
            watermark: 1,
            ..Ledger::default()
        }
    }

    #[test]
    fn retiring_in_order_moves_the_watermark() {
        let mut l = ledger(11);
        assert_eq!(l.depth(), 10);
        assert!(l.retire(1));
        assert!(l.retire(2));
        assert_eq!((l.watermark, l.depth()), (3, 8));
        assert!(!l.retire(2), "twice");
        assert!(!l.retire(11), "never queued");
    }

    #[test]
    fn an_ack_out_of_order_waits_above_the_watermark_then_joins_it() {
        let mut l = ledger(11);
        assert!(l.retire(3));
        assert!(l.retire(4));
        assert_eq!((l.watermark, l.retired.len(), l.depth()), (1, 2, 8));
        assert!(l.is_retired(3) && !l.is_retired(2));
        l.retire(1);
        l.retire(2);
        assert_eq!((l.watermark, l.retired.len(), l.depth()), (5, 0, 6));
        assert_eq!(l.oldest(), Some(5));
    }

    #[test]
    fn segments_are_found_by_sequence_number() {
        let meta = |first, end| SegmentMeta {
            first_seq: first,
            end_seq: end,
            len: 100,
            newest_ms: 0,
            index: vec![(first, 16), (first + 5, 5_000)],
        };
        let l = Ledger {
            segments: vec![meta(1, 10), meta(10, 20)],
            next_seq: 20,
            watermark: 1,
            retired: BTreeSet::new(),
        };
        assert_eq!(l.segment_for(9).map(|s| s.first_seq), Some(1));
        assert_eq!(l.segment_for(10).map(|s| s.first_seq), Some(10));
        assert!(l.segment_for(20).is_none() && l.segment_for(0).is_none());
        assert_eq!(l.segment_after(1).map(|s| s.first_seq), Some(10));
        assert_eq!(l.segments[1].start_for(16), Some((5_000, 15)));
        assert_eq!(l.segments[1].start_for(12), Some((16, 10)));
        assert_eq!(l.disk_bytes(), 200);
    }
}
