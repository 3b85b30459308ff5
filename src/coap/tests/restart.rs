//! Deduplication across a restart: a request stored before the gateway
//! died is recognised by the next exchange from its [`Recall`], so the
//! device's retransmission gets the same 2.04 and is not stored again.

use super::*;
use crate::coap::dedup::{EXCHANGE_LIFETIME, NON_LIFETIME};
use crate::coap::recall::Recall;

/// Stores `request` in one exchange and returns its answer and the recall
/// the store would have kept (through its encoding, as the store does).
fn stored_before_restart(request: &[u8]) -> (Option<Vec<u8>>, Recall) {
    let mut before = Harness::new();
    let (ticket, _) = expect_store(before.send(request));
    let recall = Recall::decode(&ticket.recall().encode()).expect("recall decodes");
    (before.stored(ticket, StoreOutcome::Stored), recall)
}

fn restarted_with(recall: Recall, age: Duration) -> Harness {
    let mut after = Harness::new();
    after.exchange.recall(vec![(recall, age)], after.start);
    after
}

#[test]
fn a_confirmable_retransmission_after_a_restart_gets_the_same_answer_bytes() {
    let request = Request::post(0x3100).bytes();
    let (first, recall) = stored_before_restart(&request);
    let mut after = restarted_with(recall, Duration::from_secs(5));
    let again = expect_reply_bytes(after.send(&request));
    assert_eq!(Some(again), first);
    assert_eq!(after.counters().handed_to_store, 0);
    assert_eq!(after.counters().duplicates_answered, 1);
}

#[test]
fn the_last_block_of_an_upload_is_answered_again_with_its_block1() {
    let request = Request::post(0x3101)
        .block1(1, false, 0)
        .payload(b"tail")
        .bytes();
    let mut before = Harness::new();
    let first_block = Request::post(0x3102)
        .block1(0, true, 0)
        .payload(&[7u8; 16])
        .bytes();
    expect_reply(before.send(&first_block));
    let (ticket, _) = expect_store(before.send(&request));
    let recall = Recall::decode(&ticket.recall().encode()).expect("recall decodes");
    let first = before.stored(ticket, StoreOutcome::Stored);
    let mut after = restarted_with(recall, Duration::from_secs(1));
    let again = expect_reply_bytes(after.send(&request));
    assert_eq!(Some(again.clone()), first);
    assert_eq!(Answer::decode(&again).block1(), Some((1, false, 0)));
}

#[test]
fn a_recall_older_than_exchange_lifetime_is_forgotten() {
    let request = Request::post(0x3103).bytes();
    let (_, recall) = stored_before_restart(&request);
    let mut after = restarted_with(recall, EXCHANGE_LIFETIME);
    expect_store(after.send(&request));
}

#[test]
fn a_recall_expires_when_its_lifetime_would_have_ended() {
    let request = Request::post(0x3104).bytes();
    let (_, recall) = stored_before_restart(&request);
    let mut after = restarted_with(recall, Duration::from_secs(200));
    assert!(matches!(
        after.send_at(&request, Duration::from_secs(46)),
        Step::Reply(_)
    ));
    expect_store(after.send_at(&request, Duration::from_secs(47)));
}

#[test]
fn a_non_confirmable_duplicate_after_a_restart_is_dropped() {
    let request = Request::post(0x3105).non().bytes();
    let (_, recall) = stored_before_restart(&request);
    let mut after = restarted_with(recall, NON_LIFETIME - Duration::from_secs(1));
    assert_eq!(expect_ignored(after.send(&request)), Ignored::Duplicate);
    assert_eq!(after.counters().handed_to_store, 0);
}

#[test]
fn a_recall_does_not_cover_another_peer_or_message_id() {
    let request = Request::post(0x3106).bytes();
    let (_, recall) = stored_before_restart(&request);
    let mut after = restarted_with(recall, Duration::from_secs(1));
    expect_store(after.send(&Request::post(0x3107).bytes()));
    expect_store(after.send_from(&peer(40_001), &request, Duration::ZERO));
}

#[test]
fn no_response_is_honoured_on_the_repeated_answer() {
    let request = Request::post(0x3108).no_response(2).bytes();
    let (first, recall) = stored_before_restart(&request);
    let mut after = restarted_with(recall, Duration::from_secs(1));
    let again = expect_reply_bytes(after.send(&request));
    assert_eq!(Some(again.clone()), first);
    assert_eq!(Answer::decode(&again).code(), "0.00");
}

#[test]
fn a_message_id_reused_with_another_token_after_a_restart_is_stored() {
    // The gateway and the device both restarted: the device's first IDs
    // match recalled ones, with new tokens and new readings.
    let (_, recall) = stored_before_restart(&Request::post(0x3110).token(&[9, 9]).bytes());
    let mut after = restarted_with(recall, Duration::from_secs(20));
    let reading = Request::post(0x3110)
        .token(&[4, 2])
        .payload(b"new reading")
        .bytes();
    let (ticket, message) = expect_store(after.send(&reading));
    assert_eq!(message.payload, b"new reading");
    let answer = Answer::decode(
        &after
            .stored(ticket, StoreOutcome::Stored)
            .expect("answered"),
    );
    assert_ack_with_token(&answer, "2.04", 0x3110, &[4, 2]);
    assert_eq!(after.counters().message_ids_reused, 1);
}
