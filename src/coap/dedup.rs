//! Message deduplication (RFC 7252 §4.5): remembering which (peer, Message
//! ID) pairs were seen, and what was answered, so that a retransmission is
//! answered again instead of being stored twice.
//!
//! A Confirmable request is remembered for EXCHANGE_LIFETIME (247 s), first
//! as pending (the store has not answered; a retransmission is ignored, the
//! device will retransmit again) and then with the exact response bytes,
//! which a retransmission gets back. A Non-confirmable request is remembered
//! for NON_LIFETIME (145 s); its duplicates are dropped.
//!
//! Invariants:
//! - At most `capacity` entries. When full, the oldest entry is evicted;
//!   that only means a very late retransmission may be stored twice, which
//!   at-least-once delivery allows. Each eviction is counted.
//! - One peer holds at most a quarter of the table ([`PEER_SHARE`]): past
//!   that, its own oldest entry makes room, so a flooding device degrades
//!   deduplication for itself and not for everybody else.
//! - Every operation is amortised O(1). Lifetimes are constant per kind, so
//!   insertion order is expiry order: two FIFO queues (one per lifetime)
//!   find what expired, and the oldest entry to evict, at their fronts.
//!   Queue items whose entry went away by another path are skipped when met
//!   and compacted away once they outnumber the live ones.

use super::exchange::Peer;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// EXCHANGE_LIFETIME with the default transmission parameters (RFC 7252
/// §4.8.2): how long a Confirmable Message ID may be retransmitted or reused.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// NON_LIFETIME (RFC 7252 §4.8.2).
pub const NON_LIFETIME: Duration = Duration::from_secs(145);
/// One peer may hold at most 1/PEER_SHARE of the table.
pub const PEER_SHARE: usize = 4;

/// A Message ID as seen from one peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub peer: Peer,
    pub message_id: u16,
}

/// Which lifetime an entry has: the message type of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    Confirmable,
    NonConfirmable,
}

impl Lifetime {
    pub fn duration(self) -> Duration {
        match self {
            Lifetime::Confirmable => EXCHANGE_LIFETIME,
            Lifetime::NonConfirmable => NON_LIFETIME,
        }
    }

    fn index(self) -> usize {
        match self {
            Lifetime::Confirmable => 0,
            Lifetime::NonConfirmable => 1,
        }
    }
}

/// What is remembered about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remembered {
    /// Handed to the store, which has not answered yet.
    Pending,
    /// Answered with these bytes; a retransmission gets them again.
    Answered(Box<[u8]>),
    /// Seen, nothing to repeat (Non-confirmable requests).
    Seen,
}

/// Identifies one insertion, so that a late answer or a stale queue item
/// cannot touch a newer entry that reuses the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64);

#[derive(Debug)]
struct Entry {
    remembered: Remembered,
    since: Instant,
    lifetime: Lifetime,
    stamp: Stamp,
}

#[derive(Debug, Default)]
struct PeerEntries {
    live: usize,
    /// This peer's insertions, oldest first; may hold stale items.
    order: VecDeque<(u16, Stamp)>,
}

/// The deduplication table of one listening socket.
#[derive(Debug)]
pub struct DedupTable {
    capacity: usize,
    peer_share: usize,
    entries: HashMap<DedupKey, Entry>,
    /// Insertion order per lifetime; may hold stale items.
    order: [VecDeque<(DedupKey, Stamp)>; 2],
    live: [usize; 2],
    peers: HashMap<Peer, PeerEntries>,
    next_stamp: u64,
    /// Entries evicted because the table was full.
    pub evicted: u64,
    /// Entries evicted because their peer held its whole share.
    pub evicted_peer_share: u64,
}

