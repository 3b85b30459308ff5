//! Deduplication (RFC 7252 §4.5): retransmissions are answered again, never
//! stored again, for EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON).

use super::*;
use crate::coap::dedup::{EXCHANGE_LIFETIME, NON_LIFETIME};

const JUST_BEFORE: Duration = Duration::from_nanos(1);

#[test]
fn a_confirmable_retransmission_gets_the_same_answer_bytes() {
    let mut h = Harness::new();
    let request = Request::post(0x2000).bytes();
    let first = h.store_and_answer(&request, StoreOutcome::Stored);
    let again = expect_reply_bytes(h.send_at(&request, Duration::from_secs(2)));
    assert_eq!(Some(again), first);
    assert_eq!(h.counters().duplicates_answered, 1);
    assert_eq!(h.counters().handed_to_store, 1);
}

#[test]
fn a_confirmable_retransmission_while_the_store_is_busy_is_ignored() {
    let mut h = Harness::new();
    let request = Request::post(0x2001).bytes();
    let (ticket, _) = expect_store(h.send(&request));
    let step = h.send_at(&request, Duration::from_secs(2));
    assert_eq!(expect_ignored(step), Ignored::DuplicatePending);
    assert!(h.stored(ticket, StoreOutcome::Stored).is_some());
    assert_eq!(h.counters().handed_to_store, 1);
}

#[test]
fn a_confirmable_duplicate_is_recognised_until_just_before_exchange_lifetime() {
    let mut h = Harness::new();
    let request = Request::post(0x2002).bytes();
    let first = h.store_and_answer(&request, StoreOutcome::Stored);
    let late = h.send_at(&request, EXCHANGE_LIFETIME - JUST_BEFORE);
    assert_eq!(Some(expect_reply_bytes(late)), first);
}

#[test]
fn a_confirmable_message_id_is_new_again_at_exchange_lifetime() {
    let mut h = Harness::new();
    let request = Request::post(0x2003).bytes();
    h.store_and_answer(&request, StoreOutcome::Stored);
    assert_eq!(EXCHANGE_LIFETIME, Duration::from_secs(247));
    expect_store(h.send_at(&request, EXCHANGE_LIFETIME));
}

#[test]
fn a_non_confirmable_duplicate_is_ignored_until_just_before_non_lifetime() {
    let mut h = Harness::new();
    let request = Request::post(0x2004).non().bytes();
    h.store_and_answer(&request, StoreOutcome::Stored);
    let late = h.send_at(&request, NON_LIFETIME - JUST_BEFORE);
    assert_eq!(expect_ignored(late), Ignored::Duplicate);
    assert_eq!(h.counters().duplicates_dropped, 1);
}

#[test]
fn a_non_confirmable_message_id_is_new_again_at_non_lifetime() {
    let mut h = Harness::new();
    let request = Request::post(0x2005).non().bytes();
    h.store_and_answer(&request, StoreOutcome::Stored);
    assert_eq!(NON_LIFETIME, Duration::from_secs(145));
    expect_store(h.send_at(&request, NON_LIFETIME));
}

#[test]
fn a_non_confirmable_duplicate_while_pending_is_ignored() {
    let mut h = Harness::new();
    let request = Request::post(0x2006).non().bytes();
    expect_store(h.send(&request));
    assert_eq!(expect_ignored(h.send(&request)), Ignored::Duplicate);
}

#[test]
fn a_retransmitted_refusal_gets_the_same_refusal() {
    let mut h = Harness::new();
    let request = Request::post(0x2007).path("nowhere").bytes();
    let first = expect_reply_bytes(h.send(&request));
    assert_eq!(expect_reply_bytes(h.send(&request)), first);
    assert_eq!(h.counters().not_found, 1);
}

#[test]
fn a_retransmission_after_a_full_store_gets_the_same_5_03() {
    let mut h = Harness::new();
    let request = Request::post(0x2008).bytes();
    let first = h.store_and_answer(&request, StoreOutcome::Full);
    assert_eq!(Some(expect_reply_bytes(h.send(&request))), first);
}

#[test]
fn the_same_message_id_from_another_port_is_a_new_request() {
    let mut h = Harness::new();
    let request = Request::post(0x2009).bytes();
    expect_store(h.send(&request));
    expect_store(h.send_from(&peer(40_001), &request, Duration::ZERO));
}

