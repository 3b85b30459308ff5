//! Message deduplication (RFC 7252 §4.5): remembering which (peer, Message
//! ID) pairs were seen, and what was answered, so that a retransmission is
//! answered again instead of being stored twice.
//!
//! A Confirmable request is remembered for EXCHANGE_LIFETIME (247 s), first
//! as pending (the store has not answered; a retransmission is ignored, the
//! device will retransmit again) and then with what was answered, which a
//! retransmission gets again. A Non-confirmable request is remembered for
//! NON_LIFETIME (145 s); its duplicates are dropped.
//!
//! Invariants:
//! - At most `capacity` entries. When full, the oldest entry is evicted;
//!   that only means a very late retransmission may be stored twice, which
//!   at-least-once delivery allows. Each eviction is counted.
//! - One peer holds at most a quarter of the table ([`PEER_SHARE`]): past
//!   that, its own oldest entry makes room, so a flooding device degrades
//!   deduplication for itself and not for everybody else.
//! - Every operation is O(1).
//!
//! Why it is laid out this way: the table is the largest thing the daemon
//! keeps per request (65,536 entries by default), so an entry is compact.
//! Entries live in a slab of fixed-size slots: the peer is interned (a
//! 4-byte id; the address and identity are kept once per peer), the answer
//! is kept as its code, token and one option, from which the exchange
//! rebuilds the bytes, and the time as milliseconds since the table's
//! first entry. Insertion order per lifetime (for expiry and eviction) and
//! per peer (for its share) are doubly-linked lists through the slots, so
//! nothing needs compacting. The index is a hash table of slot numbers
//! (4 bytes a bucket), hashed by (peer id, Message ID). About 54 bytes an
//! entry in all when peers have many entries; a peer with a single entry
//! also pays for its interned address (docs/BENCHMARKS.md has both).

use super::exchange::Peer;
use super::wire::Token;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// EXCHANGE_LIFETIME with the default transmission parameters (RFC 7252
/// §4.8.2): how long a Confirmable Message ID may be retransmitted or reused.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// NON_LIFETIME (RFC 7252 §4.8.2).
pub const NON_LIFETIME: Duration = Duration::from_secs(145);
/// One peer may hold at most 1/PEER_SHARE of the table.
pub const PEER_SHARE: usize = 4;

const NONE: u32 = u32::MAX;

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

/// The one option an answer may carry, for rebuilding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOption {
    None,
    MaxAge(u32),
    Block1(u32),
    Size1(u32),
}

/// What a Confirmable request was answered: enough to send the same bytes
/// again (the Message ID is the request's). Code 0 is an empty ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub code: u8,
    pub token: Token,
    pub option: ReplyOption,
}

/// What is remembered about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// Handed to the store, which has not answered yet.
    Pending,
    /// Answered; a retransmission gets the same answer again.
    Answered(Reply),
    /// Seen, nothing to repeat (Non-confirmable requests).
    Seen,
}

/// Identifies one insertion, so that a late answer cannot touch a newer
/// entry that reuses the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64);

/// One remembered request. 48 bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    peer: u32,
    /// Milliseconds since the table's epoch when it was remembered.
    since_ms: u32,
    /// The answer's option value.
    option: u32,
    /// Which insertion this is (low 32 bits of the table's counter).
    stamp: u32,
    message_id: u16,
    /// State (2 bits), NON lifetime (1 bit), option kind (2 bits), token
    /// length (4 bits).
    flags: u16,
    code: u8,
    token: [u8; 8],
    /// Neighbours in its lifetime's insertion order, and in its peer's.
    order: Link,
    peer_order: Link,
}

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NONE,
    next: NONE,
};

/// A doubly-linked list's ends.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NONE,
    tail: NONE,
};

const STATE_PENDING: u16 = 1;
const STATE_SEEN: u16 = 2;
const STATE_ANSWERED: u16 = 3;
const NON_LIFETIME_FLAG: u16 = 1 << 2;

impl Slot {
    fn remembered(&self) -> Remembered {
        match self.flags & 3 {
            STATE_PENDING => Remembered::Pending,
            STATE_ANSWERED => {
                let len = usize::from((self.flags >> 5) & 0xf).min(8);
                Remembered::Answered(Reply {
                    code: self.code,
                    token: Token::new(&self.token[..len]).unwrap_or_default(),
                    option: match (self.flags >> 3) & 3 {
                        1 => ReplyOption::MaxAge(self.option),
                        2 => ReplyOption::Block1(self.option),
                        3 => ReplyOption::Size1(self.option),
                        _ => ReplyOption::None,
                    },
                })
            }
            _ => Remembered::Seen,
        }
    }

