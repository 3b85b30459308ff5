//! Requests and their answers: routing, methods, options, the store's outcome.

use super::*;
use crate::devices::{Event, Sighting};

#[test]
fn confirmable_post_on_a_route_is_handed_to_the_store() {
    let mut h = Harness::new();
    let (ticket, message) = expect_store(h.send(&Request::post(0x1234).payload(b"21.5").bytes()));
    assert_eq!(
        message,
        Message {
            topic: "site/gw1/d7".into(),
            payload: b"21.5".to_vec(),
            qos: Qos::AtLeastOnce,
            retain: false,
            meta: crate::message::Meta {
                coap_path: "sensors/d7".into(),
                ..Default::default()
            },
        }
    );
    assert_eq!(ticket.peer(), &h.peer);
    assert_eq!(ticket.message_id(), 0x1234);
}

#[test]
fn the_message_keeps_its_path_identity_and_content_format() {
    let mut h = Harness::new();
    let peer = peer_with_identity(40_000, "d7");
    let request = Request::post(0x1235)
        .path("private/d7")
        .option(12, &[60])
        .payload(b"\xa1\x01\x02")
        .bytes();
    let (_, message) = expect_store(h.send_from(&peer, &request, Duration::ZERO));
    assert_eq!(message.meta.coap_path, "private/d7");
    assert_eq!(message.meta.identity.as_deref(), Some("d7"));
    assert_eq!(message.meta.content_format, Some(60));
}

#[test]
fn confirmable_post_is_acknowledged_2_04_only_after_it_is_stored() {
    let mut h = Harness::new();
    let bytes = h.store_and_answer(&Request::post(0x1234).bytes(), StoreOutcome::Stored);
    let answer = Answer::decode(&bytes.expect("a CON is answered"));
    assert_ack(&answer, "2.04", 0x1234);
    assert!(answer.option_numbers().is_empty());
    assert!(answer.payload().is_empty());
}

#[test]
fn confirmable_put_is_stored_like_post() {
    let mut h = Harness::new();
    let request = Request::post(1).method(RequestType::Put);
    let bytes = h.store_and_answer(&request.bytes(), StoreOutcome::Stored);
    assert_ack(&Answer::decode(&bytes.expect("answered")), "2.04", 1);
}

#[test]
fn non_confirmable_post_is_answered_with_a_non_2_04_and_a_fresh_message_id() {
    let mut h = Harness::new();
    let bytes = h.store_and_answer(&Request::post(0x0101).non().bytes(), StoreOutcome::Stored);
    let answer = Answer::decode(&bytes.expect("answered"));
    assert_eq!(answer.message_type(), MessageType::NonConfirmable);
    assert_eq!(answer.code(), "2.04");
    assert_eq!(answer.message_id(), FIRST_MESSAGE_ID);
    assert_eq!(answer.token(), &[0xa1, 0xb2]);
}

#[test]
fn each_non_confirmable_answer_takes_the_next_message_id() {
    let mut h = Harness::new();
    let first = h.store_and_answer(&Request::post(1).non().bytes(), StoreOutcome::Stored);
    let second = h.store_and_answer(&Request::post(2).non().bytes(), StoreOutcome::Stored);
    let ids = [first, second].map(|b| Answer::decode(&b.expect("answered")).message_id());
    assert_eq!(ids, [FIRST_MESSAGE_ID, FIRST_MESSAGE_ID + 1]);
}

#[test]
fn the_message_id_counter_wraps_around() {
    let mut h = Harness::new();
    h.exchange = Exchange::new(ExchangeConfig::default(), u16::MAX);
    let first = h.store_and_answer(&Request::post(1).non().bytes(), StoreOutcome::Stored);
    let second = h.store_and_answer(&Request::post(2).non().bytes(), StoreOutcome::Stored);
    let ids = [first, second].map(|b| Answer::decode(&b.expect("answered")).message_id());
    assert_eq!(ids, [u16::MAX, 0]);
}

#[test]
fn a_path_no_route_matches_is_4_04() {
    let answer = answer_to(Request::post(5).path("elsewhere/d7"));
    assert_ack(&answer, "4.04", 5);
}

#[test]
fn a_request_without_uri_path_is_4_04() {
    assert_ack(&answer_to(Request::post(5).path("")), "4.04", 5);
}

#[test]
fn a_method_the_route_does_not_take_is_4_05() {
    let answer = answer_to(Request::post(6).method(RequestType::Get));
    assert_ack(&answer, "4.05", 6);
}

#[test]
fn delete_goes_through_the_router_too() {
    let answer = answer_to(Request::post(6).method(RequestType::Delete));
    assert_ack(&answer, "4.05", 6);
}

#[test]
fn an_unassigned_method_code_is_4_05() {
    assert_ack(&answer_to(Request::post(7).code(0, 8)), "4.05", 7);
}

#[test]
fn access_control_refusal_is_4_03() {
    let mut h = Harness::new();
    h.peer = peer_with_identity(40_000, "d1");
    let answer = expect_reply(h.send(&Request::post(8).path("private/d2").bytes()));
    assert_ack(&answer, "4.03", 8);
    assert_eq!(h.counters().forbidden, 1);
}