impl DedupTable {
    /// A capacity of 0 is taken as 1.
    pub fn new(capacity: usize) -> DedupTable {
        let capacity = capacity.max(1);
        DedupTable {
            capacity,
            peer_share: (capacity / PEER_SHARE).max(1),
            entries: HashMap::new(),
            order: [VecDeque::new(), VecDeque::new()],
            live: [0, 0],
            peers: HashMap::new(),
            next_stamp: 0,
            evicted: 0,
            evicted_peer_share: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every entry whose lifetime has passed (an entry lives during
    /// `[since, since + lifetime)`). Call before [`DedupTable::lookup`].
    pub fn purge(&mut self, now: Instant) {
        for lifetime in [Lifetime::Confirmable, Lifetime::NonConfirmable] {
            while let Some((key, stamp)) = self.order[lifetime.index()].front() {
                let expired = match self.entries.get(key) {
                    Some(entry) if entry.stamp == *stamp => {
                        now.saturating_duration_since(entry.since) >= lifetime.duration()
                    }
                    _ => true, // stale item: its entry went another way
                };
                if !expired {
                    break;
                }
                if let Some((key, stamp)) = self.order[lifetime.index()].pop_front() {
                    self.forget(&key, stamp);
                }
            }
        }
    }

    pub fn lookup(&self, key: &DedupKey) -> Option<&Remembered> {
        self.entries.get(key).map(|entry| &entry.remembered)
    }

    /// Remembers a request that [`DedupTable::lookup`] did not find.
    pub fn remember(
        &mut self,
        key: DedupKey,
        remembered: Remembered,
        lifetime: Lifetime,
        now: Instant,
    ) -> Stamp {
        let stamp = Stamp(self.next_stamp);
        self.next_stamp += 1;
        if let Some(old) = self.entries.get(&key) {
            // Not expected (callers look up first); the new one wins.
            let old_stamp = old.stamp;
            self.forget(&key, old_stamp);
        }
        if self.peers.get(&key.peer).map_or(0, |p| p.live) >= self.peer_share {
            self.evict_oldest_of(&key.peer);
        }
        if self.entries.len() >= self.capacity {
            self.evict_oldest();
        }
        let index = lifetime.index();
        self.order[index].push_back((key.clone(), stamp));
        self.live[index] += 1;
        let peer = self.peers.entry(key.peer.clone()).or_default();
        peer.live += 1;
        peer.order.push_back((key.message_id, stamp));
        self.entries.insert(
            key.clone(),
            Entry {
                remembered,
                since: now,
                lifetime,
                stamp,
            },
        );
        self.compact_peer(&key.peer);
        self.compact(index);
        stamp
    }

    /// Records the answer to a pending request, if its entry is still the
    /// one `stamp` names (it may have expired or been evicted meanwhile).
    pub fn answer(&mut self, key: &DedupKey, stamp: Stamp, remembered: Remembered) {
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.stamp == stamp {
                entry.remembered = remembered;
            }
        }
    }

    /// Removes the entry `key` if it is the insertion `stamp`.
    fn forget(&mut self, key: &DedupKey, stamp: Stamp) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        if entry.stamp != stamp {
            return;
        }
        let lifetime = entry.lifetime;
        self.entries.remove(key);
        self.live[lifetime.index()] -= 1;
        if let Some(peer) = self.peers.get_mut(&key.peer) {
            peer.live -= 1;
            if peer.live == 0 {
                self.peers.remove(&key.peer);
            }
        }
    }

    fn evict_oldest(&mut self) {
        for queue in &mut self.order {
            while let Some((key, stamp)) = queue.front() {
                if self.entries.get(key).is_some_and(|e| e.stamp == *stamp) {
                    break;
                }
                queue.pop_front();
            }
        }
        let front_stamp = |queue: &VecDeque<(DedupKey, Stamp)>| queue.front().map(|(_, s)| s.0);
        let oldest = match (front_stamp(&self.order[0]), front_stamp(&self.order[1])) {
            (Some(con), Some(non)) => usize::from(non < con),
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (None, None) => return,
        };
        if let Some((key, stamp)) = self.order[oldest].pop_front() {
            self.forget(&key, stamp);
            self.evicted += 1;
        }
    }

    fn evict_oldest_of(&mut self, peer: &Peer) {
        while let Some((message_id, stamp)) =
            self.peers.get_mut(peer).and_then(|p| p.order.pop_front())
        {
            let key = DedupKey {
                peer: peer.clone(),
                message_id,
            };
            if self.entries.get(&key).is_some_and(|e| e.stamp == stamp) {
                self.forget(&key, stamp);
                self.evicted_peer_share += 1;
                return;
            }
        }
    }

    /// Drops stale items from a peer's queue once they outnumber the live ones.
    fn compact_peer(&mut self, owner: &Peer) {
        let Some(peer) = self.peers.get_mut(owner) else {
            return;
        };
        if peer.order.len() <= 2 * peer.live + 8 {
            return;
        }
        let entries = &self.entries;
        peer.order.retain(|(message_id, stamp)| {
            let key = DedupKey {
                peer: owner.clone(),
                message_id: *message_id,
            };
            entries.get(&key).is_some_and(|e| e.stamp == *stamp)
        });
    }

    /// Drops stale items from a lifetime queue once they outnumber the live
    /// ones; each compaction pays for at least as many removals as it scans.
    fn compact(&mut self, index: usize) {
        if self.order[index].len() <= 2 * self.live[index] + 16 {
            return;
        }
        let entries = &self.entries;
        self.order[index]
            .retain(|(key, stamp)| entries.get(key).is_some_and(|e| e.stamp == *stamp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn peer(port: u16) -> Peer {
        Peer {
            addr: SocketAddr::from(([198, 51, 100, 7], port)),
            identity: None,
        }
    }

    fn key(port: u16, message_id: u16) -> DedupKey {
        DedupKey {
            peer: peer(port),
            message_id,
        }
    }

    fn seen(table: &mut DedupTable, key: DedupKey, lifetime: Lifetime, now: Instant) -> Stamp {
        table.remember(key, Remembered::Seen, lifetime, now)
    }

    #[test]
    fn a_confirmable_entry_lives_exactly_exchange_lifetime() {
        let mut table = DedupTable::new(10);
        let start = Instant::now();
        seen(&mut table, key(1, 1), Lifetime::Confirmable, start);
        table.purge(start + EXCHANGE_LIFETIME - Duration::from_nanos(1));
        assert!(table.lookup(&key(1, 1)).is_some());
        table.purge(start + EXCHANGE_LIFETIME);
        assert!(table.lookup(&key(1, 1)).is_none());
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_non_confirmable_entry_expires_before_an_older_confirmable_one() {
        let mut table = DedupTable::new(10);
        let start = Instant::now();
        seen(&mut table, key(1, 1), Lifetime::Confirmable, start);
        seen(
            &mut table,
            key(1, 2),
            Lifetime::NonConfirmable,
            start + Duration::from_secs(1),
        );
        table.purge(start + Duration::from_secs(1) + NON_LIFETIME);
        assert!(table.lookup(&key(1, 1)).is_some());
        assert!(table.lookup(&key(1, 2)).is_none());
    }

    #[test]
    fn a_full_table_evicts_the_oldest_entry_of_either_kind() {
        let mut table = DedupTable::new(8);
        let now = Instant::now();
        seen(&mut table, key(1, 0), Lifetime::NonConfirmable, now);
        for port in 2..9 {
            seen(&mut table, key(port, 0), Lifetime::Confirmable, now);
        }
        seen(&mut table, key(9, 0), Lifetime::Confirmable, now);
        assert_eq!((table.len(), table.evicted), (8, 1));
        assert!(table.lookup(&key(1, 0)).is_none());
        seen(&mut table, key(10, 0), Lifetime::NonConfirmable, now);
        assert!(table.lookup(&key(2, 0)).is_none());
        assert_eq!(table.evicted, 2);
    }

    #[test]
    fn a_peer_past_its_share_evicts_its_own_oldest_entry() {
        let mut table = DedupTable::new(8);
        let now = Instant::now();
        seen(&mut table, key(1, 100), Lifetime::Confirmable, now);
        for message_id in 0..5 {
            seen(&mut table, key(2, message_id), Lifetime::Confirmable, now);
        }
        assert_eq!(table.evicted_peer_share, 3);
        assert_eq!(table.evicted, 0);
        assert!(table.lookup(&key(1, 100)).is_some());
        assert!(table.lookup(&key(2, 4)).is_some());
        assert!(table.lookup(&key(2, 2)).is_none());
    }

    #[test]
    fn a_late_answer_does_not_touch_a_newer_entry_with_the_same_key() {
        let mut table = DedupTable::new(8);
        let start = Instant::now();
        let old = table.remember(key(1, 1), Remembered::Pending, Lifetime::Confirmable, start);
        let later = start + EXCHANGE_LIFETIME;
        table.purge(later);
        table.remember(key(1, 1), Remembered::Pending, Lifetime::Confirmable, later);
        table.answer(&key(1, 1), old, Remembered::Answered(Box::new([1])));
        assert_eq!(table.lookup(&key(1, 1)), Some(&Remembered::Pending));
    }

    #[test]
    fn queues_stay_bounded_under_churn() {
        let mut table = DedupTable::new(64);
        let start = Instant::now();
        for i in 0..100_000u32 {
            let now = start + Duration::from_millis(u64::from(i));
            table.purge(now);
            let port = (i % 7) as u16;
            seen(&mut table, key(port, i as u16), Lifetime::Confirmable, now);
            if i % 3 == 0 {
                seen(
                    &mut table,
                    key(port + 100, i as u16),
                    Lifetime::NonConfirmable,
                    now,
                );
            }
        }
        assert!(table.len() <= 64);
        let queued: usize = table.order.iter().map(VecDeque::len).sum();
        assert!(queued <= 2 * 64 + 32, "{queued} queue items");
        for peer in table.peers.values() {
            assert!(peer.order.len() <= 2 * peer.live + 8);
        }
    }
}