    fn set(&mut self, remembered: Remembered) {
        let lifetime = self.flags & NON_LIFETIME_FLAG;
        self.flags = lifetime
            | match remembered {
                Remembered::Pending => STATE_PENDING,
                Remembered::Seen => STATE_SEEN,
                Remembered::Answered(reply) => {
                    let (kind, value) = match reply.option {
                        ReplyOption::None => (0, 0),
                        ReplyOption::MaxAge(v) => (1, v),
                        ReplyOption::Block1(v) => (2, v),
                        ReplyOption::Size1(v) => (3, v),
                    };
                    let token = reply.token.as_bytes();
                    self.token = [0; 8];
                    self.token[..token.len()].copy_from_slice(token);
                    self.code = reply.code;
                    self.option = value;
                    STATE_ANSWERED | (kind << 3) | ((token.len() as u16) << 5)
                }
            };
    }

    fn lifetime(&self) -> Lifetime {
        match self.flags & NON_LIFETIME_FLAG != 0 {
            true => Lifetime::NonConfirmable,
            false => Lifetime::Confirmable,
        }
    }
}

/// A peer, interned: its address and identity kept once.
#[derive(Debug)]
struct PeerSlot {
    peer: Option<Peer>,
    live: usize,
    order: List,
}

/// The deduplication table of one listening socket.
#[derive(Debug)]
pub struct DedupTable {
    capacity: usize,
    peer_share: usize,
    slots: Vec<Slot>,
    /// Free slots, chained through `order.next`.
    free: u32,
    /// Slot numbers, hashed by (peer id, Message ID).
    index: hashbrown::HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
    peers: Vec<PeerSlot>,
    /// Peer ids, hashed by the peer they stand for.
    peer_ids: hashbrown::HashTable<u32>,
    free_peers: Vec<u32>,
    /// Insertion order per lifetime.
    orders: [List; 2],
    len: usize,
    counter: u64,
    /// The time entries' `since_ms` count from: the first `now` seen.
    epoch: Option<Instant>,
    /// When the table was last purged (wrapping milliseconds are safe only
    /// while no entry outlives the longest lifetime unpurged).
    last_purge: Option<Instant>,
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
            slots: Vec::new(),
            free: NONE,
            index: hashbrown::HashTable::new(),
            hasher: Default::default(),
            peers: Vec::new(),
            peer_ids: hashbrown::HashTable::new(),
            free_peers: Vec::new(),
            orders: [EMPTY; 2],
            len: 0,
            counter: 0,
            epoch: None,
            last_purge: None,
            evicted: 0,
            evicted_peer_share: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every entry whose lifetime has passed (an entry lives during
    /// `[since, since + lifetime)`, to the millisecond). Call before
    /// [`DedupTable::lookup`].
    pub fn purge(&mut self, now: Instant) {
        let idle = self
            .last_purge
            .is_some_and(|last| now.saturating_duration_since(last) >= EXCHANGE_LIFETIME);
        self.last_purge = Some(now);
        if idle {
            // Everything expired while nobody looked (and milliseconds since
            // the epoch may have wrapped): start afresh.
            self.clear();
            return;
        }
        let now_ms = self.millis(now);
        for lifetime in [Lifetime::Confirmable, Lifetime::NonConfirmable] {
            let lifetime_ms = lifetime.duration().as_millis() as u32;
            while let Some(slot) = Some(self.orders[lifetime.index()].head).filter(|s| *s != NONE) {
                let age = now_ms.wrapping_sub(self.slots[slot as usize].since_ms);
                if age < lifetime_ms {
                    break;
                }
                self.remove(slot);
            }
        }
    }

    pub fn lookup(&self, key: &DedupKey) -> Option<Remembered> {
        let slot = self.find(key)?;
        Some(self.slots[slot as usize].remembered())
    }

    /// Remembers a request that [`DedupTable::lookup`] did not find.
    pub fn remember(
        &mut self,
        key: DedupKey,
        remembered: Remembered,
        lifetime: Lifetime,
        now: Instant,
    ) -> Stamp {
        if let Some(old) = self.find(&key) {
            // A Message ID reused with another token (the exchange takes
            // that as a new request): the new one wins.
            self.remove(old);
        }
        // Evictions first: one may free this very peer's interned slot.
        if let Some(known) = self.peer_id(&key.peer) {
            if self.peers[known as usize].live >= self.peer_share {
                let oldest = self.peers[known as usize].order.head;
                if oldest != NONE {
                    self.remove(oldest);
                    self.evicted_peer_share += 1;
                }
            }
        }
        if self.len >= self.capacity {
            self.evict_oldest();
        }
        let peer = self.intern(key.peer);
        self.counter += 1;
        let stamp = Stamp(self.counter);
        let since_ms = self.millis(now);
        let mut slot = Slot {
            peer,
            since_ms,
            option: 0,
            stamp: self.counter as u32,
            message_id: key.message_id,
            flags: match lifetime {
                Lifetime::Confirmable => 0,
                Lifetime::NonConfirmable => NON_LIFETIME_FLAG,
            },
            code: 0,
            token: [0; 8],
            order: UNLINKED,
            peer_order: UNLINKED,
        };
        slot.set(remembered);
        let index = self.allocate(slot);
        self.link_order(lifetime.index(), index);
        self.link_peer(peer, index);
        let hash = self.hash(peer, key.message_id);
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.index.insert_unique(hash, index, |&s| {
            let s = &slots[s as usize];
            hash_of(hasher, s.peer, s.message_id)
        });
        self.peers[peer as usize].live += 1;
        self.len += 1;
        stamp
    }

    /// Records the answer to a pending request, if its entry is still the
    /// one `stamp` names (it may have expired or been evicted meanwhile).
    pub fn answer(&mut self, key: &DedupKey, stamp: Stamp, remembered: Remembered) {
        if let Some(slot) = self.find(key) {
            let slot = &mut self.slots[slot as usize];
            if slot.stamp == stamp.0 as u32 {
                slot.set(remembered);
            }
        }
    }

    /// Heap bytes the table holds now (for the benchmark's figure).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.peers.capacity() * std::mem::size_of::<PeerSlot>()
            + self.peer_ids.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.free_peers.capacity() * 4
    }

