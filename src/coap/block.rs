//! Block-wise uploads (RFC 7959 Block1): a body sent as numbered blocks is
//! reassembled here, so the store sees one whole message, once.
//!
//! A device with a small MTU sends a 3 kB reading as three requests. The
//! exchange answers 2.31 Continue to each non-final block and hands the
//! whole body to the store at the last one; this module keeps the partial
//! bodies in between, keyed by (peer, Uri-Path).
//!
//! Invariants:
//! - A body grows only by contiguous blocks: a block whose offset is not the
//!   number of bytes received so far ends its assembly (4.08).
//! - Memory is bounded: at most `capacity` assemblies (the least recently
//!   active is evicted), at most [`ASSEMBLIES_PER_PEER`] per peer, each at
//!   most `max_payload` bytes, each dropped once idle for `lifetime`.
//! - Scans are O(capacity), which is meant to be hundreds; they happen only
//!   when an assembly starts or when the oldest one may have expired.

use super::exchange::Peer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many uploads one peer may have under way at once. A device waits for
/// each 2.31 before the next block (NSTART = 1), so one is the norm; a few
/// allow uploads to different resources. One peer cannot take the table.
pub const ASSEMBLIES_PER_PEER: usize = 4;

/// A Block1 value: block number, more-flag and size exponent (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOption {
    /// At most 2^20 - 1: the option is at most 3 bytes long.
    pub num: u32,
    pub more: bool,
    /// 0 to 6: blocks of 16 to 1024 bytes.
    pub szx: u8,
}

/// A Block1 value the gateway cannot act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("a Block1 value is at most 3 bytes long, this one has {0}")]
    TooLong(usize),
    /// RFC 7959 §2.2: SZX 7 "MUST lead to a 4.00 Bad Request".
    #[error("block size exponent 7 is reserved")]
    ReservedSize,
}

impl BlockOption {
    pub fn decode(value: &[u8]) -> Result<BlockOption, BlockError> {
        if value.len() > 3 {
            return Err(BlockError::TooLong(value.len()));
        }
        let raw = value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let szx = (raw & 0b111) as u8;
        if szx == 7 {
            return Err(BlockError::ReservedSize);
        }
        Ok(BlockOption {
            num: raw >> 4,
            more: raw & 0b1000 != 0,
            szx,
        })
    }

    /// The option value, as an unsigned integer.
    pub fn value(self) -> u32 {
        (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx)
    }

    /// The block size in bytes.
    pub fn size(self) -> usize {
        16 << self.szx
    }

    /// Where this block starts in the body. At most (2^20 - 1) * 1024, so
    /// it cannot overflow even a 32-bit usize.
    pub fn offset(self) -> usize {
        self.num as usize * self.size()
    }

    /// The same block with another more-flag: how responses echo it.
    pub fn with_more(self, more: bool) -> BlockOption {
        BlockOption { more, ..self }
    }
}

/// Which upload a block belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssemblyKey {
    pub peer: Peer,
    pub path: Vec<String>,
}

/// What one block did to its upload.
#[derive(Debug, PartialEq, Eq)]
pub enum BlockProgress {
    /// A non-final block was added: answer 2.31 Continue.
    Continue,
    /// The final block arrived: here is the whole body.
    Complete(Vec<u8>),
    /// A block that does not continue what was received (or nothing was):
    /// 4.08 Request Entity Incomplete.
    Incomplete,
    /// The body would exceed `max_payload`: 4.13.
    TooLarge,
    /// A non-final block whose payload is not exactly the block size: 4.00.
    WrongBlockSize,
}

#[derive(Debug)]
struct Assembly {
    body: Vec<u8>,
    last_active: Instant,
}

/// The uploads under way for one listening socket.
#[derive(Debug)]
pub struct Assemblies {
    capacity: usize,
    per_peer: usize,
    lifetime: Duration,
    uploads: HashMap<AssemblyKey, Assembly>,
    /// No assembly was active before this; a lower bound, so an expiry scan
    /// is needed only once `lifetime` has passed since it.
    oldest_activity: Option<Instant>,
    /// Assemblies dropped to make room (table full or peer at its share).
    pub evicted: u64,
    /// Assemblies dropped because they were idle for `lifetime`.
    pub expired: u64,
}

