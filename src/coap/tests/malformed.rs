//! Datagrams that are not (valid) CoAP: ignored without a header, reset when
//! Confirmable (RFC 7252 §4.2), ignored otherwise (§4.3).

use super::*;

#[test]
fn datagrams_shorter_than_a_header_are_ignored() {
    let mut h = Harness::new();
    for datagram in [&[][..], &[0x40], &[0x40, 0x02], &[0x40, 0x02, 0x00]] {
        assert_eq!(expect_ignored(h.send(datagram)), Ignored::Undecodable);
    }
    assert_eq!(h.counters().undecodable, 4);
}

#[test]
fn versions_other_than_1_are_ignored() {
    let mut h = Harness::new();
    let mut request = Request::post(1).bytes();
    for version in [0u8, 2, 3] {
        request[0] = (request[0] & 0x3f) | (version << 6);
        assert_eq!(expect_ignored(h.send(&request)), Ignored::WrongVersion);
    }
    assert_eq!(h.counters().wrong_version, 3);
    assert_eq!(h.counters().requests, 0);
}

#[test]
fn token_lengths_9_to_15_are_reset() {
    let mut h = Harness::new();
    for token_len in 9u8..=15 {
        let mut datagram = vec![0x40 | token_len, 0x02, 0x12, token_len];
        datagram.extend(std::iter::repeat_n(0xaa, usize::from(token_len)));
        let bytes = expect_reply_bytes(h.send(&datagram));
        assert_reset(&bytes, 0x1200 | u16::from(token_len));
    }
    assert_eq!(h.counters().malformed, 7);
}

#[test]
fn a_reserved_token_length_in_a_non_is_ignored() {
    let mut h = Harness::new();
    let step = h.send(&[0x59, 0x02, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(expect_ignored(step), Ignored::Malformed);
}

#[test]
fn a_truncated_token_is_reset() {
    let mut h = Harness::new();
    assert_reset(&expect_reply_bytes(h.send(&[0x44, 0x02, 0, 9, 1, 2])), 9);
}

#[test]
fn a_payload_marker_with_an_empty_payload_is_reset() {
    let mut h = Harness::new();
    let mut datagram = Request::post(0x0bad).bytes();
    datagram.push(0xff);
    assert_reset(&expect_reply_bytes(h.send(&datagram)), 0x0bad);
    assert_eq!(h.counters().requests, 0);
}

#[test]
fn a_payload_marker_with_an_empty_payload_in_a_non_is_ignored() {
    let mut h = Harness::new();
    let mut datagram = Request::post(0x0bad).non().bytes();
    datagram.push(0xff);
    assert_eq!(expect_ignored(h.send(&datagram)), Ignored::Malformed);
}

#[test]
fn option_delta_15_outside_the_marker_is_reset() {
    let mut h = Harness::new();
    assert_reset(
        &expect_reply_bytes(h.send(&[0x40, 0x02, 0, 3, 0xf1, 0x00])),
        3,
    );
}

#[test]
fn option_length_15_is_reset() {
    let mut h = Harness::new();
    assert_reset(&expect_reply_bytes(h.send(&[0x40, 0x02, 0, 4, 0xbf])), 4);
}

#[test]
fn an_option_running_past_the_datagram_is_reset() {
    let mut h = Harness::new();
    assert_reset(
        &expect_reply_bytes(h.send(&[0x40, 0x02, 0, 5, 0xb4, b's'])),
        5,
    );
}

#[test]
fn an_empty_message_with_a_token_is_reset() {
    let mut h = Harness::new();
    assert_reset(&expect_reply_bytes(h.send(&[0x41, 0x00, 0, 6, 0x01])), 6);
    assert_eq!(h.counters().pings, 0);
}

#[test]
fn an_empty_message_with_a_payload_is_reset() {
    let mut h = Harness::new();
    assert_reset(&expect_reply_bytes(h.send(&[0x40, 0x00, 0, 7, 0xff, 1])), 7);
}

#[test]
fn a_malformed_acknowledgement_is_ignored() {
    let mut h = Harness::new();
    assert_eq!(
        expect_ignored(h.send(&[0x69, 0x44, 0, 1])),
        Ignored::Malformed
    );
    assert_eq!(h.counters().resets_sent, 0);
}

/// Every prefix of a valid request: under 4 bytes it is ignored; otherwise
/// it is either reset (cut inside the token, an option, or right after the
/// payload marker) or read as a shorter valid request and answered as one.
#[test]
fn every_truncation_of_a_valid_request_is_ignored_reset_or_answered() {
    let request = Request::post(0x5151)
        .token(&[1, 2, 3, 4, 5, 6, 7, 8])
        .option(3, b"host")
        .option(7, &[0x16, 0x34])
        .option(60, &[0x01, 0x00])
        .no_response(0)
        .payload(b"payload")
        .bytes();
    for len in 0..=request.len() {
        let mut h = Harness::new();
        match h.send(&request[..len]) {
            Step::Mailbox { .. } => panic!("length {len}: no mailbox here"),
            Step::Ignore(why) => {
                assert!(len < 4, "length {len}: ignored as {why:?}");
                assert_eq!(why, Ignored::Undecodable);
            }
            Step::Reply(bytes) if bytes.len() == 4 && bytes[0] == 0x70 => {
                assert_reset(&bytes, 0x5151);
            }
            Step::Reply(bytes) => {
                let answer = Answer::decode(&bytes);
                assert_eq!(answer.message_id(), 0x5151, "length {len}");
                assert_eq!(answer.message_type(), MessageType::Acknowledgement);
            }
            Step::Store { messages, .. } => {
                assert!(b"payload".starts_with(&messages[0].payload), "length {len}");
            }
        }
    }
}