#[test]
fn the_identity_of_the_peer_reaches_the_router() {
    let mut h = Harness::new();
    h.peer = peer_with_identity(40_000, "d1");
    let (_, message) = expect_store(h.send(&Request::post(8).path("private/d1").bytes()));
    assert_eq!(message.topic, "site/gw1/private/d1");
}

#[test]
fn a_path_that_makes_an_invalid_topic_is_4_00() {
    let answer = answer_to(Request::post(9).path("sensors/a+b"));
    assert_ack(&answer, "4.00", 9);
}

#[test]
fn a_uri_path_that_is_not_utf8_is_4_00() {
    let request = Request::post(9).path("sensors").option(11, &[0xff, 0xfe]);
    assert_ack(&answer_to(request), "4.00", 9);
}

#[test]
fn a_payload_over_max_payload_is_4_13_with_size1() {
    let config = ExchangeConfig {
        max_payload: 16,
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    let answer = expect_reply(h.send(&Request::post(10).payload(&[7; 17]).bytes()));
    assert_ack(&answer, "4.13", 10);
    assert_eq!(answer.uint_option(60), Some(16));
    assert_eq!(h.counters().too_large, 1);
}

#[test]
fn a_payload_of_exactly_max_payload_is_stored() {
    let config = ExchangeConfig {
        max_payload: 16,
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    let (_, message) = expect_store(h.send(&Request::post(10).payload(&[7; 16]).bytes()));
    assert_eq!(message.payload.len(), 16);
}

#[test]
fn a_full_store_is_5_03_with_max_age() {
    let mut h = Harness::new();
    let bytes = h.store_and_answer(&Request::post(11).bytes(), StoreOutcome::Full);
    let answer = Answer::decode(&bytes.expect("answered"));
    assert_ack(&answer, "5.03", 11);
    assert_eq!(answer.uint_option(14), Some(30));
}

#[test]
fn a_failed_store_is_5_00() {
    let mut h = Harness::new();
    let bytes = h.store_and_answer(&Request::post(12).bytes(), StoreOutcome::Failed);
    let answer = Answer::decode(&bytes.expect("answered"));
    assert_ack(&answer, "5.00", 12);
    assert!(answer.option_numbers().is_empty());
}

#[test]
fn an_empty_confirmable_is_a_ping_answered_with_reset() {
    let mut h = Harness::new();
    let bytes = expect_reply_bytes(h.send(&[0x40, 0x00, 0xbe, 0xef]));
    assert_reset(&bytes, 0xbeef);
    assert_eq!((h.counters().pings, h.counters().resets_sent), (1, 1));
}

#[test]
fn uri_host_and_uri_port_are_accepted() {
    let request = Request::post(13)
        .option(3, b"gateway.example")
        .option(7, &5684u16.to_be_bytes());
    let step = Harness::new().send(&request.bytes());
    assert_eq!(expect_store(step).1.topic, "site/gw1/d7");
}

#[test]
fn uri_query_content_format_and_accept_are_accepted() {
    let request = Request::post(13)
        .option(15, b"x=1")
        .option(12, &[50])
        .option(17, &[50]);
    expect_store(Harness::new().send(&request.bytes()));
}

#[test]
fn an_unrecognized_critical_option_is_4_02() {
    let mut h = Harness::new();
    let answer = expect_reply(h.send(&Request::post(14).option(2049, b"x").bytes()));
    assert_ack(&answer, "4.02", 14);
    assert_eq!(h.counters().bad_options, 1);
}

#[test]
fn an_unrecognized_elective_option_is_ignored() {
    expect_store(Harness::new().send(&Request::post(14).option(2048, b"x").bytes()));
}

#[test]
fn a_repeated_non_repeatable_critical_option_is_4_02() {
    let request = Request::post(14).option(7, &[1]).option(7, &[2]);
    assert_ack(&answer_to(request), "4.02", 14);
}

#[test]
fn an_unrecognized_critical_option_in_a_non_is_rejected_silently() {
    let mut h = Harness::new();
    let step = h.send(&Request::post(14).non().option(2049, b"x").bytes());
    assert_eq!(expect_ignored(step), Ignored::BadOption);
    assert_eq!(h.counters().bad_options, 1);
}

#[test]
fn proxy_uri_is_5_05() {
    let request = Request::post(15).option(35, b"coap://elsewhere/x");
    assert_ack(&answer_to(request), "5.05", 15);
}

#[test]
fn proxy_scheme_is_5_05() {
    assert_ack(
        &answer_to(Request::post(15).option(39, b"coap")),
        "5.05",
        15,
    );
}

#[test]
fn a_non_confirmable_refusal_is_a_non_with_a_fresh_message_id() {
    let answer = answer_to(Request::post(16).non().path("nowhere"));
    assert_eq!(answer.message_type(), MessageType::NonConfirmable);
    assert_eq!(answer.code(), "4.04");
    assert_eq!(answer.message_id(), FIRST_MESSAGE_ID);
    assert_eq!(answer.token(), &[0xa1, 0xb2]);
}

#[test]
fn tokens_of_every_length_are_echoed() {
    for len in 0..=8u8 {
        let token: Vec<u8> = (0..len).map(|i| 0xf0 | i).collect();
        let answer = answer_to(Request::post(17).path("nowhere").token(&token));
        assert_eq!(answer.token(), token.as_slice(), "token length {len}");
    }
}

#[test]
fn acknowledgements_and_resets_are_ignored() {
    let mut h = Harness::new();
    for datagram in [[0x60, 0x00, 0, 1], [0x70, 0x00, 0, 2], [0x60, 0x44, 0, 3]] {
        assert_eq!(expect_ignored(h.send(&datagram)), Ignored::NotARequest);
    }
    assert_eq!(h.counters().not_requests, 3);
    assert_eq!(h.counters().resets_sent, 0);
}

#[test]
fn a_confirmable_response_is_reset() {
    let mut h = Harness::new();
    let bytes = expect_reply_bytes(h.send(&Request::post(18).code(2, 5).bytes()));
    assert_reset(&bytes, 18);
}

#[test]
fn a_non_confirmable_response_is_ignored() {
    let mut h = Harness::new();
    let step = h.send(&Request::post(18).non().code(4, 4).bytes());
    assert_eq!(expect_ignored(step), Ignored::NotARequest);
}

#[test]
fn a_confirmable_with_a_reserved_code_class_is_reset() {
    let mut h = Harness::new();
    assert_reset(
        &expect_reply_bytes(h.send(&Request::post(19).code(7, 1).bytes())),
        19,
    );
}

#[test]
fn an_empty_non_confirmable_is_ignored_as_malformed() {
    let mut h = Harness::new();
    assert_eq!(
        expect_ignored(h.send(&[0x50, 0x00, 0, 1])),
        Ignored::Malformed
    );
}

#[test]
fn counters_tell_what_became_of_each_request() {
    let mut h = Harness::new();
    h.store_and_answer(&Request::post(1).bytes(), StoreOutcome::Stored);
    h.send(&Request::post(2).path("nowhere").bytes());
    h.send(&Request::post(3).method(RequestType::Get).bytes());
    let c = h.counters();
    assert_eq!(
        (c.datagrams, c.requests, c.handed_to_store, c.stored),
        (3, 3, 1, 1)
    );
    assert_eq!(
        (c.responses_2xx, c.responses_4xx, c.responses_5xx),
        (1, 2, 0)
    );
    assert_eq!((c.not_found, c.method_not_allowed), (1, 1));
}

#[test]
fn a_message_whose_mqtt_packet_would_not_fit_is_4_13_with_the_room_left() {
    // sensors/d7 publishes to site/gw1/d7. As MQTT 5 carries it (the
    // larger version): 136 bytes of properties (gateway "gw1" 15, coap_path
    // "sensors/d7" 24, seq at its widest 28, received_at 40, Content Type
    // application/octet-stream 27, Payload Format Indicator 2), 2 of their
    // length, 13 of topic, 2 of packet id, 3 of fixed header: 156 bytes
    // around the payload; 1,024 is the packet limit.
    let config = ExchangeConfig {
        max_packet_size: 1024,
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    let (_, message) = expect_store(h.send(&Request::post(10).payload(&[7; 868]).bytes()));
    assert_eq!(message.payload.len(), 868);
    let answer = expect_reply(h.send(&Request::post(11).payload(&[7; 869]).bytes()));
    assert_ack(&answer, "4.13", 11);
    assert_eq!(answer.uint_option(60), Some(868));
}

#[test]
fn sightings_name_the_device_by_capture_or_identity_or_address_once_decided() {
    let mut h = Harness::new();
    // Stored: the sighting waits for the store's outcome.
    let (ticket, _) = expect_store(h.send(&Request::post(0x2000).payload(b"21.5").bytes()));
    assert_eq!(h.exchange.take_sightings().count(), 0, "not stored yet");
    h.stored(ticket, StoreOutcome::Stored);
    let stored: Vec<Sighting> = h.exchange.take_sightings().collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].name(), "d7");
    assert_eq!(
        stored[0].event,
        Event::Stored {
            messages: 1,
            bytes: 4
        }
    );
    // Refused by access control: not under the name it claimed (anyone
    // could claim it), under its address.
    h.send(&Request::post(0x2001).path("private/d9").bytes());
    // Refused before any route: the address.
    h.send(&Request::post(0x2002).path("nowhere").bytes());
    // An identity names the device whatever the route.
    let dtls = peer_with_identity(40_001, "sensor-01");
    h.send_from(
        &dtls,
        &Request::post(0x2003).path("nowhere").bytes(),
        Duration::ZERO,
    );
    let refused: Vec<(String, Event)> = h
        .exchange
        .take_sightings()
        .map(|s| (s.name().into_owned(), s.event))
        .collect();
    assert_eq!(
        refused,
        [
            (h.peer.addr.to_string(), Event::Refused { code: (4, 3) }),
            (h.peer.addr.to_string(), Event::Refused { code: (4, 4) }),
            ("sensor-01".to_string(), Event::Refused { code: (4, 4) }),
        ]
    );
}
