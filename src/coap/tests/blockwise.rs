//! Block-wise uploads (RFC 7959 Block1): 2.31 per non-final block, one
//! stored message with the whole body at the last block.

use super::*;

/// Block `num` of an upload in 16-byte blocks (SZX 0) to `sensors/d7`.
fn block(message_id: u16, num: u32, more: bool, payload: &[u8]) -> Request {
    Request::post(message_id)
        .block1(num, more, 0)
        .payload(payload)
}

fn sixteen(byte: u8) -> [u8; 16] {
    [byte; 16]
}

#[test]
fn each_non_final_block_is_answered_2_31_echoing_block1() {
    let mut h = Harness::new();
    let answer = expect_reply(h.send(&block(1, 0, true, &sixteen(b'a')).bytes()));
    assert_ack(&answer, "2.31", 1);
    assert_eq!(answer.block1(), Some((0, true, 0)));
    let answer = expect_reply(h.send(&block(2, 1, true, &sixteen(b'b')).bytes()));
    assert_eq!(answer.block1(), Some((1, true, 0)));
    assert_eq!(h.counters().block_continues, 2);
}

#[test]
fn an_upload_is_stored_once_with_the_whole_body() {
    let mut h = Harness::new();
    h.send(&block(1, 0, true, &sixteen(b'a')).bytes());
    h.send(&block(2, 1, true, &sixteen(b'b')).bytes());
    let (ticket, message) = expect_store(h.send(&block(3, 2, false, b"end").bytes()));
    let expected = [&sixteen(b'a')[..], &sixteen(b'b')[..], b"end"].concat();
    assert_eq!(message.payload, expected);
    assert_eq!(message.topic, "site/gw1/d7");
    assert_eq!(h.counters().handed_to_store, 1);
    assert_eq!(h.exchange.uploads_len(), 0);
    let answer = Answer::decode(&h.stored(ticket, StoreOutcome::Stored).expect("answered"));
    assert_ack(&answer, "2.04", 3);
    assert_eq!(answer.block1(), Some((2, false, 0)));
}

#[test]
fn larger_blocks_reassemble_too() {
    let mut h = Harness::new();
    let first = [1u8; 1024];
    let request = Request::post(1).block1(0, true, 6).payload(&first);
    assert_eq!(
        expect_reply(h.send(&request.bytes())).block1(),
        Some((0, true, 6))
    );
    let request = Request::post(2).block1(1, false, 6).payload(&[2; 100]);
    let (_, message) = expect_store(h.send(&request.bytes()));
    assert_eq!(message.payload.len(), 1124);
}

#[test]
fn a_single_block_upload_is_stored_and_echoed() {
    let mut h = Harness::new();
    let bytes = h.store_and_answer(&block(1, 0, false, b"all").bytes(), StoreOutcome::Stored);
    let answer = Answer::decode(&bytes.expect("answered"));
    assert_eq!(answer.code(), "2.04");
    assert_eq!(answer.block1(), Some((0, false, 0)));
}

#[test]
fn a_retransmitted_block_gets_the_same_2_31_and_is_not_appended_twice() {
    let mut h = Harness::new();
    let first = block(1, 0, true, &sixteen(b'a')).bytes();
    let continue_bytes = expect_reply_bytes(h.send(&first));
    assert_eq!(expect_reply_bytes(h.send(&first)), continue_bytes);
    let (_, message) = expect_store(h.send(&block(2, 1, false, b"z").bytes()));
    assert_eq!(message.payload.len(), 17);
}

#[test]
fn a_gap_is_4_08_and_drops_the_upload() {
    let mut h = Harness::new();
    h.send(&block(1, 0, true, &sixteen(b'a')).bytes());
    let answer = expect_reply(h.send(&block(2, 2, true, &sixteen(b'c')).bytes()));
    assert_ack(&answer, "4.08", 2);
    assert_eq!(h.exchange.uploads_len(), 0);
    let answer = expect_reply(h.send(&block(3, 1, false, b"b").bytes()));
    assert_eq!(answer.code(), "4.08", "the upload is gone");
    assert_eq!(h.counters().block_incomplete, 2);
}

#[test]
fn a_block_without_an_upload_is_4_08() {
    let answer = answer_to(block(1, 3, false, b"tail"));
    assert_ack(&answer, "4.08", 1);
}

#[test]
fn the_largest_block_number_without_an_upload_is_4_08() {
    let request = Request::post(1)
        .block1((1 << 20) - 1, false, 6)
        .payload(b"x");
    assert_ack(&answer_to(request), "4.08", 1);
}

#[test]
fn block_zero_restarts_an_upload() {
    let mut h = Harness::new();
    h.send(&block(1, 0, true, &sixteen(b'a')).bytes());
    h.send(&block(2, 1, true, &sixteen(b'b')).bytes());
    h.send(&block(3, 0, true, &sixteen(b'x')).bytes());
    let (_, message) = expect_store(h.send(&block(4, 1, false, b"y").bytes()));
    assert_eq!(message.payload, [&sixteen(b'x')[..], b"y"].concat());
}