#[test]
fn the_same_message_id_from_another_identity_is_a_new_request() {
    let mut h = Harness::new();
    let request = Request::post(0x200a).bytes();
    expect_store(h.send_from(&peer_with_identity(40_000, "a"), &request, Duration::ZERO));
    expect_store(h.send_from(&peer_with_identity(40_000, "b"), &request, Duration::ZERO));
}

#[test]
fn an_evicted_entry_lets_a_late_retransmission_be_stored_again() {
    let config = ExchangeConfig {
        dedup_capacity: 4,
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    let first = Request::post(0).bytes();
    h.store_and_answer(&first, StoreOutcome::Stored);
    for port in 1..=4 {
        let other = peer(port);
        expect_store(h.send_from(&other, &Request::post(port).bytes(), Duration::ZERO));
    }
    assert_eq!(h.exchange.dedup_len(), 4);
    assert_eq!(h.counters().dedup_evictions, 1);
    expect_store(h.send(&first));
}

#[test]
fn a_flooding_peer_evicts_its_own_entries_not_those_of_others() {
    let config = ExchangeConfig {
        dedup_capacity: 16,
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    let mine = Request::post(0xaaaa).bytes();
    let answer = h.store_and_answer(&mine, StoreOutcome::Stored);
    let flooder = peer(666);
    for message_id in 0..1000 {
        let request = Request::post(message_id).path("nowhere").bytes();
        h.send_from(&flooder, &request, Duration::ZERO);
    }
    assert_eq!(Some(expect_reply_bytes(h.send(&mine))), answer);
    assert_eq!(h.counters().dedup_evictions, 0);
    assert!(h.counters().dedup_peer_evictions >= 990);
}

#[test]
fn an_answer_after_the_entry_expired_is_still_sent() {
    let mut h = Harness::new();
    let (ticket, _) = expect_store(h.send(&Request::post(0x200b).bytes()));
    let late = h.start + EXCHANGE_LIFETIME * 2;
    let bytes = h.exchange.on_stored(ticket, StoreOutcome::Stored, late);
    assert_ack(&Answer::decode(&bytes.expect("answered")), "2.04", 0x200b);
    assert_eq!(h.exchange.dedup_len(), 0);
}

#[test]
fn a_message_id_reused_with_another_token_is_a_new_request() {
    // A device that rebooted starts its Message IDs again: same peer, same
    // ID, another token, another reading. It must be stored and answered
    // with its own token, not told "stored" with the earlier answer.
    let mut h = Harness::new();
    let before = Request::post(0x2010)
        .token(&[1, 1])
        .payload(b"before")
        .bytes();
    h.store_and_answer(&before, StoreOutcome::Stored);
    let after = Request::post(0x2010)
        .token(&[2, 2])
        .payload(b"after")
        .bytes();
    let (ticket, message) = expect_store(h.send_at(&after, Duration::from_secs(30)));
    assert_eq!(message.payload, b"after");
    let answer = Answer::decode(&h.stored(ticket, StoreOutcome::Stored).expect("answered"));
    assert_ack_with_token(&answer, "2.04", 0x2010, &[2, 2]);
    assert_eq!(h.counters().message_ids_reused, 1);
    assert_eq!(h.counters().handed_to_store, 2);
    assert_eq!(h.counters().duplicates_answered, 0);
    // The new request is the one remembered now: its retransmission gets
    // its answer again, and is not stored twice.
    let again = expect_reply(h.send_at(&after, Duration::from_secs(32)));
    assert_eq!(again.token(), &[2, 2]);
    assert_eq!(h.counters().duplicates_answered, 1);
    assert_eq!(h.counters().handed_to_store, 2);
}

#[test]
fn a_message_id_reused_while_the_first_is_pending_waits_for_a_retransmission() {
    // The store has not answered the first request yet: the second is
    // ignored (its device retransmits), and once the first is answered the
    // retransmission is taken as new.
    let mut h = Harness::new();
    let first = Request::post(0x2011).token(&[1]).bytes();
    let (ticket, _) = expect_store(h.send(&first));
    let second = Request::post(0x2011).token(&[2]).payload(b"second").bytes();
    let step = h.send_at(&second, Duration::from_secs(1));
    assert_eq!(expect_ignored(step), Ignored::DuplicatePending);
    h.stored(ticket, StoreOutcome::Stored);
    let (_, message) = expect_store(h.send_at(&second, Duration::from_secs(3)));
    assert_eq!(message.payload, b"second");
}