impl Assemblies {
    /// A capacity of 0 is taken as 1: the exchange always can finish the
    /// upload it is in.
    pub fn new(capacity: usize, lifetime: Duration) -> Assemblies {
        let capacity = capacity.max(1);
        Assemblies {
            capacity,
            per_peer: ASSEMBLIES_PER_PEER.min(capacity),
            lifetime,
            uploads: HashMap::new(),
            oldest_activity: None,
            evicted: 0,
            expired: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.uploads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uploads.is_empty()
    }

    /// Drops the assemblies idle for `lifetime` or longer.
    pub fn expire(&mut self, now: Instant) {
        let Some(oldest) = self.oldest_activity else {
            return;
        };
        if now.saturating_duration_since(oldest) < self.lifetime {
            return;
        }
        let before = self.uploads.len();
        let lifetime = self.lifetime;
        self.uploads
            .retain(|_, a| now.saturating_duration_since(a.last_active) < lifetime);
        self.expired += (before - self.uploads.len()) as u64;
        self.oldest_activity = self.uploads.values().map(|a| a.last_active).min();
    }

    /// Forgets an upload, e.g. when a later block is refused.
    pub fn abandon(&mut self, key: &AssemblyKey) {
        self.uploads.remove(key);
    }

    /// Adds one Block1 request's payload to its upload.
    pub fn receive(
        &mut self,
        key: AssemblyKey,
        block: BlockOption,
        payload: &[u8],
        max_payload: usize,
        now: Instant,
    ) -> BlockProgress {
        if block.more && payload.len() != block.size() {
            self.uploads.remove(&key);
            return BlockProgress::WrongBlockSize;
        }
        if block.num == 0 {
            // Block 0 starts the upload afresh, whatever was received before.
            self.uploads.remove(&key);
            if payload.len() > max_payload {
                return BlockProgress::TooLarge;
            }
            if !block.more {
                return BlockProgress::Complete(payload.to_vec());
            }
            self.make_room(&key.peer);
            self.uploads.insert(
                key,
                Assembly {
                    body: payload.to_vec(),
                    last_active: now,
                },
            );
            self.oldest_activity = Some(self.oldest_activity.map_or(now, |t| t.min(now)));
            return BlockProgress::Continue;
        }
        let Some(assembly) = self.uploads.get_mut(&key) else {
            return BlockProgress::Incomplete;
        };
        if block.offset() != assembly.body.len() {
            self.uploads.remove(&key);
            return BlockProgress::Incomplete;
        }
        if assembly.body.len() + payload.len() > max_payload {
            self.uploads.remove(&key);
            return BlockProgress::TooLarge;
        }
        assembly.body.extend_from_slice(payload);
        assembly.last_active = now;
        if block.more {
            return BlockProgress::Continue;
        }
        match self.uploads.remove(&key) {
            Some(assembly) => BlockProgress::Complete(assembly.body),
            None => BlockProgress::Incomplete,
        }
    }

    /// Evicts the least recently active assembly of `peer` when it has its
    /// share, then the least recently active of all when the table is full.
    fn make_room(&mut self, peer: &Peer) {
        let of_peer = self.uploads.keys().filter(|k| &k.peer == peer).count();
        if of_peer >= self.per_peer {
            self.evict_least_recent(|k| &k.peer == peer);
        }
        if self.uploads.len() >= self.capacity {
            self.evict_least_recent(|_| true);
        }
    }

    fn evict_least_recent(&mut self, eligible: impl Fn(&AssemblyKey) -> bool) {
        let victim = self
            .uploads
            .iter()
            .filter(|(k, _)| eligible(k))
            .min_by_key(|(_, a)| a.last_active)
            .map(|(k, _)| k.clone());
        if let Some(key) = victim {
            self.uploads.remove(&key);
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const MAX: usize = 1000;

    fn key(port: u16, path: &str) -> AssemblyKey {
        AssemblyKey {
            peer: Peer {
                addr: SocketAddr::from(([192, 0, 2, 1], port)),
                identity: None,
            },
            path: vec![path.to_string()],
        }
    }

    fn block(num: u32, more: bool) -> BlockOption {
        BlockOption { num, more, szx: 0 }
    }

    #[test]
    fn block_values_decode_and_encode() {
        let decoded = BlockOption::decode(&[0x01, 0x2A]).expect("valid");
        assert_eq!(
            decoded,
            BlockOption {
                num: 0x12,
                more: true,
                szx: 2
            }
        );
        assert_eq!(decoded.value(), 0x12A);
        assert_eq!(decoded.size(), 64);
        assert_eq!(decoded.offset(), 0x12 * 64);
        assert_eq!(BlockOption::decode(&[]), Ok(block(0, false)));
    }

    #[test]
    fn szx_7_and_long_values_are_errors() {
        assert_eq!(BlockOption::decode(&[0x0F]), Err(BlockError::ReservedSize));
        assert_eq!(
            BlockOption::decode(&[0, 0, 0, 8]),
            Err(BlockError::TooLong(4))
        );
    }

    #[test]
    fn the_largest_block_number_has_a_representable_offset() {
        let last = BlockOption::decode(&[0xFF, 0xFF, 0xF6]).expect("valid");
        assert_eq!(last.num, (1 << 20) - 1);
        assert_eq!(last.offset(), ((1 << 20) - 1) * 1024);
    }

    #[test]
    fn contiguous_blocks_complete_the_body() {
        let mut table = Assemblies::new(4, Duration::from_secs(60));
        let now = Instant::now();
        let a = [b'a'; 16];
        let progress = table.receive(key(1, "p"), block(0, true), &a, MAX, now);
        assert_eq!(progress, BlockProgress::Continue);
        let progress = table.receive(key(1, "p"), block(1, false), b"end", MAX, now);
        assert_eq!(progress, BlockProgress::Complete([&a[..], b"end"].concat()));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn an_idle_assembly_expires_at_its_lifetime() {
        let mut table = Assemblies::new(4, Duration::from_secs(60));
        let start = Instant::now();
        table.receive(key(1, "p"), block(0, true), &[0; 16], MAX, start);
        table.expire(start + Duration::from_millis(59_999));
        assert_eq!(table.len(), 1);
        table.expire(start + Duration::from_secs(60));
        assert_eq!((table.len(), table.expired), (0, 1));
    }

    #[test]
    fn activity_postpones_expiry() {
        let mut table = Assemblies::new(4, Duration::from_secs(60));
        let start = Instant::now();
        table.receive(key(1, "p"), block(0, true), &[0; 16], MAX, start);
        let later = start + Duration::from_secs(50);
        table.receive(key(1, "p"), block(1, true), &[0; 16], MAX, later);
        table.expire(start + Duration::from_secs(100));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_active() {
        let mut table = Assemblies::new(2, Duration::from_secs(60));
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        table.receive(key(1, "p"), block(0, true), &[0; 16], MAX, at(0));
        table.receive(key(2, "p"), block(0, true), &[0; 16], MAX, at(1));
        table.receive(key(1, "p"), block(1, true), &[0; 16], MAX, at(2));
        table.receive(key(3, "p"), block(0, true), &[0; 16], MAX, at(3));
        assert_eq!(table.evicted, 1);
        let progress = table.receive(key(2, "p"), block(1, false), b"x", MAX, at(4));
        assert_eq!(progress, BlockProgress::Incomplete, "peer 2 was evicted");
        let progress = table.receive(key(1, "p"), block(2, false), b"x", MAX, at(4));
        assert!(matches!(progress, BlockProgress::Complete(_)));
    }

    #[test]
    fn one_peer_cannot_hold_more_than_its_share() {
        let mut table = Assemblies::new(100, Duration::from_secs(60));
        let now = Instant::now();
        for path in ["a", "b", "c", "d", "e", "f"] {
            table.receive(key(1, path), block(0, true), &[0; 16], MAX, now);
        }
        assert_eq!(table.len(), ASSEMBLIES_PER_PEER);
        assert_eq!(table.evicted, 2);
    }
}
