//! The heap the deduplication table takes per remembered exchange,
//! counted by a counting allocator (not estimated): the table filled to
//! its default capacity (65,536) by many requests from few peers (64
//! devices, the usual gateway) and by one request from each of 65,536
//! peers (the worst case: each peer's address is interned for one entry).
//! Prints one JSON object; `scripts/bench` records it.

use coap2mqtt::coap::dedup::{DedupKey, DedupTable, Lifetime, Remembered, Reply, ReplyOption};
use coap2mqtt::coap::wire::Token;
use coap2mqtt::coap::Peer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CAPACITY: usize = 65_536;

/// Heap bytes per entry of a table filled with `CAPACITY` answered CON
/// requests spread over `peers` peers.
fn per_entry(peers: u32) -> f64 {
    let now = Instant::now();
    let before = LIVE.load(Ordering::Relaxed);
    let mut table = DedupTable::new(CAPACITY);
    for i in 0..CAPACITY as u32 {
        let p = i % peers;
        let peer = Peer {
            addr: SocketAddr::from(([10, (p >> 16) as u8, (p >> 8) as u8, p as u8], 5683)),
            identity: None,
        };
        let key = DedupKey {
            peer,
            message_id: (i / peers) as u16,
        };
        let reply = Reply {
            code: 0x44,
            token: Token::new(&i.to_be_bytes()).unwrap_or_default(),
            option: ReplyOption::None,
        };
        table.remember(key, Remembered::Answered(reply), Lifetime::Confirmable, now);
    }
    assert_eq!(table.len(), CAPACITY);
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let per = bytes as f64 / CAPACITY as f64;
    drop(table);
    per
}

fn main() {
    let few = per_entry(64);
    let many = per_entry(CAPACITY as u32);
    println!(
        "{{\"entries\": {CAPACITY}, \"bytes_per_entry_64_peers\": {few:.1}, \"bytes_per_entry_one_per_peer\": {many:.1}}}"
    );
}
