//! `payload = "json"` routes: the exchange translates before the store, so
//! what is stored is what is published; what cannot be translated is
//! answered (4.00 with a diagnostic, 4.15, 4.13) and nothing is stored.
//! The translation rules themselves are specified in `translate`'s tests;
//! here, how the exchange uses them.

use super::*;
use crate::route::Payload;

/// `json/{device}` translates; `split/{device}` splits SenML records into
/// `s/{device}/{senml_name}`; `one/{device}` splits into one topic.
fn translating_router() -> Router {
    let post = [Method::Post];
    let spec = |resource, topic, split| RouteSpec {
        resource,
        topic,
        methods: &post,
        qos: Qos::AtLeastOnce,
        retain: false,
        identity: None,
        identities: &[],
        expiry_s: None,
        payload: Payload::Json,
        split,
    };
    let routes = [
        spec("json/{device}", "j/{device}", false),
        spec("split/{device}", "s/{device}/{senml_name}", true),
        spec("one/{device}", "o/{device}", true),
    ];
    Router::new(
        "gw1",
        routes
            .iter()
            .map(|s| Route::new(s).expect("route"))
            .collect(),
    )
}

fn harness() -> Harness {
    let mut h = Harness::new();
    h.router = translating_router();
    h
}

fn post(path: &str, content_format: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut request = Request::post(0x1111).path(path).payload(payload);
    if let Some(format) = content_format {
        let bytes = format.to_be_bytes();
        let skip = usize::from(format < 256) + usize::from(format == 0);
        request = request.option(12, &bytes[skip..]);
    }
    request.bytes()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("the stored payload is JSON")
}

#[test]
fn cbor_is_stored_as_json_and_keeps_its_content_format() {
    let mut h = harness();
    // {"t": 21.5, "on": true} in CBOR.
    let cbor = [
        0xa2, 0x61, b't', 0xfa, 0x41, 0xac, 0x00, 0x00, 0x62, b'o', b'n', 0xf5,
    ];
    let (_, message) = expect_store(h.send(&post("json/d1", Some(60), &cbor)));
    assert_eq!(message.topic, "j/d1");
    assert_eq!(
        json(&message.payload),
        serde_json::json!({"t": 21.5, "on": true})
    );
    assert!(message.meta.translated);
    assert_eq!(message.meta.content_format, Some(60));
    assert_eq!(h.counters().translated, 1);
}

#[test]
fn malformed_cbor_gets_4_00_with_a_diagnostic_and_nothing_is_stored() {
    let mut h = harness();
    // A map of two pairs with one pair present: truncated.
    let request = post("json/d1", Some(60), &[0xa2, 0x61, b't', 0x01]);
    let answer = expect_reply(h.send(&request));
    assert_eq!(answer.code(), "4.00");
    let diagnostic = std::str::from_utf8(answer.payload()).expect("UTF-8 diagnostic");
    assert!(
        !diagnostic.is_empty() && diagnostic.len() <= crate::translate::MAX_DIAGNOSTIC,
        "{diagnostic:?}"
    );
    assert!(diagnostic.is_ascii(), "{diagnostic:?}");
    assert_eq!(h.counters().payload_malformed, 1);
    assert_eq!(h.counters().handed_to_store, 0);
    // A retransmission gets the same code again (without the diagnostic,
    // which is not remembered), and is not stored either.
    let again = expect_reply(h.send(&request));
    assert_eq!(
        (again.code(), again.message_id()),
        ("4.00".to_string(), 0x1111)
    );
    assert_eq!(h.counters().handed_to_store, 0);
}

#[test]
fn malformed_senml_gets_4_00() {
    let mut h = harness();
    // A record with neither a value nor a sum.
    let pack = br#"[{"n":"temp","u":"Cel"}]"#;
    let answer = expect_reply(h.send(&post("json/d1", Some(110), pack)));
    assert_eq!(answer.code(), "4.00");
    assert!(!answer.payload().is_empty());
    assert_eq!(h.counters().handed_to_store, 0);
}