    fn millis(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_millis() as u32
    }

    fn hash(&self, peer: u32, message_id: u16) -> u64 {
        hash_of(&self.hasher, peer, message_id)
    }

    fn peer_id(&self, peer: &Peer) -> Option<u32> {
        let hash = self.hasher.hash_one(peer);
        self.peer_ids
            .find(hash, |&id| {
                self.peers[id as usize].peer.as_ref() == Some(peer)
            })
            .copied()
    }

    fn find(&self, key: &DedupKey) -> Option<u32> {
        let peer = self.peer_id(&key.peer)?;
        let hash = self.hash(peer, key.message_id);
        self.index
            .find(hash, |&s| {
                let s = &self.slots[s as usize];
                s.peer == peer && s.message_id == key.message_id
            })
            .copied()
    }

    fn intern(&mut self, peer: Peer) -> u32 {
        if let Some(id) = self.peer_id(&peer) {
            return id;
        }
        let hash = self.hasher.hash_one(&peer);
        let slot = PeerSlot {
            peer: Some(peer),
            live: 0,
            order: EMPTY,
        };
        let id = match self.free_peers.pop() {
            Some(id) => {
                self.peers[id as usize] = slot;
                id
            }
            None => {
                self.peers.push(slot);
                (self.peers.len() - 1) as u32
            }
        };
        let (peers, hasher) = (&self.peers, &self.hasher);
        self.peer_ids.insert_unique(hash, id, |&i| {
            peers[i as usize]
                .peer
                .as_ref()
                .map_or(0, |p| hasher.hash_one(p))
        });
        id
    }

    fn allocate(&mut self, slot: Slot) -> u32 {
        if self.free != NONE {
            let index = self.free;
            self.free = self.slots[index as usize].order.next;
            self.slots[index as usize] = slot;
            index
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        }
    }

    fn evict_oldest(&mut self) {
        let heads = self.orders.map(|o| o.head);
        let oldest = match heads {
            [NONE, NONE] => return,
            [con, NONE] => con,
            [NONE, non] => non,
            // Both lists are in insertion order: the smaller stamp (in the
            // counter's recent window) is older.
            [con, non] => {
                let (a, b) = (
                    self.slots[con as usize].stamp,
                    self.slots[non as usize].stamp,
                );
                if (b.wrapping_sub(a) as i32) < 0 {
                    non
                } else {
                    con
                }
            }
        };
        self.remove(oldest);
        self.evicted += 1;
    }

