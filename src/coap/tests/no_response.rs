//! No-Response (RFC 7967): a device may say which answers it does not want.
//! A suppressed answer to a CON becomes an empty ACK; to a NON, nothing.

use super::*;

const NOT_2XX: u8 = 2;
const NOT_4XX: u8 = 8;
const NOT_5XX: u8 = 16;

#[test]
fn no_response_2_suppresses_the_2_04_of_a_non() {
    let mut h = Harness::new();
    let request = Request::post(1).non().no_response(NOT_2XX);
    assert_eq!(
        h.store_and_answer(&request.bytes(), StoreOutcome::Stored),
        None
    );
    assert_eq!(h.counters().responses_suppressed, 1);
}

#[test]
fn no_response_2_still_stores_the_message() {
    let mut h = Harness::new();
    let request = Request::post(1).non().no_response(NOT_2XX).payload(b"x");
    assert_eq!(expect_store(h.send(&request.bytes())).1.payload, b"x");
}

#[test]
fn no_response_2_turns_the_2_04_of_a_con_into_an_empty_ack() {
    let mut h = Harness::new();
    let request = Request::post(0x3001).no_response(NOT_2XX);
    let bytes = h.store_and_answer(&request.bytes(), StoreOutcome::Stored);
    assert_eq!(bytes, Some(vec![0x60, 0x00, 0x30, 0x01]));
    assert_eq!(h.counters().empty_acks_sent, 1);
}

#[test]
fn the_empty_ack_is_what_a_retransmission_gets_again() {
    let mut h = Harness::new();
    let request = Request::post(0x3002).no_response(NOT_2XX).bytes();
    let first = h.store_and_answer(&request, StoreOutcome::Stored);
    assert_eq!(Some(expect_reply_bytes(h.send(&request))), first);
}

#[test]
fn no_response_8_suppresses_a_4_04_to_a_non() {
    let mut h = Harness::new();
    let request = Request::post(2).non().path("nowhere").no_response(NOT_4XX);
    let step = h.send(&request.bytes());
    assert_eq!(expect_ignored(step), Ignored::ResponseSuppressed);
}

#[test]
fn no_response_8_turns_a_4_04_to_a_con_into_an_empty_ack() {
    let mut h = Harness::new();
    let request = Request::post(0x3003).path("nowhere").no_response(NOT_4XX);
    assert_eq!(
        expect_reply_bytes(h.send(&request.bytes())),
        [0x60, 0x00, 0x30, 0x03]
    );
}

#[test]
fn no_response_8_does_not_suppress_a_2_04() {
    let mut h = Harness::new();
    let request = Request::post(3).non().no_response(NOT_4XX);
    let bytes = h.store_and_answer(&request.bytes(), StoreOutcome::Stored);
    assert_eq!(Answer::decode(&bytes.expect("answered")).code(), "2.04");
}

#[test]
fn no_response_16_suppresses_a_5_03_to_a_non() {
    let mut h = Harness::new();
    let request = Request::post(4).non().no_response(NOT_5XX);
    assert_eq!(
        h.store_and_answer(&request.bytes(), StoreOutcome::Full),
        None
    );
}

#[test]
fn no_response_0_wants_every_answer() {
    let mut h = Harness::new();
    let request = Request::post(5).non().no_response(0);
    assert!(h
        .store_and_answer(&request.bytes(), StoreOutcome::Stored)
        .is_some());
}

#[test]
fn an_empty_no_response_wants_every_answer() {
    let mut h = Harness::new();
    let request = Request::post(6).non().option(258, &[]);
    assert!(h
        .store_and_answer(&request.bytes(), StoreOutcome::Stored)
        .is_some());
}

#[test]
fn no_response_26_suppresses_every_class() {
    let mut h = Harness::new();
    let all = NOT_2XX | NOT_4XX | NOT_5XX;
    let stored = Request::post(7).non().no_response(all);
    assert_eq!(
        h.store_and_answer(&stored.bytes(), StoreOutcome::Stored),
        None
    );
    let refused = Request::post(8).non().path("nowhere").no_response(all);
    assert_eq!(
        expect_ignored(h.send(&refused.bytes())),
        Ignored::ResponseSuppressed
    );
    let failed = Request::post(9).non().no_response(all);
    assert_eq!(
        h.store_and_answer(&failed.bytes(), StoreOutcome::Failed),
        None
    );
}

#[test]
fn a_suppressed_non_does_not_use_a_message_id() {
    let mut h = Harness::new();
    let quiet = Request::post(1).non().no_response(NOT_2XX);
    h.store_and_answer(&quiet.bytes(), StoreOutcome::Stored);
    let loud = h.store_and_answer(&Request::post(2).non().bytes(), StoreOutcome::Stored);
    let answer = Answer::decode(&loud.expect("answered"));
    assert_eq!(answer.message_id(), FIRST_MESSAGE_ID);
}