#[test]
fn no_content_format_or_an_untranslatable_one_gets_4_15() {
    let mut h = harness();
    for format in [None, Some(42), Some(11_050)] {
        let answer = expect_reply(h.send(&post("json/d1", format, b"\x01\x02")));
        assert_eq!(answer.code(), "4.15", "{format:?}");
        h.exchange = Exchange::new(ExchangeConfig::default(), FIRST_MESSAGE_ID);
    }
}

#[test]
fn text_becomes_a_json_string_and_json_passes_byte_for_byte() {
    let mut h = harness();
    let (_, text) = expect_store(h.send(&post("json/d1", Some(0), b"on \"now\"")));
    assert_eq!(json(&text.payload), serde_json::json!("on \"now\""));
    let mut h = harness();
    let body = br#"{ "a" : [1, 2.50] }"#;
    let (_, passed) = expect_store(h.send(&post("json/d1", Some(50), body)));
    assert_eq!(passed.payload, body);
}

#[test]
fn a_split_senml_pack_is_stored_as_one_message_per_record_all_or_nothing() {
    let mut h = harness();
    let pack = br#"[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.7e9,"n":"temp","u":"Cel","v":23.1},
                    {"n":"hum","u":"%RH","v":40,"t":10}]"#;
    let (ticket, messages) = expect_store_all(h.send(&post("split/d1", Some(110), pack)));
    let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "s/d1/urn:dev:ow:10e2073a01080063:temp",
            "s/d1/urn:dev:ow:10e2073a01080063:hum"
        ]
    );
    let first = json(&messages[0].payload);
    assert_eq!(
        first,
        serde_json::json!([{"n": "urn:dev:ow:10e2073a01080063:temp", "u": "Cel", "t": 1.7e9, "v": 23.1}])
    );
    let second = json(&messages[1].payload);
    assert_eq!(second[0]["t"], serde_json::json!(1.7e9 + 10.0));
    assert!(messages.iter().all(|m| m.meta.translated));
    assert_eq!(
        (h.counters().translated, h.counters().split_records),
        (1, 1)
    );
    // One request, one answer, for all of its records.
    let answer = Answer::decode(&h.stored(ticket, StoreOutcome::Stored).expect("answer"));
    assert_eq!(answer.code(), "2.04");
}

#[test]
fn a_split_route_without_senml_name_publishes_every_record_to_its_topic() {
    let mut h = harness();
    let pack = br#"[{"bn":"d1/","n":"a","v":1,"t":1.7e9},{"n":"b","v":2,"t":1.7e9}]"#;
    let (_, messages) = expect_store_all(h.send(&post("one/d1", Some(110), pack)));
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.topic == "o/d1"));
}

#[test]
fn relative_senml_times_resolve_against_the_time_of_receipt() {
    let mut h = harness();
    // No base time: t = -5 means five seconds before the gateway got it.
    let pack = br#"[{"n":"x","v":1,"t":-5}]"#;
    let (_, messages) = expect_store_all(h.send(&post("split/d1", Some(110), pack)));
    let t = json(&messages[0].payload)[0]["t"].as_f64().expect("t");
    assert_eq!(t, (WALL_MS / 1000) as f64 - 5.0);
}

#[test]
fn a_record_name_that_makes_no_valid_topic_gets_4_00_and_nothing_is_stored() {
    let mut h = harness();
    // RFC 8428 names cannot hold '+', so the name check refuses it first:
    // either way the device hears 4.00.
    let pack = br#"[{"n":"a+b","v":1}]"#;
    let answer = expect_reply(h.send(&post("split/d1", Some(110), pack)));
    assert_eq!(answer.code(), "4.00");
    assert_eq!(h.counters().handed_to_store, 0);
}

#[test]
fn translated_json_past_the_packet_limit_gets_4_13() {
    let config = ExchangeConfig {
        max_packet_size: 500,
        ..ExchangeConfig::default()
    };
    let mut h = Harness::with_config(config);
    h.router = translating_router();
    // 300 bytes of CBOR byte string: base64url makes 400 characters, which
    // with the topic and MQTT 5 properties pass 500.
    let mut cbor = vec![0x59, 0x01, 0x2c];
    cbor.extend([0xab; 300]);
    let answer = expect_reply(h.send(&post("json/d1", Some(60), &cbor)));
    assert_eq!(answer.code(), "4.13");
    assert_eq!(h.counters().handed_to_store, 0);
}