    /// Takes a slot out of the index and both lists, frees it and, with
    /// its last entry, its peer.
    fn remove(&mut self, index: u32) {
        let slot = self.slots[index as usize];
        let hash = self.hash(slot.peer, slot.message_id);
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == index) {
            entry.remove();
        }
        self.unlink_order(slot.lifetime().index(), index);
        self.unlink_peer(slot.peer, index);
        self.slots[index as usize].order = Link {
            prev: NONE,
            next: self.free,
        };
        self.slots[index as usize].flags = 0;
        self.free = index;
        self.len -= 1;
        let peer = &mut self.peers[slot.peer as usize];
        peer.live -= 1;
        if peer.live == 0 {
            if let Some(gone) = peer.peer.take() {
                let hash = self.hasher.hash_one(&gone);
                if let Ok(entry) = self.peer_ids.find_entry(hash, |&id| id == slot.peer) {
                    entry.remove();
                }
            }
            self.free_peers.push(slot.peer);
        }
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.free = NONE;
        self.index.clear();
        self.peers.clear();
        self.peer_ids.clear();
        self.free_peers.clear();
        self.orders = [EMPTY; 2];
        self.len = 0;
        self.epoch = None;
    }

    fn link_order(&mut self, list: usize, index: u32) {
        let tail = self.orders[list].tail;
        self.slots[index as usize].order = Link {
            prev: tail,
            next: NONE,
        };
        match tail {
            NONE => self.orders[list].head = index,
            t => self.slots[t as usize].order.next = index,
        }
        self.orders[list].tail = index;
    }

    fn unlink_order(&mut self, list: usize, index: u32) {
        let Link { prev, next } = self.slots[index as usize].order;
        match prev {
            NONE => self.orders[list].head = next,
            p => self.slots[p as usize].order.next = next,
        }
        match next {
            NONE => self.orders[list].tail = prev,
            n => self.slots[n as usize].order.prev = prev,
        }
    }

    fn link_peer(&mut self, peer: u32, index: u32) {
        let tail = self.peers[peer as usize].order.tail;
        self.slots[index as usize].peer_order = Link {
            prev: tail,
            next: NONE,
        };
        match tail {
            NONE => self.peers[peer as usize].order.head = index,
            t => self.slots[t as usize].peer_order.next = index,
        }
        self.peers[peer as usize].order.tail = index;
    }

    fn unlink_peer(&mut self, peer: u32, index: u32) {
        let Link { prev, next } = self.slots[index as usize].peer_order;
        match prev {
            NONE => self.peers[peer as usize].order.head = next,
            p => self.slots[p as usize].peer_order.next = next,
        }
        match next {
            NONE => self.peers[peer as usize].order.tail = prev,
            n => self.slots[n as usize].peer_order.prev = prev,
        }
    }
}

fn hash_of(hasher: &impl BuildHasher, peer: u32, message_id: u16) -> u64 {
    hasher.hash_one((peer, message_id))
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
        let reply = Reply {
            code: 0x44,
            token: Token::default(),
            option: ReplyOption::None,
        };
        table.answer(&key(1, 1), old, Remembered::Answered(reply));
        assert_eq!(table.lookup(&key(1, 1)), Some(Remembered::Pending));
    }

    #[test]
    fn an_answer_comes_back_with_its_token_and_option() {
        let mut table = DedupTable::new(8);
        let now = Instant::now();
        let stamp = table.remember(key(1, 1), Remembered::Pending, Lifetime::Confirmable, now);
        for option in [
            ReplyOption::None,
            ReplyOption::MaxAge(30),
            ReplyOption::Block1(0x1e),
            ReplyOption::Size1(65_536),
        ] {
            let reply = Reply {
                code: 0xa3,
                token: Token::new(&[1, 2, 3, 4, 5, 6, 7, 8]).expect("token"),
                option,
            };
            table.answer(&key(1, 1), stamp, Remembered::Answered(reply));
            assert_eq!(table.lookup(&key(1, 1)), Some(Remembered::Answered(reply)));
        }
    }

    #[test]
    fn a_long_silence_forgets_everything_without_trusting_wrapped_times() {
        let mut table = DedupTable::new(8);
        let start = Instant::now();
        seen(&mut table, key(1, 1), Lifetime::Confirmable, start);
        table.purge(start + Duration::from_secs(60 * 86_400));
        assert!(table.is_empty());
        seen(
            &mut table,
            key(1, 1),
            Lifetime::Confirmable,
            start + Duration::from_secs(60 * 86_400),
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn the_table_stays_bounded_under_churn_and_reuses_its_slots() {
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
        assert!(table.slots.len() <= 64, "{} slots", table.slots.len());
        assert!(table.peers.len() <= 64, "{} peers", table.peers.len());
    }

    #[test]
    fn evicting_a_peers_only_entry_to_make_room_for_its_next_keeps_the_peer_known() {
        let mut table = DedupTable::new(2);
        let now = Instant::now();
        seen(&mut table, key(1, 1), Lifetime::Confirmable, now);
        seen(&mut table, key(2, 1), Lifetime::Confirmable, now);
        // Full: peer 1's only entry is the oldest and goes.
        seen(&mut table, key(1, 2), Lifetime::Confirmable, now);
        assert!(table.lookup(&key(1, 2)).is_some());
        assert!(table.lookup(&key(1, 1)).is_none());
        seen(&mut table, key(3, 1), Lifetime::Confirmable, now);
        assert!(table.lookup(&key(2, 1)).is_none(), "the oldest went");
        assert!(table.lookup(&key(1, 2)).is_some() && table.lookup(&key(3, 1)).is_some());
    }

    #[test]
    fn a_slot_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
    }
}
