//! No input panics the exchange or grows its tables past their bounds
//! (docs/ARCHITECTURE.md, invariant 5). A deterministic xorshift generator feeds random
//! bytes, mutated requests and random block-wise uploads.

use super::*;

/// xorshift64: deterministic, no crates, good enough to wander.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

const DEDUP_CAPACITY: usize = 64;
const BLOCK_CAPACITY: usize = 8;

fn small_harness() -> Harness {
    Harness::with_config(ExchangeConfig {
        max_payload: 256,
        dedup_capacity: DEDUP_CAPACITY,
        block_capacity: BLOCK_CAPACITY,
        block_lifetime: Duration::from_secs(30),
        full_retry_after_s: 5,
        max_packet_size: 262_144,
        mailbox: Some("cmd".into()),
    })
}

/// A datagram that is random, a valid request with bytes flipped, or a
/// valid block of a random upload: each reaches different code.
fn datagram(rng: &mut Xorshift) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let len = rng.below(48) as usize;
            rng.bytes(len)
        }
        1 => {
            // A version-1 header, then noise: gets past the first checks.
            let mut bytes = vec![0x40 | (rng.byte() & 0x3f), rng.byte() & 0x1f];
            let len = rng.below(40) as usize;
            bytes.extend(rng.bytes(len + 2));
            bytes
        }
        2 => {
            let mut bytes = Request::post(rng.below(32) as u16)
                .option(258, &[rng.byte()])
                .payload(&rng.bytes(8))
                .bytes();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.byte();
            }
            let keep = rng.below(bytes.len() as u64 + 1) as usize;
            bytes.truncate(keep.max(4));
            bytes
        }
        _ => {
            let szx = rng.below(8) as u8;
            let num = rng.below(6) as u32;
            let more = rng.below(3) != 0;
            let len = if more && rng.below(4) != 0 {
                16usize << szx.min(6)
            } else {
                rng.below(40) as usize
            };
            let path = ["sensors/a", "sensors/b", "sensors/c", "nowhere"][rng.below(4) as usize];
            let mut request = Request::post(rng.next() as u16)
                .path(path)
                .block1(num, more, szx)
                .payload(&rng.bytes(len));
            if rng.below(2) == 0 {
                request = request.non();
            }
            request.bytes()
        }
    }
}

#[test]
fn random_datagrams_never_panic_and_tables_stay_bounded() {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut h = small_harness();
    let mut pending = Vec::new();
    let mut clock = Duration::ZERO;
    let rounds = 40_000;
    for _ in 0..rounds {
        clock += Duration::from_millis(rng.below(50));
        let from = peer(rng.below(24) as u16);
        let bytes = datagram(&mut rng);
        match h.send_from(&from, &bytes, clock) {
            Step::Reply(reply) => {
                assert!(reply.len() <= crate::coap::wire::MAX_RESPONSE_LEN);
                Answer::decode(&reply);
            }
            Step::Store { ticket, messages } => {
                assert!(messages.iter().all(|m| m.payload.len() <= 256));
                pending.push(ticket);
            }
            Step::Mailbox { ticket, .. } => {
                let reply = h.exchange.on_mailbox(
                    ticket,
                    crate::coap::mailbox::MailboxAnswer::Command(crate::coap::mailbox::Carried {
                        id: 1,
                        resource: "r".repeat(300),
                        payload: vec![1; 64],
                    }),
                );
                if let Some(reply) = reply {
                    Answer::decode(&reply);
                }
            }
            Step::Ignore(_) => {}
        }
        if rng.below(3) == 0 {
            if let Some(ticket) = pending.pop() {
                let outcome = [
                    StoreOutcome::Stored,
                    StoreOutcome::Full,
                    StoreOutcome::Failed,
                ][rng.below(3) as usize];
                let now = h.start + clock;
                if let Some(reply) = h.exchange.on_stored(ticket, outcome, now) {
                    Answer::decode(&reply);
                }
            }
        }
        assert!(h.exchange.dedup_len() <= DEDUP_CAPACITY);
        assert!(h.exchange.uploads_len() <= BLOCK_CAPACITY);
    }
    let c = h.counters();
    assert_eq!(c.datagrams, rounds);
    assert!(
        c.malformed > 0 && c.requests > 0 && c.block_continues > 0,
        "{c:?}"
    );
    assert!(c.handed_to_store > 0 && c.block_incomplete > 0, "{c:?}");
}

#[test]
fn message_ids_from_many_peers_stay_within_capacity() {
    let mut h = small_harness();
    let request = Request::post(0).path("nowhere");
    let mut bytes = request.bytes();
    for i in 0..200_000u32 {
        bytes[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        let from = peer((i % 1000) as u16);
        h.send_from(&from, &bytes, Duration::from_micros(u64::from(i)));
    }
    assert!(h.exchange.dedup_len() <= DEDUP_CAPACITY);
    assert!(h.counters().dedup_evictions > 0);
}

#[test]
fn exchange_tickets_and_steps_can_move_between_tasks() {
    fn movable<T: Send + 'static>() {}
    movable::<Exchange>();
    movable::<Ticket>();
    movable::<Step>();
    assert!(
        std::mem::size_of::<Ticket>() <= 96,
        "a ticket stays small: {}",
        std::mem::size_of::<Ticket>()
    );
}