#[test]
fn an_upload_growing_past_max_payload_is_4_13_with_size1() {
    let config = ExchangeConfig {
        max_payload: 40,
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    h.send(&block(1, 0, true, &sixteen(b'a')).bytes());
    h.send(&block(2, 1, true, &sixteen(b'b')).bytes());
    let answer = expect_reply(h.send(&block(3, 2, true, &sixteen(b'c')).bytes()));
    assert_ack(&answer, "4.13", 3);
    assert_eq!(answer.uint_option(60), Some(40));
    assert_eq!(h.exchange.uploads_len(), 0);
}

#[test]
fn size1_announcing_too_much_is_4_13_at_block_zero() {
    let config = ExchangeConfig {
        max_payload: 40,
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    let request = block(1, 0, true, &sixteen(b'a')).option(60, &[41]);
    let answer = expect_reply(h.send(&request.bytes()));
    assert_ack(&answer, "4.13", 1);
    assert_eq!(answer.uint_option(60), Some(40));
    assert_eq!(h.exchange.uploads_len(), 0);
}

#[test]
fn size1_within_max_payload_is_accepted() {
    let request = block(1, 0, true, &sixteen(b'a')).option(60, &[64]);
    assert_eq!(answer_to(request).code(), "2.31");
}

#[test]
fn szx_7_is_4_00() {
    let request = Request::post(1).option(27, &[0x0f]).payload(b"x");
    assert_ack(&answer_to(request), "4.00", 1);
}

#[test]
fn a_block1_longer_than_3_bytes_is_4_02() {
    let request = Request::post(1).option(27, &[0, 0, 0, 0x08]).payload(b"x");
    assert_ack(&answer_to(request), "4.02", 1);
}

#[test]
fn a_non_final_block_of_the_wrong_size_is_4_00() {
    let answer = answer_to(block(1, 0, true, &[0; 15]));
    assert_ack(&answer, "4.00", 1);
}

#[test]
fn an_upload_to_a_path_without_a_route_is_refused_at_block_zero() {
    let mut h = Harness::new();
    let request = block(1, 0, true, &sixteen(b'a')).path("nowhere");
    assert_ack(&expect_reply(h.send(&request.bytes())), "4.04", 1);
    assert_eq!(h.exchange.uploads_len(), 0);
}

#[test]
fn an_upload_with_a_method_the_route_refuses_is_refused_at_block_zero() {
    let request = block(1, 0, true, &sixteen(b'a')).method(RequestType::Delete);
    assert_eq!(answer_to(request).code(), "4.05");
}

#[test]
fn uploads_from_two_peers_to_one_path_are_kept_apart() {
    let mut h = Harness::new();
    let other = peer(40_001);
    h.send(&block(1, 0, true, &sixteen(b'a')).bytes());
    h.send_from(
        &other,
        &block(1, 0, true, &sixteen(b'o')).bytes(),
        Duration::ZERO,
    );
    let (_, mine) = expect_store(h.send(&block(2, 1, false, b"!").bytes()));
    assert_eq!(mine.payload, [&sixteen(b'a')[..], b"!"].concat());
}

#[test]
fn uploads_are_bounded_in_number_evicting_the_least_recently_active() {
    let config = ExchangeConfig {
        block_capacity: 2,
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    let second = Duration::from_secs(1);
    for (port, at) in [(1, 0), (2, 1), (3, 2)] {
        let request = block(1, 0, true, &sixteen(b'a')).bytes();
        h.send_from(&peer(port), &request, second * at);
    }
    assert_eq!(h.exchange.uploads_len(), 2);
    assert_eq!(h.counters().block_evictions, 1);
    let last = block(2, 1, false, b"!").bytes();
    let evicted = expect_reply(h.send_from(&peer(1), &last, second * 3));
    assert_eq!(evicted.code(), "4.08");
    expect_store(h.send_from(&peer(2), &last, second * 3));
}

#[test]
fn an_idle_upload_expires_after_block_lifetime() {
    let config = ExchangeConfig {
        block_lifetime: Duration::from_secs(120),
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    h.send(&block(1, 0, true, &sixteen(b'a')).bytes());
    h.send_at(
        &Request::post(2).path("nowhere").bytes(),
        Duration::from_secs(120),
    );
    assert_eq!(h.exchange.uploads_len(), 0);
    assert_eq!(h.counters().block_expired, 1);
    let late = h.send_at(&block(3, 1, false, b"!").bytes(), Duration::from_secs(121));
    assert_eq!(expect_reply(late).code(), "4.08");
}

#[test]
fn an_upload_active_within_block_lifetime_survives() {
    let mut h = Harness::new();
    let at = Duration::from_secs;
    h.send_at(&block(1, 0, true, &sixteen(b'a')).bytes(), at(0));
    h.send_at(&block(2, 1, true, &sixteen(b'b')).bytes(), at(100));
    let step = h.send_at(&block(3, 2, false, b"!").bytes(), at(200));
    assert_eq!(expect_store(step).1.payload.len(), 33);
}

#[test]
fn a_non_confirmable_upload_gets_non_2_31_answers() {
    let mut h = Harness::new();
    let answer = expect_reply(h.send(&block(1, 0, true, &sixteen(b'a')).non().bytes()));
    assert_eq!(answer.message_type(), MessageType::NonConfirmable);
    assert_eq!(answer.code(), "2.31");
    let (_, message) = expect_store(h.send(&block(2, 1, false, b"!").non().bytes()));
    assert_eq!(message.payload.len(), 17);
}
